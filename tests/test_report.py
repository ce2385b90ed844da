"""The report: figures and a table whose numbers are results.csv's."""
import os
import re
import shutil

import pytest

from lth_tf import report, rundir


def table_rows(markdown):
    """The rows of the report's own table (not of the analyses' sections a run's report.md may also hold)."""
    own = markdown.split("<!-- lth_tf.analyze")[0]
    lines = [l for l in own.splitlines() if l.startswith("| ") and not l.startswith("| round")]
    return [[c.strip() for c in l.strip("|").split("|")] for l in lines]


def test_report_of_one_run(tiny_run, capsys):
    experiment, _ = tiny_run
    assert report.cli(["report", f"--output_dir={experiment.output_dir}"]) == 0
    for name in report.FIGURES + ("report.md",):
        path = experiment.path(name)
        assert os.path.getsize(path) > 1000 if name.endswith(".png") else os.path.exists(path)
    text = open(experiment.path("report.md")).read()
    rows = rundir.read_results(experiment.output_dir)
    sizes = {int(r["round"]): r for r in rundir.read_sizes(experiment.output_dir)}
    table = table_rows(text)
    assert [int(r[0]) for r in table] == [0, 1, 2, 3]
    for cells in table:
        r = int(cells[0])
        by_branch = {row["branch"]: row for row in rows if int(row["round"]) == r}
        ticket = by_branch["ticket"]
        assert float(cells[1]) == pytest.approx(float(ticket["weights_remaining_pct"]), abs=1e-4)
        assert float(cells[2]) == pytest.approx(float(ticket["test_accuracy"]), abs=5e-5)
        assert float(cells[3]) == pytest.approx(float(ticket["early_stop_test_accuracy"]), abs=5e-5)
        assert int(cells[4]) == int(ticket["early_stop_step"])
        for column, branch in ((5, "reinit"), (6, "random_prune")):
            expected = by_branch.get(branch)
            assert cells[column] == "-" if expected is None else \
                float(cells[column]) == pytest.approx(float(expected["test_accuracy"]), abs=5e-5)
        if r in sizes:
            assert int(cells[7]) == int(sizes[r]["saved_model_bytes"])
            assert int(cells[8]) == int(sizes[r]["saved_model_gzip_bytes"])
        else:
            assert cells[7:] == ["-", "-"]
    assert "![test accuracy](accuracy.png)" in text


def test_report_of_replicates_shows_mean_and_range(tiny_run, tmp_path):
    experiment, _ = tiny_run
    copy = tmp_path / "seed_1"
    shutil.copytree(experiment.output_dir, copy)
    config = rundir.read_json(str(copy / "config.json"))
    config["lottery"]["seed"] = config["data"]["seed"] = config["training"]["seed"] = 1
    rundir.write_json(str(copy / "config.json"), config)
    results = open(copy / "results.csv").read().splitlines()
    header, first = results[0], results[1].split(",")
    column = header.split(",").index("test_accuracy")
    first[column] = "0.9"
    (copy / "results.csv").write_text("\n".join([header, ",".join(first)] + results[2:]) + "\n")
    out = tmp_path / "joint"
    assert report.cli(["report", f"--output_dir={experiment.output_dir}", str(copy), f"--report_dir={out}"]) == 0
    cells = table_rows(open(out / "report.md").read())[0]
    original = float(rundir.read_results(experiment.output_dir)[0]["test_accuracy"])
    mean, low, high = (float(v) for v in re.findall(r"[0-9.]+", cells[2]))
    assert original < 0.9
    assert (low, high) == (pytest.approx(original, abs=5e-5), 0.9)
    assert mean == pytest.approx((0.9 + original) / 2, abs=5e-5)
    assert all(os.path.exists(out / name) for name in report.FIGURES)


def test_report_refuses_runs_of_different_configs_and_missing_runs(tiny_run, tmp_path, capsys):
    experiment, _ = tiny_run
    other = tmp_path / "other"
    shutil.copytree(experiment.output_dir, other)
    config = rundir.read_json(str(other / "config.json"))
    config["training"]["learning_rate"] = 0.5
    rundir.write_json(str(other / "config.json"), config)
    assert report.cli(["report", f"--output_dir={experiment.output_dir},{other}", f"--report_dir={tmp_path}"]) == 1
    assert "differ in more than their seeds" in capsys.readouterr().err
    assert report.cli(["report", f"--output_dir={tmp_path / 'nothing'}"]) == 1
    assert "no results.csv" in capsys.readouterr().err
    assert report.cli(["report", f"--output_dir={experiment.output_dir}", str(other)]) == 1
    assert "--report_dir" in capsys.readouterr().err
