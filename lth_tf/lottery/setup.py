"""An experiment made ready to run: its config, data, wrapped model and
trainer, theta_0, and where any branch may keep weights; and how it is run
(RunOptions), which changes no result."""
import dataclasses
import os
from typing import Any, Callable

import numpy as np
import tensorflow as tf
from absl import logging

from lth_tf import builders, networks, paths, pruning, rundir, tickets, training
from lth_tf import data as data_lib
from lth_tf import tfmot_adapter as adapter
from lth_tf.config import CONTROL_NAMES, ConfigError, ExperimentConfig


@dataclasses.dataclass
class Experiment:
    config: ExperimentConfig
    splits: data_lib.Splits
    trainer: training.Trainer
    output_dir: str
    theta_0: dict
    initial_masks: dict           # dense, or the masks of the ticket this run starts from
    allowed: dict                 # where any branch may keep weights: all but --removed_weights

    def path(self, *parts):
        return os.path.join(self.output_dir, *parts)


CHECKPOINT_SECONDS = 30.0  # epoch-end checkpoints once the last is this old


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to run an experiment, as opposed to what it is: none of this
    changes a result, so none of it is in config.json."""
    export: str = "last"            # rounds exported: all | last (and the dense one) | none
    export_format: str = "dense"    # forms of an exported round: dense, sparse, tflite, both or a list (export.forms)
    tensorboard: bool = True
    checkpoint_every: int = 0       # steps; checkpoints come at epoch ends too
    on_nan: str = "stop"            # stop | skip (a diverged control; the next branch goes on)
    # Epoch-end checkpoints once the last is this old. Several workers must all
    # make the same choice (saving can be a collective op): they use 0.
    epoch_checkpoint_seconds: float = CHECKPOINT_SECONDS
    should_stop: Callable[[], bool] = lambda: False
    progress: Any = None            # a console.ExperimentProgress (or one like it: analyze.retrain.BranchLines),
                                    # told of every step logged and branch done, and given lines to show (note)


class Failed(Exception):
    """A branch diverged and the experiment cannot, or may not, go on."""


def initial_state(config: ExperimentConfig, splits, seed: int) -> dict[str, np.ndarray]:
    """Weights of a freshly initialised (unwrapped) model under `seed`."""
    tf.keras.utils.set_random_seed(seed)
    return adapter.get_state(build_plain(config, splits))


def build_plain(config: ExperimentConfig, splits):
    return builders.build(config.model, splits.input_shape, splits.num_classes)


def control_seed(seed: int, round_index: int, branch: str) -> int:
    return int(np.random.SeedSequence([seed, round_index, CONTROL_NAMES.index(branch) + 1]).generate_state(1)[0])


def prepare(config: ExperimentConfig, splits, strategy, output_dir: str) -> Experiment:
    """Builds the wrapped model and its trainer, checks what needs them, then
    claims the run directory (a refused config leaves it untouched) and
    creates (or reloads) theta_0."""
    tf.keras.utils.set_random_seed(config.lottery.seed)
    with strategy.scope(), networks.precision(config.training.mixed_precision):  # the trained model only
        try:
            model = adapter.wrap(build_plain(config, splits), prune_biases=config.pruning.biases)
            trainer = training.make_trainer(model, config.training, strategy)
        except ValueError as error:  # a model that does not fit the data, an option the strategy lacks
            raise ConfigError(str(error)) from error
    if config.training.batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(f"--batch_size={config.training.batch_size} is not divisible by the "
                          f"{strategy.num_replicas_in_sync} replicas of the strategy")
    unknown = set(config.pruning.exclude) - set(adapter.prunable_layers(model))
    if config.model.output_layer and config.model.output_layer not in adapter.prunable_layers(model):
        raise ConfigError(f"--output_layer={config.model.output_layer} names no prunable layer; prunable: "
                          f"{', '.join(adapter.prunable_layers(model))}")
    if unknown:
        raise ConfigError(f"--prune_exclude names no prunable layer: {', '.join(sorted(unknown))}; "
                          f"prunable: {', '.join(adapter.prunable_layers(model))}")
    masks = allowed = pruning.dense_masks({name: m.shape for name, m in adapter.get_masks(model).items()})
    if config.lottery.removed:
        masks = allowed = available_masks(config.lottery.removed, masks)
    if config.lottery.ticket:
        ticket_weights, masks = load_ticket(config, model)
        make_theta_0 = lambda: ticket_weights  # noqa: E731
    else:
        make_theta_0 = lambda: initial_state(config, splits, config.lottery.seed)  # noqa: E731
    rundir.claim(output_dir, dataclasses.asdict(config))
    data_lib.save_held(config.data)  # lth_tf.find_tickets's arrays, kept in the run directory
    logging.info("training step: %s (--xla setting %s)%s", "XLA" if trainer.xla else "not compiled with XLA",
                 config.training.xla,
                 ", mixed_float16" if config.training.mixed_precision else "")
    theta_0 = load_or_save(paths.theta_0(output_dir), make_theta_0)
    return Experiment(config, splits, trainer, output_dir, theta_0, masks, allowed)


def reopen(config: ExperimentConfig, splits, trainer: training.Trainer, output_dir: str) -> Experiment:
    """The experiment of a run already on disk (its theta_0 read back), on a trainer built for its config:
    for the analyses that train a run's branches again."""
    dense = pruning.dense_masks({name: m.shape for name, m in adapter.get_masks(trainer.model).items()})
    allowed = available_masks(config.lottery.removed, dense) if config.lottery.removed else dense
    initial = tickets.read_ticket(config.lottery.ticket)[1] if config.lottery.ticket else allowed
    return Experiment(config, splits, trainer, output_dir, rundir.load_arrays(paths.theta_0(output_dir)), initial,
                      allowed)


def available_masks(removed_path: str, dense: pruning.Masks) -> pruning.Masks:
    """The dense masks less --removed_weights' (checked against the model's)."""
    removed = rundir.load_arrays(removed_path)
    if set(removed) != set(dense) or any(removed[k].shape != dense[k].shape for k in dense):
        raise ConfigError(f"--removed_weights={removed_path} holds masks for {sorted(removed)}, "
                          f"not for this model's {sorted(dense)} of its shapes")
    return pruning.without(dense, removed)


def load_ticket(config: ExperimentConfig, model) -> tuple[dict, pruning.Masks]:
    """(weights, masks) of --ticket, checked against the model they must fit."""
    path = config.lottery.ticket
    try:
        meta, masks, weights = tickets.read_ticket(path)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    tickets.check_model(meta, path, config.model)
    try:
        adapter.assign_state(model, weights)
        adapter.set_masks(model, masks)
    except ValueError as error:
        raise ConfigError(f"ticket {path} does not fit {config.model.name} on this dataset: {error}") from error
    return weights, masks


def drop_if_damaged(path, progress=None):
    """A damaged file that can be made again is reported (in the log, and on the console if given
    `progress`) and removed."""
    if os.path.exists(path):
        try:
            rundir.load_arrays(path) if path.endswith(".npz") else rundir.read_json(path)
        except rundir.CorruptFile as error:
            tell(progress, f"{error}; making it again")
            os.unlink(path)


def tell(progress, line: str):
    """A line worth the console's as well as the log's."""
    logging.warning("%s", line)
    if progress:
        progress.note(f"lth_tf: {line}")


def load_or_save(path, make):
    """The arrays at `path`, made and saved first if it is missing (or damaged)."""
    drop_if_damaged(path)
    if os.path.exists(path):
        return rundir.load_arrays(path)
    arrays = make()
    rundir.save_arrays(path, arrays)
    return arrays
