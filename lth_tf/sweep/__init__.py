"""Replicate sweeps: every (grid point x seed) of one experiment, each an
ordinary lth_tf run in its own directory, on a local pool or a Ray cluster.

    python -m lth_tf.sweep --flagfile=configs/lenet_fashion_mnist.flags --seeds=0,1,2 \\
        [--grid=prune_rate_fc=0.2,0.3 --grid=rewind_step=0,1000] --sweep_dir=runs/sweeps/NAME \\
        [--parallel=N | --ray_address=auto] [experiment flags ...]

    SWEEP_DIR/sweep.json                 the grid and each point's settings (a rerun with another grid, or other
                                     settings than the seeds, is refused), each experiment's status, and
                                     the lth_tf code (commit) of every command that ran experiments
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
import os
import platform
import subprocess
import sys
import threading
import time

import numpy as np
from absl import flags

from lth_tf import console as console_lib
from lth_tf import data, paths, rundir
from lth_tf import runs as runs_lib
from lth_tf.config import ConfigError, upgrade
from lth_tf.sweep import plan, pools, tables
from lth_tf.sweep.plan import SweepError

SWEEP_FLAGS = flags.FlagValues()  # the sweep's own flags; everything else is the experiment's
flags.DEFINE_list("seeds", ["0"], "Seeds: each grid point runs once per seed (--seed of the experiment).",
                  flag_values=SWEEP_FLAGS)
flags.DEFINE_multi_string("grid", [], "NAME=V1,V2,...: an experiment flag and its values; several --grid "
                          "flags make the product.", flag_values=SWEEP_FLAGS)
flags.DEFINE_string("sweep_dir", "", "Folder of the sweep (required). Rerunning the command resumes it.",
                    flag_values=SWEEP_FLAGS)
flags.DEFINE_integer("parallel", 0, "Experiments at once on the local pool (0: one per core, at most 8; on 2 cores "
                     "2 ran 1.53x faster than 1, benchmarks/sweep_parallel.py).",
                     lower_bound=0, flag_values=SWEEP_FLAGS)
flags.DEFINE_string("ray_address", "", "Run each experiment as a Ray task on this cluster: auto, ray://host:port, "
                    "host:port, or local (a private Ray instance on this machine). --sweep_dir must be on a "
                    "file system every node writes at the same path.", flag_values=SWEEP_FLAGS)
flags.DEFINE_float("cpus_per_run", 1.0, "Ray: CPUs each experiment reserves.", lower_bound=0,
                   flag_values=SWEEP_FLAGS)
flags.DEFINE_float("gpus_per_run", 0.0, "Ray: GPUs each experiment reserves.", lower_bound=0,
                   flag_values=SWEEP_FLAGS)


def claim(sweep_dir: str, grid) -> dict:
    """The sweep's state; SweepError if `sweep_dir` holds a sweep of another grid."""
    path = os.path.join(sweep_dir, "sweep.json")
    grid_json = [[name, values] for name, values in grid]
    if os.path.exists(path):
        state = rundir.read_json(path)
        if state["grid"] != grid_json:
            raise SweepError(f"{sweep_dir} holds a sweep of another grid ({tables.grid_text(state['grid'])}, not "
                             f"{tables.grid_text(grid_json)}); use a new --sweep_dir")
        return state
    if os.path.isdir(sweep_dir) and set(os.listdir(sweep_dir)) - {rundir.LOCK}:
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


def run_sweep(sweep_dir, grid, seeds, base_argv, pool_factory, say=print, should_stop=lambda: False) -> dict:
    """Runs what is not finished, holding SWEEP_DIR/.lock (a second sweep on
    the directory is refused); returns the state (also in sweep.json)."""
    claim(sweep_dir, grid)  # refuses another grid before the lock leaves a trace
    with rundir.locked(sweep_dir):
        return _run_sweep(sweep_dir, grid, seeds, base_argv, pool_factory, say, should_stop)


