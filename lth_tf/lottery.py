"""The IMP driver: dense round, then prune -> rewind -> retrain, with controls.

Each phase writes its output and skips itself when that output exists, which
is what makes a rerun on the same directory resume:

    round_00/ticket/             dense training from theta_0 (theta_k saved on the way)
    round_NN/masks.npz           ticket masks: round NN-1's ticket pruned by magnitude
    round_NN/<branch>/metrics.json, weights.npz   (and masks.npz for a control with masks of its own)
    round_NN/ticket/prune_from.npz                 the weights the next round prunes, under --prune_from_step

Under another --prune_method than iterative imp (or with --oneshot) round NN
has the NNth --target_density, and its masks come from the method instead of
round NN-1's ticket (see next_masks); at-init methods add an `inverted`
branch beside their sanity-check controls.
"""
import dataclasses
import os
import time
from typing import Any, Callable

import numpy as np
import tensorflow as tf
from absl import logging

from lth_tf import data as data_lib
from lth_tf import (builders, checkpoints, controls, early_bird, export, methods, networks, pipeline, pruning,
                    rundir, summaries, tickets, training)
from lth_tf import tfmot_adapter as adapter
from lth_tf.config import CONTROLS, ConfigError, ExperimentConfig


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


def initial_state(config: ExperimentConfig, splits, seed: int) -> dict[str, np.ndarray]:
    """Weights of a freshly initialised (unwrapped) model under `seed`."""
    tf.keras.utils.set_random_seed(seed)
    return adapter.get_state(build_plain(config, splits))


def build_plain(config: ExperimentConfig, splits):
    return builders.build(config.model, splits.input_shape, splits.num_classes)


def control_seed(seed: int, round_index: int, branch: str) -> int:
    return int(np.random.SeedSequence([seed, round_index, CONTROLS.index(branch) + 1]).generate_state(1)[0])


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
    theta_0 = _load_or_save(os.path.join(output_dir, "init", "theta_0.npz"), make_theta_0)
    return Experiment(config, splits, trainer, output_dir, theta_0, masks, allowed)


