"""Runs that survive: kills and resumes, Ctrl-C, locks, corrupt checkpoints,
NaN losses, full disks."""
import errno
import io
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from conftest import read_log, tiny_config, wait_for_log
from lth_tf import checkpoints, console, lottery, main, rundir, training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = ["--flagfile=configs/quick.flags", "--deterministic", "--train_steps=60", "--rewind_step=15",
       "--eval_every=20", "--log_every=10", "--checkpoint_every=10", "--rounds=2",
       "--controls=reinit,random_prune,shuffle_layerwise"]


def start(output_dir):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "lth_tf.main", *RUN, f"--output_dir={output_dir}"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_until(output_dir, marker, sig):
    """Runs the CLI until a new line of its log.txt contains `marker`, then sends `sig`."""
    logged_before = len(read_log(output_dir))
    process = start(output_dir)
    wait_for_log(output_dir, marker, process, since=logged_before)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


def outcome(output_dir):
    """Everything a finished run decides, with the wall-clock seconds left out."""
    rows = [{k: v for k, v in row.items() if k != "seconds"} for row in rundir.read_results(str(output_dir))]
    arrays = {}
    for folder, _, files in os.walk(output_dir):
        for name in files:
            if name.endswith(".npz") and "tickets" not in folder:
                path = os.path.join(folder, name)
                arrays[os.path.relpath(path, output_dir)] = rundir.load_arrays(path)
    metrics = {os.path.relpath(os.path.join(folder, "metrics.json"), output_dir):
               {k: v for k, v in rundir.read_json(os.path.join(folder, "metrics.json")).items() if k != "seconds"}
               for folder, _, files in os.walk(output_dir) if "metrics.json" in files}
    return rows, arrays, metrics


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    process = start(output_dir)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-2000:]
    return outcome(output_dir)


def test_killed_and_interrupted_runs_resume_to_the_uninterrupted_result(reference, tmp_path):
    output_dir = tmp_path / "run"
    # SIGKILL mid-epoch in the dense round, after theta_k (step 15) was saved
    # (at step 20 of 60, with 40 steps, 3 checkpoints and 2 evaluations still to go: the kill lands mid-branch
    # even on a loaded machine, where step 40 raced the end of the branch)
    code, _ = run_until(output_dir, "round 0 ticket       step     20/60", signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert os.listdir(output_dir / "round_00" / "ticket" / "checkpoints")
    # SIGKILL as round 0 finishes, around the pruning step that makes round 1's masks
    code, _ = run_until(output_dir, "round 0 ticket       done", signal.SIGKILL)
    assert code == -signal.SIGKILL
    # Ctrl-C in a control of round 1 (one with masks of its own): stops at a step boundary, with a checkpoint
    code, stderr = run_until(output_dir, "round 1 shuffle_layerwise step     30/60", signal.SIGINT)
    assert code == 130
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("lth_tf: interrupted in round 1 shuffle_layerwise at step") and "rerun the same" in last
    assert any(f.endswith(".json") for f in os.listdir(output_dir / "round_01" / "shuffle_layerwise" / "checkpoints"))
    # and the rest, undisturbed
    logged_before = len(read_log(output_dir))
    process = start(output_dir)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-2000:]
    log = read_log(output_dir)[logged_before:]
    assert "round 0 ticket       done" not in log  # finished branches are not redone
    assert "round 1 shuffle_layerwise: resuming from the checkpoint at step" in log
    assert "lth_tf: round 1 shuffle_layerwise: resuming from the checkpoint at step" in stderr  # and on the console
    rows, arrays, metrics = outcome(output_dir)
    ref_rows, ref_arrays, ref_metrics = reference
    assert rows == ref_rows
    assert metrics == ref_metrics
    assert arrays.keys() == ref_arrays.keys()
    for path, values in ref_arrays.items():
        for key in values:
            np.testing.assert_array_equal(arrays[path][key], values[key], err_msg=f"{path} {key}")
    assert not any("checkpoints" in folder for folder, _, _ in os.walk(output_dir)), "finished branches keep none"


