"""The analyses that train: removal (disjoint tickets, removed weights exactly
zero at every step, the union) and instability (linear mode connectivity),
each interrupted and resumed without retraining what finished."""
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import check_every_step, run_tiny

from lth_tf import analyze, pruning, rundir, runs, training
from lth_tf import tfmot_adapter as adapter
from lth_tf.analyze import instability, removal


def stop_after(calls: int):
    """A should_stop that turns true on its `calls`-th call (a Ctrl-C in the middle of the analysis)."""
    count = [0]
    def should_stop():
        count[0] += 1
        return count[0] >= calls
    return should_stop


@pytest.fixture(scope="module")
def four_rounds(mnist1d, tmp_path_factory):
    """A tiny run pruned to 41% of its hidden weights: two disjoint tickets of that size fit."""
    experiment, _ = run_tiny(mnist1d, tmp_path_factory.mktemp("four_rounds"), rounds=4, controls=("reinit",))
    return runs.load_run(experiment.output_dir)


@pytest.fixture(scope="module")
def removed(four_rounds, tmp_path_factory, monkeypatch_module):
    """analyze removal --target_round=4 --tickets=3, interrupted once, with every single
    training step checked: no weight outside the model's current masks is ever non-zero."""
    folder = str(tmp_path_factory.mktemp("removal"))
    checked = []
    check_every_step(monkeypatch_module, checked)
    with pytest.raises(training.Interrupted):
        removal.analyze(four_rounds, folder, 4, 3, should_stop=stop_after(12))
    removal.analyze(four_rounds, folder, 4, 3)
    assert checked
    return folder


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.xdist_group("analyze_training_runs")
def test_removed_tickets_are_disjoint_and_removed_weights_stay_out(four_rounds, removed):
    out = os.path.join(removed, "removal_round_04")
    ticket_1 = runs.masks(four_rounds, 4)
    found = [ticket_1]
    for j in (2, 3):
        search = runs.load_run(os.path.join(out, f"search_{j}"))
        gone = rundir.load_arrays(os.path.join(out, f"removed_{j}.npz"))
        assert all(np.array_equal(gone[k], removal.union(found)[k]) for k in gone)
        last = runs.ticket_rounds(search)[-1]
        ticket = runs.masks(search, last)
        for earlier in found:  # disjoint from every earlier ticket
            assert not any(np.any(ticket[k] * earlier[k]) for k in ticket)
        for round_index in runs.ticket_rounds(search):  # every branch's masks and weights avoid the removed ones
            branch_masks = [runs.masks(search, round_index)] + (
                [runs.masks(search, round_index, "random_prune")] if round_index else [])
            for masks in branch_masks:
                assert not any(np.any(masks[k] * gone[k]) for k in masks)
            weights = runs.final_weights(search, round_index)
            assert not any(np.any(weights[pruning.variable_of(k)][gone[k] > 0]) for k in gone)
        # Down to ticket 1's size where the remaining weights allow it.
        counts, floor = pruning.layer_counts(ticket), pruning.layer_counts(ticket_1)
        left = pruning.layer_counts({k: 1 - gone[k] for k in gone})
        assert counts == {layer: min(floor[layer], left[layer]) for layer in counts}
        found.append(ticket)
    assert runs.ticket_rounds(runs.load_run(os.path.join(out, "search_2")))[-1] == 2  # 59% of fc left: two rounds


@pytest.mark.xdist_group("analyze_training_runs")
def test_removal_table_reads_the_runs_it_trained(four_rounds, removed):
    rows = list(__import__("csv").DictReader(open(os.path.join(removed, "removal.csv"))))
    assert [int(r["ticket"]) for r in rows] == [1, 2, 3]
    ticket_row = next(r for r in four_rounds["rows"] if r["round"] == "4" and r["branch"] == "ticket")
    assert float(rows[0]["ticket_test_accuracy"]) == float(ticket_row["test_accuracy"])
    union_3 = runs.load_run(os.path.join(removed, "removal_round_04", "union_3"))
    assert float(rows[2]["union_test_accuracy"]) == float(union_3["rows"][0]["test_accuracy"])
    assert float(rows[2]["union_weights_remaining_pct"]) == pytest.approx(float(union_3["rows"][0]["weights_remaining_pct"]))
    assert "## Ticket removal (round 4)" in open(os.path.join(removed, "report.md")).read()
    assert os.path.getsize(os.path.join(removed, "removal.png")) > 10_000


@pytest.mark.xdist_group("analyze_training_runs")
def test_a_finished_removal_trains_nothing_again(four_rounds, removed, monkeypatch):
    before = open(os.path.join(removed, "removal.csv")).read()
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("retrained a finished part"))
    removal.analyze(four_rounds, removed, 4, 3)
    assert open(os.path.join(removed, "removal.csv")).read() == before