def available_masks(removed_path: str, dense: pruning.Masks) -> pruning.Masks:
    """The dense masks less --removed_weights' (checked against the model's)."""
    removed = rundir.load_arrays(removed_path)
    if set(removed) != set(dense) or any(removed[k].shape != dense[k].shape for k in dense):
        raise ConfigError(f"--removed_weights={removed_path} holds masks for {sorted(removed)}, "
                          f"not for this model's {sorted(dense)} of its shapes")
    return {key: (dense[key] * (removed[key] == 0)).astype(np.float32) for key in dense}


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


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to run an experiment, as opposed to what it is: none of this
    changes a result, so none of it is in config.json."""
    export: str = "last"            # rounds exported: all | last (and the dense one) | none
    export_format: str = "dense"    # SavedModels of an exported round: dense | sparse | both (export.FORMATS)
    tensorboard: bool = True
    checkpoint_every: int = 0       # steps; checkpoints come at epoch ends too
    on_nan: str = "stop"            # stop | skip (a diverged control; the next branch goes on)
    # Epoch-end checkpoints once the last is this old. Several workers must all
    # make the same choice (saving can be a collective op): they use 0.
    epoch_checkpoint_seconds: float = 30.0
    should_stop: Callable[[], bool] = lambda: False
    progress: Any = None            # a console.ExperimentProgress (or one like it: analyze.retrain.BranchLines),
                                    # told of every step logged and branch done, and given lines to show (note)


class Failed(Exception):
    """A branch diverged and the experiment cannot, or may not, go on."""


def run(experiment: Experiment, options: RunOptions = RunOptions()) -> list[dict]:
    """Runs (or resumes) every round and branch; returns the rows of results.csv."""
    rounds = experiment.config.lottery.rounds
    exported = {"all": range(rounds + 1), "last": {0, rounds}, "none": ()}[options.export]
    # Controls start at round 1 unless round 0 already trains a ticket's masks (--ticket).
    dense_start = all(np.array_equal(experiment.initial_masks[k], experiment.allowed[k]) for k in experiment.allowed)
    if options.progress:
        options.progress.start(sum(len(round_branches(experiment, r, dense_start)) for r in range(rounds + 1)))
    if not rundir.results_readable(experiment.output_dir):
        _tell(options.progress, f"{experiment.path('results.csv')} is damaged; rebuilding it from the rounds' "
                                "metrics.json")
    rows = []
    for round_index in range(rounds + 1):
        masks = round_masks(experiment, round_index)
        check_workers_agree(experiment, round_index, masks)
        for branch in round_branches(experiment, round_index, dense_start):
            metrics, failed, trained = finished_or_trained(experiment, round_index, branch, masks, options)
            rows.append(result_row(metrics, failed) | cost_columns(experiment, round_index))
            if options.progress:
                options.progress.branch_done(rows[-1], trained)
            rundir.write_results(experiment.output_dir, rows)
            if options.tensorboard and (trained or not os.path.isdir(summaries.lottery_run(experiment.output_dir))):
                summaries.write_lottery_run(experiment.output_dir, rows, dataclasses.asdict(experiment.config))
            if failed and (branch == "ticket" or options.on_nan == "stop"):
                why = "the next round has no trained ticket to prune" if branch == "ticket" else "--on_nan=stop"
                raise Failed(f"round {round_index} {branch}: {metrics['error']} ({why}); "
                             f"finished rounds are in {experiment.output_dir}")
        if round_index in exported:
            export_round(experiment, round_index, masks, options.export_format)
    return rows


def round_branches(experiment: Experiment, round_index: int, dense_start: bool) -> list[str]:
    """The ticket, then the controls (not in a dense round 0), then an at-init
    method's inverted mask (the sanity checks of Frankle et al., ICLR 2021)."""
    if round_index == 0 and dense_start:
        return ["ticket"]
    method = methods.AT_INIT.get(experiment.config.pruning.method)
    inverted = ["inverted"] if method and method.sanity_checks and round_index > 0 else []
    return ["ticket", *experiment.config.lottery.controls, *inverted]


def method_label(config: ExperimentConfig) -> str:
    """imp, oneshot, snip, ..., with +lr_rewind or +finetune for another retraining."""
    name = "oneshot" if config.pruning.oneshot else config.pruning.method
    return name + ("" if config.lottery.retrain == "rewind" else f"+{config.lottery.retrain}")


def cost_columns(experiment: Experiment, round_index: int) -> dict:
    """results.csv's method, target_density and training_steps_spent: every
    step of every training that produced this round's masks, plus its own
    retraining; scoring passes count as steps (methods.scoring_passes)."""
    config = experiment.config
    steps, k = config.training.train_steps, config.lottery.rewind_step
    retrain = steps - k
    target = config.pruning.target_density[round_index - 1] if round_index and config.pruning.target_density else ""
    if round_index == 0:
        spent = steps
    elif config.pruning.method in methods.AT_INIT:
        spent = k + methods.scoring_passes(config.pruning) + retrain
    elif config.pruning.method == "early_bird":
        spent = max(early_bird_step(experiment, round_index), k) + retrain
    elif config.pruning.oneshot:
        spent = steps + retrain
    else:
        spent = steps + round_index * retrain
    return dict(method=method_label(config), target_density=target, training_steps_spent=spent)


def early_bird_folder(experiment: Experiment) -> str:
    return experiment.path("round_00", "ticket", "early_bird")


def early_bird_step(experiment: Experiment, round_index: int) -> int:
    """The dense round's step where round `round_index`'s early-bird ticket was
    drawn (its whole length when it never was: the final weights' masks are used)."""
    state = early_bird.read_state(early_bird_folder(experiment)) or {}
    target = experiment.config.pruning.target_density[round_index - 1]
    epoch = state.get(str(target), {}).get("drawn_epoch")
    if epoch is None:
        return experiment.config.training.train_steps
    return epoch * data_lib.steps_per_epoch(experiment.splits, experiment.config.training.batch_size)


