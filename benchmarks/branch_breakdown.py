"""Where one branch's wall time goes, on a real config.

    python benchmarks/branch_breakdown.py --flagfile=configs/lenet_fashion_mnist.flags \
        --train_steps=8000 --eval_every=500 [--repeats=5] [--readme=docs/speed.md] [any lth_tf.main flag]

Runs lth_tf's own driver (lottery.prepare, lottery.run_branch) on the flags'
experiment in a temporary directory: round 0's ticket once untimed (tracing and
compiling; its wall time is printed too), then --repeats timed branches, each in a fresh run
directory, with every phase timed where lth_tf calls it. Before the first
branch and after each, with the same trainer, a sample of the arithmetic a
branch should cost: the steady-state step time (epoch-long chunks, as
benchmarks/throughput.py measures it) and the steady-state time of one
evaluation. Each branch is held against the samples on either side of it
(steps x their median step + evaluations x their median evaluation), so that
a busy spell of the machine hits both alike. Prints the split of the median
branch (by wall / arithmetic) and every branch's ratio; --readme writes them
into the file's <!-- branch_breakdown --> block.
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
from readme_block import provenance, write_block

flags.DEFINE_integer("repeats", 5, "Timed branches (the median one's split is printed, the wall times of all).",
                     lower_bound=1)
flags.DEFINE_string("readme", "", "Also write the split into this file, between its <!-- branch_breakdown --> and "
                    "<!-- /branch_breakdown --> lines.")
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
    log = lottery.branch.logging  # the per-step log line
    lottery.branch.logging = type("TimedLogging", (), {"info": staticmethod(timers.wrap("console log", log.info)),
                                                       "warning": staticmethod(log.warning)})


def step_seconds(train_steps, trainer, splits, steps: int, repeats: int = 3) -> list[float]:
    """Seconds per training step of `repeats` chunks of `steps` steps, after one untimed chunk."""
    iterator = training.batches(trainer, splits, 0)
    train_steps(iterator, steps)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(train_steps(iterator, steps)[0])
        seconds.append((time.perf_counter() - start) / steps)
    return seconds


def evaluation_seconds(evaluate, trainer, splits, repeats: int = 3) -> list[float]:
    """Seconds of `repeats` evaluations (validation and test sets, as a branch evaluates), after one untimed."""
    def one():
        for x, y in ((splits.x_val, splits.y_val), (splits.x_test, splits.y_test)):
            if len(x):
                evaluate(trainer, x, y)
    one()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        one()
        seconds.append(time.perf_counter() - start)
    return seconds


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
    start = time.perf_counter()
    lottery.run_branch(experiment, 0, "ticket", masks, options)  # tracing, compiling, first fills: not in the split
    first = time.perf_counter() - start

    train_steps, evaluate = experiment.trainer.train_steps, training.evaluate  # before they are timed
    epoch = data_lib.steps_per_epoch(splits, config.training.batch_size)

    def sample() -> tuple[list, list]:
        return (step_seconds(train_steps, experiment.trainer, splits, epoch),
                evaluation_seconds(evaluate, experiment.trainer, splits))

    timers = Timers()
    instrument(timers, experiment.trainer)
    samples, branches = [sample()], []
    for repeat in range(FLAGS.repeats):
        timers.seconds.clear()
        timers.calls.clear()
        run = dataclasses.replace(experiment, output_dir=os.path.join(root, f"timed_{repeat}"))
        start = time.perf_counter()
        metrics = lottery.run_branch(run, 0, "ticket", masks, options)
        wall = time.perf_counter() - start
        samples.append(sample())
        # The branch against its own arithmetic: the samples just before and just after it.
        step = float(np.median(samples[-2][0] + samples[-1][0]))
        evaluation = float(np.median(samples[-2][1] + samples[-1][1]))
        arithmetic = steps * step + len(metrics["history"]) * evaluation
        branches.append(dict(wall=wall, seconds=dict(timers.seconds), calls=dict(timers.calls), step=step,
                             evaluation=evaluation, arithmetic=arithmetic, ratio=wall / arithmetic))
    median = sorted(branches, key=lambda b: b["ratio"])[len(branches) // 2]
    wall, seconds, calls, evaluations = median["wall"], median["seconds"], median["calls"], len(metrics["history"])
    ratios = ", ".join(f"{b['ratio']:.3f}" for b in branches)
    step_samples = [t for steps_sampled, _ in samples for t in steps_sampled]

    lines = [f"{provenance()}; {config.model.name} on {splits.name}, batch {config.training.batch_size}, "
             f"{config.training.optimizer}, {steps} steps, evaluating every {every} ({len(splits.x_val)} "
             f"validation + {len(splits.x_test)} test examples), xla={config.training.xla} "
             f"({'on' if experiment.trainer.xla else 'off'}), strategy={FLAGS.strategy}: the median of "
             f"{FLAGS.repeats} timed branches (by wall / arithmetic).", "",
             "| phase | seconds | share | calls |", "| --- | --- | --- | --- |"]
    for phase in PHASES:
        lines.append(f"| {phase} | {seconds.get(phase, 0.0):.3f} | {seconds.get(phase, 0.0) / wall:.1%} | "
                     f"{calls.get(phase, 0)} |")
    other = wall - sum(seconds.values())
    lines += [f"| the rest | {other:.3f} | {other / wall:.1%} | |",
              f"| branch | {wall:.3f} ({500 * wall / steps:.3f} per 500 steps) | | |", "",
              f"Arithmetic: {steps} steps × {1e3 * median['step']:.3f} ms (steady state, epoch-long chunks) + "
              f"{evaluations} evaluations × {1e3 * median['evaluation']:.1f} ms = {median['arithmetic']:.2f} s; "
              f"branch wall / arithmetic **{median['ratio']:.3f}** (each branch: {ratios}; "
              f"step samples {1e3 * min(step_samples):.3f}–{1e3 * max(step_samples):.3f} ms). The process's "
              f"first branch, which traces and compiles, took {first:.2f} s."]
    print("\n" + "\n".join(lines))
    if FLAGS.readme:
        write_block(FLAGS.readme, "branch_breakdown", lines)
    shutil.rmtree(root)


if __name__ == "__main__":
    app.run(main)