@pytest.fixture(scope="module")
def unstable(tiny_run, tmp_path_factory):
    """analyze instability on the tiny run: rounds 0 and 2, k = 0 and 3 (trained here), interrupted once."""
    folder = str(tmp_path_factory.mktemp("instability"))
    run = runs.load_run(tiny_run[0].output_dir)
    with pytest.raises(training.Interrupted):
        instability.analyze(run, folder, [0, 2], [0, 3], pairs=1, alphas=5, should_stop=stop_after(5))
    instability.analyze(run, folder, [0, 2], [0, 3], pairs=1, alphas=5)
    return run, folder


@pytest.mark.xdist_group("analyze_training_runs")
def test_the_paths_end_points_are_the_copies_own_test_errors(unstable):
    _, folder = unstable
    for round_index in (0, 2):
        for k in (0, 3):
            where = os.path.join(folder, "instability", f"round_{round_index:02d}", f"k_{k}", "pair_0")
            path = rundir.read_json(os.path.join(where, "path.json"))
            for end, copy in ((0, "a"), (-1, "b")):
                own = rundir.read_json(os.path.join(where, f"copy_{copy}", "metrics.json"))["final"]
                assert path["test_error"][end] == 1.0 - own["test_accuracy"]
                assert path["test_loss"][end] == own["test_loss"]
            errors = path["test_error"]  # the barrier by its definition: the path's peak over its ends' mean
            assert path["error_barrier"] == pytest.approx(max(errors) - (errors[0] + errors[-1]) / 2, abs=1e-12)
            assert path["error_barrier"] >= 0
    barriers = list(__import__("csv").DictReader(open(os.path.join(folder, "instability_barriers.csv"))))
    assert len(barriers) == 4 and "## Instability" in open(os.path.join(folder, "report.md")).read()


@pytest.mark.xdist_group("analyze_training_runs")
def test_a_model_with_itself_has_no_barrier(unstable):
    run, _ = unstable
    opened = analyze.retrain.open_run(run)
    trained = runs.final_weights(run, 2)
    path = instability.evaluate_path(opened, trained, trained, runs.masks(run, 2), 4)
    assert path["error_barrier"] == 0 and len(set(path["test_error"])) == 1
    assert instability.barrier([0.3, 0.5, 0.2]) == pytest.approx(0.25)


@pytest.mark.xdist_group("analyze_training_runs")
def test_a_finished_instability_trains_nothing_again(unstable, monkeypatch):
    run, folder = unstable
    before = open(os.path.join(folder, "instability.csv")).read()
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("retrained a finished part"))
    instability.analyze(run, folder, [0, 2], [0, 3], pairs=1, alphas=5)
    assert open(os.path.join(folder, "instability.csv")).read() == before


SAME_SEED = """
import sys, lth_tf
from lth_tf import runs, rundir, training
from lth_tf.analyze import instability, retrain
training.make_deterministic()
run = runs.load_run(sys.argv[1])
opened = retrain.open_run(run)
ends = []
for name in ("a", "b"):
    trainer = retrain.with_data_order(opened.trainer, 7)  # the same data order for both
    retrain.train_piece(trainer, opened.splits, runs.start_weights(run, 0), runs.masks(run, 1), 0, 30,
                        sys.argv[2] + "/" + name)
    ends.append(rundir.load_arrays(sys.argv[2] + "/" + name + "/weights.npz"))
print("barrier", instability.evaluate_path(opened, *ends, runs.masks(run, 1), 5)["error_barrier"])
"""


def test_two_copies_with_the_same_data_order_have_no_barrier_under_determinism(tiny_run, tmp_path):
    done = subprocess.run([sys.executable, "-c", SAME_SEED, tiny_run[0].output_dir, str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "barrier 0.0"
    a, b = (rundir.load_arrays(tmp_path / n / "weights.npz") for n in "ab")
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("argv, message", [
    (["removal", "--target_round=9"], "has no finished pruned round 9 for --target_round"),
    (["instability", "--rounds=7"], "has no finished round 7"),
    (["instability", "--rewind_steps=500"], "--rewind_steps=500 is not a step inside the run's training"),
])
def test_training_analyses_refuse_what_the_run_lacks_in_one_line(tiny_run, argv, message, capsys):
    status = analyze.cli(["lth_tf.analyze", argv[0], f"--output_dir={tiny_run[0].output_dir}", *argv[1:]])
    error = capsys.readouterr().err
    assert status == 1 and error.count("\n") == 1 and message in error


def test_batchnorm_statistics_are_re_estimated_as_the_mean_over_training_batches():
    import tensorflow as tf
    from lth_tf import networks
    model = adapter.wrap(networks.build("resnet20", (32, 32, 3), 10, 4))
    x = np.random.default_rng(0).standard_normal((400, 32, 32, 3)).astype(np.float32)
    bn = next(layer for layer in model.layers if isinstance(layer, tf.keras.layers.BatchNormalization))
    instability.recompute_batchnorm(model, x, batch_size=100, examples=400)
    inputs = tf.keras.Model(model.input, bn.input)(x, training=False).numpy()
    batch_means = [inputs[i:i + 100].mean(axis=(0, 1, 2)) for i in range(0, 400, 100)]
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean(batch_means, 0), atol=1e-6)
    assert bn.momentum == 0.9  # put back
