"""lth_tf.sweep: grid x seeds as ordinary runs, on the local pool and on Ray;
the same results as each run alone, resuming after a kill, failures isolated;
and the report step of `make results` on those sweeps."""
import csv
import dataclasses
import fcntl
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import studies
import studies.records
from lth_tf import flags as lth_flags
from lth_tf import main, rundir, sweep
from studies import results

TINY = ["--model=mlp_32_16", "--optimizer=sgd", "--learning_rate=0.05", "--batch_size=50", "--train_steps=30",
        "--eval_every=10", "--log_every=10", "--rounds=1", "--controls=reinit", "--export=none",
        "--notensorboard", "--deterministic"]


def run_sweep(*argv, timeout=300):
    return subprocess.run([sys.executable, "-m", "lth_tf.sweep", *argv], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def results_of(output_dir) -> list[dict]:
    """results.csv without its wall-time column."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rundir.read_results(output_dir)]


def once(tmp_path_factory, name, make):
    """make(folder)'s JSON result, computed once for the whole session: tests
    using it may run on several pytest-xdist workers (which share the parent of
    their base temp directory); a second worker waits for the first's result."""
    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    folder, done = root / name, root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            done.write_text(json.dumps(make(folder)))
    return json.loads(done.read_text())


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """2 seeds x 3 grid points on the local pool, one point invalid: (sweep_dir, exit status, stdout)."""
    def make(sweep_dir):
        process = run_sweep("--seeds=0,1", "--grid=prune_rate_fc=0.2,0.5,1.5", f"--sweep_dir={sweep_dir}",
                            "--parallel=2", *TINY)
        return str(sweep_dir), process.returncode, process.stdout, process.stderr
    sweep_dir, *process = once(tmp_path_factory, "local_sweep", make)
    return pathlib.Path(sweep_dir), subprocess.CompletedProcess([], *process)


def test_each_experiment_of_a_sweep_equals_the_same_run_alone(local_sweep, tmp_path):
    sweep_dir, process = local_sweep
    for rate in ("0.2", "0.5"):
        for seed in (0, 1):
            alone = tmp_path / f"{rate}_{seed}"
            lth_flags.FLAGS.unparse_flags()
            lth_flags.FLAGS(["lth_tf.main", *TINY, f"--prune_rate_fc={rate}", f"--seed={seed}",
                             f"--output_dir={alone}"])
            try:
                main.run(lth_flags.FLAGS)
            finally:
                lth_flags.FLAGS.unparse_flags()
            assert results_of(sweep_dir / f"prune_rate_fc={rate}" / f"seed_{seed}") == results_of(alone)


def test_a_grid_point_with_an_invalid_value_fails_alone(local_sweep):
    sweep_dir, process = local_sweep
    assert process.returncode == 1, process.stderr
    state = json.loads((sweep_dir / "sweep.json").read_text())
    status = {name: record["status"] for name, record in state["experiments"].items()}
    assert status == {"prune_rate_fc=0.2__seed_0": "finished", "prune_rate_fc=0.5__seed_0": "finished",
                      "prune_rate_fc=1.5__seed_0": "failed", "prune_rate_fc=0.2__seed_1": "finished",
                      "prune_rate_fc=0.5__seed_1": "finished", "prune_rate_fc=1.5__seed_1": "failed"}
    failed = state["experiments"]["prune_rate_fc=1.5__seed_0"]
    assert failed["reason"] == "error: flag --prune_rate_fc=1.5: must be in (0, 1)"
    assert failed["reason"] in open(failed["log"]).read()
    # the closing table names each failure, its reason and its log
    line, = [line for line in process.stdout.splitlines() if line.startswith("prune_rate_fc=1.5__seed_1")]
    assert "failed" in line and "must be in (0, 1)" in line and "logs/prune_rate_fc=1.5__seed_1.txt" in line
    assert "finished 4, failed 2" in process.stdout


def test_sweep_csv_aggregates_each_grid_point_over_its_seeds(local_sweep):
    sweep_dir, _ = local_sweep
    rows = list(csv.DictReader(open(sweep_dir / "sweep.csv")))
    assert [(r["prune_rate_fc"], r["round"], r["branch"]) for r in rows] == [
        (rate, str(r), b) for rate in ("0.2", "0.5") for r, b in ((0, "ticket"), (1, "ticket"), (1, "reinit"))]
    for row in rows:
        point = sweep_dir / f"prune_rate_fc={row['prune_rate_fc']}"
        values = [float(r["test_accuracy"]) for seed in (0, 1) for r in rundir.read_results(point / f"seed_{seed}")
                  if r["round"] == row["round"] and r["branch"] == row["branch"]]
        assert int(row["n"]) == 2
        assert float(row["test_accuracy_mean"]) == pytest.approx(np.mean(values), abs=1e-6)
        assert float(row["test_accuracy_std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-6)
        assert (float(row["test_accuracy_min"]), float(row["test_accuracy_max"])) == (min(values), max(values))
        assert (point / "report.md").exists() and (point / "accuracy.png").exists()
    summary = (sweep_dir / "sweep.md").read_text()
    assert "## prune_rate_fc=0.5" in summary and "| prune_rate_fc=1.5__seed_0 | failed |" in summary


def test_sweep_json_names_the_commit_of_the_code_that_ran_it(local_sweep):
    sweep_dir, _ = local_sweep
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True,
                          cwd=pathlib.Path(sweep.__file__).parent).stdout.strip()
    changed = subprocess.run(["git", "status", "--porcelain", "--", "lth_tf"], capture_output=True, text=True,
                             check=True, cwd=pathlib.Path(sweep.__file__).parents[2]).stdout.strip()
    assert json.loads((sweep_dir / "sweep.json").read_text())["code"] == [head + ("+changes" if changed else "")]


@pytest.fixture(scope="module")
def resumed_sweep(tmp_path_factory):
    """Two seeds, the sweep SIGKILLed during the second, then rerun:
    (sweep_dir, the rerun, seed_0's file times before the rerun, after it)."""
    sweep_dir, returncode, stderr, before, after = once(tmp_path_factory, "resumed_sweep", kill_and_rerun)
    return pathlib.Path(sweep_dir), subprocess.CompletedProcess([], returncode, "", stderr), before, after


def kill_and_rerun(sweep_dir):
    argv = resumed_sweep_argv(sweep_dir)
    process = subprocess.Popen([sys.executable, "-m", "lth_tf.sweep", *argv], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    first = sweep_dir / "seed_0"
    deadline = time.time() + 600
    while not (sweep_dir / "seed_1" / "config.json").exists():  # the second experiment has started
        assert process.poll() is None and time.time() < deadline, "the sweep ended before its second experiment"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    while (sweep_dir / "seed_1" / rundir.LOCK).exists():  # the orphan checkpoints and stops (SIGTERM)
        assert time.time() < deadline, "the second experiment outlived its sweep"
        time.sleep(0.05)
    times = lambda: {name: os.stat(first / name).st_mtime_ns for name in ("results.csv", "log.txt")}  # noqa: E731
    before = times()
    rerun = run_sweep(*argv)
    return str(sweep_dir), rerun.returncode, rerun.stderr, before, times()


@pytest.mark.xdist_group("resumed_sweep")
def test_a_killed_sweep_resumes_without_retraining_finished_experiments(resumed_sweep):
    sweep_dir, rerun, before, after = resumed_sweep
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "1 already finished, 1 to run" in rerun.stderr
    assert after == before
    assert len(rundir.read_results(sweep_dir / "seed_1")) == 4  # round 0, and round 1's ticket and two controls


def test_another_grid_on_the_same_sweep_dir_is_refused_with_one_line(tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    rundir.write_json(str(sweep_dir / "sweep.json"), {"grid": [["prune_rate_fc", ["0.2", "0.5"]]],
                                                      "experiments": {}})
    status = sweep.cli(["lth_tf.sweep", f"--sweep_dir={sweep_dir}", "--grid=prune_rate_fc=0.3", *TINY],
                       should_stop=lambda: False)
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1
    assert "holds a sweep of another grid (prune_rate_fc=0.2,0.5, not prune_rate_fc=0.3)" in error


def test_a_second_sweep_on_a_directory_in_use_is_refused_with_one_line(tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / rundir.LOCK).write_text(f"{os.getpid()} {socket.gethostname()}\n")  # a live owner
    status = sweep.cli(["lth_tf.sweep", f"--sweep_dir={sweep_dir}", *TINY], should_stop=lambda: False)
    error = capsys.readouterr().err
    assert status == 1 and error.count("\n") == 1 and f"is in use by lth_tf process {os.getpid()}" in error
    assert os.listdir(sweep_dir) == [rundir.LOCK]


@pytest.mark.parametrize("argv, message", [
    (["--seed=3"], "the sweep sets --seed (use --seeds)"),
    (["--grid=seed=1,2"], "'seed' is not an experiment flag the grid can vary"),
    (["--grid=no_such_flag=1"], "'no_such_flag' is not an experiment flag"),
    (["--grid=rounds"], "expected NAME=V1,V2"),
])
def test_bad_sweep_flags_are_one_line(argv, message, tmp_path, capsys):
    status = sweep.cli(["lth_tf.sweep", f"--sweep_dir={tmp_path / 's'}", *argv], should_stop=lambda: False)
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1 and message in error
    assert not (tmp_path / "s").exists()


def test_a_flagfiles_seed_and_output_dir_give_way_to_the_sweeps():
    ours, theirs = sweep.plan.split_argv(["--flagfile=configs/lenet_fashion_mnist.flags", "--seeds=0,1"],
                                         sweep.SWEEP_FLAGS)
    assert ours == ["--seeds=0,1"] and "--model=lenet_300_100" in theirs
    assert not [t for t in theirs if t.startswith(("--seed=", "--output_dir="))]


def tiny_studies(monkeypatch, sweep_argv):
    """The studies with the sweep's flags, so that its directory can stand in for each of them."""
    argv = tuple(a for a in sweep_argv if not a.startswith(("--sweep_dir=", "--parallel=")))
    for name, study in list(studies.STUDIES.items()):
        variants = tuple((variant, (), what) for variant, _, what in study.variants)
        monkeypatch.setitem(studies.STUDIES, name, dataclasses.replace(study, argv=argv, variants=variants))


@pytest.mark.xdist_group("resumed_sweep")
def test_results_md_holds_the_runs_numbers_and_figures(resumed_sweep, tmp_path, monkeypatch):
    """The report step of `make results`, on the resumed sweep standing in for the
    quick study and two of the MNIST-1D study's variants."""
    tiny_studies(monkeypatch, resumed_sweep_argv(resumed_sweep[0]))
    results_dir = tmp_path / "results"
    shutil.copytree(resumed_sweep[0], results_dir / "quick")
    shutil.copytree(resumed_sweep[0], results_dir / "lenet_fashion_mnist")
    for variant in ("paper", "geometric"):
        shutil.copytree(resumed_sweep[0], results_dir / "mnist1d_paper" / variant)
    repository = pathlib.Path(studies.__file__).parents[1]
    for quoting in ("README.md", "configs/lenet_fashion_mnist.flags", "configs/mnist1d_paper.flags"):
        (tmp_path / quoting).parent.mkdir(exist_ok=True)
        shutil.copy(repository / quoting, tmp_path / quoting)
    assert results.write(["quick", "mnist1d_paper", "lenet_fashion_mnist", "conv2_fashion_mnist"], str(results_dir),
                         str(tmp_path)) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    rows = [r for seed in (0, 1) for r in rundir.read_results(results_dir / "quick" / f"seed_{seed}")]
    ticket = [100 * float(r["test_accuracy"]) for r in rows if r["round"] == "1" and r["branch"] == "ticket"]
    random = [100 * float(r["test_accuracy"]) for r in rows if r["round"] == "1" and r["branch"] == "random_prune"]
    pct = float(next(r["weights_remaining_pct"] for r in rows if r["round"] == "1"))
    line = next(line for line in text.splitlines() if line.startswith("| 1 |"))
    assert line.startswith(f"| 1 | {pct:.2f} | {np.mean(ticket):.1f} [{min(ticket):.1f}, {max(ticket):.1f}]")
    assert line.endswith(f"| {np.mean(random):.1f} [{min(random):.1f}, {max(random):.1f}] |")
    head = sweep.code_version()
    assert "## 1. The quick default" in text and f"2 experiments: seeds 0, 1 by lth_tf {head} on " in text
    assert "--sweep_dir=runs/results/quick" in text
    for name in ("quick", "mnist1d_paper", "lenet_fashion_mnist", "lenet_fashion_mnist_curves"):
        assert (tmp_path / "docs" / "results" / f"{name}.png").stat().st_size > 10_000
        assert f"(docs/results/{name}.png)" in text
    assert "| dense | " in text and "66.4 / 66.4 | 64.8 / 65.4" in text  # the published numbers, quoted
    assert "| geometric | geometric schedule" in text
    assert "weights: paper +0.0, 95% CI [+0.0, +0.0], p = 1, 2 seeds." in text  # the same runs: no change
    assert text.count("No change is shown to move it.") == 2  # ...so the verdict names none
    # per density: two setups' leads and one paired change (paper against geometric)
    assert "These are 6 tests at p < 0.05, not corrected for their number: about 0.3 of them" in text
    assert "The 4 sweeps below took " in text  # quick, LeNet and two variants; Conv-2's has none
    assert "No results yet for: geometric_weights_only" in text
    lenet = text.split("## 3. LeNet-300-100 on Fashion-MNIST")[1].split("## 4.")[0]
    assert "### Beside the paper" in lenet and "(docs/results/lenet_fashion_mnist_curves.png)" in lenet
    assert "| ticket minus reinit at " in lenet and "trainings) took " in lenet
    assert "## 4. Conv-2 on Fashion-MNIST" in text and "No results yet: no finished seed" in text

    # the README's picture and the configs' Expect lines quote the records
    dense = [100 * float(r["early_stop_test_accuracy"]) for r in rows if r["round"] == "0"]
    readme = (tmp_path / "README.md").read_text().split("<!-- results_picture -->")[1].split("<!-- /")[0]
    assert readme.startswith("\n![LeNet-300-100 on Fashion-MNIST](docs/results/lenet_fashion_mnist.png)\n")
    assert "), 2 seeds: the winning ticket" in readme.replace("\n", " ")
    expect = (tmp_path / "configs" / "lenet_fashion_mnist.flags").read_text().split("# <!-- expect -->\n")[1]
    expect = expect.split("# <!-- /expect -->")[0]
    assert all(line.startswith("# ") for line in expect.splitlines())
    expect = " ".join(line[2:] for line in expect.splitlines())
    assert "seeds 0, 1, test accuracy at the early-stop iteration" in expect
    assert f"dense {np.mean(dense):.1f} [{min(dense):.1f}, {max(dense):.1f}]%" in expect
    assert "--model=lenet_300_100" in (tmp_path / "configs" / "lenet_fashion_mnist.flags").read_text()
    mnist1d = (tmp_path / "configs" / "mnist1d_paper.flags").read_text().split("# <!-- expect -->\n")[1]
    mnist1d = " ".join(line[2:] for line in mnist1d.split("# <!-- /expect -->")[0].splitlines())
    assert "seeds 0, 1, with --xla; final test accuracy, mean [min, max]): dense " in mnist1d
    assert "The notebook printed 72.9 vs 68.6 and 68.1 vs 41.2 for its seed 42." in mnist1d

    # the records alone (a fresh clone: no runs/) give the same RESULTS.md, figures and tables
    records = tmp_path / "docs" / "results" / "records"
    assert sorted(p.name for p in records.iterdir()) == [
        "lenet_fashion_mnist.json", "mnist1d_paper.geometric.json", "mnist1d_paper.paper.json", "quick.json"]
    fresh = tmp_path / "fresh"
    shutil.copytree(records, fresh / "docs" / "results" / "records")
    assert results.write(["quick", "mnist1d_paper", "lenet_fashion_mnist", "conv2_fashion_mnist"],
                         str(tmp_path / "no_runs"), str(fresh)) == 0
    assert (fresh / "RESULTS.md").read_text() == text
    for name in ("quick.csv", "mnist1d_paper.csv", "lenet_fashion_mnist.csv"):
        assert (fresh / "docs" / "results" / name).read_text() == (tmp_path / "docs" / "results" / name).read_text()
    curves = json.loads((records / "lenet_fashion_mnist.json").read_text())["runs"]["0"]["histories"]
    assert sorted(curves) == ["0/ticket", "1/reinit", "1/ticket"]  # what Figure 3 draws, and only that
    metrics = json.loads((results_dir / "lenet_fashion_mnist" / "seed_0" / "round_01" / "reinit" / "metrics.json")
                         .read_text())["history"]
    kept = curves["1/reinit"]
    assert list(zip(studies.records.steps_of(kept), kept["test_accuracy"])) == [
        (e["step"], e["test_accuracy"]) for e in metrics]


def resumed_sweep_argv(sweep_dir) -> list[str]:
    return ["--seeds=0,1", f"--sweep_dir={sweep_dir}", "--parallel=1", *TINY, "--train_steps=400",
            "--eval_every=100", "--checkpoint_every=50", "--controls=reinit,random_prune"]


def test_every_study_names_its_sweep_flags_and_what_it_shortens():
    for name, study in studies.STUDIES.items():
        assert any(a.startswith("--flagfile=configs/") for a in study.argv), name
        assert any(a.startswith("--seeds=") and len(a.split(",")) >= 3 for a in study.argv), name
        assert study.about and study.title


def test_the_local_pool_splits_the_cores_between_its_experiments(monkeypatch, tmp_path):
    from lth_tf.sweep import pools
    seen = []

    class FakeProcess:
        def __init__(self, command, env, **kwargs):
            seen.append((command, env))

        def poll(self):
            return 0
    monkeypatch.setattr(pools.subprocess, "Popen", FakeProcess)
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    monkeypatch.setattr(pools.os, "cpu_count", lambda: 8)
    pool = pools.LocalPool(parallel=4)
    pool.submit({"argv": ["--seed=1"], "console_log": str(tmp_path / "log.txt")}, str(tmp_path)).result()
    pool.close()
    (command, env), = seen
    assert command[1:] == ["-m", "lth_tf.main", "--seed=1"]
    assert env["TF_NUM_INTRAOP_THREADS"] == env["TF_NUM_INTEROP_THREADS"] == "2"  # 8 cores / 4 experiments


def test_a_sweep_refuses_other_settings_and_never_averages_runs_of_other_settings(tmp_path):
    """One seed at 30 steps and lr 0.05, then two seeds at 90 steps and lr 0.5 on the same sweep_dir: refused
    in one line, nothing run (also for a sweep.json from before settings were recorded); and a run of other
    settings put in the sweep by hand is not averaged by the sweep's tables or studies.results."""
    sweep_dir = tmp_path / "sweep"
    assert run_sweep("--seeds=0", f"--sweep_dir={sweep_dir}", "--parallel=1", *TINY).returncode == 0
    other = [a for a in TINY if not a.startswith(("--train_steps", "--learning_rate"))] + [
        "--train_steps=90", "--learning_rate=0.5"]
    state = json.loads((sweep_dir / "sweep.json").read_text())
    assert state["settings"][""]["training"]["learning_rate"] == 0.05 and "seed" not in state["settings"][""]["lottery"]
    for legacy in (False, True):
        if legacy:  # what sweep.json held before: the finished runs' config.json stand in
            (sweep_dir / "sweep.json").write_text(json.dumps({k: v for k, v in state.items() if k != "settings"}))
        refused = run_sweep("--seeds=0,1", f"--sweep_dir={sweep_dir}", "--parallel=1", *other)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert "holds a sweep with other settings" in refused.stderr
        assert "--learning_rate (0.05 vs 0.5)" in refused.stderr and "--train_steps (30 vs 90)" in refused.stderr
        assert not (sweep_dir / "seed_1").exists()
    # A run of other settings in the sweep's place for seed 1, listed as finished:
    lth_flags.FLAGS.unparse_flags()
    lth_flags.FLAGS(["lth_tf.main", *other, "--seed=1", f"--output_dir={sweep_dir / 'seed_1'}"])
    try:
        main.run(lth_flags.FLAGS)
    finally:
        lth_flags.FLAGS.unparse_flags()
    state["experiments"]["seed_1"] = dict(state["experiments"]["seed_0"], seed=1,
                                          output_dir=str(sweep_dir / "seed_1"))
    (sweep_dir / "sweep.json").write_text(json.dumps(state))
    with pytest.raises(results.runs_lib.RunError, match="differ in more than their seeds: --learning_rate"):
        studies.records.from_sweep(str(sweep_dir))  # what the report reads a sweep with
    planned = sweep.plan.experiments(str(sweep_dir), [], [0, 1], TINY)
    with pytest.raises(results.runs_lib.RunError, match="differ in more than their seeds"):
        sweep.tables.write_outputs(str(sweep_dir), [], planned, state)


@pytest.mark.parametrize("seeds", ["0,0", "1,-1"])
def test_repeated_or_negative_seeds_are_refused_in_one_line(seeds, tmp_path):
    refused = run_sweep(f"--seeds={seeds}", f"--sweep_dir={tmp_path / 'sweep'}", *TINY)
    assert refused.returncode == 2 and refused.stderr == f"lth_tf.sweep: error: --seeds={seeds}: each seed once, " \
                                                         "none negative\n"
    assert not (tmp_path / "sweep").exists()


def test_the_progress_line_names_the_slowest_running_experiment(tmp_path):
    def experiment(name, rounds, started_rounds, running):
        output_dir = tmp_path / name
        output_dir.mkdir()
        for r in range(started_rounds):
            (output_dir / f"round_{r:02d}").mkdir()
        if running:
            (output_dir / rundir.LOCK).write_text("1 host")
        return dict(name=name, output_dir=str(output_dir), rounds=rounds)
    pending = [experiment("a__seed_0", 14, 6, True), experiment("b__seed_0", 4, 1, True),
               experiment("c__seed_0", 14, 0, False)]
    # b is at round 0 of 4 (0%), a at round 5 of 14; c waits in the queue
    assert sweep.progress_line(pending, 8) == "lth_tf.sweep: 5 of 8 done, 2 running; slowest: b__seed_0 at round 0 of 4"
    assert sweep.progress_line(pending[2:], 8) == ""


def test_a_second_ctrl_c_stops_the_sweep_at_once_in_one_line(tmp_path):
    """The first Ctrl-C asks the experiments to checkpoint and stop; a second, before they have, stops the
    sweep at once: one line, exit 130, no traceback, the experiment recorded as interrupted."""
    sweep_dir = tmp_path / "twice"
    process = subprocess.Popen([sys.executable, "-m", "lth_tf.sweep", "--seeds=0", f"--sweep_dir={sweep_dir}",
                                "--parallel=1", *TINY, "--train_steps=100000", "--eval_every=1000"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (sweep_dir / "seed_0" / "round_00").exists():
        time.sleep(0.2)  # the experiment is training
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)  # the second before the sweep's loop (every 0.5 s) has passed the first on to the experiment
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert [line for line in err.splitlines() if "stopped at once" in line] == [
        "lth_tf.sweep: stopped at once; rerun the same command to resume (each experiment from its last checkpoint)"]
    record, = json.loads((sweep_dir / "sweep.json").read_text())["experiments"].values()
    assert (record["status"], record["reason"]) == ("interrupted", "stopped at once")
