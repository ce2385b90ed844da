"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 find the
masks a single process finds, also when both are killed and restarted."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import read_log, wait_for_log
from lth_tf import rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.xdist_group("multi_worker")  # both tests compare with one `single` run, built once

TINY = ["--model=mlp_32_16", "--optimizer=sgd", "--learning_rate=0.05", "--batch_size=50", "--train_steps=60",
        "--eval_every=10", "--log_every=10", "--rounds=2", "--rewind_step=5", "--controls=reinit",
        "--export=none"]
KILLED = ["--checkpoint_every=10"]  # the kill test's workers checkpoint often, to be killed between two


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def cli(args, env=None):
    env = {**(env or os.environ), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "lth_tf.main", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start_workers(output_dir, extra=()):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(cli([*TINY, *extra, "--strategy=multi_worker", f"--output_dir={output_dir}"],
                             {**os.environ, "TF_CONFIG": json.dumps(tf_config)}))
    return processes


def finish(processes, timeout=900):
    outputs = [p.communicate(timeout=timeout) for p in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    return outputs


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("single")
    finish([cli([*TINY, f"--output_dir={output_dir}"])])
    return output_dir


def assert_same_masks_and_weights(single, chief, other):
    for r in (1, 2):
        reference = rundir.load_arrays(str(single / f"round_{r:02d}" / "masks.npz"))
        for folder in (chief, other):
            masks = rundir.load_arrays(str(folder / f"round_{r:02d}" / "masks.npz"))
            for name in reference:
                np.testing.assert_array_equal(masks[name], reference[name])
    weights = rundir.load_arrays(str(chief / "round_02" / "ticket" / "weights.npz"))
    reference = rundir.load_arrays(str(single / "round_02" / "ticket" / "weights.npz"))
    for key in reference:
        np.testing.assert_allclose(weights[key], reference[key], atol=1e-4)


def test_two_workers_match_a_single_process(single, tmp_path):
    outputs = finish(start_workers(tmp_path / "multi"))
    assert "2 replica(s)" in read_log(tmp_path / "multi")
    assert "results:" in outputs[0][0] and outputs[1][0] == ""  # only the chief reports
    chief, other = tmp_path / "multi", tmp_path / "multi.worker-1"
    assert not os.path.exists(other / "tensorboard")  # the chief alone writes summaries
    assert [r["branch"] for r in rundir.read_results(str(chief))] == ["ticket", "ticket", "reinit", "ticket", "reinit"]
    assert_same_masks_and_weights(single, chief, other)


def checkpoint_steps(folder):
    return sorted(int(f[len("ckpt-"):-len(".json")]) for f in os.listdir(folder) if f.endswith(".json"))


def test_killed_workers_restart_and_resume_past_a_damaged_checkpoint(single, tmp_path):
    """Both workers killed mid-branch; worker 1's newest checkpoint then damaged. On restart
    both agree on an older checkpoint and resume there, instead of worker 1 going back alone
    into a collective the chief never joins (the old code crashed there with a collective error)."""
    processes = start_workers(tmp_path / "multi", KILLED)
    wait_for_log(tmp_path / "multi", "round 1 ticket       step     30/60", processes[0])
    for process in processes:
        process.kill()
        process.wait()
    assert os.path.exists(tmp_path / "multi" / "round_00" / "ticket" / "metrics.json")
    folders = {name: tmp_path / name / "round_01" / "ticket" / "checkpoints" for name in ("multi", "multi.worker-1")}
    for name, folder in folders.items():  # killed mid-branch, with a checkpoint to resume from
        assert not os.path.exists(tmp_path / name / "round_01" / "ticket" / "metrics.json")
        assert checkpoint_steps(folder)
    damaged = checkpoint_steps(folders["multi.worker-1"])[-1]
    data_file = next(f for f in os.listdir(folders["multi.worker-1"]) if f.startswith(f"ckpt-{damaged}.data"))
    with open(folders["multi.worker-1"] / data_file, "r+b") as f:
        f.truncate(100)
    common = set(checkpoint_steps(folders["multi"])) & set(checkpoint_steps(folders["multi.worker-1"]))
    older = max(step for step in common if step < damaged)  # two are kept; both were written by step 30
    logged_before = {name: len(read_log(tmp_path / name)) for name in folders}
    finish(start_workers(tmp_path / "multi", KILLED), timeout=300)
    logs = {name: read_log(tmp_path / name)[since:] for name, since in logged_before.items()}
    assert f"ckpt-{damaged}.json is unreadable" in logs["multi.worker-1"]
    for log in logs.values():
        assert f"round 1 ticket: resuming from the checkpoint at step {older}" in log
        assert "round 1 ticket       done" in log
        assert "round 0 ticket       done" not in log  # finished on both workers, not redone
    assert_same_masks_and_weights(single, tmp_path / "multi", tmp_path / "multi.worker-1")
