"""Where one branch's wall time goes, on a real config.

    python benchmarks/branch_breakdown.py --flagfile=configs/lenet_fashion_mnist.flags \
        --train_steps=8000 --eval_every=500 [--repeats=2] [any lth_tf.main flag]

Runs lth_tf's own driver (lottery.prepare, lottery.run_branch) on the flags'
experiment in a temporary directory: round 0's ticket once untimed (tracing,
the pipeline's first fill), then --repeats timed branches, each in a fresh run
directory, with every phase timed where lth_tf calls it. Then, with the same
trainer, the arithmetic the branch should cost: the steady-state step time
(medians of long chunks, as benchmarks/throughput.py measures it) times the
steps, plus the steady-state time of one evaluation times the evaluations.
Prints the split of the last timed branch and wall / arithmetic.
"""
import collections
import dataclasses
import os
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from lth_tf import checkpoints, lottery, rundir, summaries, training
from lth_tf import data as data_lib
from lth_tf import flags as lth_flags

flags.DEFINE_integer("repeats", 2, "Timed branches (the last one's split is printed, the wall times of all).")
FLAGS = flags.FLAGS

PHASES = ("training steps", "evaluation", "checkpoints", "tensorboard", "console log", "rewind and restore",
          "saving weights")


class Timers:
    """Seconds and calls per phase, around the functions lth_tf calls for it."""

    def __init__(self):
        self.seconds, self.calls = collections.defaultdict(float), collections.Counter()

    def wrap(self, phase, function, sync=False):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            result = function(*args, **kwargs)
            if sync:  # a compiled call returns before its work is done
                result = tuple(np.asarray(r) for r in result)
            self.seconds[phase] += time.perf_counter() - start
            self.calls[phase] += 1
            return result
        return timed


def instrument(timers: Timers, trainer: training.Trainer):
    """Replaces, for this process, the functions each phase goes through by timed ones."""
    trainer.train_steps = timers.wrap("training steps", trainer.train_steps, sync=True)
    training.evaluate = timers.wrap("evaluation", training.evaluate)
    checkpoints.save = timers.wrap("checkpoints", checkpoints.save)
    for name in ("branch_writer", "log_train", "log_eval", "log_weights"):
        setattr(summaries, name, timers.wrap("tensorboard", getattr(summaries, name)))
    training.rewind = timers.wrap("rewind and restore", training.rewind)
    checkpoints.restore_latest = timers.wrap("rewind and restore", checkpoints.restore_latest)
    rundir.save_arrays = timers.wrap("saving weights", rundir.save_arrays)
    log = lottery.logging
    lottery.logging = type("TimedLogging", (), {"info": staticmethod(timers.wrap("console log", log.info)),
                                                "warning": staticmethod(log.warning)})


def steady_state(trainer, splits, steps: int, repeats: int = 5) -> float:
    """Median seconds per training step over chunks of `steps` steps, after one untimed chunk."""
    iterator, chunk = training.batches(trainer, splits, 0), steps
    trainer.train_steps(iterator, chunk)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        trainer.train_steps(iterator, chunk)
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds)) / steps


def evaluation_seconds(trainer, splits, repeats: int = 5) -> float:
    """Median seconds of one evaluation (validation and test sets), after one untimed."""
    record = training._eval_record
    record(trainer, splits)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        record(trainer, splits)
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def main(argv):
    del argv
    config, _ = lth_flags.experiment_config(FLAGS)
    strategy = training.make_strategy(FLAGS.strategy)
    splits = data_lib.load(config.data)
    options = lottery.RunOptions(export="none", tensorboard=FLAGS.tensorboard,
                                 checkpoint_every=lth_flags.checkpoint_every(FLAGS))
    root = tempfile.mkdtemp(prefix="branch_breakdown_")
    experiment = lottery.prepare(config, splits, strategy, os.path.join(root, "warmup"))
    masks = experiment.initial_masks
    steps, every = config.training.train_steps, config.training.eval_every
    print(f"TensorFlow {tf.__version__}; {config.model.name} on {splits.name}, batch {config.training.batch_size}, "
          f"{config.training.optimizer}, {steps} steps, evaluation every {every} "
          f"({len(splits.x_val)} validation + {len(splits.x_test)} test examples), xla={config.training.xla}, "
          f"tensorboard={FLAGS.tensorboard}, strategy={FLAGS.strategy}")
    lottery.run_branch(experiment, 0, "ticket", masks, options)  # tracing, first fills: untimed

    timers = Timers()
    instrument(timers, experiment.trainer)
    walls = []
    for repeat in range(FLAGS.repeats):
        timers.seconds.clear()
        timers.calls.clear()
        run = dataclasses.replace(experiment, output_dir=os.path.join(root, f"timed_{repeat}"))
        start = time.perf_counter()
        metrics = lottery.run_branch(run, 0, "ticket", masks, options)
        walls.append(time.perf_counter() - start)
    wall, evaluations = walls[-1], len(metrics["history"])
    seconds, calls = dict(timers.seconds), dict(timers.calls)  # before the timed functions run again below

    step = steady_state(experiment.trainer, splits,
                        data_lib.steps_per_epoch(splits, config.training.batch_size))
    evaluation = evaluation_seconds(experiment.trainer, splits)
    arithmetic = steps * step + evaluations * evaluation

    print(f"\nbranch wall time {wall:.2f} s (all timed: {', '.join(f'{w:.2f}' for w in walls)} s); "
          f"per 500 steps {500 * wall / steps:.3f} s")
    print(f"{'phase':<22} {'seconds':>8} {'share':>7} {'calls':>6}")
    for phase in PHASES:
        print(f"{phase:<22} {seconds.get(phase, 0.0):8.3f} {seconds.get(phase, 0.0) / wall:7.1%} "
              f"{calls.get(phase, 0):6d}")
    other = wall - sum(seconds.values())
    print(f"{'other':<22} {other:8.3f} {other / wall:7.1%}")
    print(f"\narithmetic: {steps} steps x {1e3 * step:.3f} ms (steady state) + {evaluations} evaluations x "
          f"{1e3 * evaluation:.1f} ms = {arithmetic:.2f} s")
    print(f"branch wall / arithmetic: {wall / arithmetic:.3f}")
    shutil.rmtree(root)


if __name__ == "__main__":
    app.run(main)