def _run_sweep(sweep_dir, grid, seeds, base_argv, pool_factory, say, should_stop) -> dict:
    state = claim(sweep_dir, grid)
    os.makedirs(sweep_dir, exist_ok=True)
    planned = plan.experiments(sweep_dir, grid, seeds, base_argv)
    lock = threading.Lock()

    def record(experiment, **fields):
        with lock:
            state["experiments"][experiment["name"]] = dict(output_dir=experiment["output_dir"], seed=experiment["seed"],
                                                            point=experiment["point"], **fields)
            rundir.write_json(os.path.join(sweep_dir, "sweep.json"), state)

    todo, finished, checked = [], 0, []
    for experiment in planned:
        reason, config = plan.preflight(experiment["argv"])
        checked.append((experiment, reason, config))
    check_settings(sweep_dir, state, checked)
    rundir.write_json(os.path.join(sweep_dir, "sweep.json"), state)
    for experiment, reason, config in checked:
        if tables.is_finished(experiment, state):
            finished += 1
            continue
        if reason:
            os.makedirs(os.path.dirname(experiment["console_log"]), exist_ok=True)
            with open(experiment["console_log"], "a") as log:
                log.write(f"lth_tf.sweep: python -m lth_tf.main {' '.join(experiment['argv'])}\nlth_tf: {reason}\n")
            record(experiment, status="failed", reason=reason, log=experiment["console_log"], seconds=0.0)
            say(f"lth_tf.sweep: {experiment['name']}: failed before starting: {reason}")
        else:
            todo.append(dict(experiment, rounds=config["lottery"]["rounds"]))
    pool = pool_factory() if todo else None  # a cluster that does not answer is said before anything runs
    say(f"lth_tf.sweep: {len(planned)} experiments ({len(plan.grid_points(grid))} grid point(s) x {len(seeds)} "
        f"seed(s)): {finished} already finished, {len(todo)} to run")
    if todo:
        state["machine"] = f"{os.cpu_count()} CPU cores ({platform.machine()}){_gpus()}"
        code = code_version()
        if code not in state.setdefault("code", []):
            state["code"].append(code)
        started = time.time()
        _run_all(todo, pool, record, say, should_stop)
        with lock:  # the sweep's wall time, summed over the commands that ran it
            state["wall_seconds"] = round(state.get("wall_seconds", 0.0) + time.time() - started, 1)
            rundir.write_json(os.path.join(sweep_dir, "sweep.json"), state)
    tables.write_outputs(sweep_dir, grid, planned, state)
    return state


def code_version() -> str:
    """The commit of the lth_tf checkout this is (with "+changes" if lth_tf/ differs from it), else the
    installed package's version: what sweep.json says produced its runs."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        def git(*args):
            return subprocess.run(["git", "-C", package, *args], capture_output=True, text=True, timeout=30,
                                  check=True).stdout.strip()
        return git("rev-parse", "--short=12", "HEAD") + ("+changes" if git("status", "--porcelain", "--", ".") else "")
    except (OSError, subprocess.SubprocessError):
        from importlib import metadata
        try:
            return f"lth_tf {metadata.version('lth_tf')}"
        except metadata.PackageNotFoundError:
            return "unknown"


def check_settings(sweep_dir: str, state: dict, checked: list):
    """SweepError unless every grid point's experiments share the settings (all but the seeds) that
    sweep.json recorded for it, or, in a sweep.json from before it recorded them, its finished runs'
    config.json; records them for the points that have none. `checked`: (experiment, reason, config)."""
    recorded = state.setdefault("settings", {})
    for experiment, _, _ in checked:
        point = plan.point_name(experiment["point"])
        if point not in recorded and tables.is_finished(experiment, state):
            recorded[point] = plan.settings(upgrade(rundir.read_json(
                paths.config(experiment["output_dir"]))))
    for experiment, _, config in checked:
        if not config:  # flags that make no experiment: that experiment fails alone
            continue
        point, mine = plan.point_name(experiment["point"]), plan.settings(config)
        recorded.setdefault(point, mine)
        differ = runs_lib.differences(recorded[point], mine)
        if differ:
            raise SweepError(f"{sweep_dir} holds a sweep with other settings (differs in {', '.join(differ[:4])}, "
                             "the sweep's vs these flags); use a new --sweep_dir, or the same flags to resume it")


PROGRESS_EVERY = 30.0  # seconds between the sweep's progress lines, while any running experiment moved on


def _run_all(todo, pool, record, say, should_stop):
    cwd, started, durations = os.getcwd(), time.time(), []
    futures, logged = {}, {}
    for experiment in todo:
        record(experiment, status="queued")
        logged[experiment["name"]] = _log_size(experiment)  # an experiment that starts writes its command there
        futures[pool.submit(experiment, cwd)] = experiment
    stopping, shown, shown_at = False, None, time.time()
    try:
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=0.5,
                                                    return_when=concurrent.futures.FIRST_COMPLETED)
            if should_stop() and not stopping:
                stopping = True
                for future in pool.stop(pending):  # the ones that never started stay queued for the rerun
                    pending.discard(future)
                    record(futures[future], status="not started")
            for future in done:
                experiment = futures[future]
                try:
                    status, seconds, reason = future.result()
                except Exception as error:  # a task the cluster lost, a node that died, or one a stop cancelled
                    status, seconds = (130, 0.0) if stopping else (1, 0.0)
                    reason = "stopped" if stopping else f"{type(error).__name__}: {str(error).splitlines()[0]}"
                    if stopping and _log_size(experiment) == logged[experiment["name"]]:
                        record(experiment, status="not started")  # cancelled in the cluster's queue
                        continue
                log = paths.log(experiment["output_dir"])
                log = log if os.path.exists(log) else experiment["console_log"]
                outcome = "finished" if status == 0 else ("interrupted" if status in (130, -15) else "failed")
                record(experiment, status=outcome, reason=reason, log=log, seconds=round(seconds, 1))
                durations.append(seconds)
                left = len(pending)
                eta = (f"; about {console_lib.duration(np.mean(durations) * -(-left // pool.parallel))} left"
                       if left and not stopping else "")
                say(f"lth_tf.sweep: [{len(todo) - left}/{len(todo)}] {experiment['name']}: {outcome} in "
                    f"{console_lib.duration(seconds)}{': ' + reason if reason else ''}{eta}")
            if not stopping and time.time() - shown_at >= PROGRESS_EVERY:
                line = progress_line([futures[f] for f in pending], len(todo))
                if line and line != shown:
                    say(line)
                shown, shown_at = line, time.time()
    except KeyboardInterrupt:  # a second Ctrl-C: the running experiments are told to stop (also when it came
        # before the first one's stop reached them) and the pool closes as they do
        pool.stop({future for future in futures if not future.done()})
        for future in futures:
            if not future.done():
                record(futures[future], status="interrupted", reason="stopped at once")
        say("lth_tf.sweep: stopped at once; rerun the same command to resume (each experiment from its last "
            "checkpoint)")
        raise
    finally:
        pool.close()
    say(f"lth_tf.sweep: {len(todo)} experiments in {console_lib.duration(time.time() - started)}")


def _log_size(experiment) -> int:
    path = experiment["console_log"]
    return os.path.getsize(path) if os.path.exists(path) else 0


def progress_line(pending: list[dict], total: int) -> str:
    """'lth_tf.sweep: 3 of 8 done, 2 running; slowest: NAME at round R of N' for the experiments not done yet:
    running ones hold their run directory's lock; a round has begun once its folder exists."""
    running = []
    for experiment in pending:
        if os.path.exists(os.path.join(experiment["output_dir"], rundir.LOCK)):
            running.append((max(paths.rounds_in(experiment["output_dir"]), default=0), experiment))
    if not running:
        return ""
    at, slowest = min(running, key=lambda item: (item[0] / max(item[1].get("rounds", 0), 1), item[1]["name"]))
    of = f" of {slowest['rounds']}" if slowest.get("rounds") else ""
    return (f"lth_tf.sweep: {total - len(pending)} of {total} done, {len(running)} running; slowest: "
            f"{slowest['name']} at round {at}{of}")


