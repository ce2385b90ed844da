"""The ways of finding a round's masks, behind one interface (MaskFinder);
and round_masks, which makes a round's masks once and saves them.

A finder says how it makes round r's masks, how many training steps those
masks cost before the round's own retraining, which branches it adds beside
the ticket and the controls, and whether it watches the dense round. The
--prune_method names and their finders are registered, without TensorFlow,
in lth_tf.config.PRUNE_METHODS: adding a way of finding masks is a MaskFinder
subclass (here or in a module of its own) and a line there.
"""
import importlib

import numpy as np
from absl import logging

from lth_tf import early_bird, methods, paths, pipeline, pruning, rundir, training
from lth_tf import data as data_lib
from lth_tf import tfmot_adapter as adapter
from lth_tf.config import PRUNE_METHODS, ExperimentConfig
from lth_tf.lottery.setup import Experiment, Failed, build_plain, control_seed, load_or_save


class MaskFinder:
    """Iterative magnitude pruning (IMP): round r prunes round r-1's trained
    ticket by magnitude, so its masks cost the dense training and every
    earlier round's retraining."""

    def __init__(self, name: str = "imp"):
        self.name = name

    def masks(self, experiment: Experiment, round_index: int) -> pruning.Masks:
        return prune_previous(experiment, round_index)

    def steps_before(self, experiment: Experiment, round_index: int) -> int:
        """Training steps spent on round r's masks before its own retraining (scoring passes count as steps)."""
        training_config = experiment.config.training
        return training_config.train_steps + (round_index - 1) * retrain_steps(experiment.config)

    def extra_branches(self, round_index: int) -> list[str]:
        """Branches a pruned round trains beside the ticket and the controls."""
        return []

    def watcher(self, experiment: Experiment):
        """What watches the dense round's epochs (observe, checkpointed), or None."""
        return None

    def dense_round_done(self, experiment: Experiment):
        """Called once the dense round's ticket is finished (also when read back)."""


class OneShot(MaskFinder):
    """--oneshot: the dense round's trained weights pruned by magnitude straight to the round's target."""

    def masks(self, experiment, round_index):
        return magnitude_masks(experiment, dense_weights(experiment), target(experiment, round_index))

    def steps_before(self, experiment, round_index):
        return experiment.config.training.train_steps


class AtInit(MaskFinder):
    """A method of lth_tf.methods.AT_INIT: its scores of theta_k pruned to the round's target; the
    inverted branch (the lowest scores at the same per-layer counts) where the method gets sanity checks."""

    def __init__(self, name: str):
        super().__init__(name)
        self.method = methods.AT_INIT[name]

    def masks(self, experiment, round_index):
        return masks_at_init(experiment, round_index, target(experiment, round_index))

    def steps_before(self, experiment, round_index):
        return experiment.config.lottery.rewind_step + methods.scoring_passes(experiment.config.pruning)

    def extra_branches(self, round_index):
        return ["inverted"] if PRUNE_METHODS[self.name].sanity_checks else []


class EarlyBird(MaskFinder):
    """Early-bird tickets (You et al., ICLR 2020): masks drawn while the dense round trains, once
    they stop changing; the dense round's final weights by magnitude where none was drawn."""

    def masks(self, experiment, round_index):
        goal = target(experiment, round_index)
        drawn = early_bird.drawn_masks(paths.early_bird(experiment.output_dir), round_index - 1, goal)
        if drawn is not None:
            return drawn
        logging.warning("round %d: no early-bird ticket was drawn at %.4g of the weights (epsilon %g); the dense "
                        "round's final weights are pruned instead", round_index, goal,
                        experiment.config.pruning.early_bird_epsilon)
        return magnitude_masks(experiment, dense_weights(experiment), goal)

    def steps_before(self, experiment, round_index):
        return max(drawn_step(experiment, round_index), experiment.config.lottery.rewind_step)

    def watcher(self, experiment):
        config = experiment.config.pruning
        changeable = {key: allowed * (pruning.layer_of(key) not in config.exclude)
                      for key, allowed in experiment.allowed.items()}
        return early_bird.Detector(paths.early_bird(experiment.output_dir), config.target_density,
                                   config.early_bird_epsilon,
                                   lambda state, goal: magnitude_masks(experiment, state, goal), changeable)

    def dense_round_done(self, experiment):
        early_bird.clear_epochs(paths.early_bird(experiment.output_dir))  # the drawn masks stay


def finder(config: ExperimentConfig) -> MaskFinder:
    """The run's MaskFinder: its --prune_method's in config.PRUNE_METHODS (--oneshot: OneShot)."""
    if config.pruning.oneshot:
        return OneShot("oneshot")
    module, _, name = PRUNE_METHODS[config.pruning.method].finder.partition(":")
    return getattr(importlib.import_module(module), name)(config.pruning.method)


def method_label(config: ExperimentConfig) -> str:
    """imp, oneshot, snip, ..., with +lr_rewind or +finetune for another retraining."""
    return finder(config).name + ("" if config.lottery.retrain == "rewind" else f"+{config.lottery.retrain}")


def retrain_steps(config: ExperimentConfig) -> int:
    """A pruned round's own training: from the rewind step to the end."""
    return config.training.train_steps - config.lottery.rewind_step


def target(experiment: Experiment, round_index: int) -> float:
    """Round r's --target_density (the methods that prune to targets)."""
    return experiment.config.pruning.target_density[round_index - 1]


