"""analyze infoplane: the mutual-information estimators on hand-made activations,
and the snapshots of a retrained run."""
import copy
import os

import numpy as np
import pytest

from lth_tf import analyze, rundir, runs, training
from lth_tf.analyze import infoplane


def labels(n=600, classes=6, seed=0):
    return np.random.default_rng(seed).integers(0, classes, n)


@pytest.mark.parametrize("estimator", ["binning", "kde"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_estimates_never_exceed_the_entropies_of_x_and_y(estimator, seed):
    rng = np.random.default_rng(seed)
    y = labels(seed=seed)
    h_x, h_y = np.log2(len(y)), infoplane.entropy_bits(y)
    for units, scale in ((1, 1.0), (3, 0.3), (20, 5.0)):
        activations = np.maximum(rng.normal(y[:, None] * 0.2, scale, (len(y), units)), 0).astype(np.float32)
        i_xt, i_ty = infoplane.ESTIMATORS[estimator](activations, y, 10, 0.1)
        assert i_ty <= h_y + 1e-9 and i_ty <= i_xt + 1e-9 and 0 <= i_xt <= h_x + 1e-9, (units, scale)
        if estimator == "binning":  # a plug-in estimate; KDE's is a difference of two bounds
            assert i_ty >= 0


def test_a_layer_that_copies_the_labels_one_to_one_holds_all_of_h_y():
    y = labels()
    h_y = infoplane.entropy_bits(y)
    one_hot = np.eye(6, dtype=np.float32)[y]
    for activations in (one_hot, y[:, None].astype(np.float32), 3 * one_hot - 1):
        i_xt, i_ty = infoplane.binning(activations, y, bins=30)
        assert i_ty == pytest.approx(h_y, abs=1e-12) and i_xt == pytest.approx(h_y, abs=1e-12)
    # KDE: classes far apart against the noise
    i_xt, i_ty = infoplane.kde(100 * one_hot, y, variance=0.1)
    assert i_ty == pytest.approx(h_y, abs=1e-9) and i_xt == pytest.approx(h_y, abs=1e-9)


def test_constant_activations_carry_no_information():
    y = labels()
    for estimator in infoplane.ESTIMATORS.values():
        assert estimator(np.full((len(y), 5), 0.7, np.float32), y, 30, 0.1) == pytest.approx((0.0, 0.0), abs=1e-12)


def test_distinct_examples_in_distinct_bins_hold_all_of_h_x():
    y = labels()
    activations = np.arange(len(y), dtype=np.float32)[:, None]  # one unit, every example its own value
    i_xt, i_ty = infoplane.binning(activations, y, bins=len(y))
    assert i_xt == pytest.approx(np.log2(len(y))) and i_ty == pytest.approx(infoplane.entropy_bits(y))


def test_snapshot_steps_are_log_spaced_from_start_to_end():
    assert infoplane.snapshot_steps(0, 1000, 4) == [0, 9, 99, 1000]
    few = infoplane.snapshot_steps(5, 30, 30)  # about as many asked as there are steps: no step twice
    assert few[:5] == [5, 6, 7, 8, 9] and few[-1] == 30 and len(few) == len(set(few)) <= 26
    steps = infoplane.snapshot_steps(0, 2000, 30)
    assert steps[0] == 0 and steps[-1] == 2000 and len(steps) <= 30 and steps == sorted(set(steps))


@pytest.fixture(scope="module")
def planes(tiny_run, tmp_path_factory):
    """infoplane on the tiny run's rounds 0 and 3 (ticket and reinit), 6 snapshots, interrupted once."""
    folder = str(tmp_path_factory.mktemp("infoplane"))
    run = runs.load_run(tiny_run[0].output_dir)
    calls = [0]
    def stop_soon():
        calls[0] += 1
        return calls[0] >= 5
    with pytest.raises(training.Interrupted):
        infoplane.analyze(run, folder, [0, 3], ["ticket", "reinit"], snapshots=6, examples=300, should_stop=stop_soon)
    infoplane.analyze(run, folder, [0, 3], ["ticket", "reinit"], snapshots=6, examples=300)
    return run, folder


@pytest.mark.xdist_group("planes")
def test_the_recorded_snapshots_are_the_steps_asked_for(planes):
    run, folder = planes
    rows = rundir.read_csv(os.path.join(folder, "infoplane.csv"))
    networks = {(r["round"], r["branch"]) for r in rows}
    assert networks == {("0", "ticket"), ("3", "ticket"), ("3", "reinit")}  # round 0 has no reinit
    for round_index, branch in networks:
        start = 0 if round_index == "0" else 5  # the tiny run rewinds to step 5
        asked = infoplane.snapshot_steps(start, 30, 6)
        saved = sorted(os.listdir(os.path.join(folder, "infoplane", f"round_{int(round_index):02d}", branch,
                                                "activations")))
        assert saved == [f"step_{s:07d}.npz" for s in asked]
        mine = [r for r in rows if (r["round"], r["branch"]) == (round_index, branch)]
        assert sorted({int(r["step"]) for r in mine}) == asked
        assert {r["layer"] for r in mine} == {"T1 (into fc2)", "T2 (into output)", "T3 (softmax output)"}
        for row in mine:
            assert float(row["i_ty_bits"]) <= float(row["h_y_bits"]) + 1e-9
            assert float(row["i_xt_bits"]) <= float(row["h_x_bits"]) + 1e-9
            assert float(row["h_x_bits"]) == pytest.approx(np.log2(300))
    arrays = rundir.load_arrays(os.path.join(folder, "infoplane", "round_03", "ticket", "activations",
                                             "step_0000030.npz"))
    assert arrays["T1"].shape == (300, 32) and arrays["T3"].shape == (300, 10)
    np.testing.assert_allclose(arrays["T3"].astype(np.float32).sum(axis=1), 1, atol=1e-2)  # softmax rows


@pytest.mark.xdist_group("planes")
def test_each_network_trains_again_from_where_the_run_started_it(planes):
    """The retrained ticket and reinit end where the run's own did (same start, schedule and data order)."""
    run, folder = planes
    for branch in ("ticket", "reinit"):
        again = rundir.load_arrays(os.path.join(folder, "infoplane", "round_03", branch, "weights.npz"))
        before = runs.final_weights(run, 3, branch)
        for key in before:
            np.testing.assert_allclose(again[key], before[key], atol=1e-4, err_msg=f"{branch} {key}")


@pytest.mark.xdist_group("planes")
def test_another_estimator_reads_the_saved_activations_and_keeps_the_first(planes, capsys):
    run, folder = planes
    infoplane.analyze(run, folder, [0, 3], ["ticket", "reinit"], snapshots=6, examples=300, estimator="kde")
    assert capsys.readouterr().out.count("(done before)") == 3
    rows = rundir.read_csv(os.path.join(folder, "infoplane.csv"))
    assert {r["estimator"] for r in rows} == {"binning", "kde"}
    assert os.path.exists(os.path.join(folder, "infoplane_binning.png"))
    assert os.path.getsize(os.path.join(folder, "infoplane_kde.png")) > 10_000
    text = open(os.path.join(folder, "report.md")).read()
    assert "## Information plane (binning)" in text and "## Information plane (kde)" in text


def test_a_conv_net_or_a_missing_branch_is_refused_with_one_line(tiny_run, tmp_path, capsys):
    run = copy.deepcopy(runs.load_run(tiny_run[0].output_dir))
    run["config"]["model"]["name"] = "conv2"
    with pytest.raises(runs.RunError, match="infoplane is for MLPs .* --model=conv2 is convolutional"):
        infoplane.check(run, [0], ["ticket"])
    status = analyze.cli(["analyze", "infoplane", f"--output_dir={tiny_run[0].output_dir}", f"--report_dir={tmp_path}",
                          "--rounds=1", "--branches=ticket,shuffle_layerwise"])
    line, = capsys.readouterr().err.splitlines()
    assert status == 1 and "has no finished shuffle_layerwise branch in rounds 1" in line
