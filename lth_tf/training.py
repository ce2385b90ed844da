"""The custom training loop: one compiled step, run under any tf.distribute
strategy; learning-rate schedules; evaluation; the early-stop iteration."""
import dataclasses
import math
import time
from typing import Callable

import numpy as np
import tensorflow as tf

from lth_tf import data as data_lib
from lth_tf import pipeline, tfmot_adapter
from lth_tf.config import TrainingConfig


INITIAL_LOSS_SCALE = 2.0 ** 15  # mixed precision's dynamic loss scale at every (re)start


class StepSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then the base rate times lr_drop ** (milestones passed).

    The optimizer calls it with its own step count, which restarts at 0 when a
    branch rewinds to step k (a fresh optimizer: Adam's bias correction starts
    over); `offset`, a variable, holds k, so the rate is the schedule's at the
    global step k + count, as in open_lth. `hold`, a variable, when >= 0
    fixes the rate at that step's (fine-tuning at the final rate)."""

    def __init__(self, base, milestones=(), drop=0.1, warmup=0, offset=None, hold=None):
        self.base, self.milestones, self.drop, self.warmup = base, tuple(milestones), drop, warmup
        self.offset, self.hold = offset, hold

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        if self.offset is not None:
            step += tf.cast(self.offset, tf.float32)
        if self.hold is not None:
            step = tf.where(self.hold >= 0, tf.cast(self.hold, tf.float32), step)
        passed = tf.reduce_sum(tf.cast(step >= tf.constant(self.milestones, tf.float32), tf.float32)) \
            if self.milestones else 0.0
        rate = self.base * tf.pow(self.drop, passed)
        if self.warmup:
            rate *= tf.minimum(1.0, (step + 1.0) / self.warmup)
        return rate

    def get_config(self):
        return {"base": self.base, "milestones": self.milestones, "drop": self.drop, "warmup": self.warmup}


def make_optimizer(config: TrainingConfig, schedule):
    if config.optimizer == "sgd":
        return tf.keras.optimizers.SGD(schedule, momentum=config.momentum)
    if config.optimizer == "adam":
        return tf.keras.optimizers.Adam(schedule)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; valid: sgd, adam")


@dataclasses.dataclass
class Trainer:
    """A model with its optimizer and compiled step functions, under one strategy."""
    model: tf.keras.Model
    optimizer: tf.keras.optimizers.Optimizer
    strategy: tf.distribute.Strategy
    config: TrainingConfig
    schedule: StepSchedule
    step_offset: tf.Variable  # the global step of the last rewind; the optimizer counts from there
    lr_hold: tf.Variable      # >= 0: the learning rate stays the schedule's at this step
    train_steps: Callable   # (batches, n) -> (mean loss, accuracy) over the next n steps (see batches())
    evaluate_batches: Callable  # (distributed dataset) -> (loss sum, correct, count)
    evaluate_arrays: Callable   # (x, y, batch size) -> the same, one replica
    xla: bool                   # the step is compiled with XLA (use_xla's choice)


