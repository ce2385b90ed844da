"""lth_tf.sweep against a real Ray cluster, as `ray start` sets one up (token
authentication on): a head and a second node standing in for a second
machine, on loopback addresses, started and stopped by the test itself.

Ray rewrites 127.0.0.1 to the machine's network address (and then binds its
ports on every interface), so the head is 127.0.0.2 and the second node
127.0.0.3: loopback addresses Ray keeps. The cluster's token is random and
lives only in these processes' environment (RAY_AUTH_TOKEN), so no
~/.ray/auth_token is read or written."""
import concurrent.futures
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from test_sweep import TINY, local_sweep, results_of, run_sweep  # noqa: F401 - local_sweep is a fixture

pytest.importorskip("ray", reason="Ray is in the [test] extra; this runs where it is installed")
pytestmark = pytest.mark.xdist_group("ray_cluster")  # one pytest-xdist worker, one cluster (make test: --dist=loadgroup)

HEAD, NODE = "127.0.0.2", "127.0.0.3"
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ray_start(env, *argv) -> subprocess.Popen:
    """`ray start ... --block`: in the foreground, so that stopping it stops exactly the processes it started."""
    return subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, text=True)


def wait_for_nodes(env, address, count, started, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = subprocess.run([RAY, "status", f"--address={address}"], env=env, capture_output=True, text=True,
                                timeout=60)
        active = status.stdout.split("Active:")[-1].split("Pending:")[0]
        if status.returncode == 0 and active.count("node_") == count:
            return
        if any(p.poll() is not None for p in started):
            break
        time.sleep(1)
    output = "".join(p.stdout.read() if p.poll() is not None else "" for p in started)
    pytest.fail(f"the Ray cluster at {address} did not come up with {count} nodes: {output[-2000:]}")


def session_processes(port: int) -> list[str]:
    """Processes of the cluster whose head is at `port` (its GCS, raylets, workers name the address)."""
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in listing if f"{HEAD}:{port}" in line or f"--gcs_server_port={port}" in line]


@pytest.fixture(scope="module")
def cluster(request):
    """(address, environment with the cluster's token): a head and a second node, 1 CPU each; they start
    while the local sweep the first test compares with trains (it needs no Ray)."""
    port = free_port(HEAD)
    # the monitor behind `ray status` reports every second instead of every 5 s, so nodes are seen sooner
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               AUTOSCALER_UPDATE_INTERVAL_S="1")
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    started = [ray_start(env, "--head", f"--node-ip-address={HEAD}", f"--port={port}", "--num-cpus=1",
                         "--include-dashboard=false", f"--ray-client-server-port={free_port(HEAD)}",
                         f"--dashboard-agent-listen-port={free_port(HEAD)}", f"--temp-dir={temp_dir}")]
    address = f"{HEAD}:{port}"

    def come_up():
        wait_for_nodes(env, address, 1, started)
        started.append(ray_start(env, f"--address={address}", f"--node-ip-address={NODE}", "--num-cpus=1",
                                 f"--dashboard-agent-listen-port={free_port(NODE)}"))
        wait_for_nodes(env, address, 2, started)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        booting = pool.submit(come_up)
        try:
            if "local_sweep" in request.fixturenames:
                request.getfixturevalue("local_sweep")
            booting.result()  # wait_for_nodes' failure, if any, raised here
            yield address, env
        finally:
            concurrent.futures.wait([booting])
            for process in reversed(started):
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
            deadline = time.time() + 30
            while session_processes(port) and time.time() < deadline:
                time.sleep(0.5)
            assert not session_processes(port), session_processes(port)


def sweep_env(env, **changes):
    return {k: v for k, v in dict(env, **changes).items() if v is not None}


