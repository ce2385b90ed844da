"""A study's record: the numbers RESULTS.md is made from, one JSON file per
sweep under docs/results/records/, committed beside RESULTS.md.

One session of this project's machine cannot run every study (LeNet-300-100's
whole protocol is about an hour a seed on its two cores), and a new session
may start without the last one's runs/. So `studies.results report` adds the
finished seeds it finds in a sweep directory to the sweep's record and keeps
the seeds it does not find there: RESULTS.md is rebuilt from the records
alone on a fresh clone, and seeds run in different sessions add up. Every
seed of a record was made with the settings the study names today (all but
the seed; lth_tf.runs.differences), and says which lth_tf code made it.

    {"columns": the rows' columns (ROW_COLUMNS, then best_test_accuracy),
     "settings": config.json without its seeds,
     "sources": [{"seeds": [...], "code": [...], "machine": ..., "finished": "YYYY-MM-DD",
                  "wall_seconds": the sweep's wall time, or null once some of its seeds were replaced}],
     "runs": {"SEED": {"rows": [[one results.csv row's columns], ...],
                       "histories": {"ROUND/BRANCH": {"first": step, "every": steps, "test_accuracy": [...]}}}}}
"""
import datetime
import json
import os

from lth_tf import paths, rundir, sweep
from lth_tf import runs as runs_lib
from lth_tf.sweep import plan

ROW_COLUMNS = ("round", "branch", "status", "weights_remaining_pct", "test_accuracy", "early_stop_step",
               "early_stop_test_accuracy", "seconds")  # as results.csv holds them (strings), then best_test_accuracy
COLUMNS = [*ROW_COLUMNS, "best_test_accuracy"]


class StaleRecord(Exception):
    """A record or sweep made with other settings than the study names."""


def path(records_dir: str, name: str, variant: str = "") -> str:
    return os.path.join(records_dir, f"{name}.{variant}.json" if variant else f"{name}.json")


def read(record_path: str) -> dict | None:
    return rundir.read_json(record_path) if os.path.exists(record_path) else None


def write(record_path: str, record: dict):
    os.makedirs(os.path.dirname(record_path), exist_ok=True)
    rundir.atomic_write(record_path, (_json(record) + "\n").encode())


def _json(value, level: int = 0) -> str:
    """Indented JSON with every list of plain values on one line (a row, a history): a record stays small."""
    pad = " " * (level + 1)
    if isinstance(value, dict) and value:
        items = [f"{pad}{json.dumps(key)}: {_json(value[key], level + 1)}" for key in sorted(value)]
        return "{\n" + ",\n".join(items) + "\n" + " " * level + "}"
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        return "[\n" + ",\n".join(pad + _json(item, level + 1) for item in value) + "\n" + " " * level + "]"
    return json.dumps(value)


def study_settings(argv) -> dict:
    """The settings (config.json without seeds) that a study's sweep flags give its experiments."""
    _, experiment_argv = plan.split_argv(list(argv), sweep.SWEEP_FLAGS)
    reason, config = plan.preflight([*experiment_argv, "--seed=0"])
    if not config:
        raise StaleRecord(f"the study's flags make no experiment: {reason}")
    return plan.settings(config)