def make_trainer(model, config: TrainingConfig, strategy) -> Trainer:
    """Call inside strategy.scope(), with the model built there too."""
    step_offset = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_offset")
    lr_hold = tf.Variable(-1, dtype=tf.int64, trainable=False, name="lr_hold")
    schedule = StepSchedule(config.learning_rate, config.milestones, config.lr_drop, config.warmup_steps,
                            step_offset, lr_hold)
    optimizer = make_optimizer(config, schedule)
    if config.mixed_precision:
        optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer, initial_scale=INITIAL_LOSS_SCALE)
    optimizer.build(model.trainable_variables)
    masks = tfmot_adapter.mask_for_variable(model)
    forward = tfmot_adapter.unwrapped_view(model)  # the same variables, without the wrappers' per-step ops
    decay = config.weight_decay / strategy.num_replicas_in_sync  # gradients are summed over replicas

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(forward(images, training=True), tf.float32)  # float16 under mixed precision
            per_example = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=config.batch_size)
            scaled = optimizer.get_scaled_loss(loss) if config.mixed_precision else loss
        variables = model.trainable_variables
        grads = tape.gradient(scaled, variables)
        if config.mixed_precision:  # a step with non-finite gradients is skipped and the scale halved
            grads = optimizer.get_unscaled_gradients(grads)
        if decay:
            grads = [g + decay * v for g, v in zip(grads, variables)]
        # Masked gradients keep pruned weights and their optimizer moments at exactly 0.
        grads = [g if m is None else g * m for g, m in zip(grads, masks)]
        optimizer.apply_gradients(zip(grads, variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), labels), tf.float32))
        return loss, correct, tf.cast(tf.size(labels), tf.float32)

    xla = use_xla(config.xla, model, strategy)
    if xla:
        replica_step = tf.function(replica_step, jit_compile=True)

    def step_totals(images, labels):
        per_replica = strategy.run(replica_step, args=(images, labels))
        return tf.stack([strategy.reduce("SUM", t, axis=None) for t in per_replica])

    @tf.function
    def steps_from_iterator(iterator, n):
        totals = tf.zeros([3])
        for _ in tf.range(n):
            totals += step_totals(*next(iterator))
        return totals

    # One replica: the batches are gathered inside the compiled loop, and under
    # XLA the whole chunk (gathers, steps) is one compiled cluster. A while loop,
    # not `for i in tf.range(n)`: XLA compiles tf.range once per value of n.
    @tf.function(jit_compile=xla and strategy is tf.distribute.get_strategy())
    def steps_from_arrays(x, y, order, first, step, n, seed, augment: bool):
        totals, i = tf.zeros([3]), tf.constant(0, tf.int64)
        while i < n:
            totals += step_totals(*pipeline.gather_batch(x, y, tf.gather(order, first + i), augment, seed, step + i))
            i += 1
        return totals

    def train_steps(batches, n):
        """(mean loss, accuracy) over the next n steps of `batches`: a
        pipeline.ArrayBatches, or an iterator over a distributed dataset."""
        if not isinstance(batches, pipeline.ArrayBatches):
            totals = steps_from_iterator(batches, tf.constant(n))
            return totals[0] / tf.cast(n, tf.float32), totals[1] / totals[2]
        totals = tf.zeros([3])
        for order, first, step, piece in batches.take(int(n)):
            totals += steps_from_arrays(batches.x, batches.y, order, *(tf.constant(v, tf.int64) for v in
                                        (first, step, piece, batches.seed)), bool(batches.augment))
        return totals[0] / tf.cast(n, tf.float32), totals[1] / totals[2]

    def replica_eval(images, labels):
        logits = tf.cast(forward(images, training=False), tf.float32)
        loss = tf.reduce_sum(tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), labels), tf.float32))
        return tf.stack([loss, correct, tf.cast(tf.size(labels), tf.float32)])

    @tf.function
    def evaluate_batches(dataset):
        totals = tf.zeros([3])
        for images, labels in dataset:
            totals += strategy.reduce("SUM", strategy.run(replica_eval, args=(images, labels)), axis=None)
        return totals

    @tf.function(reduce_retracing=True)
    def evaluate_arrays(x, y, batch_size):  # one replica: slices of the arrays, no tf.data
        totals = tf.zeros([3])
        for start in tf.range(0, tf.shape(x)[0], batch_size):
            totals += strategy.reduce("SUM", strategy.run(replica_eval, args=(
                x[start:start + batch_size], y[start:start + batch_size])), axis=None)
        return totals

    return Trainer(model, optimizer, strategy, config, schedule, step_offset, lr_hold, train_steps,
                   evaluate_batches, evaluate_arrays, xla)


def use_xla(setting, model, strategy) -> bool:
    """--xla (True), --noxla (False), or "auto": XLA for networks without
    convolutions on one replica, where benchmarks/throughput.py measured it
    faster on a CPU; conv nets measured slower there, and several replicas
    need the step uncompiled."""
    if setting == "auto":
        convolutions = any(isinstance(layer, tf.keras.layers.Conv2D) for layer in model.submodules)
        return strategy.num_replicas_in_sync == 1 and not convolutions
    if setting and strategy.num_replicas_in_sync > 1:
        raise ValueError("--xla runs on a single replica; use it without mirrored/multi_worker")
    return bool(setting)


def reset_optimizer(trainer: Trainer, step: int, hold_lr_at: int = -1):
    """A fresh optimizer (zero moments, its step count at 0), with the
    learning-rate schedule and the global step at `step` (the rate fixed at
    step `hold_lr_at`'s, if that is >= 0)."""
    for variable in trainer.optimizer.variables:  # the step count too
        variable.assign(tf.zeros_like(variable))
    if trainer.config.mixed_precision:  # the loss scale starts over too, as a resumed branch's would
        trainer.optimizer.dynamic_counter.assign(0)
        trainer.optimizer._loss_scale.current_loss_scale.assign(INITIAL_LOSS_SCALE)  # noqa: SLF001  no public setter
    trainer.step_offset.assign(step)
    trainer.lr_hold.assign(hold_lr_at)


