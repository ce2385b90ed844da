"""What the analyses that train share: a run's experiment rebuilt (its config,
its data, a fresh wrapped model with its optimizer), and one resumable piece
of training through lth_tf's own loop.

A piece is a folder: checkpoints/ while it trains (the lottery driver's
checkpoints, so an interrupted analysis continues mid-piece), then
weights.npz and metrics.json, written last; a piece with its metrics.json is
read back, never trained again. TensorFlow loads on the first call here.
"""
import dataclasses
import os

import numpy as np

from lth_tf import config as config_lib
from lth_tf import paths, rundir
from lth_tf import runs as runs_lib
from lth_tf.console import duration

@dataclasses.dataclass
class Opened:
    config: config_lib.ExperimentConfig
    splits: object    # data.Splits
    trainer: object   # training.Trainer


def open_run(run: dict, strategy=None) -> Opened:
    """The run's config and data, and a trainer on a freshly built model of it."""
    return open_config(config_lib.from_dict(run["config"]), strategy)


def open_config(config: config_lib.ExperimentConfig, strategy=None) -> Opened:
    """An experiment's data, and a trainer on a freshly built model of it."""
    from lth_tf import builders, data, networks, training
    from lth_tf import tfmot_adapter as adapter
    splits = data.load(config.data)
    strategy = strategy or training.make_strategy("default")
    with strategy.scope(), networks.precision(config.training.mixed_precision):
        model = adapter.wrap(builders.build(config.model, splits.input_shape, splits.num_classes),
                             prune_biases=config.pruning.biases)
        trainer = training.make_trainer(model, config.training, strategy)
    return Opened(config, splits, trainer)


def branch_start(run: dict, opened: Opened, round_index: int, branch: str):
    """(weights, masks, first step) the run's branch trained from, as its driver made them."""
    from lth_tf import lottery
    experiment = lottery.reopen(opened.config, opened.splits, opened.trainer, run["dir"])
    return lottery.branch_start(experiment, round_index, branch, runs_lib.masks(run, round_index))


def with_data_order(trainer, seed: int):
    """The same trainer (model, optimizer, compiled steps) reading the training set in another order."""
    return dataclasses.replace(trainer, config=dataclasses.replace(trainer.config, seed=seed))


def data_seed(*parts: int) -> int:
    """A data-order seed for an analysis' own trainings, away from the seeds runs use (small integers)."""
    return int(np.random.SeedSequence([20260612, *parts]).generate_state(1)[0])


def train_piece(trainer, splits, state, masks, start: int, end: int, folder: str,
                should_stop=lambda: False, at_steps=(), on_step=lambda step: None) -> dict:
    """Trains state x masks from step `start` to `end` into folder/weights.npz (lottery.train_branch, as
    the driver trains a branch); returns its metrics (final and early-stop evaluation, history, seconds,
    trained=whether it trained now). on_step(step) hears of every step in at_steps that this call trains
    through."""
    from lth_tf import checkpoints, lottery, training
    done = os.path.join(folder, paths.METRICS)
    if os.path.exists(done):
        return dict(rundir.read_json(done), trained=False)
    hooks = training.Hooks(should_stop=should_stop, at_steps=tuple(at_steps), on_step=on_step)
    history, seconds, _ = lottery.train_branch(trainer, splits, state, masks, start, end, folder, hooks)
    metrics = dict(final=history[-1], early_stop=training.early_stop(history), history=history, seconds=seconds,
                   start=start, end=end, data_order_seed=trainer.config.seed)
    rundir.write_json(done, metrics)
    checkpoints.clear(os.path.join(folder, "checkpoints"))
    return dict(metrics, trained=True)


class Progress:
    """One line per piece of an analysis: what it was, its test accuracy, the count and the time left."""

    def __init__(self, name: str, total: int):
        self.name, self.total, self.done, self.spent, self.trained = name, total, 0, 0.0, 0

    def piece_done(self, what: str, metrics: dict):
        self.done += 1
        if metrics.get("trained", True):
            self.spent, self.trained = self.spent + metrics["seconds"], self.trained + 1
        left = self.spent / max(1, self.trained) * (self.total - self.done)
        how = f"{metrics['seconds']:.1f}s" if metrics.get("trained", True) else "done before"
        print(f"{self.name} [{self.done}/{self.total}] {what}: test accuracy "
              f"{metrics['final']['test_accuracy']:.4f} ({how}), about {duration(left)} left", flush=True)


class BranchLines:
    """The lottery driver's progress protocol (lottery.RunOptions.progress) as one line per branch."""

    def __init__(self, what: str):
        self.what, self.total, self.done = what, 0, 0

    def start(self, total_branches: int):
        self.total = total_branches

    def branch_start(self, round_index, branch, density, step, end_step):
        pass

    def step(self, progress):
        pass

    def note(self, line: str):
        print(f"{self.what}: {line}", flush=True)

    def branch_done(self, row: dict, trained: bool):
        self.done += 1
        accuracy = f"test accuracy {float(row['test_accuracy']):.4f}" if row["status"] == "ok" else row["status"]
        print(f"{self.what} [{self.done}/{self.total}] round {row['round']} {row['branch']}: "
              f"{float(row['weights_remaining_pct']):.2f}% weights, {accuracy}"
              f"{'' if trained else ' (done before)'}", flush=True)
