"""Reading finished (or started) run directories: what lth_tf.report,
lth_tf.sweep, lth_tf.analyze and studies.results know of a run. No
TensorFlow; the files are those lth_tf.lottery writes, named in lth_tf.paths.
"""
import os

import numpy as np

from lth_tf import paths, pruning, rundir, tickets
from lth_tf.config import flag_of, upgrade

SEED_KEYS = {("data", "seed"), ("training", "seed"), ("lottery", "seed")}


class RunError(Exception):
    """A run directory that lacks what is asked of it."""


def load_run(output_dir: str) -> dict:
    """results.csv rows, per-round layer densities of the ticket, export sizes, config."""
    if not os.path.exists(paths.results(output_dir)):
        raise RunError(f"{output_dir} has no results.csv: not a (started) lth_tf run")
    rows = rundir.read_results(output_dir)
    layers = {}
    for row in rows:
        if row["branch"] == "ticket":
            metrics = rundir.read_json(paths.metrics(output_dir, int(row["round"]), "ticket"))
            layers[int(row["round"])] = metrics["layer_density"]
    sizes = {int(r["round"]): r for r in rundir.read_sizes(output_dir)}
    return dict(dir=output_dir, rows=rows, layers=layers, sizes=sizes,
                config=upgrade(rundir.read_json(paths.config(output_dir))))


def differences(a: dict, b: dict, ignore=()) -> list[str]:
    """'--flag (A vs B)' for every config value that differs, seeds in `ignore` left out."""
    found = []
    same_arrays = a.get("data", {}).get("fingerprint") and a["data"]["fingerprint"] == b.get("data", {}).get(
        "fingerprint")  # npz files of the same arrays (find_tickets keeps a copy in each run) are one dataset
    for section, values in a.items():
        for key, value in values.items():
            other = b.get(section, {}).get(key)
            if (section, key) not in ignore and value != other and not (same_arrays and (section, key) == (
                    "data", "dataset")):
                found.append(f"--{flag_of(section, key)} ({value} vs {other})")
    return list(dict.fromkeys(found))


def check_replicates(runs: list[dict]):
    """Several runs must differ only in their seeds."""
    for run in runs[1:]:
        differ = differences(runs[0]["config"], run["config"], SEED_KEYS)
        if differ:
            raise RunError(f"{run['dir']} and {runs[0]['dir']} differ in more than their seeds: "
                           f"{', '.join(differ)}")


def branches(runs) -> list[str]:
    return list(dict.fromkeys(row["branch"] for run in runs for row in run["rows"]))


def ticket_rounds(run: dict) -> list[int]:
    """Rounds whose ticket finished training."""
    return sorted(int(r["round"]) for r in run["rows"] if r["branch"] == "ticket" and r["status"] == "ok")


def arrays(run: dict, relative: str, missing: str) -> dict[str, np.ndarray]:
    """RUN/relative's arrays; RunError naming the file and `missing` (what
    would have made it) if it is not there."""
    path = os.path.join(run["dir"], relative)
    if not os.path.exists(path):
        raise RunError(f"{run['dir']} has no {relative}: {missing}")
    return rundir.load_arrays(path)


def masks(run: dict, round_index: int, branch: str = "ticket") -> dict[str, np.ndarray]:
    """The masks a branch of a round trained under (round 0 of a dense start: all ones)."""
    if branch != "ticket":
        return arrays(run, paths.branch_masks("", round_index, branch),
                      f"its round {round_index} has no {branch} branch with masks of its own "
                      f"(--controls=...,{branch} and --rounds={round_index} or more)")
    if round_index == 0:
        ticket = run["config"]["lottery"]["ticket"]
        if ticket:  # a run started from a ticket file: round 0 trains under its masks
            try:
                return tickets.read_ticket(ticket)[1]
            except ValueError as error:
                raise RunError(f"{run['dir']} started from --ticket={ticket}, which cannot be read: {error}")
        theta_0 = start_weights(run, 0)
        dense = {key: np.ones_like(theta_0[pruning.variable_of(key)]) for key in run["layers"].get(0, {})}
        removed = run["config"]["lottery"]["removed"]
        if removed:  # a run with weights removed for good starts without them
            return pruning.without(dense, rundir.load_arrays(removed))
        return dense
    return arrays(run, paths.round_masks("", round_index),
                  f"the run stopped before round {round_index} (--rounds={round_index} or more, run to the end)")


def rewind_weights(run: dict, round_index: int) -> dict[str, np.ndarray]:
    """The ticket's initialisation: theta_0 in round 0, theta_k (the rewind point) after."""
    return arrays(run, paths.rewound("", round_index), "the run never trained its dense round")


def start_weights(run: dict, round_index: int) -> dict[str, np.ndarray]:
    """The weights a round's ticket trained from (before its masks), as lottery.branch_start made
    them (paths.ticket_start)."""
    config = run["config"]
    relative = paths.ticket_start("", round_index, config["lottery"].get("retrain", "rewind"),
                                  config["pruning"].get("oneshot", False))
    return arrays(run, relative, "the run never trained its dense round" if "init" in relative else
                  "the round it comes from did not finish training (rerun the experiment to finish it)")


def check_iterative(run: dict, analysis: str, why: str):
    """RunError unless the run's round r+1 was pruned from its round r (iterative IMP)."""
    pruning_config = run["config"]["pruning"]
    if pruning_config.get("method", "imp") != "imp" or pruning_config.get("oneshot"):
        method = "--oneshot" if pruning_config.get("oneshot") else f"--prune_method={pruning_config['method']}"
        raise RunError(f"{run['dir']} ran {method}: {analysis} {why}, which only iterative IMP does")


def final_weights(run: dict, round_index: int, branch: str = "ticket") -> dict[str, np.ndarray]:
    return arrays(run, paths.weights("", round_index, branch),
                  f"round {round_index} {branch} did not finish training (rerun the experiment to finish it)")

