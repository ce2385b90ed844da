"""lth_tf.analyze: overlap, layers and movement on hand-made arrays and on
tiny finished runs; refusals of runs that lack what an analysis needs."""
import csv
import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from conftest import tiny_config
from lth_tf import analyze, lottery, report, rundir, runs, training
from lth_tf.analyze import layers, movement, overlap


@pytest.fixture(scope="session")
def seed_1_run(mnist1d, tmp_path_factory):
    config = tiny_config(seed=1)
    config = dataclasses.replace(config, training=dataclasses.replace(config.training, seed=1))
    experiment = lottery.prepare(config, mnist1d, training.make_strategy("default"),
                                 str(tmp_path_factory.mktemp("seed_1")))
    lottery.run(experiment, lottery.RunOptions(export="none", tensorboard=False))
    return experiment.output_dir


@pytest.fixture(scope="session")
def other_order_run(mnist1d, tmp_path_factory):
    """Seed 0's theta_0, another data order: the tiny run under SGD noise."""
    config = tiny_config()
    config = dataclasses.replace(config, training=dataclasses.replace(config.training, seed=7))
    experiment = lottery.prepare(config, mnist1d, training.make_strategy("default"),
                                 str(tmp_path_factory.mktemp("order_7")))
    lottery.run(experiment, lottery.RunOptions(export="none", tensorboard=False))
    return experiment.output_dir


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_mask_overlaps_itself_fully():
    mask = (np.random.default_rng(0).random((30, 20)) < 0.3).astype(np.float32)
    found = overlap.mask_overlap(mask, mask)
    assert found["jaccard"] == 1 and found["a_kept_in_b"] == 1
    assert found["jaccard_over_chance"] > 1


def test_independent_random_masks_average_to_the_computed_chance_level():
    rng = np.random.default_rng(0)
    size, a, b, pairs = 200, 50, 80, 4000
    jaccards, kept = [], []
    for _ in range(pairs):
        mask_a, mask_b = np.zeros(size), np.zeros(size)
        mask_a[rng.permutation(size)[:a]] = 1
        mask_b[rng.permutation(size)[:b]] = 1
        found = overlap.mask_overlap(mask_a, mask_b)
        jaccards.append(found["jaccard"])
        kept.append(found["a_kept_in_b"])
    chance = overlap.chance_jaccard(size, a, b)
    assert np.mean(jaccards) == pytest.approx(chance, abs=3 * np.std(jaccards) / np.sqrt(pairs))
    assert np.mean(kept) == pytest.approx(b / size, abs=3 * np.std(kept) / np.sqrt(pairs))
    assert chance != pytest.approx(a * b / size / (a + b - a * b / size), rel=1e-4)  # not the plug-in ratio
    assert overlap.chance_jaccard(100, 100, 100) == 1 and overlap.chance_jaccard(100, 0, 40) == 0


@pytest.mark.xdist_group("seed_1_run")
def test_overlap_of_two_seeds_writes_its_table_figure_and_report_section(tiny_run, seed_1_run, tmp_path):
    run_0 = tiny_run[0].output_dir
    assert analyze.cli(["analyze", "overlap", f"--output_dir={run_0},{seed_1_run}", f"--report_dir={tmp_path}"]) == 0
    rows = read_csv(tmp_path / "overlap.csv")
    assert {(int(r["round"]), r["branch"]) for r in rows} == {(r, b) for r in (1, 2, 3)
                                                              for b in ("ticket", "random_prune")}
    a, b = runs.load_run(run_0), runs.load_run(seed_1_run)
    for row in rows:
        mask_a = runs.masks(a, int(row["round"]), row["branch"])[row["layer"]]
        mask_b = runs.masks(b, int(row["round"]), row["branch"])[row["layer"]]
        assert float(row["jaccard"]) == pytest.approx(overlap.mask_overlap(mask_a, mask_b)["jaccard"], rel=1e-5)
        assert float(row["chance_jaccard"]) == pytest.approx(
            overlap.chance_jaccard(mask_a.size, int(mask_a.sum()), int(mask_b.sum())), rel=1e-5)
    text = open(tmp_path / "report.md").read()
    assert "## Overlap of ticket masks" in text and "![mask overlap](overlap.png)" in text
    assert (tmp_path / "overlap.png").stat().st_size > 10_000
    # a second run of the analysis replaces its section; a new lth_tf.report keeps it
    assert analyze.cli(["analyze", "overlap", f"--output_dir={run_0},{seed_1_run}", f"--report_dir={tmp_path}"]) == 0
    assert open(tmp_path / "report.md").read().count("## Overlap of ticket masks") == 1
    report.write_report([a], str(tmp_path))
    text = open(tmp_path / "report.md").read()
    assert text.startswith("# Lottery-ticket report") and text.count("## Overlap of ticket masks") == 1


