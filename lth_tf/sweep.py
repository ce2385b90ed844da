"""Replicate sweeps: every (grid point x seed) of one experiment, each an
ordinary lth_tf run in its own directory, on a local pool or a Ray cluster.

    python -m lth_tf.sweep --flagfile=configs/lenet_fashion_mnist.flags --seeds=0,1,2 \\
        [--grid=prune_rate_fc=0.2,0.3 --grid=rewind_step=0,1000] --sweep_dir=runs/sweeps/NAME \\
        [--parallel=N | --ray_address=auto] [experiment flags ...]

    SWEEP_DIR/sweep.json                 the grid (a rerun with another grid is refused) and each experiment's status
    SWEEP_DIR/POINT/seed_S/              the run of one grid point and seed (POINT is absent without --grid)
    SWEEP_DIR/POINT/report.md, *.png     lth_tf.report over the point's finished seeds (mean, min-max band)
    SWEEP_DIR/sweep.csv, sweep.md        one row per grid point x round x branch: mean, std, min, max, n
    SWEEP_DIR/logs/POINT__seed_S.txt     the experiment's console (its log.txt holds the rest)

Each experiment is `python -m lth_tf.main` in a process of its own, so a
crash, a kill or a bad flag in one grid point stops that experiment only; a
rerun of the same command skips finished experiments and resumes the others
from their checkpoints. No TensorFlow in this process.
"""
import concurrent.futures
import contextlib
import csv
import ctypes
import io
import os
import platform
import signal
import subprocess
import sys
import threading
import time

import numpy as np
from absl import flags

from lth_tf import console as console_lib
from lth_tf import data, report, rundir
from lth_tf import flags as lth_flags
from lth_tf.config import ConfigError

SWEEP_FLAGS = flags.FlagValues()  # the sweep's own flags; everything else is the experiment's
flags.DEFINE_list("seeds", ["0"], "Seeds: each grid point runs once per seed (--seed of the experiment).",
                  flag_values=SWEEP_FLAGS)
flags.DEFINE_multi_string("grid", [], "NAME=V1,V2,...: an experiment flag and its values; several --grid "
                          "flags make the product.", flag_values=SWEEP_FLAGS)
flags.DEFINE_string("sweep_dir", "", "Folder of the sweep (required). Rerunning the command resumes it.",
                    flag_values=SWEEP_FLAGS)
flags.DEFINE_integer("parallel", 0, "Experiments at once on the local pool (0: one per two cores, at least 1).",
                     lower_bound=0, flag_values=SWEEP_FLAGS)
flags.DEFINE_string("ray_address", "", "Run each experiment as a Ray task on this cluster: auto, ray://host:port, "
                    "host:port, or local (a private Ray instance on this machine). --sweep_dir must be on a "
                    "file system every node writes at the same path.", flag_values=SWEEP_FLAGS)
flags.DEFINE_float("cpus_per_run", 1.0, "Ray: CPUs each experiment reserves.", lower_bound=0,
                   flag_values=SWEEP_FLAGS)
flags.DEFINE_float("gpus_per_run", 0.0, "Ray: GPUs each experiment reserves.", lower_bound=0,
                   flag_values=SWEEP_FLAGS)
OWNED = ("seed", "output_dir")  # set per experiment by the sweep
METRICS = ("test_accuracy", "early_stop_test_accuracy", "early_stop_step")


class SweepError(Exception):
    """A sweep that cannot start: bad sweep flags, a sweep_dir holding another sweep."""


# --- the plan: which experiments, with which flags -------------------------------------------------------

