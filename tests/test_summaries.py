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


def test_lottery_run_matches_results_csv(tiny_run):
    experiment, _ = tiny_run
    tags = read_run(experiment.path("tensorboard", "lottery"))
    rows = rundir.read_results(experiment.output_dir)
    for branch in ("ticket", "reinit", "random_prune"):
        branch_rows = [r for r in rows if r["branch"] == branch]
        for column in ("test_accuracy", "early_stop_test_accuracy", "early_stop_step"):
            logged = {step: float(v) for step, v in tags[f"lottery/{branch}/{column}"]}
            expected = {round(float(r["weights_remaining_pct"]) * 100): float(r[column]) for r in branch_rows}
            assert sorted(logged) == sorted(expected)
            assert logged == pytest.approx(expected, rel=1e-6)
    for round_index in range(4):
        metrics = rundir.read_json(experiment.path(f"round_{round_index:02d}", "ticket", "metrics.json"))
        step = round(100 * 100 * metrics["density"])
        for layer, density in metrics["layer_density"].items():
            assert dict(tags[f"lottery/density/{layer}"])[step] == pytest.approx(100 * density)
    (_, text), = tags["config"]
    assert json.loads(text.item().decode().strip("`\n")) == rundir.read_json(experiment.path("config.json"))


def test_custom_scalars_layout_puts_ticket_and_controls_on_one_chart(tiny_run):
    """TensorBoard's Custom Scalars page reads this layout: each chart's regex
    must pick every branch's series of one quantity, and nothing else."""
    experiment, _ = tiny_run
    tags = read_run(experiment.path("tensorboard", "lottery"))
    (step, layout_bytes), = tags[custom_scalar_metadata.CONFIG_SUMMARY_TAG]
    layout = layout_pb2.Layout.FromString(layout_bytes.item())
    charts = {chart.title: chart.multiline.tag for category in layout.category for chart in category.chart}
    scalar_tags = [tag for tag in tags if tag.startswith("lottery/")]

    def matched(title):
        (regex,) = charts[title]
        return sorted(tag for tag in scalar_tags if re.match(regex, tag))  # as the plugin matches
    branches = ("random_prune", "reinit", "ticket")
    assert matched("final test accuracy") == [f"lottery/{b}/test_accuracy" for b in branches]
    assert matched("test accuracy at early stop (min validation loss)") == [
        f"lottery/{b}/early_stop_test_accuracy" for b in branches]
    assert matched("early-stop iteration") == [f"lottery/{b}/early_stop_step" for b in branches]
    assert matched("ticket: % weights remaining per layer") == ["lottery/density/fc1", "lottery/density/fc2",
                                                                 "lottery/density/output"]


def test_event_steps_never_go_backwards(tiny_run):
    """TensorBoard takes a step that goes backwards for a restart and drops the
    run's later events, so every run's file must be in step order."""
    from tensorboard.backend.event_processing import event_file_loader
    experiment, _ = tiny_run
    root = experiment.path("tensorboard")
    for run in os.listdir(root):
        files = os.listdir(os.path.join(root, run))
        assert len(files) == 1, run
        steps = [e.step for e in event_file_loader.EventFileLoader(os.path.join(root, run, files[0])).Load()
                 if e.HasField("summary")]
        assert steps == sorted(steps), run