def round_masks(experiment: Experiment, round_index: int) -> pruning.Masks:
    """Round 0 starts dense (or from --ticket's masks); round r's masks are
    made once by the run's finder and saved."""
    if round_index == 0:
        return experiment.initial_masks

    def make():
        masks = finder(experiment.config).masks(experiment, round_index)
        for layer in pruning.collapsed_layers(masks):
            logging.warning("round %d: pruning removed every weight of layer %s (layer collapse): no signal passes "
                            "through it, and the network can no longer learn", round_index, layer)
        return masks
    return load_or_save(paths.round_masks(experiment.output_dir, round_index), make)


def check_workers_agree(experiment: Experiment, round_index: int, masks: pruning.Masks):
    """Failed on every worker unless all hold the same masks (a scoring method's near-ties can split
    workers that score on their own without --deterministic). Every worker calls it once per round."""
    strategy, mine = experiment.trainer.strategy, pruning.checksum(masks)
    differ = abs(training.all_workers_mean(strategy, mine) - mine) > 1e-9 * max(1.0, abs(mine))
    if training.all_workers_mean(strategy, float(differ)) > 0:
        raise Failed(f"round {round_index}: the workers made different masks ({experiment.config.pruning.method} "
                     "scores that tie to within rounding); rerun with --deterministic")


def dense_weights(experiment: Experiment) -> dict:
    """The dense round's trained weights (at --prune_from_step if set)."""
    return rundir.load_arrays(paths.pruned_weights(experiment.output_dir, 0,
                                                   experiment.config.lottery.prune_from_step))


def prune_previous(experiment: Experiment, round_index: int) -> pruning.Masks:
    """Round r-1's trained ticket (or its weights at --prune_from_step) pruned by magnitude."""
    previous_masks = round_masks(experiment, round_index - 1)
    trained = rundir.load_arrays(paths.pruned_weights(experiment.output_dir, round_index - 1,
                                                      experiment.config.lottery.prune_from_step))
    masked_weights = {key: trained[pruning.variable_of(key)] for key in previous_masks}
    layers = pruning.by_layer(previous_masks)
    kinds = {layer: kind for layer, kind in layer_kinds(experiment).items() if layer in layers}
    floors = experiment.config.pruning.floor and pruning.layer_counts(
        rundir.load_arrays(experiment.config.pruning.floor))
    return pruning.prune(experiment.config.pruning, masked_weights, previous_masks, kinds, round_index,
                         floors or None)


def masks_at_init(experiment: Experiment, round_index: int, goal: float) -> pruning.Masks:
    """The method's masks of theta_k at `goal`; round_NN/inverted/masks.npz,
    the lowest first-pass scores at the same per-layer counts, is saved first."""
    config = experiment.config
    theta_k = rundir.load_arrays(paths.theta_k(experiment.output_dir))
    batches = scoring_batches(experiment) if methods.AT_INIT[config.pruning.method].uses_data else []
    scoring = methods.Scoring(lambda: build_plain(config, experiment.splits), batches, config.pruning,
                              control_seed(config.lottery.seed, round_index, "random_prune"))
    masks, scores = methods.prune_at_init(config.pruning.method, theta_k, experiment.initial_masks, scoring, goal,
                                          layer_rates(experiment, experiment.initial_masks))
    if "inverted" in finder(config).extra_branches(round_index):
        rundir.save_arrays(paths.branch_masks(experiment.output_dir, round_index, "inverted"),
                           pruning.keep_lowest_like(scores, experiment.initial_masks, masks))
    return masks


def scoring_batches(experiment: Experiment) -> list:
    """The first --score_batches batches of the run's data order."""
    config = experiment.config
    dataset = pipeline.train_batches(experiment.splits, config.training.batch_size, config.training.seed, 0)
    return list(dataset.take(config.pruning.score_batches).as_numpy_iterator())


def drawn_step(experiment: Experiment, round_index: int) -> int:
    """The dense round's step where round `round_index`'s early-bird ticket was
    drawn (its whole length when it never was: the final weights' masks are used)."""
    state = early_bird.read_state(paths.early_bird(experiment.output_dir)) or {}
    epoch = state.get(str(target(experiment, round_index)), {}).get("drawn_epoch")
    if epoch is None:
        return experiment.config.training.train_steps
    return epoch * data_lib.steps_per_epoch(experiment.splits, experiment.config.training.batch_size)


def layer_rates(experiment: Experiment, masks) -> dict[str, float]:
    """Each layer's per-round rate under layerwise pruning (by its kind; 0 for an excluded layer)."""
    kinds = layer_kinds(experiment)
    return pruning.layer_rates(experiment.config.pruning, {layer: kinds[layer] for layer in pruning.by_layer(masks)})


def layer_kinds(experiment: Experiment) -> dict[str, str]:
    """{prunable layer: 'fc', 'conv' or 'output'}, by type and place (tfmot_adapter.layer_kinds)."""
    return adapter.layer_kinds(experiment.trainer.model, experiment.config.model.output_layer)


def magnitude_masks(experiment: Experiment, weights: dict, goal: float) -> pruning.Masks:
    """The largest of `weights` among the allowed ones at `goal` density (one-shot, early-bird)."""
    allowed, config = experiment.allowed, experiment.config.pruning
    scores = {key: np.abs(weights[pruning.variable_of(key)]) for key in allowed}
    return pruning.keep_highest(scores, allowed, goal, config.strategy, layer_rates(experiment, allowed),
                                config.exclude)
