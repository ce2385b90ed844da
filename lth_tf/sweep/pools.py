"""Running one experiment (`python -m lth_tf.main` in a process of its own),
on this machine's pool of worker processes or as a Ray task."""
import concurrent.futures
import contextlib
import ctypes
import os
import signal
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
            status = process.wait()
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

    def stop(self):
        for process in list(self.processes.values()):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)  # checkpoint and stop

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
            if address == "local":
                ray.init(num_cpus=parallel or os.cpu_count(), include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        self.task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(run_experiment)
        self.threads = max(1, int(cpus))
        self.refs = []
        self.parallel = int(ray.cluster_resources().get("CPU", 1) // max(cpus, 1e-3)) or 1

    def submit(self, experiment, cwd):
        ref = self.task.remote(experiment["argv"], experiment["console_log"], cwd, self.threads)
        self.refs.append(ref)
        return ref.future()

    def stop(self):
        for ref in self.refs:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref)  # interrupts the task, which stops its lth_tf.main at a checkpoint

    def close(self):
        if self.started:
            self.ray.shutdown()
