"""One branch of a round (the ticket, a control, a method's extra branch):
where it starts, and its resumable training (train_branch, which the
analyses that train share)."""
import dataclasses
import os
import time

import numpy as np
from absl import logging

from lth_tf import checkpoints, controls, paths, pruning, rundir, summaries, training
from lth_tf import data as data_lib
from lth_tf import tfmot_adapter as adapter
from lth_tf.lottery import masks as masks_lib
from lth_tf.lottery.setup import (CHECKPOINT_SECONDS, Experiment, RunOptions, control_seed, drop_if_damaged,
                                  initial_state, load_or_save, tell)



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
    config, run = experiment.config, experiment.output_dir
    if round_index == 0:
        state, start = experiment.theta_0, 0
    else:
        state, start = rundir.load_arrays(paths.theta_k(run)), config.lottery.rewind_step
    if branch == "ticket" and round_index > 0 and config.lottery.retrain != "rewind":
        # Renda et al. (2020): keep the trained weights (one-shot: the dense round's)
        return rundir.load_arrays(paths.ticket_start(run, round_index, config.lottery.retrain,
                                                     config.pruning.oneshot)), masks, start
    if branch == "ticket":
        return state, masks, start
    if branch == "inverted":
        path = paths.branch_masks(run, round_index, "inverted")
        drop_if_damaged(path)
        if not os.path.exists(path):  # saved with the round's masks; scoring again makes the same ones
            masks_lib.masks_at_init(experiment, round_index, masks_lib.target(experiment, round_index))
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
        control_masks = load_or_save(paths.branch_masks(run, round_index, branch), lambda: control_masks)
    return state, control_masks, start


def train_branch(trainer, splits, state, masks, start: int, end: int, folder: str, hooks=training.Hooks(),
                 hold: int = -1, snapshots=(), checkpoint_seconds: float = CHECKPOINT_SECONDS,
                 on_start=lambda step, resumed: None, on_checkpoint=lambda checkpoint_dir: None) -> tuple:
    """Trains state x masks from step `start` (or from folder/checkpoints/, where a
    stopped training left it) to `end`, saving the (step, path) `snapshots` on the
    way and folder/weights.npz at the end; returns (history, seconds, final weights).

    Checkpoints come when `hooks` says one is due and at epoch ends once the
    last is `checkpoint_seconds` old; on_start(step, resumed checkpoint or None)
    hears where training begins, on_checkpoint(dir) of every checkpoint saved.
    `hold` >= 0 holds the learning rate at that step's (fine-tuning)."""
    checkpoint_dir = os.path.join(folder, "checkpoints")
    training.rewind(trainer, state, masks, start, hold)
    resumed = checkpoints.restore_latest(trainer, checkpoint_dir)
    if not resumed and os.path.isdir(checkpoint_dir):
        training.rewind(trainer, state, masks, start, hold)  # a checkpoint set aside as unreadable may be half read
    history, spent = (resumed["history"], resumed["seconds"]) if resumed else ([], 0.0)
    step = resumed["step"] if resumed else start
    on_start(step, resumed)
    started = last_checkpoint = time.time()

    def save_checkpoint(at, records, due):
        # Epochs of small models take well under a second: checkpointing each would
        # cost more than it saves, so epoch ends count only once the last is old.
        nonlocal last_checkpoint
        if due or time.time() - last_checkpoint >= checkpoint_seconds:
            checkpoints.save(trainer, checkpoint_dir, at, records, spent + time.time() - started)
            last_checkpoint = time.time()
            on_checkpoint(checkpoint_dir)

    hooks = dataclasses.replace(hooks, on_checkpoint=save_checkpoint)
    for at, path in snapshots:
        if step <= at:  # a resumed branch has saved the snapshots behind its checkpoint
            history = training.train(trainer, splits, step, at, hooks, history, evaluate_at_end=False)
            rundir.save_arrays(path, adapter.get_state(trainer.model))
            step = at
    history = training.train(trainer, splits, step, end, hooks, history)
    seconds = spent + time.time() - started
    final_state = adapter.get_state(trainer.model)
    rundir.save_arrays(os.path.join(folder, paths.WEIGHTS), final_state)
    return history, seconds, final_state


def run_branch(experiment: Experiment, round_index: int, branch: str, masks, options: RunOptions) -> dict:
    """Rewinds (or resumes from a checkpoint), trains to the end of the
    schedule, saves the final weights; returns the branch's metrics."""
    config, run = experiment.config, experiment.output_dir
    state, masks, start = branch_start(experiment, round_index, branch, masks)
    finetune = branch == "ticket" and round_index > 0 and config.lottery.retrain == "finetune"
    density = pruning.density(masks)
    end = config.training.train_steps
    writer = summaries.branch_writer(run, round_index, branch) if options.tensorboard else None
    watcher = masks_lib.finder(config).watcher(experiment) if (round_index, branch) == (0, "ticket") else None

    def on_start(step, resumed):
        if resumed:
            tell(options.progress, f"round {round_index} {branch}: resuming from the checkpoint at step {step}")
        elif writer:
            summaries.log_weights(writer, start, "start", state, masks)
        if options.progress:
            options.progress.branch_start(round_index, branch, density, step, end)

    def on_checkpoint(checkpoint_dir):
        if watcher:  # the oldest kept checkpoint: a resume that cannot read the newest falls back to it
            watcher.checkpointed(min(checkpoints.kept_steps(checkpoint_dir))
                                 // data_lib.steps_per_epoch(experiment.splits, config.training.batch_size))

    hooks = _hooks(round_index, branch, density, writer, options)
    if watcher:
        hooks.on_epoch = lambda epoch: watcher.observe(epoch, adapter.get_state(experiment.trainer.model))
    history, seconds, final_state = train_branch(
        experiment.trainer, experiment.splits, state, masks, start, end, paths.branch(run, round_index, branch),
        hooks, hold=end - 1 if finetune else -1, snapshots=snapshots(experiment, round_index, branch),
        checkpoint_seconds=options.epoch_checkpoint_seconds, on_start=on_start, on_checkpoint=on_checkpoint)
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


def snapshots(experiment: Experiment, round_index: int, branch: str) -> list[tuple[int, str]]:
    """(step, file) of the weights a ticket saves on its way (evaluating at the
    same steps as every other branch): theta_k in the first round, and the
    weights the next round prunes from under --prune_from_step."""
    lottery, run = experiment.config.lottery, experiment.output_dir
    if branch != "ticket":
        return []
    saves = [(lottery.rewind_step, paths.theta_k(run))] if round_index == 0 else []
    if lottery.prune_from_step:
        saves.append((lottery.prune_from_step, paths.prune_from(run, round_index)))
    return sorted(saves)


def _hooks(round_index, branch, density, writer, options) -> training.Hooks:
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

    return training.Hooks(on_log, on_eval, None, options.checkpoint_every, options.should_stop)