def finished_or_trained(experiment, round_index, branch, masks, options) -> tuple[dict, bool, bool]:
    """(metrics, diverged, trained now): a branch's record, training it first
    unless metrics.json (or failed.json, for a diverged one) exists."""
    folder = experiment.path(f"round_{round_index:02d}", branch)
    done, failed = os.path.join(folder, "metrics.json"), os.path.join(folder, "failed.json")
    for path in (done, failed):
        _drop_if_damaged(path, options.progress)
    trained = not (os.path.exists(done) or os.path.exists(failed))
    if 0 < training.all_workers_mean(experiment.trainer.strategy, float(trained)) < 1:
        # Another worker was killed before it finished this branch: all train it again.
        logging.warning("round %d %s: not finished on every worker; training it again", round_index, branch)
        trained = True
    if trained:
        if options.should_stop():
            raise training.Interrupted(f"before round {round_index} {branch}")
        try:
            rundir.write_json(done, run_branch(experiment, round_index, branch, masks, options))
        except training.Diverged as error:
            rundir.write_json(failed, dict(round=round_index, branch=branch, error=str(error),
                                           density=pruning.density(masks)))
        except training.Interrupted as stop:
            raise training.Interrupted(f"in round {round_index} {branch} {stop}") from None
    # A finished branch keeps no checkpoints (nor an early-bird detector's epoch masks), also when a kill
    # came between its metrics and this.
    checkpoints.clear(os.path.join(folder, "checkpoints"))
    if (round_index, branch) == (0, "ticket") and experiment.config.pruning.method == "early_bird":
        early_bird.clear_epochs(early_bird_folder(experiment))
    diverged = os.path.exists(failed)
    return rundir.read_json(failed if diverged else done), diverged, trained


def _drop_if_damaged(path, progress=None):
    """A damaged file that can be made again is reported (in the log, and on the console if given
    `progress`) and removed."""
    if os.path.exists(path):
        try:
            rundir.load_arrays(path) if path.endswith(".npz") else rundir.read_json(path)
        except rundir.CorruptFile as error:
            _tell(progress, f"{error}; making it again")
            os.unlink(path)


def _tell(progress, line: str):
    """A line worth the console's as well as the log's."""
    logging.warning("%s", line)
    if progress:
        progress.note(f"lth_tf: {line}")


def _load_or_save(path, make):
    _drop_if_damaged(path)
    if os.path.exists(path):
        return rundir.load_arrays(path)
    arrays = make()
    rundir.save_arrays(path, arrays)
    return arrays


def round_masks(experiment: Experiment, round_index: int) -> pruning.Masks:
    """Round 0 starts dense (or from --ticket's masks); round r's masks are
    made once by next_masks and saved."""
    if round_index == 0:
        return experiment.initial_masks
    def make():
        masks = next_masks(experiment, round_index)
        for layer in pruning.collapsed_layers(masks):
            logging.warning("round %d: pruning removed every weight of layer %s (layer collapse): no signal passes "
                            "through it, and the network can no longer learn", round_index, layer)
        return masks
    return _load_or_save(experiment.path(f"round_{round_index:02d}", "masks.npz"), make)


def check_workers_agree(experiment: Experiment, round_index: int, masks: pruning.Masks):
    """Failed on every worker unless all hold the same masks (a scoring method's near-ties can split
    workers that score on their own without --deterministic). Every worker calls it once per round."""
    strategy, mine = experiment.trainer.strategy, pruning.checksum(masks)
    differ = abs(training.all_workers_mean(strategy, mine) - mine) > 1e-9 * max(1.0, abs(mine))
    if training.all_workers_mean(strategy, float(differ)) > 0:
        raise Failed(f"round {round_index}: the workers made different masks ({experiment.config.pruning.method} "
                     "scores that tie to within rounding); rerun with --deterministic")


