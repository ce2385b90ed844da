"""What a sweep leaves: a report per grid point over its seeds, sweep.csv and sweep.md."""
import csv
import io
import os

import numpy as np

from lth_tf import console as console_lib
from lth_tf import paths, report, rundir
from lth_tf import runs as runs_lib
from lth_tf.sweep.plan import grid_points, point_name

METRICS = ("test_accuracy", "early_stop_test_accuracy", "early_stop_step")


def grid_text(grid_json) -> str:
    return " x ".join(f"{name}={','.join(values)}" for name, values in grid_json) or "no grid"


def is_finished(experiment, state) -> bool:
    record = state["experiments"].get(experiment["name"], {})
    return record.get("status") == "finished" and os.path.exists(
        paths.results(experiment["output_dir"]))


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
    order = {branch: i for i, branch in enumerate(runs_lib.branches(runs))}  # ticket first
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
        runs = [runs_lib.load_run(e["output_dir"]) for e in mine]
        runs_lib.check_replicates(runs)  # never a mean over runs of other settings
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
    text = [f"# Sweep: {grid_text(state['grid'])}", "",
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