def test_a_corrupt_checkpoint_is_reported_and_the_previous_one_used(tiny_run, tmp_path, caplog):
    experiment, _ = tiny_run
    trainer = experiment.trainer
    masks = rundir.load_arrays(experiment.path("round_02", "masks.npz"))
    training.rewind(trainer, experiment.theta_0, masks, 5)
    training.train(trainer, experiment.splits, 5, 10)
    checkpoints.save(trainer, str(tmp_path), 10, [{"step": 10}], 1.0)
    at_10 = trainer.model.get_weights()
    training.train(trainer, experiment.splits, 10, 20)
    checkpoints.save(trainer, str(tmp_path), 20, [{"step": 20}], 2.0)
    data_file = next(p for p in os.listdir(tmp_path) if p.startswith("ckpt-20.data"))
    with open(tmp_path / data_file, "r+b") as f:
        f.truncate(100)
    state = checkpoints.restore_latest(trainer, str(tmp_path))
    assert state["step"] == 10 and state["history"] == [{"step": 10}]
    assert training.global_step(trainer) == 10
    for restored, saved in zip(trainer.model.get_weights(), at_10):
        np.testing.assert_array_equal(restored, saved)
    assert "ckpt-20.json is unreadable" in caplog.text
    assert not os.path.exists(tmp_path / "ckpt-20.json")  # set aside: a rerun does not try it again
    os.unlink(tmp_path / "ckpt-10.json")  # a checkpoint whose marker never got written does not count
    assert checkpoints.restore_latest(trainer, str(tmp_path)) is None


def test_a_second_process_on_the_directory_is_refused(tmp_path):
    with rundir.locked(str(tmp_path)):
        with pytest.raises(rundir.RunDirError, match=f"in use by lth_tf process {os.getpid()}"):
            with rundir.locked(str(tmp_path)):
                pass
    assert not os.path.exists(tmp_path / ".lock")


def test_a_dead_processs_lock_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(f"{dead.pid} {os.uname().nodename}\n")
    with rundir.locked(str(tmp_path)):
        assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())


def diverge_in(branch_to_fail, run_branch):
    def patched(experiment, round_index, branch, masks, options):
        if branch == branch_to_fail and round_index == 1:
            raise training.Diverged("training loss is nan at step 17")
        return run_branch(experiment, round_index, branch, masks, options)
    return patched


def test_nan_in_a_control_is_recorded_and_skipped_with_on_nan_skip(mnist1d, tmp_path, monkeypatch):
    monkeypatch.setattr(lottery.branch, "run_branch", diverge_in("reinit", lottery.run_branch))
    experiment = lottery.prepare(tiny_config(rounds=2), mnist1d, training.make_strategy("default"), str(tmp_path))
    rows = lottery.run(experiment, lottery.RunOptions(on_nan="skip"))
    status = {(r["round"], r["branch"]): r["status"] for r in rows}
    assert status[(1, "reinit")] == "diverged: training loss is nan at step 17"
    assert [s for k, s in status.items() if k != (1, "reinit")] == ["ok"] * 6
    assert rundir.read_results(str(tmp_path))[2]["status"].startswith("diverged")


def test_nan_stops_the_run_naming_round_and_step_and_keeps_finished_rounds(mnist1d, tmp_path, monkeypatch):
    monkeypatch.setattr(lottery.branch, "run_branch", diverge_in("ticket", lottery.run_branch))
    experiment = lottery.prepare(tiny_config(rounds=2), mnist1d, training.make_strategy("default"), str(tmp_path))
    with pytest.raises(lottery.Failed, match="round 1 ticket: training loss is nan at step 17"):
        lottery.run(experiment, lottery.RunOptions(on_nan="skip"))  # a diverged ticket stops even with skip
    rows = rundir.read_results(str(tmp_path))
    assert [(r["round"], r["status"][:8]) for r in rows] == [("0", "ok"), ("1", "diverged")]
    before = open(tmp_path / "round_00" / "ticket" / "metrics.json").read()
    with pytest.raises(lottery.Failed):
        lottery.run(experiment)
    assert open(tmp_path / "round_00" / "ticket" / "metrics.json").read() == before