def next_masks(experiment: Experiment, round_index: int) -> pruning.Masks:
    """imp: round r-1's trained ticket pruned by magnitude. An at-init method:
    its scores of theta_k pruned to the round's --target_density (the inverted
    mask saved beside). --oneshot, and an early-bird ticket never drawn: the
    dense round's trained weights by magnitude (a drawn early-bird ticket's
    masks were saved while the dense round trained)."""
    config = experiment.config.pruning
    if config.method == "imp" and not config.oneshot:
        return prune_previous(experiment, round_index)
    target = config.target_density[round_index - 1]
    if config.method in methods.AT_INIT:
        return masks_at_init(experiment, round_index, target)
    if config.method == "early_bird":
        drawn = early_bird.drawn_masks(early_bird_folder(experiment), round_index - 1, target)
        if drawn is not None:
            return drawn
        logging.warning("round %d: no early-bird ticket was drawn at %.4g of the weights (epsilon %g); the dense "
                        "round's final weights are pruned instead", round_index, target, config.early_bird_epsilon)
    dense = rundir.load_arrays(experiment.path(
        "round_00", "ticket", "prune_from.npz" if experiment.config.lottery.prune_from_step else "weights.npz"))
    return magnitude_masks(experiment, dense, target)


def layer_rates(experiment: Experiment, masks) -> dict[str, float]:
    """Each layer's per-round rate under layerwise pruning (by its kind; 0 for an excluded layer)."""
    kinds = layer_kinds(experiment)
    return pruning.layer_rates(experiment.config.pruning, {layer: kinds[layer] for layer in pruning.by_layer(masks)})


def layer_kinds(experiment: Experiment) -> dict[str, str]:
    """{prunable layer: 'fc', 'conv' or 'output'}, by type and place (tfmot_adapter.layer_kinds)."""
    return adapter.layer_kinds(experiment.trainer.model, experiment.config.model.output_layer)


def magnitude_masks(experiment: Experiment, weights: dict, target: float) -> pruning.Masks:
    """The largest of `weights` among the allowed ones at `target` density (one-shot, early-bird)."""
    allowed, config = experiment.allowed, experiment.config.pruning
    scores = {key: np.abs(weights[pruning.variable_of(key)]) for key in allowed}
    return pruning.keep_highest(scores, allowed, target, config.strategy, layer_rates(experiment, allowed),
                                config.exclude)


def masks_at_init(experiment: Experiment, round_index: int, target: float) -> pruning.Masks:
    """The method's masks of theta_k at `target`; round_NN/inverted/masks.npz,
    the lowest first-pass scores at the same per-layer counts, is saved first."""
    config = experiment.config
    theta_k = rundir.load_arrays(experiment.path("init", "theta_k.npz"))
    batches = scoring_batches(experiment) if methods.AT_INIT[config.pruning.method].uses_data else []
    scoring = methods.Scoring(lambda: build_plain(config, experiment.splits), batches, config.pruning,
                              control_seed(config.lottery.seed, round_index, "random_prune"))
    masks, scores = methods.prune_at_init(config.pruning.method, theta_k, experiment.initial_masks, scoring, target,
                                          layer_rates(experiment, experiment.initial_masks))
    if "inverted" in round_branches(experiment, round_index, True):
        rundir.save_arrays(experiment.path(f"round_{round_index:02d}", "inverted", "masks.npz"),
                           pruning.keep_lowest_like(scores, experiment.initial_masks, masks))
    return masks


def scoring_batches(experiment: Experiment) -> list:
    """The first --score_batches batches of the run's data order."""
    config = experiment.config
    dataset = pipeline.train_batches(experiment.splits, config.training.batch_size, config.training.seed, 0)
    return list(dataset.take(config.pruning.score_batches).as_numpy_iterator())