def cli(argv=None, should_stop=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    SWEEP_FLAGS.unparse_flags()
    if {"--help", "-h", "--helpfull"} & set(argv[1:]):
        print(__doc__.split("\n\n")[1] + "\n\nThe sweep's flags (every other flag goes to each experiment: "
              "python -m lth_tf.main --help):\n" + SWEEP_FLAGS.get_help())
        return 0
    try:
        ours, base_argv = plan.split_argv(argv[1:], SWEEP_FLAGS)
        SWEEP_FLAGS(["lth_tf.sweep", *ours])
        f = SWEEP_FLAGS
        if not f.sweep_dir:
            raise SweepError("--sweep_dir is required")
        grid = plan.parse_grid(f.grid)
        seeds = [int(s) for s in f.seeds]
        if len(set(seeds)) != len(seeds) or min(seeds, default=0) < 0:
            raise SweepError(f"--seeds={','.join(f.seeds)}: each seed once, none negative")
        parallel = f.parallel or min(os.cpu_count() or 1, 8)
        if f.ray_address:
            pool_factory = lambda: pools.RayPool(f.ray_address, f.cpus_per_run, f.gpus_per_run, f.parallel)  # noqa: E731
        else:
            pool_factory = lambda: pools.LocalPool(parallel)  # noqa: E731
        stop = should_stop or console_lib.stop_on_signals(lambda name: sys.stderr.write(
            f"lth_tf.sweep: {name}: stopping the running experiments at their next checkpoint; rerun the same "
            "command to resume\n")).is_set
        state = run_sweep(os.path.abspath(f.sweep_dir), grid, seeds, base_argv, pool_factory,
                          say=lambda line: print(line, file=sys.stderr, flush=True), should_stop=stop)
    except KeyboardInterrupt:
        return 130
    except (flags.Error, ValueError, plan.SweepError, ConfigError, data.DataError, rundir.RunDirError,
            runs_lib.RunError) as error:
        sys.stderr.write(f"lth_tf.sweep: error: {str(error).replace('ERROR:: ', '')}\n")
        return 2 if isinstance(error, (flags.Error, plan.SweepError, ValueError)) else 1
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