def from_sweep(sweep_dir: str, keep_history=lambda rows: set()) -> dict | None:
    """The record of the sweep's finished experiments (None if none has finished); the test-accuracy histories
    of the (round, branch) pairs that keep_history(one run's rows) names."""
    state_path = os.path.join(sweep_dir, "sweep.json")
    if not os.path.exists(state_path):
        return None
    state = rundir.read_json(state_path)
    if state["grid"]:
        raise StaleRecord(f"{sweep_dir} is a grid sweep; a study is one grid point over seeds")
    runs, configs, finished = {}, [], []
    for record in state["experiments"].values():
        if record.get("status") != "finished":
            continue
        run_dir = os.path.join(sweep_dir, plan.point_name(record["point"]), f"seed_{record['seed']}")
        run = runs_lib.load_run(run_dir)
        configs.append(run)
        finished.append(os.path.getmtime(paths.results(run_dir)))
        rows, histories = [], {}
        kept = keep_history(run["rows"])
        for row in run["rows"]:
            metrics = rundir.read_json(paths.metrics(run_dir, int(row["round"]), row["branch"]))
            rows.append([row[key] for key in ROW_COLUMNS]
                        + [max(entry["test_accuracy"] for entry in metrics["history"])])
            if (int(row["round"]), row["branch"]) in kept:
                histories[f"{row['round']}/{row['branch']}"] = history(metrics["history"])
        runs[str(record["seed"])] = dict(rows=rows, histories=histories)
    if not runs:
        return None
    runs_lib.check_replicates(configs)  # never a mean over runs of other settings
    everything = len(runs) == len(state["experiments"])
    source = dict(seeds=sorted(map(int, runs)), code=state.get("code", []), machine=state.get("machine", ""),
                  finished=datetime.date.fromtimestamp(max(finished)).isoformat(),
                  wall_seconds=state.get("wall_seconds") if everything else None)
    return dict(columns=COLUMNS, settings=plan.settings(configs[0]["config"]), sources=[source], runs=runs)


def history(entries: list[dict]) -> dict:
    """The test accuracies, with their steps as first and every when evenly spaced (they mostly are)."""
    steps, accuracy = [entry["step"] for entry in entries], [entry["test_accuracy"] for entry in entries]
    every = steps[1] - steps[0] if len(steps) > 1 else 1
    if steps == list(range(steps[0], steps[0] + every * len(steps), every)):
        return dict(first=steps[0], every=every, test_accuracy=accuracy)
    return dict(steps=steps, test_accuracy=accuracy)


def steps_of(stored: dict) -> list[int]:
    count = len(stored["test_accuracy"])
    return stored.get("steps") or list(range(stored["first"], stored["first"] + stored["every"] * count,
                                             stored["every"]))


def merge(old: dict | None, new: dict | None, settings: dict, what: str, say=print) -> dict | None:
    """The record after `new` (from the sweep on disk) joins `old`: new's seeds replace old's; a record or
    sweep made with other settings than `settings` (the study's today) is left out, said in one line."""
    kept = []
    for record, where in ((old, f"the record of {what}"), (new, f"the sweep of {what} on disk")):
        if record is None:
            continue
        differ = runs_lib.differences(settings, record["settings"])
        if differ:
            say(f"studies.results: {where} left out: made with other settings than the study's: {', '.join(differ)}")
        else:
            kept.append(record)
    if not kept:
        return None
    if len(kept) == 1:
        return kept[0]
    old, new = kept
    replaced = set(new["runs"])
    sources = []
    for source in old["sources"]:
        seeds = [seed for seed in source["seeds"] if str(seed) not in replaced]
        if seeds:
            sources.append(dict(source, seeds=seeds, wall_seconds=source["wall_seconds"] if seeds == source[
                "seeds"] else None))
    runs = {seed: dict(run, rows=[[dict(zip(old["columns"], row)).get(column) for column in new["columns"]]
                                  for row in run["rows"]])  # the same columns, should they ever change
            for seed, run in old["runs"].items() if seed not in replaced} | new["runs"]
    return dict(columns=new["columns"], settings=new["settings"], sources=sources + new["sources"],
                runs=dict(sorted(runs.items(), key=lambda item: int(item[0]))))


def loaded(record: dict) -> dict:
    """The record in the form the report reads: runs (seed order) with rows as results.csv's, each row with
    its best test accuracy and, where kept, its test history [(step, accuracy)]; seeds, sources, settings."""
    runs, seeds = [], []
    for seed, run in record["runs"].items():
        rows = []
        for values in run["rows"]:
            row = dict(zip(record["columns"], values))
            stored = run["histories"].get(f"{row['round']}/{row['branch']}")
            rows.append(dict(row, test_history=list(zip(steps_of(stored), stored["test_accuracy"])) if stored
                             else []))
        runs.append(dict(rows=rows, dir=f"seed_{seed}"))
        seeds.append(int(seed))
    return dict(runs=runs, seeds=seeds, sources=record["sources"], settings=record["settings"])