def test_one_theta_0_under_two_data_orders_shares_more_than_chance(tiny_run, other_order_run, tmp_path):
    run_0 = tiny_run[0].output_dir
    assert analyze.cli(["analyze", "overlap", f"--output_dir={run_0},{other_order_run}",
                        f"--report_dir={tmp_path}"]) == 0
    rows = [r for r in read_csv(tmp_path / "overlap.csv") if r["branch"] == "ticket"]
    assert all(float(r["jaccard"]) > float(r["chance_jaccard"]) + 0.05 for r in rows)
    assert "mask stability under SGD noise" in open(tmp_path / "report.md").read()


def test_overlap_refuses_runs_that_differ_in_a_flag_naming_it(tiny_run, tmp_path, capsys):
    changed = tmp_path / "changed"
    shutil.copytree(tiny_run[0].output_dir, changed)
    config = rundir.read_json(changed / "config.json")
    config["pruning"]["rate_fc"] = 0.3
    config["lottery"]["seed"] = 5
    rundir.write_json(str(changed / "config.json"), config)
    assert analyze.cli(["analyze", "overlap", f"--output_dir={tiny_run[0].output_dir},{changed}",
                        f"--report_dir={tmp_path}"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--prune_rate_fc (0.2 vs 0.3)" in error and "Traceback" not in error


def test_layers_reports_each_rounds_density_and_share(tiny_run):
    found = layers.table([runs.load_run(tiny_run[0].output_dir)])
    for round_index in (0, 1, 2, 3):
        mine = [r for r in found if r["round"] == round_index]
        assert [r["layer"] for r in mine] == ["fc1", "fc2", "output"]
        assert sum(r["share_of_surviving_pct"] for r in mine) == pytest.approx(100)
        masks = runs.masks(runs.load_run(tiny_run[0].output_dir), round_index)
        for row in mine:
            assert row["remaining"] == masks[row["layer"]].sum()
            assert row["collapsed_runs"] == 0


def test_a_collapsed_layer_is_flagged_not_crashed_on(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run[0].output_dir, run)
    path = run / "round_03" / "ticket" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["layer_density"]["fc2"] = 0.0
    rundir.write_json(str(path), metrics)
    assert analyze.cli(["analyze", "layers", f"--output_dir={run}"]) == 0
    rows = read_csv(run / "layers.csv")
    assert [(r["round"], r["layer"]) for r in rows if r["collapsed_runs"] == "1"] == [("3", "fc2")]
    text = open(run / "report.md").read()
    assert "**collapsed**" in text and "**fc2** from round 3" in text
    assert (run / "layers.png").exists()


def test_movement_statistics_of_hand_made_arrays():
    start = np.array([1.0, -2.0, 3.0, -4.0, 0.5, 0.2])
    final = np.array([1.5, 2.0, 3.1, -4.0, -0.5, -0.2])
    now = np.array([1, 1, 1, 1, 0, 1])
    after = np.array([1, 0, 1, 0, 0, 0])
    stats = movement.summary(movement.split(start, final, now, after))
    assert stats["kept"] == 2 and stats["pruned"] == 3
    assert stats["median_movement_kept"] == pytest.approx(0.3)      # 0.5, 0.1
    assert stats["median_movement_pruned"] == pytest.approx(0.4)    # 4, 0, 0.4
    assert stats["movement_ratio"] == pytest.approx(0.75)
    assert stats["median_start_kept"] == 2 and stats["median_start_pruned"] == 2  # |1|,|3| and |-2|,|-4|,|0.2|
    assert stats["sign_flipped_kept"] == 0 and stats["sign_flipped_pruned"] == pytest.approx(2 / 3)


def test_movement_of_a_run_splits_every_alive_weight(tiny_run):
    run_0 = tiny_run[0].output_dir
    assert analyze.cli(["analyze", "movement", f"--output_dir={run_0}", "--round=1"]) == 0
    rows = read_csv(os.path.join(run_0, "movement.csv"))
    assert sorted({int(r["round"]) for r in rows}) == [0, 1, 2]
    run = runs.load_run(run_0)
    for row in rows:
        r, layer = int(row["round"]), row["layer"]
        assert int(row["kept"]) == runs.masks(run, r + 1)[layer].sum()
        assert int(row["kept"]) + int(row["pruned"]) == runs.masks(run, r)[layer].sum()
    assert "## Do ticket weights move more?" in open(os.path.join(run_0, "report.md")).read()


@pytest.mark.xdist_group("seed_1_run")
def test_a_run_without_what_an_analysis_needs_is_refused_in_one_line(tiny_run, seed_1_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run[0].output_dir, run)
    os.unlink(run / "init" / "theta_k.npz")
    assert analyze.cli(["analyze", "movement", f"--output_dir={run}", "--round=1"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "init/theta_k.npz" in error
    os.unlink(run / "round_02" / "random_prune" / "masks.npz")
    assert analyze.cli(["analyze", "overlap", f"--output_dir={run},{seed_1_run}", f"--report_dir={tmp_path}"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "round_02/random_prune/masks.npz" in error and "--controls" in error
    assert analyze.cli(["analyze", "movement", f"--output_dir={tmp_path / 'nothing'}"]) == 1
    assert "no results.csv" in capsys.readouterr().err


def test_help_documents_every_subcommand_and_flag(capsys):
    assert analyze.cli(["analyze", "--help"]) == 0
    text = capsys.readouterr().out
    for word in ("overlap", "layers", "movement", "--output_dir", "--report_dir", "--round", "--bins"):
        assert word in text


def test_round_0_of_a_run_started_from_a_ticket_has_the_tickets_masks(tiny_run, tmp_path):
    run = tmp_path / "from_ticket"
    shutil.copytree(tiny_run[0].output_dir, run)
    ticket = os.path.join(tiny_run[0].output_dir, "tickets", "round_03", "ticket.npz")
    config = rundir.read_json(run / "config.json")
    config["lottery"]["ticket"] = ticket
    rundir.write_json(str(run / "config.json"), config)
    masks = runs.masks(runs.load_run(str(run)), 0)
    expected = runs.masks(runs.load_run(tiny_run[0].output_dir), 3)
    assert masks.keys() == expected.keys() and all(np.array_equal(masks[k], expected[k]) for k in masks)


def test_a_second_ctrl_c_stops_at_once_with_one_line(tiny_run, monkeypatch, capsys):
    def interrupted(runs, folder, f, should_stop):
        raise KeyboardInterrupt  # what stop_on_signals raises on the second signal
    monkeypatch.setitem(analyze.SUBCOMMANDS, "layers", interrupted)
    assert analyze.cli(["analyze", "layers", f"--output_dir={tiny_run[0].output_dir}"]) == 130
    line, = capsys.readouterr().err.splitlines()
    assert line == ("lth_tf.analyze: stopped at once; rerun the same command to resume from the last checkpoint")


def test_movement_measures_from_where_each_round_started_under_lr_rewinding(mnist1d, tmp_path):
    """--retrain=lr_rewind: round 2's ticket trains on from round 1's trained weights, not from theta_k."""
    from conftest import run_tiny
    run_tiny(mnist1d, tmp_path, retrain="lr_rewind", controls=())
    run = runs.load_run(str(tmp_path))
    start = rundir.load_arrays(str(tmp_path / "round_01" / "ticket" / "weights.npz"))
    final = rundir.load_arrays(str(tmp_path / "round_02" / "ticket" / "weights.npz"))
    assert all(np.array_equal(runs.start_weights(run, 2)[key], start[key]) for key in start)
    theta_k = rundir.load_arrays(str(tmp_path / "init" / "theta_k.npz"))
    assert not np.array_equal(start["fc1/kernel"], theta_k["fc1/kernel"])
    now, after = runs.masks(run, 2)["fc1"] > 0, runs.masks(run, 3)["fc1"] > 0
    moved = movement.pooled([run], 2)["fc1"]
    np.testing.assert_array_equal(moved["movement_kept"], np.abs(final["fc1/kernel"] - start["fc1/kernel"])[now & after])
    np.testing.assert_array_equal(moved["start_pruned"], np.abs(start["fc1/kernel"])[now & ~after])


def test_analyses_that_need_iterative_imp_refuse_a_one_shot_run_in_one_line(mnist1d, tmp_path):
    from lth_tf.analyze import removal
    config = tiny_config(rounds=2, controls=())
    config = dataclasses.replace(config, pruning=dataclasses.replace(config.pruning, oneshot=True,
                                                                     target_density=(0.5, 0.2)))
    experiment = lottery.prepare(config, mnist1d, training.make_strategy("default"), str(tmp_path / "run"))
    lottery.run(experiment, lottery.RunOptions(export="none", tensorboard=False))
    run = runs.load_run(str(tmp_path / "run"))
    with pytest.raises(runs.RunError, match="ran --oneshot: movement splits round r's weights by what round r"):
        movement.analyze([run], str(tmp_path))
    with pytest.raises(runs.RunError, match="ran --oneshot: removal runs IMP searches"):
        removal.check(run, 1, 2)
