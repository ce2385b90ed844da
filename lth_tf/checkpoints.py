"""Mid-branch checkpoints, so an interrupted branch continues where it stopped.

A checkpoint is tf.train.Checkpoint files (the model's weights, masks and
tfmot step counters; the optimizer's moments and step) plus a JSON marker,
written last, with the step, the evaluation history and the seconds spent.
A checkpoint without its marker never counts, so one cut short by a kill is
ignored; one that cannot be read is reported and the one before it is used.
The data order needs no state: batch s is a function of (seed, s).

Checkpoints come every --checkpoint_every steps, before a requested stop, and
at epoch ends once the previous checkpoint is old enough (lottery.RunOptions).
"""
import glob
import os
import re
import shutil

import tensorflow as tf
from absl import logging

from lth_tf import rundir, training

KEEP = 2


def _checkpoint(trainer):
    return tf.train.Checkpoint(model=trainer.model, optimizer=trainer.optimizer, step_offset=trainer.step_offset)


def _markers(directory):
    found = [(int(re.search(r"ckpt-(\d+)\.json$", p).group(1)), p)
             for p in glob.glob(os.path.join(directory, "ckpt-*.json"))]
    return sorted(found, reverse=True)


def kept_steps(directory: str) -> list[int]:
    """The steps of the checkpoints kept in `directory`, newest first (a resume may fall back to any)."""
    return [step for step, _ in _markers(directory)]


def save(trainer, directory: str, step: int, history: list, seconds: float):
    prefix = os.path.join(directory, f"ckpt-{step}")
    with trainer.strategy.scope():
        _checkpoint(trainer).write(prefix)
    rundir.write_json(prefix + ".json", dict(step=step, history=history, seconds=seconds))
    for old_step, marker in _markers(directory)[KEEP:]:
        os.unlink(marker)
        for path in glob.glob(os.path.join(directory, f"ckpt-{old_step}.*")):
            os.unlink(path)


def restore_latest(trainer, directory: str) -> dict | None:
    """Restores the newest checkpoint that every worker has and can read;
    returns its marker (step, history, seconds), or None when there is none.

    Every worker takes part in every agreement round, also one whose copy turns
    out unreadable (it sets that copy aside, and all agree again): a worker
    that went back alone would wait in a collective the others never join."""
    while True:
        steps = [step for step, _ in _markers(directory)] + [-1]  # -1: start afresh
        step = _common_step(trainer.strategy, steps)
        if step < 0:
            return None
        state = _read(trainer, directory, step)
        if training.all_workers_mean(trainer.strategy, float(state is not None)) == 1:
            return state


def _read(trainer, directory: str, step: int) -> dict | None:
    """The checkpoint of `step` restored into the trainer, or None (its marker
    set aside, so it is not tried again) when it cannot be read."""
    marker = os.path.join(directory, f"ckpt-{step}.json")
    try:
        state = rundir.read_json(marker)
        with trainer.strategy.scope():
            _checkpoint(trainer).read(marker[: -len(".json")]).assert_existing_objects_matched()
        if training.global_step(trainer) != step or state["step"] != step:
            raise ValueError(f"it holds step {training.global_step(trainer)}")
        return state
    except Exception as error:  # noqa: BLE001  a damaged file fails in many ways (IndexError, DataLoss, ...)
        logging.warning("checkpoint %s is unreadable (%s); trying an older one", marker,
                        str(error).splitlines()[0][:200])
        os.unlink(marker)
        return None


def _common_step(strategy, steps: list[int]) -> int:
    """The newest step in `steps` (newest first) that all workers have: each
    steps down past the mean of the workers' choices until they all agree.
    A worker killed a moment before another may lack the newest checkpoint."""
    index = 0
    while True:
        mean = training.all_workers_mean(strategy, steps[index])
        if training.all_workers_mean(strategy, float(steps[index] != mean)) == 0:
            return steps[index]
        while steps[index] > mean:
            index += 1


def clear(directory: str):
    shutil.rmtree(directory, ignore_errors=True)
