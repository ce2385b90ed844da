"""The IMP driver: dense round, then prune -> rewind -> retrain, with controls.

Each phase writes its output and skips itself when that output exists, which
is what makes a rerun on the same directory resume:

    round_00/ticket/             dense training from theta_0 (theta_k saved on the way)
    round_NN/masks.npz           ticket masks: round NN-1's ticket pruned by magnitude
    round_NN/<branch>/metrics.json, weights.npz   (and masks.npz for random_prune)
"""
import dataclasses
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from lth_tf import data as data_lib
from lth_tf import models, pruning, rundir, training
from lth_tf import tfmot_adapter as adapter

CONTROLS = ("reinit", "random_prune")


class ConfigError(Exception):
    """A configuration that does not make a consistent experiment."""


@dataclasses.dataclass(frozen=True)
class LotteryConfig:
    rounds: int = 4
    rewind_step: int = 0          # 0 = rewind to initialisation
    controls: tuple = ("reinit",)
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    data: data_lib.DataConfig
    model: models.ModelConfig
    training: training.TrainingConfig
    pruning: pruning.PruningConfig
    lottery: LotteryConfig


@dataclasses.dataclass
class Experiment:
    config: ExperimentConfig
    splits: data_lib.Splits
    trainer: training.Trainer
    output_dir: str
    theta_0: dict

    def path(self, *parts):
        return os.path.join(self.output_dir, *parts)


def initial_state(config: ExperimentConfig, splits, seed: int) -> dict[str, np.ndarray]:
    """Weights of a freshly initialised (unwrapped) model under `seed`."""
    tf.keras.utils.set_random_seed(seed)
    plain = models.build(config.model.name, splits.input_shape, splits.num_classes, config.model.width or None)
    return adapter.get_state(plain)


def control_seed(seed: int, round_index: int, branch: str) -> int:
    return int(np.random.SeedSequence([seed, round_index, CONTROLS.index(branch) + 1]).generate_state(1)[0])


def prepare(config: ExperimentConfig, splits, strategy, output_dir: str) -> Experiment:
    """Claims the run directory, builds the wrapped model and its trainer, and
    creates (or reloads) theta_0."""
    rundir.claim(output_dir, dataclasses.asdict(config))
    tf.keras.utils.set_random_seed(config.lottery.seed)
    with strategy.scope():
        try:
            model = adapter.wrap(models.build(config.model.name, splits.input_shape, splits.num_classes,
                                              config.model.width or None))
            trainer = training.make_trainer(model, config.training, strategy)
        except ValueError as error:  # a model that does not fit the data, an option the strategy lacks
            raise ConfigError(str(error)) from error
    unknown = set(config.pruning.exclude) - set(adapter.prunable_layers(model))
    if unknown:
        raise ConfigError(f"--prune_exclude names no prunable layer: {', '.join(sorted(unknown))}; "
                          f"prunable: {', '.join(adapter.prunable_layers(model))}")
    theta_0 = _load_or_save(os.path.join(output_dir, "init", "theta_0.npz"),
                            lambda: initial_state(config, splits, config.lottery.seed))
    return Experiment(config, splits, trainer, output_dir, theta_0)


def run(experiment: Experiment) -> list[dict]:
    """Runs (or resumes) every round and branch; returns the rows of results.csv."""
    rows = []
    for round_index in range(experiment.config.lottery.rounds + 1):
        masks = round_masks(experiment, round_index)
        for branch in ["ticket"] + (list(experiment.config.lottery.controls) if round_index else []):
            metrics_path = experiment.path(f"round_{round_index:02d}", branch, "metrics.json")
            if not os.path.exists(metrics_path):
                rundir.write_json(metrics_path, run_branch(experiment, round_index, branch, masks))
            rows.append(result_row(rundir.read_json(metrics_path)))
            rundir.write_results(experiment.output_dir, rows)
    return rows


def _load_or_save(path, make):
    if os.path.exists(path):
        return rundir.load_arrays(path)
    arrays = make()
    rundir.save_arrays(path, arrays)
    return arrays