def test_a_real_nan_through_the_command_line(tmp_path, capfd):
    flags.FLAGS.unparse_flags()
    main.parse_flags(["lth_tf", "--learning_rate=1e12", "--optimizer=sgd", "--train_steps=40", "--rounds=1",
                      f"--output_dir={tmp_path}"])
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(SystemExit) as exit_info:
        main.main(["lth_tf"])
    flags.FLAGS.unparse_flags()
    assert exit_info.value.code == 1
    assert {signum: signal.getsignal(signum) for signum in before} == before  # main put the handlers back
    *_, line = capfd.readouterr().err.strip().splitlines()  # after the line of the diverged branch
    assert line.startswith("lth_tf: error: round 0 ticket: training loss is nan at step")
    assert rundir.read_results(str(tmp_path))[0]["status"].startswith("diverged: training loss is nan")


def test_a_full_disk_is_reported_at_the_failing_write(tmp_path, monkeypatch, capfd):
    real_write = rundir.atomic_write

    def disk_full_for_weights(path, payload):
        if path.endswith(os.path.join("round_01", "ticket", "weights.npz")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real_write(path, payload)
    monkeypatch.setattr(rundir, "atomic_write", disk_full_for_weights)
    flags.FLAGS.unparse_flags()
    main.parse_flags(["lth_tf", "--train_steps=20", "--eval_every=10", "--rounds=2", f"--output_dir={tmp_path}"])
    with pytest.raises(SystemExit) as exit_info:
        main.main(["lth_tf"])
    flags.FLAGS.unparse_flags()
    assert exit_info.value.code == 1
    *_, line = capfd.readouterr().err.strip().splitlines()  # after the line of the finished round 0
    assert line == (f"lth_tf: error: cannot write {tmp_path}/round_01/ticket/weights.npz: No space left on device; "
                    "finished rounds are kept")
    assert [r["round"] for r in rundir.read_results(str(tmp_path))] == ["0"]
    assert not os.path.exists(tmp_path / ".lock")


def test_damaged_files_are_reported_and_made_again(tiny_run, tmp_path, caplog):
    experiment, rows = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(experiment.output_dir, copy)
    masks_path = copy / "round_02" / "masks.npz"
    original_masks = rundir.load_arrays(str(masks_path))
    masks_path.write_bytes(masks_path.read_bytes()[:200])          # truncated
    metrics_path = copy / "round_03" / "reinit" / "metrics.json"
    metrics_path.write_text(metrics_path.read_text()[:50])         # cut short
    results_path = copy / "results.csv"
    results_path.write_text(results_path.read_text()[:300])         # cut mid-row
    again = lottery.prepare(experiment.config, experiment.splits, experiment.trainer.strategy, str(copy))
    shown = io.StringIO()
    new_rows = lottery.run(again, lottery.RunOptions(progress=console.ExperimentProgress(console.Console(shown))))
    assert f"{masks_path} is damaged" in caplog.text and f"{metrics_path} is damaged" in caplog.text
    # what a person can repair or should know is said on the console too, one line each
    assert f"lth_tf: {metrics_path} is damaged (" in shown.getvalue()
    assert f"lth_tf: {results_path} is damaged; rebuilding it from the rounds' metrics.json" in shown.getvalue()
    assert rundir.results_readable(str(copy)) and rundir.results_readable(experiment.output_dir)
    for name, mask in rundir.load_arrays(str(masks_path)).items():
        np.testing.assert_array_equal(mask, original_masks[name])
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [strip(r) for r in new_rows] == [strip(r) for r in rows]   # the reinit branch was retrained alike
    (copy / "config.json").write_text("{")
    with pytest.raises(rundir.RunDirError, match="config.json is damaged .*: it holds the run's settings"):
        rundir.check_claim(str(copy), {})
    with pytest.raises(rundir.CorruptFile, match="theta_k.npz is damaged"):
        (copy / "init" / "theta_k.npz").write_bytes(b"PK\x03\x04 broken")
        rundir.load_arrays(str(copy / "init" / "theta_k.npz"))


def test_checkpoints_a_kill_left_beside_finished_metrics_are_removed_on_resume(tiny_run, tmp_path):
    """A kill between a branch's metrics.json and the removal of its checkpoints."""
    experiment, rows = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(experiment.output_dir, copy)
    stale = copy / "round_01" / "ticket" / "checkpoints"
    stale.mkdir()
    (stale / "ckpt-10.json").write_text("{}")
    again = lottery.prepare(experiment.config, experiment.splits, experiment.trainer.strategy, str(copy))
    assert lottery.run(again) == rows  # nothing trained again
    assert not stale.exists()
