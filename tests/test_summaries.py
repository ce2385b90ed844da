"""TensorBoard event files, read back with TensorBoard's own reader."""
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata

from lth_tf import rundir


def read_run(path):
    accumulator = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return {tag: [(e.step, tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)]
            for tag in accumulator.Tags()["tensors"]}


def test_one_run_per_round_and_branch(tiny_run):
    experiment, rows = tiny_run
    runs = sorted(os.listdir(experiment.path("tensorboard")))
    assert runs == sorted(["lottery"] + [f"round_{int(r['round']):02d}_{r['branch']}" for r in rows])
    assert sorted(d for d in os.listdir(experiment.path("tensorboard", "lottery")) if not d.startswith("events")) == [
        "random_prune", "reinit", "ticket"]


def test_branch_run_has_training_evaluation_and_weight_summaries(tiny_run):
    experiment, _ = tiny_run
    tags = read_run(experiment.path("tensorboard", "round_02_ticket"))
    metrics = rundir.read_json(experiment.path("round_02", "ticket", "metrics.json"))
    # log_every=10 over steps 5..30 of the schedule
    assert [step for step, _ in tags["train/loss"]] == [10, 20, 30]
    assert [step for step, _ in tags["train/learning_rate"]] == [10, 20, 30]
    assert [step for step, _ in tags["test/accuracy"]] == [r["step"] for r in metrics["history"]]
    np.testing.assert_allclose([float(v) for _, v in tags["val/loss"]], [r["val_loss"] for r in metrics["history"]],
                               rtol=1e-6)
    masks = rundir.load_arrays(experiment.path("round_02", "masks.npz"))
    for name, mask in masks.items():
        for when, step in (("start", 5), ("end", 30)):
            (logged_step, density), = tags[f"weights/density_{when}/{name}"]
            assert logged_step == step and float(density) == pytest.approx(mask.mean())
            (logged_step, histogram), = tags[f"weights/surviving_{when}/{name}"]
            assert logged_step == step and histogram[:, 2].sum() == mask.sum()  # counts of surviving weights


def test_lottery_runs_match_results_csv(tiny_run):
    """One value per round (the step: 0 = dense), each tag naming its branch."""
    experiment, _ = tiny_run
    rows = rundir.read_results(experiment.output_dir)
    for branch in ("ticket", "reinit", "random_prune"):
        tags = read_run(experiment.path("tensorboard", "lottery", branch))
        branch_rows = [r for r in rows if r["branch"] == branch]
        for column in ("test_accuracy", "early_stop_test_accuracy", "early_stop_step", "weights_remaining_pct"):
            if column == "weights_remaining_pct" and branch != "ticket":  # the ticket's density is the round's
                assert f"lottery/{column}/{branch}" not in tags
                continue
            logged = {step: float(v) for step, v in tags[f"lottery/{column}/{branch}"]}
            expected = {int(r["round"]): float(r[column]) for r in branch_rows}
            assert sorted(logged) == sorted(expected)
            assert logged == pytest.approx(expected, rel=1e-6)
    tags = read_run(experiment.path("tensorboard", "lottery", "ticket"))
    for round_index in range(4):
        metrics = rundir.read_json(experiment.path(f"round_{round_index:02d}", "ticket", "metrics.json"))
        for layer, density in metrics["layer_density"].items():
            assert dict(tags[f"lottery_density/{layer}"])[round_index] == pytest.approx(100 * density)
    (_, text), = read_run(experiment.path("tensorboard", "lottery"))["config"]
    assert json.loads(text.item().decode().strip("`\n")) == rundir.read_json(experiment.path("config.json"))


def test_custom_scalars_layout_puts_ticket_and_controls_on_one_chart(tiny_run):
    """TensorBoard's Custom Scalars page reads this layout: each chart's regex
    must pick one quantity, which every branch's run has once, under its own name
    (the ticket alone has densities)."""
    experiment, _ = tiny_run
    (step, layout_bytes), = read_run(experiment.path("tensorboard", "lottery"))[
        custom_scalar_metadata.CONFIG_SUMMARY_TAG]
    layout = layout_pb2.Layout.FromString(layout_bytes.item())
    charts = {chart.title: chart.multiline.tag for category in layout.category for chart in category.chart}
    branch_tags = {branch: read_run(experiment.path("tensorboard", "lottery", branch))
                   for branch in ("ticket", "reinit", "random_prune")}

    def matched(title):
        (regex,) = charts[title]  # matched as the plugin does
        return {branch: sorted(tag for tag in tags if re.match(regex, tag)) for branch, tags in branch_tags.items()}
    for title, column in [("final test accuracy, per round", "test_accuracy"),
                          ("test accuracy at early stop (min validation loss), per round", "early_stop_test_accuracy"),
                          ("early-stop iteration, per round", "early_stop_step")]:
        assert matched(title) == {branch: [f"lottery/{column}/{branch}"] for branch in branch_tags}
    assert matched("ticket: % weights remaining, per round") == {
        "ticket": ["lottery/weights_remaining_pct/ticket"], "reinit": [], "random_prune": []}
    assert matched("ticket: % weights remaining per layer, per round") == {
        "ticket": ["lottery_density/fc1", "lottery_density/fc2", "lottery_density/output"],
        "reinit": [], "random_prune": []}


def test_event_steps_never_go_backwards(tiny_run):
    """TensorBoard takes a step that goes backwards for a restart and drops the
    run's later events, so every run's file must be in step order."""
    from tensorboard.backend.event_processing import event_file_loader
    experiment, _ = tiny_run
    for folder, _, files in os.walk(experiment.path("tensorboard")):
        if folder == experiment.path("tensorboard"):
            continue
        assert len(files) == 1, folder
        steps = [e.step for e in event_file_loader.EventFileLoader(os.path.join(folder, files[0])).Load()
                 if e.HasField("summary")]
        assert steps == sorted(steps), folder
