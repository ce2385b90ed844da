"""The lottery loop: for each round, its masks, then each of its branches
(the ticket, the controls, the finder's extra branches) trained, or read
back when a rerun finds it finished; results.csv after every branch."""
import dataclasses
import os
import time

import numpy as np
from absl import logging

from lth_tf import checkpoints, export, paths, pruning, rundir, summaries, tflite, tickets, training
from lth_tf.lottery import branch as branch_lib
from lth_tf.lottery import masks as masks_lib
from lth_tf.lottery.setup import Experiment, Failed, RunOptions, drop_if_damaged, tell


def run(experiment: Experiment, options: RunOptions = RunOptions()) -> list[dict]:
    """Runs (or resumes) every round and branch; returns the rows of results.csv."""
    rounds = experiment.config.lottery.rounds
    exported = {"all": range(rounds + 1), "last": {0, rounds}, "none": ()}[options.export]
    if options.progress:
        options.progress.start(sum(len(round_branches(experiment, r)) for r in range(rounds + 1)))
    if not rundir.results_readable(experiment.output_dir):
        tell(options.progress, f"{paths.results(experiment.output_dir)} is damaged; rebuilding it from the "
                               "rounds' metrics.json")
    rows = []
    for round_index in range(rounds + 1):
        masks = masks_lib.round_masks(experiment, round_index)
        masks_lib.check_workers_agree(experiment, round_index, masks)
        for branch in round_branches(experiment, round_index):
            metrics, failed, trained = finished_or_trained(experiment, round_index, branch, masks, options)
            rows.append(result_row(metrics, failed) | cost_columns(experiment, round_index))
            record(experiment, rows, trained, options)
            if failed and (branch == "ticket" or options.on_nan == "stop"):
                why = "the next round has no trained ticket to prune" if branch == "ticket" else "--on_nan=stop"
                raise Failed(f"round {round_index} {branch}: {metrics['error']} ({why}); "
                             f"finished rounds are in {experiment.output_dir}")
        if round_index in exported:
            export_round(experiment, round_index, masks, options)
    return rows


def round_branches(experiment: Experiment, round_index: int) -> list[str]:
    """The ticket, then the controls and the finder's extra branches (none in a dense round 0; a run
    started from --ticket trains controls in round 0 too)."""
    dense_start = all(np.array_equal(experiment.initial_masks[k], experiment.allowed[k]) for k in experiment.allowed)
    if round_index == 0 and dense_start:
        return ["ticket"]
    extra = masks_lib.finder(experiment.config).extra_branches(round_index) if round_index > 0 else []
    return ["ticket", *experiment.config.lottery.controls, *extra]


def cost_columns(experiment: Experiment, round_index: int) -> dict:
    """results.csv's method, target_density and training_steps_spent: every
    step of every training that produced this round's masks, plus its own
    training; scoring passes count as steps (methods.scoring_passes)."""
    config = experiment.config
    targets = config.pruning.target_density
    spent = config.training.train_steps if round_index == 0 else (
        masks_lib.finder(config).steps_before(experiment, round_index) + masks_lib.retrain_steps(config))
    return dict(method=masks_lib.method_label(config), target_density=targets[round_index - 1]
                if round_index and targets else "", training_steps_spent=spent)


def finished_or_trained(experiment, round_index, branch, masks, options) -> tuple[dict, bool, bool]:
    """(metrics, diverged, trained now): a branch's record, training it first
    unless metrics.json (or failed.json, for a diverged one) exists."""
    run = experiment.output_dir
    done, failed = paths.metrics(run, round_index, branch), paths.failed(run, round_index, branch)
    for path in (done, failed):
        drop_if_damaged(path, options.progress)
    trained = not (os.path.exists(done) or os.path.exists(failed))
    if 0 < training.all_workers_mean(experiment.trainer.strategy, float(trained)) < 1:
        # Another worker was killed before it finished this branch: all train it again.
        logging.warning("round %d %s: not finished on every worker; training it again", round_index, branch)
        trained = True
    if trained:
        if options.should_stop():
            raise training.Interrupted(f"before round {round_index} {branch}")
        try:
            rundir.write_json(done, branch_lib.run_branch(experiment, round_index, branch, masks, options))
        except training.Diverged as error:
            rundir.write_json(failed, dict(round=round_index, branch=branch, error=str(error),
                                           density=pruning.density(masks)))
        except training.Interrupted as stop:
            raise training.Interrupted(f"in round {round_index} {branch} {stop}") from None
    # A finished branch keeps no checkpoints (nor a watcher's epoch files), also when a kill came between its
    # metrics and this.
    checkpoints.clear(paths.checkpoints(run, round_index, branch))
    if (round_index, branch) == (0, "ticket"):
        masks_lib.finder(experiment.config).dense_round_done(experiment)
    diverged = os.path.exists(failed)
    return rundir.read_json(failed if diverged else done), diverged, trained


def record(experiment: Experiment, rows: list[dict], trained: bool, options: RunOptions):
    """A branch's row told to the progress, results.csv and TensorBoard's lottery run."""
    if options.progress:
        options.progress.branch_done(rows[-1], trained)
    rundir.write_results(experiment.output_dir, rows)
    if options.tensorboard and (trained or not os.path.isdir(summaries.lottery_run(experiment.output_dir))):
        summaries.write_lottery_run(experiment.output_dir, rows, dataclasses.asdict(experiment.config))


def export_round(experiment: Experiment, round_index: int, masks, options: RunOptions):
    """tickets/round_NN/: the trained ticket in the forms --export_format asks for (export.forms: SavedModels,
    TFLite), the ticket file (masks + theta_k), and its row of tickets/sizes.csv. What exists is kept (a run
    exported dense gets the sparse form added when asked for it); a kill between a form and its row leaves
    only the row to write; a network TFLite cannot convert is said in one line, its other forms kept."""
    run = experiment.output_dir
    folder = paths.ticket_export(run, round_index)
    missing = [form for form in export.forms(options.export_format) if not os.path.exists(os.path.join(folder, form))]
    if not missing:
        if not export.size_recorded(run, round_index, folder):
            export.record_size(run, round_index, 100 * pruning.density(masks), folder)
        return
    started = time.time()
    logging.info("round %d: exporting the ticket and its SavedModel to %s", round_index, folder)
    config, splits = experiment.config, experiment.splits
    theta_k = rundir.load_arrays(paths.theta_k(run))
    density = pruning.density(masks)
    tickets.write_ticket(paths.ticket_file(run, round_index), masks, theta_k, dict(
        model=config.model.name, width=config.model.width, input_shape=list(splits.input_shape),
        num_classes=splits.num_classes, dataset=splits.name, round=round_index, density=density,
        rewind_step=config.lottery.rewind_step, source=os.path.abspath(run)))
    trained = rundir.load_arrays(paths.weights(run, round_index, "ticket"))
    try:
        export.export_forms(config.model, splits.input_shape, splits.num_classes, splits.normalisation, trained,
                            masks, folder, missing)
    except tflite.ConversionError as error:
        tell(options.progress, f"round {round_index}: no TFLite file: {error}")
    sizes = export.record_size(run, round_index, 100 * density, folder)
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