def round_masks(experiment: Experiment, round_index: int) -> pruning.Masks:
    """Dense masks for round 0; otherwise the previous ticket, pruned by magnitude."""
    model = experiment.trainer.model
    if round_index == 0:
        return pruning.dense_masks({name: m.shape for name, m in adapter.get_masks(model).items()})
    path = experiment.path(f"round_{round_index:02d}", "masks.npz")
    if os.path.exists(path):
        return rundir.load_arrays(path)
    previous = f"round_{round_index - 1:02d}"
    previous_masks = round_masks(experiment, round_index - 1)
    trained = rundir.load_arrays(experiment.path(previous, "ticket", "weights.npz"))
    kernels = {name: trained[f"{name}/kernel"] for name in previous_masks}
    kinds = {name: adapter.layer_kind(model, name) for name in previous_masks}
    masks = pruning.prune(experiment.config.pruning, kernels, previous_masks, kinds)
    rundir.save_arrays(path, masks)
    return masks


def branch_start(experiment: Experiment, round_index: int, branch: str, masks):
    """(weights, masks, first step) a branch trains from.

    ticket: theta_k (theta_0 in round 0) under the round's masks; reinit: fresh
    weights from the same initialiser and another seed, same masks;
    random_prune: theta_k under random masks of the same per-layer density.
    Controls train over the same steps as the ticket.
    """
    config = experiment.config
    if round_index == 0:
        return experiment.theta_0, masks, 0
    state = rundir.load_arrays(experiment.path("init", "theta_k.npz"))
    seed = control_seed(config.lottery.seed, round_index, branch) if branch in CONTROLS else None
    if branch == "reinit":
        state = initial_state(config, experiment.splits, seed)
    if branch == "random_prune":
        path = experiment.path(f"round_{round_index:02d}", branch, "masks.npz")
        masks = _load_or_save(path, lambda: pruning.random_masks_like(masks, np.random.default_rng(seed)))
    return state, masks, config.lottery.rewind_step


def rewind(trainer: training.Trainer, state, masks, step: int):
    """Weights <- state x masks; optimizer state and LR schedule back to `step`."""
    with trainer.strategy.scope():
        adapter.assign_state(trainer.model, state)
        adapter.set_masks(trainer.model, masks)
        training.reset_optimizer(trainer, step)


def run_branch(experiment: Experiment, round_index: int, branch: str, masks) -> dict:
    """Rewinds, trains to the end of the schedule, saves the final weights."""
    trainer, splits = experiment.trainer, experiment.splits
    state, masks, start = branch_start(experiment, round_index, branch, masks)
    rewind(trainer, state, masks, start)
    density = pruning.density(masks)
    log = _progress_logger(round_index, branch, density)
    started, history = time.time(), []
    if round_index == 0:
        # The dense round passes the rewind point on its way: save theta_k there.
        rewind_step = experiment.config.lottery.rewind_step
        history += training.train(trainer, splits, 0, rewind_step, log) if rewind_step else []
        rundir.save_arrays(experiment.path("init", "theta_k.npz"), adapter.get_state(trainer.model))
        start = rewind_step
    history += training.train(trainer, splits, start, experiment.config.training.train_steps, log)
    seconds = time.time() - started
    branch_dir = experiment.path(f"round_{round_index:02d}", branch)
    rundir.save_arrays(os.path.join(branch_dir, "weights.npz"), adapter.get_state(trainer.model))
    best = training.early_stop(history)
    logging.info("round %d %-12s done: %.2f%% weights, test accuracy %.4f, early stop at step %d "
                 "(test accuracy %.4f), %.1fs", round_index, branch, 100 * density,
                 history[-1]["test_accuracy"], best["step"], best["test_accuracy"], seconds)
    return dict(round=round_index, branch=branch, density=density,
                layer_density=pruning.layer_densities(masks), final=history[-1], early_stop=best,
                history=history, seconds=seconds)


def _progress_logger(round_index, branch, density):
    def log(progress: training.Progress):
        logging.info("round %d %-12s step %6d/%d  loss %.4f  acc %.4f  density %6.2f%%  %.1fs",
                     round_index, branch, progress.step, progress.end_step, progress.train_loss,
                     progress.train_accuracy, 100 * density, progress.seconds)
    return log


def result_row(metrics: dict) -> dict:
    return dict(round=metrics["round"], branch=metrics["branch"],
                weights_remaining_pct=round(100 * metrics["density"], 4),
                test_accuracy=metrics["final"]["test_accuracy"],
                early_stop_step=metrics["early_stop"]["step"],
                early_stop_test_accuracy=metrics["early_stop"]["test_accuracy"],
                early_stop_val_loss=metrics["early_stop"].get("val_loss", ""),
                final_train_loss=metrics["final"]["train_loss"],
                seconds=round(metrics["seconds"], 2))