def rewind(trainer: Trainer, state, masks, step: int, hold_lr_at: int = -1):
    """Weights <- state x masks; optimizer state and LR schedule back to `step`
    (or the rate held at step `hold_lr_at`'s: fine-tuning)."""
    with trainer.strategy.scope():
        tfmot_adapter.assign_state(trainer.model, state)
        tfmot_adapter.set_masks(trainer.model, masks)
        reset_optimizer(trainer, step, hold_lr_at)


def global_step(trainer: Trainer) -> int:
    """Steps of the schedule done: the rewind step plus the optimizer's count since."""
    return int(trainer.step_offset.numpy()) + int(trainer.optimizer.iterations.numpy())


def evaluate(trainer: Trainer, x, y) -> tuple[float, float]:
    """Mean loss and accuracy of the model on (x, y)."""
    batch_size = max(trainer.config.batch_size, 500)
    if trainer.strategy.num_replicas_in_sync == 1:
        totals = trainer.evaluate_arrays(pipeline.as_tensor(x), pipeline.as_tensor(y), tf.constant(batch_size))
        loss, correct, count = totals.numpy()
        return short_float(loss / count), float(correct) / float(count)
    dataset = pipeline.eval_batches(x, y, batch_size)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = trainer.strategy.experimental_distribute_dataset(dataset.with_options(options))
    loss, correct, count = trainer.evaluate_batches(dataset).numpy()
    return short_float(loss / count), float(correct) / float(count)


def short_float(value) -> float:
    """A float32 as the shortest decimal that reads back as it (0.8815, not
    0.8815000057220459): files and tables show the digits the value carries."""
    return float(str(np.float32(value)))