def _name(token: str) -> str:
    return token.lstrip("-").split("=", 1)[0]


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(sweep flags, experiment flags), --flagfile expanded so the experiment's
    flags stand alone (a Ray node has no access to this machine's flagfiles).
    A flagfile's --seed and --output_dir are dropped: the sweep sets them."""
    owned = [t for t in argv if t.startswith("-") and _name(t) in OWNED]
    if owned:
        raise SweepError(f"{owned[0]}: the sweep sets --seed (use --seeds) and --output_dir (per experiment)")
    try:
        argv = lth_flags.FLAGS.read_flags_from_files(argv, force_gnu=True)
    except flags.Error as error:
        raise SweepError(str(error)) from error
    ours, theirs, tokens = [], [], iter(argv)
    for token in tokens:
        if token.startswith("-") and _name(token) in SWEEP_FLAGS:
            ours.append(token)
            if "=" not in token:
                ours.append(next(tokens, ""))
        elif not (token.startswith("-") and _name(token) in OWNED):
            theirs.append(token)
    return ours, theirs


def parse_grid(specs: list[str]) -> list[tuple[str, list[str]]]:
    grid = []
    for spec in specs:
        name, _, values = spec.partition("=")
        if not values:
            raise SweepError(f"--grid={spec}: expected NAME=V1,V2,...")
        if name not in lth_flags.FLAGS or name in OWNED or name == "flagfile":
            raise SweepError(f"--grid={spec}: {name!r} is not an experiment flag the grid can vary"
                             + (" (the sweep sets it)" if name in OWNED else ""))
        if name in (g[0] for g in grid):
            raise SweepError(f"--grid names {name} twice")
        grid.append((name, values.split(",")))
    return grid


def grid_points(grid) -> list[dict]:
    points = [{}]
    for name, values in grid:
        points = [{**point, name: value} for point in points for value in values]
    return points


def point_name(point: dict) -> str:
    return "__".join(f"{k}={v}".replace("/", "_") for k, v in point.items())


def experiments(sweep_dir, grid, seeds, base_argv) -> list[dict]:
    """One entry per (seed, grid point), seed-major: every point's first seed finishes first."""
    planned = []
    for seed in seeds:
        for point in grid_points(grid):
            folder = os.path.join(sweep_dir, point_name(point)) if point else sweep_dir
            name = f"{point_name(point) + '__' if point else ''}seed_{seed}"
            output_dir = os.path.join(folder, f"seed_{seed}")
            argv = base_argv + [f"--{k}={v}" for k, v in point.items()] + [f"--seed={seed}",
                                                                            f"--output_dir={output_dir}"]
            planned.append(dict(name=name, point=point, seed=seed, folder=folder, output_dir=output_dir,
                                argv=argv, console_log=os.path.join(sweep_dir, "logs", name + ".txt")))
    return planned


def preflight(argv: list[str]) -> str:
    """'' if the experiment's flags make an experiment (lth_tf.main's checks, no
    TensorFlow), else the one-line reason lth_tf.main would give."""
    from lth_tf import main
    lth_flags.FLAGS.unparse_flags()
    try:
        lth_flags.FLAGS(["lth_tf.main", *argv])
        main.preflight(lth_flags.FLAGS)
    except flags.Error as error:
        return f"error: {str(error).replace('ERROR:: ', '')}"
    except main.PREFLIGHT_ERRORS as error:
        return f"error: {error}"
    finally:
        lth_flags.FLAGS.unparse_flags()
    return ""


# --- running one experiment, on this machine or a Ray node --------------------------------------------------

def _die_with_parent():
    """In the child: SIGTERM (a checkpointed stop) when the sweep that started it dies, even by SIGKILL."""
    _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


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
        process = subprocess.Popen([sys.executable, "-m", "lth_tf.main", *argv], cwd=cwd, stdout=log,
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
        if not ray.is_initialized():
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
                self.ray.cancel(ref)  # SIGINT to the task; its lth_tf.main checkpoints on the parent's death

    def close(self):
        pass


# --- the sweep ----------------------------------------------------------------------------------------------

def claim(sweep_dir: str, grid) -> dict:
    """The sweep's state; SweepError if `sweep_dir` holds a sweep of another grid."""
    path = os.path.join(sweep_dir, "sweep.json")
    grid_json = [[name, values] for name, values in grid]
    if os.path.exists(path):
        state = rundir.read_json(path)
        if state["grid"] != grid_json:
            raise SweepError(f"{sweep_dir} holds a sweep of another grid ({_grid_text(state['grid'])}, not "
                             f"{_grid_text(grid_json)}); use a new --sweep_dir")
        return state
    if os.path.isdir(sweep_dir) and os.listdir(sweep_dir):
        raise SweepError(f"{sweep_dir} is not empty and holds no sweep.json; use a new --sweep_dir")
    return {"grid": grid_json, "experiments": {}}


def _gpus() -> str:
    """', N GPUs' where nvidia-smi lists any (no TensorFlow in this process)."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    count = listing.count("GPU ")
    return f", {count} GPU{'s' * (count > 1)}" if count else ""


def _grid_text(grid_json) -> str:
    return " x ".join(f"{name}={','.join(values)}" for name, values in grid_json) or "no grid"


def is_finished(experiment, state) -> bool:
    record = state["experiments"].get(experiment["name"], {})
    return record.get("status") == "finished" and os.path.exists(
        os.path.join(experiment["output_dir"], "results.csv"))


def run_sweep(sweep_dir, grid, seeds, base_argv, pool_factory, say=print, should_stop=lambda: False) -> dict:
    """Runs what is not finished; returns the state (also in sweep.json)."""
    state = claim(sweep_dir, grid)
    os.makedirs(sweep_dir, exist_ok=True)
    planned = experiments(sweep_dir, grid, seeds, base_argv)
    lock = threading.Lock()

    def record(experiment, **fields):
        with lock:
            state["experiments"][experiment["name"]] = dict(output_dir=experiment["output_dir"], seed=experiment["seed"],
                                                            point=experiment["point"], **fields)
            rundir.write_json(os.path.join(sweep_dir, "sweep.json"), state)

    todo, finished = [], 0
    for experiment in planned:
        if is_finished(experiment, state):
            finished += 1
            continue
        reason = preflight(experiment["argv"])
        if reason:
            os.makedirs(os.path.dirname(experiment["console_log"]), exist_ok=True)
            with open(experiment["console_log"], "a") as log:
                log.write(f"lth_tf.sweep: python -m lth_tf.main {' '.join(experiment['argv'])}\nlth_tf: {reason}\n")
            record(experiment, status="failed", reason=reason, log=experiment["console_log"], seconds=0.0)
            say(f"lth_tf.sweep: {experiment['name']}: failed before starting: {reason}")
        else:
            todo.append(experiment)
    say(f"lth_tf.sweep: {len(planned)} experiments ({len(grid_points(grid))} grid point(s) x {len(seeds)} "
        f"seed(s)): {finished} already finished, {len(todo)} to run")
    if todo:
        state["machine"] = f"{os.cpu_count()} CPU cores ({platform.machine()}){_gpus()}"
        started = time.time()
        _run_all(todo, pool_factory(), record, say, should_stop)
        with lock:  # the sweep's wall time, summed over the commands that ran it
            state["wall_seconds"] = round(state.get("wall_seconds", 0.0) + time.time() - started, 1)
            rundir.write_json(os.path.join(sweep_dir, "sweep.json"), state)
    write_outputs(sweep_dir, grid, planned, state)
    return state


def _run_all(todo, pool, record, say, should_stop):
    cwd, started, durations = os.getcwd(), time.time(), []
    futures = {}
    for experiment in todo:
        record(experiment, status="queued")
        futures[pool.submit(experiment, cwd)] = experiment
    stopping = False
    try:
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=0.5,
                                                    return_when=concurrent.futures.FIRST_COMPLETED)
            if should_stop() and not stopping:
                stopping = True
                for future in pending:
                    future.cancel()  # not started yet: stays queued for the rerun
                pool.stop()
            for future in done:
                experiment = futures[future]
                if future.cancelled():
                    record(experiment, status="not started")
                    continue
                try:
                    status, seconds, reason = future.result()
                except Exception as error:  # a task the cluster lost, a node that died
                    status, seconds, reason = 1, 0.0, f"{type(error).__name__}: {str(error).splitlines()[0]}"
                log = os.path.join(experiment["output_dir"], "log.txt")
                log = log if os.path.exists(log) else experiment["console_log"]
                outcome = "finished" if status == 0 else ("interrupted" if status == 130 else "failed")
                record(experiment, status=outcome, reason=reason, log=log, seconds=round(seconds, 1))
                durations.append(seconds)
                left = len(pending)
                eta = (f"; about {console_lib.duration(np.mean(durations) * -(-left // pool.parallel))} left"
                       if left and not stopping else "")
                say(f"lth_tf.sweep: [{len(todo) - left}/{len(todo)}] {experiment['name']}: {outcome} in "
                    f"{console_lib.duration(seconds)}{': ' + reason if reason else ''}{eta}")
    finally:
        pool.close()
    say(f"lth_tf.sweep: {len(todo)} experiments in {console_lib.duration(time.time() - started)}")


# --- what the sweep leaves: per-point reports, sweep.csv, sweep.md -----------------------------------------

SWEEP_COLUMNS = ("round", "branch", "weights_remaining_pct") + tuple(
    f"{m}_{s}" for m in METRICS for s in ("mean", "std", "min", "max")) + ("n",)


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per (round, branch) over the runs' finished rows; std with ddof=1 (0 for one run)."""
    groups = {}
    for run in runs:
        for row in run["rows"]:
            if row["status"] == "ok":
                groups.setdefault((int(row["round"]), row["branch"]), []).append(row)
    table = []
    order = {branch: i for i, branch in enumerate(report.branches(runs))}  # ticket first
    for (round_index, branch), rows in sorted(groups.items(), key=lambda item: (item[0][0], order[item[0][1]])):
        out = dict(round=round_index, branch=branch,
                   weights_remaining_pct=round(float(np.mean([float(r["weights_remaining_pct"]) for r in rows])), 4),
                   n=len(rows))
        for metric in METRICS:
            values = np.array([float(r[metric]) for r in rows])
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            out.update({f"{metric}_mean": values.mean(), f"{metric}_std": std,
                        f"{metric}_min": values.min(), f"{metric}_max": values.max()})
        table.append({k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()})
    return table


def write_outputs(sweep_dir, grid, planned, state):
    """A report per grid point over its finished seeds, sweep.csv and sweep.md."""
    names = [name for name, _ in grid]
    rows, sections = [], []
    for point in grid_points(grid):
        mine = [e for e in planned if e["point"] == point and is_finished(e, state)]
        if not mine:
            continue
        runs = [report.load_run(e["output_dir"]) for e in mine]
        report.write_report(runs, mine[0]["folder"])
        table = aggregate(runs)
        rows += [{**point, **row} for row in table]
        link = os.path.relpath(os.path.join(mine[0]["folder"], "report.md"), sweep_dir)
        sections += [f"## {point_name(point) or 'all runs'}", "",
                     f"Seeds {', '.join(str(e['seed']) for e in mine)}; report: [{link}]({link})", "",
                     markdown_table(table), ""]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, names + list(SWEEP_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    rundir.atomic_write(os.path.join(sweep_dir, "sweep.csv"), buffer.getvalue().encode())
    text = [f"# Sweep: {_grid_text(state['grid'])}", "",
            "Cells: mean ± std over seeds (n seeds). sweep.csv has min and max too.", "", *sections,
            "## Experiments", "", status_table(planned, state), ""]
    rundir.atomic_write(os.path.join(sweep_dir, "sweep.md"), "\n".join(text).encode())


def markdown_table(table: list[dict]) -> str:
    """round | % weights | one 'test acc (early-stop acc, iteration)' column per branch."""
    branches = list(dict.fromkeys(row["branch"] for row in table))
    lines = ["| round | % weights | " + " | ".join(f"{b} test acc | {b} early-stop acc | {b} early-stop iter"
                                                  for b in branches) + " |",
             "|---|---|" + "---|---|---|" * len(branches)]
    for round_index in sorted({row["round"] for row in table}):
        cells = {row["branch"]: row for row in table if row["round"] == round_index}
        pct = next(iter(cells.values()))["weights_remaining_pct"]
        line = [str(round_index), f"{pct:.2f}"]
        for branch in branches:
            row = cells.get(branch)
            line += ([_mean_std(row, m, 0 if m == "early_stop_step" else 4) for m in METRICS] if row
                     else ["-"] * 3)
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)


def _mean_std(row, metric, digits):
    return f"{row[metric + '_mean']:.{digits}f} ± {row[metric + '_std']:.{digits}f} ({row['n']})"


def status_table(planned, state) -> str:
    lines = ["| experiment | status | time | reason | log |", "|---|---|---|---|---|"]
    for experiment in planned:
        record = state["experiments"].get(experiment["name"], {})
        seconds = record.get("seconds")
        lines.append(f"| {experiment['name']} | {record.get('status', 'not run')} | "
                     f"{console_lib.duration(seconds) if seconds else '-'} | {record.get('reason') or '-'} | "
                     f"{record.get('log', '-')} |")
    return "\n".join(lines)


# --- command line --------------------------------------------------------------------------------------------

def cli(argv=None, should_stop=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    SWEEP_FLAGS.unparse_flags()
    try:
        ours, base_argv = split_argv(argv[1:])
        SWEEP_FLAGS(["lth_tf.sweep", *ours])
        f = SWEEP_FLAGS
        if not f.sweep_dir:
            raise SweepError("--sweep_dir is required")
        grid = parse_grid(f.grid)
        seeds = [int(s) for s in f.seeds]
        parallel = f.parallel or max(1, (os.cpu_count() or 1) // 2)
        if f.ray_address:
            pool_factory = lambda: RayPool(f.ray_address, f.cpus_per_run, f.gpus_per_run, f.parallel)  # noqa: E731
        else:
            pool_factory = lambda: LocalPool(parallel)  # noqa: E731
        stop = should_stop or _stop_on_signals()
        state = run_sweep(os.path.abspath(f.sweep_dir), grid, seeds, base_argv, pool_factory,
                          say=lambda line: print(line, file=sys.stderr, flush=True), should_stop=stop)
    except (flags.Error, ValueError, SweepError, ConfigError, data.DataError, rundir.RunDirError,
            report.ReportError) as error:
        sys.stderr.write(f"lth_tf.sweep: error: {str(error).replace('ERROR:: ', '')}\n")
        return 2 if isinstance(error, (flags.Error, SweepError, ValueError)) else 1
    return summarize(state, f.sweep_dir)


def summarize(state, sweep_dir) -> int:
    records = state["experiments"]
    counts = {s: sum(1 for r in records.values() if r["status"] == s)
              for s in ("finished", "failed", "interrupted", "not started", "queued")}
    counts["interrupted"] += counts["not started"] + counts["queued"]
    print(f"{'experiment':<40} {'status':<12} {'time':>8}  reason / log")
    for name, record in records.items():
        seconds = record.get("seconds")
        detail = "" if record["status"] == "finished" else f"{record.get('reason', '')}  ({record.get('log', '')})"
        print(f"{name:<40} {record['status']:<12} {console_lib.duration(seconds) if seconds else '-':>8}  {detail}")
    print(f"finished {counts['finished']}, failed {counts['failed']}, interrupted {counts['interrupted']}; "
          f"summary: {os.path.join(sweep_dir, 'sweep.md')}")
    if counts["interrupted"]:
        return 130
    return 1 if counts["failed"] else 0


def _stop_on_signals():
    """Ctrl-C / SIGTERM: running experiments checkpoint and stop, no new ones start."""
    stop = threading.Event()

    def request(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        sys.stderr.write(f"lth_tf.sweep: {signal.Signals(signum).name}: stopping the running experiments at "
                         "their next checkpoint; rerun the same command to resume\n")
    signal.signal(signal.SIGINT, request)
    signal.signal(signal.SIGTERM, request)
    return stop.is_set


if __name__ == "__main__":
    sys.exit(cli())
