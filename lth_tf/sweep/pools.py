"""Running one experiment (`python -m lth_tf.main` in a process of its own),
on this machine's pool of worker processes or as a Ray task."""
import concurrent.futures
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time

from lth_tf.sweep.plan import SweepError


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent():
    """In the child: SIGTERM (a checkpointed stop) when the sweep that started it dies, even by SIGKILL."""
    _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_experiment(argv: list[str], console_log: str, cwd: str, threads: int, processes: dict | None = None):
    """Runs `python -m lth_tf.main ARGV`, its console appended to `console_log`;
    returns (exit status, seconds, one-line reason or '')."""
    os.makedirs(os.path.dirname(console_log), exist_ok=True)
    env = dict(os.environ)
    if threads:  # N experiments side by side: each gets its share of the cores, not all of them
        for key in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
            env.setdefault(key, str(threads))
    started = time.time()
    with open(console_log, "ab") as log:
        offset = log.tell()
        log.write(f"lth_tf.sweep: {time.strftime('%Y-%m-%d %H:%M:%S')} python -m lth_tf.main "
                  f"{' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen([sys.executable, "-m", "lth_tf.main", *argv], cwd=cwd, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   preexec_fn=_die_with_parent if _PRCTL else None)
        if processes is not None:
            processes[console_log] = process
        try:
            while (status := process.poll()) is None:  # not wait(): Ray's cancel is an exception raised between
                time.sleep(0.2)                          # Python instructions, which a blocking wait never reaches
        except BaseException:  # Ray's cancel interrupts the wait: the experiment checkpoints and stops
            process.send_signal(signal.SIGTERM)
            process.wait()
            raise
        finally:
            if processes is not None:
                processes.pop(console_log, None)
    return status, time.time() - started, _reason(status, console_log, offset)


def _reason(status: int, console_log: str, offset: int) -> str:
    if status == 0:
        return ""
    if status < 0:
        return f"killed by {signal.Signals(-status).name}"
    with open(console_log, errors="replace") as f:
        f.seek(offset)
        lines = [line.strip() for line in f if line.startswith("lth_tf:")]
    return lines[-1].removeprefix("lth_tf: ") if lines else f"exit status {status}"


class LocalPool:
    """`parallel` experiments at a time, each a child process of this one."""

    def __init__(self, parallel: int):
        self.parallel = parallel
        self.threads = max(1, (os.cpu_count() or 1) // parallel)
        self.processes = {}
        self.executor = concurrent.futures.ThreadPoolExecutor(parallel)

    def submit(self, experiment, cwd):
        return self.executor.submit(run_experiment, experiment["argv"], experiment["console_log"], cwd,
                                    self.threads, self.processes)

    def stop(self, pending) -> set:
        """Running experiments checkpoint and stop; returns the `pending` futures that never started."""
        never = {future for future in pending if future.cancel()}
        for process in list(self.processes.values()):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)  # checkpoint and stop
        return never

    def close(self):
        self.executor.shutdown(wait=True, cancel_futures=True)


class RayPool:
    """Each experiment a Ray task reserving --cpus_per_run / --gpus_per_run;
    Ray places them on the cluster (and sets CUDA_VISIBLE_DEVICES)."""

    def __init__(self, address: str, cpus: float, gpus: float, parallel: int):
        try:
            import ray
        except ImportError as error:
            raise SweepError("--ray_address needs Ray: pip install -e '.[ray]'") from error
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            with _quiet_ray():
                if address == "local":
                    ray.init(address="local", num_cpus=parallel or os.cpu_count(), include_dashboard=False,
                             log_to_driver=False, logging_level=logging.WARNING)
                else:
                    check_cluster(address)
                    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        self.task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(run_experiment)
        self.threads = max(1, int(cpus))
        self.refs = []
        self.parallel = int(ray.cluster_resources().get("CPU", 1) // max(cpus, 1e-3)) or 1

    def submit(self, experiment, cwd):
        ref = self.task.remote(experiment["argv"], experiment["console_log"], cwd, self.threads)
        self.refs.append(ref)
        return ref.future()

    def stop(self, pending) -> set:
        """Cancels every task: a running one stops its lth_tf.main at a checkpoint. Each future then ends
        with Ray's TaskCancelledError (a Ray future's own cancel() would leave it pending forever)."""
        for ref in self.refs:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref)
        return set()

    def close(self):
        if self.started:
            self.ray.shutdown()


@contextlib.contextmanager
def _quiet_ray():
    """Ray's INFO lines and its note that a new local instance has token authentication stay off the console."""
    loggers = [logging.getLogger(name) for name in ("ray", "ray._private.authentication.authentication_token_setup")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def _stderr_silenced():
    """File descriptor 2 to /dev/null for the block: what native code writes there too."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check_cluster(address: str, timeout: float = 5.0):
    """One line (SweepError) for a HOST:PORT where no Ray cluster answers, or one that asks for a token this
    process does not send, before ray.init spends 20 s retrying (ray:// and auto are left to Ray)."""
    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as error:
        raise SweepError(f"--ray_address={address}: no Ray head answers there ({error}); start one with "
                         "`ray start --head --port=PORT` and pass the address it prints") from None
    if host in ("localhost", "127.0.0.1", "::1"):  # Ray connects to this machine's network address instead
        from ray.util import get_node_ip_address
        try:
            socket.create_connection((get_node_ip_address(), int(port)), timeout=timeout).close()
        except OSError:
            raise SweepError(f"--ray_address={address}: Ray replaces {host} by this machine's address "
                             f"{get_node_ip_address()}, where the head does not answer; start the head with "
                             "--node-ip-address=127.0.0.2 (another loopback address Ray keeps) and pass "
                             "127.0.0.2:PORT") from None
    try:
        from ray._raylet import GcsClient  # Ray's own client of the head; private, so only a probe
        from ray.exceptions import AuthenticationError
    except ImportError:
        return
    try:
        with _stderr_silenced():  # its C++ side logs each refused attempt
            GcsClient(address=address)
    except AuthenticationError:
        if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            raise SweepError(f"--ray_address={address}: the cluster asks for its token (`ray start` turns token "
                             "authentication on): run with RAY_AUTH_MODE=token and the head's ~/.ray/auth_token "
                             "on this machine (or RAY_AUTH_TOKEN set to it)") from None
        raise SweepError(f"--ray_address={address}: the cluster refuses this machine's token: copy the head's "
                         "~/.ray/auth_token here (or set RAY_AUTH_TOKEN to it)") from None
    except Exception:  # noqa: BLE001 - anything else is for ray.init to say
        return