class Diverged(Exception):
    """The training loss became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class Progress:
    step: int
    start_step: int
    end_step: int
    train_loss: float
    train_accuracy: float
    learning_rate: float
    seconds: float

    @property
    def seconds_left(self) -> float:
        return self.seconds / max(1, self.step - self.start_step) * (self.end_step - self.step)


class Interrupted(Exception):
    """Training stopped on request at a step boundary, after a checkpoint."""


@dataclasses.dataclass
class Hooks:
    """What the caller wants to hear from a training run; all optional."""
    on_log: Callable[[Progress], None] = lambda progress: None
    on_eval: Callable[[dict], None] = lambda record: None
    # (step, history, due): due every checkpoint_every steps and before stopping
    # on request; at other epoch ends the hook may skip.
    on_checkpoint: Callable[[int, list, bool], None] | None = None
    checkpoint_every: int = 0
    should_stop: Callable[[], bool] = lambda: False
    on_epoch: Callable[[int], None] | None = None  # (epoch) at every epoch end, before a checkpoint there
    at_steps: tuple = ()                            # steps on_step hears of (analyze infoplane's snapshots)
    on_step: Callable[[int], None] = lambda step: None


def train(trainer: Trainer, splits: data_lib.Splits, start_step: int, end_step: int,
          hooks: Hooks = Hooks(), history: list | None = None, evaluate_at_end: bool = True) -> list[dict]:
    """Trains from start_step to end_step; returns the evaluation records
    (`history`, when resuming, holds the records before start_step).

    The training loss and accuracy go to hooks.on_log every log_every steps,
    averaged over the compiled chunk that ends there (chunks end at every log,
    evaluation, epoch and checkpoint step, the same in a resumed run);
    the validation and test sets are evaluated every eval_every steps and at
    the end (unless evaluate_at_end is False: a stop on the way, not the end
    of the schedule). Raises Diverged on a non-finite loss, Interrupted when
    hooks.should_stop() turns true (after a checkpoint).
    """
    config = trainer.config
    iterator = batches(trainer, splits, start_step)
    history, step, started = list(history or []), start_step, time.time()
    epoch = data_lib.steps_per_epoch(splits, config.batch_size)
    periods = [config.log_every, config.eval_every]
    if hooks.on_checkpoint or hooks.on_epoch:
        periods += [epoch] + ([hooks.checkpoint_every] if hooks.checkpoint_every else [])
    while step < end_step:
        # Run compiled chunks up to the next log, evaluation, checkpoint or the end.
        boundary = min([end_step] + [_next_multiple(step, p) for p in periods] + [s for s in hooks.at_steps if s > step])
        learning_rate = current_learning_rate(trainer)
        loss, accuracy = (short_float(v) for v in trainer.train_steps(iterator, boundary - step))
        step = boundary
        if not math.isfinite(loss):
            raise Diverged(f"training loss is {loss} at step {step}")
        if step % config.log_every == 0 or step == end_step:
            hooks.on_log(Progress(step, start_step, end_step, loss, accuracy, learning_rate, time.time() - started))
        if step % config.eval_every == 0 or (step == end_step and evaluate_at_end):
            tfmot_adapter.apply_masks(trainer.model)
            history.append(dict(step=step, train_loss=loss, train_accuracy=accuracy,
                                **_eval_record(trainer, splits)))
            hooks.on_eval(history[-1])
        if step in hooks.at_steps:
            tfmot_adapter.apply_masks(trainer.model)
            hooks.on_step(step)
        if hooks.on_epoch and step % epoch == 0:
            tfmot_adapter.apply_masks(trainer.model)
            hooks.on_epoch(step // epoch)
        stopping = hooks.should_stop()
        if hooks.on_checkpoint and step < end_step and (stopping or any(step % p == 0 for p in periods[2:])):
            due = stopping or (hooks.checkpoint_every and step % hooks.checkpoint_every == 0)
            hooks.on_checkpoint(step, history, bool(due))
        if stopping and step < end_step:
            raise Interrupted(f"at step {step}")
    tfmot_adapter.apply_masks(trainer.model)
    return history


def batches(trainer: Trainer, splits: data_lib.Splits, start_step: int):
    """The training batches from `start_step` on, for trainer.train_steps: gathered
    inside the compiled loop on one replica, a distributed tf.data pipeline on several
    (the same examples either way: pipeline.train_batches)."""
    config = trainer.config
    if trainer.strategy.num_replicas_in_sync == 1:
        return pipeline.ArrayBatches(splits, config.batch_size, config.seed, start_step)
    return iter(trainer.strategy.distribute_datasets_from_function(
        lambda context: pipeline.train_batches(splits, config.batch_size, config.seed, start_step, context)))


def current_learning_rate(trainer: Trainer) -> float:
    return short_float(trainer.schedule(trainer.optimizer.iterations))


def _next_multiple(step, every):
    return (step // every + 1) * every


def _eval_record(trainer, splits):
    record = {}
    if len(splits.x_val):
        record["val_loss"], record["val_accuracy"] = evaluate(trainer, splits.x_val, splits.y_val)
    record["test_loss"], record["test_accuracy"] = evaluate(trainer, splits.x_test, splits.y_test)
    return record


def early_stop(history: list[dict]) -> dict:
    """The evaluation with the lowest validation loss (the last one if there is
    no validation split)."""
    if "val_loss" not in history[-1]:
        return history[-1]
    return min(history, key=lambda record: record["val_loss"])


def make_strategy(name: str) -> tf.distribute.Strategy:
    """default | one_device | mirrored (all GPUs, else all logical CPUs) | multi_worker (TF_CONFIG)."""
    if name == "multi_worker":  # first: it must configure TensorFlow before anything starts it
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    raise ValueError(f"unknown strategy {name!r}; valid: default, one_device, mirrored, multi_worker")


def all_workers_mean(strategy, value: float) -> float:
    """The mean of `value` over all replicas of all workers (itself for one process).
    Workers of a multi-worker run use it to agree on where to resume."""
    per_replica = strategy.run(lambda: tf.constant(value, tf.float64))
    return float(strategy.reduce("MEAN", per_replica, axis=None))


def worker_role(strategy) -> tuple[bool, str]:
    """(is this process the chief, a name for it). Only multi_worker has others:
    the chief is task 'chief', or worker 0 when the cluster names no chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, "chief"
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    chief = resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker"
                                                and resolver.task_id == 0)
    return chief, f"{resolver.task_type}-{resolver.task_id}"


def make_deterministic():
    """Deterministic TensorFlow ops (the data order is seeded already)."""
    tf.config.experimental.enable_op_determinism()


def split_cpu(count: int):
    """Splits the first CPU into `count` logical devices; only before TF starts."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