def test_a_sweep_on_a_ray_cluster_with_two_nodes_gives_the_local_pools_results(cluster, local_sweep, tmp_path):
    address, env = cluster
    process = subprocess.run([sys.executable, "-m", "lth_tf.sweep", "--seeds=0,1", "--grid=prune_rate_fc=0.5",
                              f"--sweep_dir={tmp_path / 'ray'}", f"--ray_address={address}", *TINY],
                             capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL)
    assert process.returncode == 0, process.stderr[-3000:]
    for seed in (0, 1):
        assert (results_of(tmp_path / "ray" / "prune_rate_fc=0.5" / f"seed_{seed}")
                == results_of(local_sweep[0] / "prune_rate_fc=0.5" / f"seed_{seed}"))
    # Ray's own lines stay off the console: only the sweep's
    assert [line for line in process.stderr.splitlines() if line.strip()
            and not line.startswith("lth_tf.sweep:")] == []


def test_without_the_clusters_token_the_sweep_says_what_to_set_in_one_line(cluster, tmp_path):
    address, env = cluster
    started = time.time()
    process = subprocess.run([sys.executable, "-m", "lth_tf.sweep", "--seeds=0", f"--sweep_dir={tmp_path / 's'}",
                              f"--ray_address={address}", *TINY], capture_output=True, text=True, timeout=120,
                             env=sweep_env(env, RAY_AUTH_MODE=None, RAY_AUTH_TOKEN=None,
                                           RAY_AUTH_TOKEN_PATH=str(tmp_path / "no_token")),
                             stdin=subprocess.DEVNULL)
    assert process.returncode == 2 and time.time() - started < 30
    assert process.stderr.strip().count("\n") == 0, process.stderr
    assert "asks for its token" in process.stderr and "RAY_AUTH_MODE=token" in process.stderr
    wrong = subprocess.run([sys.executable, "-m", "lth_tf.sweep", "--seeds=0", f"--sweep_dir={tmp_path / 's'}",
                            f"--ray_address={address}", *TINY], capture_output=True, text=True, timeout=120,
                           env=sweep_env(env, RAY_AUTH_TOKEN=secrets.token_hex(32)), stdin=subprocess.DEVNULL)
    assert wrong.returncode == 2 and wrong.stderr.strip().count("\n") == 0, wrong.stderr
    assert "refuses this machine's token" in wrong.stderr


def test_an_address_where_no_head_answers_is_one_line(tmp_path):
    process = run_sweep("--seeds=0", f"--sweep_dir={tmp_path / 's'}", f"--ray_address={HEAD}:{free_port(HEAD)}",
                        *TINY, timeout=120)
    assert process.returncode == 2 and process.stderr.strip().count("\n") == 0, process.stderr
    assert "no Ray head answers there" in process.stderr


def test_ctrl_c_stops_a_ray_sweep_within_seconds_and_leaves_it_resumable(cluster, tmp_path):
    address, env = cluster
    sweep_dir = tmp_path / "stopped"
    long_run = [*TINY, "--train_steps=100000", "--eval_every=1000", "--checkpoint_every=200"]
    process = subprocess.Popen([sys.executable, "-m", "lth_tf.sweep", "--seeds=0,1,2", f"--sweep_dir={sweep_dir}",
                                f"--ray_address={address}", *long_run], env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = [sweep_dir / f"seed_{seed}" for seed in (0, 1, 2)]
    deadline = time.time() + 240
    while time.time() < deadline and sum((run / "round_00").exists() for run in runs) < 2:
        time.sleep(0.5)  # both nodes' experiments are training
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    asked = time.time()
    out, err = process.communicate(timeout=120)
    took = time.time() - asked
    assert process.returncode == 130, err[-3000:]
    assert took < 20, f"stopped in {took:.0f} s"
    assert "Traceback" not in err
    state = json.loads((sweep_dir / "sweep.json").read_text())
    statuses = sorted(record["status"] for record in state["experiments"].values())
    assert statuses == ["interrupted", "interrupted", "not started"], statuses
    for seed in (0, 1):  # each stopped at a checkpoint it resumes from, and let its run directory go
        assert "a checkpoint is saved: rerun the same command to resume" in (
            sweep_dir / "logs" / f"seed_{seed}.txt").read_text()
        assert not (runs[seed] / ".lock").exists()