def prune_previous(experiment: Experiment, round_index: int) -> pruning.Masks:
    """Round r-1's trained ticket (or its weights at --prune_from_step) pruned by magnitude."""
    previous = f"round_{round_index - 1:02d}"
    previous_masks = round_masks(experiment, round_index - 1)
    trained = rundir.load_arrays(experiment.path(
        previous, "ticket", "prune_from.npz" if experiment.config.lottery.prune_from_step else "weights.npz"))
    masked_weights = {key: trained[pruning.variable_of(key)] for key in previous_masks}
    layers = pruning.by_layer(previous_masks)
    kinds = {layer: kind for layer, kind in layer_kinds(experiment).items() if layer in layers}
    floors = experiment.config.pruning.floor and pruning.layer_counts(
        rundir.load_arrays(experiment.config.pruning.floor))
    return pruning.prune(experiment.config.pruning, masked_weights, previous_masks, kinds, round_index,
                         floors or None)


def branch_start(experiment: Experiment, round_index: int, branch: str, masks):
    """(weights, masks, first step) a branch trains from.

    ticket: theta_k (theta_0 in round 0) under the round's masks (under
    --retrain=lr_rewind or finetune: the weights the pruned ones were trained
    to); an at-init method's inverted branch: theta_k under its inverted masks; a control:
    what its function in the controls registry makes of theta_k and the masks,
    with its own seed (a control's masks are saved in its folder). Controls
    train over the same steps as the ticket. In a run started from --ticket,
    theta_k is zero outside the ticket's masks (the ticket file holds it
    masked): those positions are drawn from the initialiser with the control's
    seed, so no weight a control places there starts at exactly 0.
    """
    config = experiment.config
    if round_index == 0:
        state, start = experiment.theta_0, 0
    else:
        state, start = rundir.load_arrays(experiment.path("init", "theta_k.npz")), config.lottery.rewind_step
    if branch == "ticket" and round_index > 0 and config.lottery.retrain != "rewind":
        # Renda et al. (2020): keep the trained weights (one-shot: the dense round's)
        previous = 0 if config.pruning.oneshot else round_index - 1
        return rundir.load_arrays(experiment.path(f"round_{previous:02d}", "ticket", "weights.npz")), masks, start
    if branch == "ticket":
        return state, masks, start
    if branch == "inverted":
        path = experiment.path(f"round_{round_index:02d}", "inverted", "masks.npz")
        _drop_if_damaged(path)
        if not os.path.exists(path):  # saved with the round's masks; scoring again makes the same ones
            masks_at_init(experiment, round_index, config.pruning.target_density[round_index - 1])
        return state, rundir.load_arrays(path), start
    seed = control_seed(config.lottery.seed, round_index, branch)
    def fresh(seed):
        return initial_state(config, experiment.splits, seed)
    if config.lottery.ticket:
        filler = fresh(seed)
        state = dict(state, **{pruning.variable_of(key): np.where(ticket_mask > 0, state[pruning.variable_of(key)],
                                                                  filler[pruning.variable_of(key)])
                               for key, ticket_mask in experiment.initial_masks.items()})
    state, control_masks = controls.CONTROLS[branch](state, masks, seed, fresh, experiment.allowed)
    if control_masks is not masks:  # saved for the analyses (and read back, as a resume would)
        control_masks = _load_or_save(experiment.path(f"round_{round_index:02d}", branch, "masks.npz"),
                                      lambda: control_masks)
    return state, control_masks, start


def run_branch(experiment: Experiment, round_index: int, branch: str, masks, options: RunOptions) -> dict:
    """Rewinds (or resumes from a checkpoint), trains to the end of the
    schedule, saves the final weights; returns the branch's metrics."""
    trainer, splits, output_dir = experiment.trainer, experiment.splits, experiment.output_dir
    folder = experiment.path(f"round_{round_index:02d}", branch)
    checkpoint_dir = os.path.join(folder, "checkpoints")
    state, masks, start = branch_start(experiment, round_index, branch, masks)
    finetune = branch == "ticket" and round_index > 0 and experiment.config.lottery.retrain == "finetune"
    hold = experiment.config.training.train_steps - 1 if finetune else -1  # the final learning rate
    training.rewind(trainer, state, masks, start, hold)
    resumed = checkpoints.restore_latest(trainer, checkpoint_dir)
    if not resumed and os.path.isdir(checkpoint_dir):
        training.rewind(trainer, state, masks, start, hold)  # a checkpoint set aside as unreadable may be half read
    history, spent = (resumed["history"], resumed["seconds"]) if resumed else ([], 0.0)
    density = pruning.density(masks)
    writer = summaries.branch_writer(output_dir, round_index, branch) if options.tensorboard else None
    if resumed:
        _tell(options.progress, f"round {round_index} {branch}: resuming from the checkpoint at step {resumed['step']}")
    elif writer:
        summaries.log_weights(writer, start, "start", state, masks)
    step = resumed["step"] if resumed else start
    end = experiment.config.training.train_steps
    if options.progress:
        options.progress.branch_start(round_index, branch, density, step, end)
    started = last_checkpoint = time.time()

    detector = early_bird_detector(experiment) if (round_index, branch) == (0, "ticket") else None

    def on_checkpoint(step, records, due):
        # Epochs of small models take well under a second: checkpointing each would
        # cost more than it saves, so epoch ends count only once the last is old.
        nonlocal last_checkpoint
        if due or time.time() - last_checkpoint >= options.epoch_checkpoint_seconds:
            checkpoints.save(trainer, checkpoint_dir, step, records, spent + time.time() - started)
            last_checkpoint = time.time()
            if detector:  # the oldest kept checkpoint: a resume that cannot read the newest falls back to it
                detector.checkpointed(min(checkpoints.kept_steps(checkpoint_dir))
                                      // data_lib.steps_per_epoch(splits, experiment.config.training.batch_size))

    hooks = _branch_hooks(round_index, branch, density, writer, options, on_checkpoint)
    if detector:
        hooks.on_epoch = lambda epoch: detector.observe(epoch, adapter.get_state(trainer.model))
    for at, path in snapshots(experiment, round_index, branch):
        if step <= at:  # a resumed branch has saved the snapshots behind its checkpoint
            history = training.train(trainer, splits, step, at, hooks, history, evaluate_at_end=False)
            rundir.save_arrays(path, adapter.get_state(trainer.model))
            step = at
    history = training.train(trainer, splits, step, end, hooks, history)
    seconds = spent + time.time() - started
    final_state = adapter.get_state(trainer.model)
    rundir.save_arrays(os.path.join(folder, "weights.npz"), final_state)
    if writer:
        summaries.log_weights(writer, end, "end", final_state, masks)
        writer.close()
    best = training.early_stop(history)
    logging.info("round %d %-12s done: %.2f%% weights, test accuracy %.4f, early stop at step %d "
                 "(test accuracy %.4f), %.1fs", round_index, branch, 100 * density,
                 history[-1]["test_accuracy"], best["step"], best["test_accuracy"], seconds)
    return dict(round=round_index, branch=branch, density=density,
                layer_density=pruning.layer_densities(masks), final=history[-1], early_stop=best,
                history=history, seconds=seconds)


def early_bird_detector(experiment: Experiment) -> early_bird.Detector | None:
    """Under --prune_method=early_bird, what watches the dense round's epochs (a drawn
    ticket's masks are kept in its folder until next_masks makes them its round's)."""
    config = experiment.config.pruning
    if config.method != "early_bird":
        return None
    changeable = {key: allowed * (pruning.layer_of(key) not in config.exclude)
                  for key, allowed in experiment.allowed.items()}
    return early_bird.Detector(early_bird_folder(experiment), config.target_density, config.early_bird_epsilon,
                               lambda state, target: magnitude_masks(experiment, state, target), changeable)


def snapshots(experiment: Experiment, round_index: int, branch: str) -> list[tuple[int, str]]:
    """(step, file) of the weights a ticket saves on its way (evaluating at the
    same steps as every other branch): theta_k in the first round, and the
    weights the next round prunes from under --prune_from_step."""
    lottery = experiment.config.lottery
    if branch != "ticket":
        return []
    saves = [(lottery.rewind_step, experiment.path("init", "theta_k.npz"))] if round_index == 0 else []
    if lottery.prune_from_step:
        saves.append((lottery.prune_from_step, experiment.path(f"round_{round_index:02d}", "ticket",
                                                               "prune_from.npz")))
    return sorted(saves)


def _branch_hooks(round_index, branch, density, writer, options, on_checkpoint) -> training.Hooks:
    def on_log(progress: training.Progress):
        logging.info("round %d %-12s step %6d/%d  loss %.4f  acc %.4f  density %6.2f%%  %.1fs, %.0fs left",
                     round_index, branch, progress.step, progress.end_step, progress.train_loss,
                     progress.train_accuracy, 100 * density, progress.seconds, progress.seconds_left)
        if options.progress:
            options.progress.step(progress)
        if writer:
            summaries.log_train(writer, progress.step, progress.train_loss, progress.train_accuracy,
                                progress.learning_rate)

    def on_eval(record: dict):
        if writer:
            summaries.log_eval(writer, record)

    return training.Hooks(on_log, on_eval, on_checkpoint, options.checkpoint_every, options.should_stop)


def export_round(experiment: Experiment, round_index: int, masks, export_format: str = "dense"):
    """tickets/round_NN/: the trained ticket as SavedModels (dense, sparse or both: export.FORMATS), the
    ticket file (masks + theta_k), and its row of tickets/sizes.csv. What exists is kept (a run exported
    dense gets the sparse form added when asked for it); a kill between a SavedModel and its row leaves
    only the row to write."""
    folder = experiment.path("tickets", f"round_{round_index:02d}")
    missing = [form for form in export.FORMATS[export_format] if not os.path.exists(os.path.join(folder, form))]
    if not missing:
        if not export.size_recorded(experiment.output_dir, round_index, folder):
            export.record_size(experiment.output_dir, round_index, 100 * pruning.density(masks), folder)
        return
    started = time.time()
    logging.info("round %d: exporting the ticket and its SavedModel to %s", round_index, folder)
    config, splits = experiment.config, experiment.splits
    theta_k = rundir.load_arrays(experiment.path("init", "theta_k.npz"))
    density = pruning.density(masks)
    tickets.write_ticket(os.path.join(folder, "ticket.npz"), masks, theta_k, dict(
        model=config.model.name, width=config.model.width, input_shape=list(splits.input_shape),
        num_classes=splits.num_classes, dataset=splits.name, round=round_index, density=density,
        rewind_step=config.lottery.rewind_step, source=os.path.abspath(experiment.output_dir)))
    trained = rundir.load_arrays(experiment.path(f"round_{round_index:02d}", "ticket", "weights.npz"))
    export.export_forms(config.model, splits.input_shape, splits.num_classes, splits.normalisation, trained, masks,
                        folder, missing)
    sizes = export.record_size(experiment.output_dir, round_index, 100 * density, folder)
    logging.info("round %d exported to %s (%s) in %.1fs", round_index, folder,
                 ", ".join(f"{form}: {sizes[keys[0]]} bytes, {sizes[keys[1]]} gzipped"
                           for form, keys in export.SIZE_KEYS.items() if keys[0] in sizes), time.time() - started)


def result_row(metrics: dict, failed: bool = False) -> dict:
    if failed:
        return dict(round=metrics["round"], branch=metrics["branch"],
                    weights_remaining_pct=round(100 * metrics["density"], 4), status="diverged: " + metrics["error"])
    return dict(round=metrics["round"], branch=metrics["branch"], status="ok",
                weights_remaining_pct=round(100 * metrics["density"], 4),
                test_accuracy=metrics["final"]["test_accuracy"],
                early_stop_step=metrics["early_stop"]["step"],
                early_stop_test_accuracy=metrics["early_stop"]["test_accuracy"],
                early_stop_val_loss=metrics["early_stop"].get("val_loss", ""),
                final_train_loss=metrics["final"]["train_loss"],
                seconds=round(metrics["seconds"], 2),
                layer_density=metrics["layer_density"])  # not a results.csv column: for TensorBoard
