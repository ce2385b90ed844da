"""Plots and a markdown report of one or several runs.

    python -m lth_tf.report --output_dir=DIR [DIR ...] [--report_dir=FOLDER]

One run: accuracy.png, early_stop.png, layer_density.png and report.md land
in the run. Several runs of the same config with different seeds: the same
files in --report_dir, each curve the mean with a min-max band across runs.
"""
import json
import os
import re
import sys
import time

import numpy as np
from absl import flags

from lth_tf import rundir
from lth_tf import runs as runs_lib
from lth_tf.runs import RunError, branches

REPORT_FLAGS = flags.FlagValues()  # separate from the experiment's flags: this is its own program
flags.DEFINE_list("output_dir", [], "Run directories (more may follow as arguments).", flag_values=REPORT_FLAGS)
flags.DEFINE_string("report_dir", "", "Where the report of several runs goes (default: the run itself for one).",
                    flag_values=REPORT_FLAGS)
FIGURES = ("accuracy.png", "early_stop.png", "layer_density.png")


def series(runs, branch, column):
    """{% weights remaining: [value per run]} for one branch and column."""
    values = {}
    for run in runs:
        for row in run["rows"]:
            if row["branch"] == branch and row["status"] == "ok":
                values.setdefault(float(row["weights_remaining_pct"]), []).append(float(row[column]))
    return dict(sorted(values.items(), reverse=True))


def plot_band(axis, points: dict, label, style="-", color=None):
    x = np.array(list(points))
    values = [np.array(v) for v in points.values()]
    mean = np.array([v.mean() for v in values])
    line, = axis.plot(x, mean, style, marker="o", markersize=3, label=label, color=color)
    if any(len(v) > 1 for v in values):
        axis.fill_between(x, [v.min() for v in values], [v.max() for v in values], color=line.get_color(), alpha=0.2)
    return line.get_color()


def pct_axis(axis, runs):
    """Log scale, reversed (sparser to the right), ticks at the rounds' densities."""
    from matplotlib import ticker
    axis.set_xscale("log")
    axis.invert_xaxis()
    densities = sorted({float(r["weights_remaining_pct"]) for r in runs[0]["rows"]}, reverse=True)
    span = densities[0] / densities[-1]
    ticks = [densities[0]]
    for density in densities[1:]:  # evenly spaced on the log axis, about 7 of them
        if ticks[-1] / density >= span ** (1 / 7) * 0.99:
            ticks.append(density)
    axis.xaxis.set_major_locator(ticker.FixedLocator(ticks))
    axis.xaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
    axis.xaxis.set_minor_formatter(ticker.NullFormatter())
    axis.set_xlabel("% weights remaining")
    axis.grid(True, which="both", alpha=0.3)


def _finish(figure, axis, path, ylabel, title):
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=7, ncol=2 if len(axis.get_lines()) > 6 else 1)
    figure.savefig(path, dpi=120, bbox_inches="tight")


def plot_all(runs, folder, title):
    """accuracy.png (Figures 1/3 of the paper), early_stop.png (Figure 4 style), layer_density.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for branch in branches(runs):
        color = plot_band(axis, series(runs, branch, "test_accuracy"), f"{branch} (end of training)")
        plot_band(axis, series(runs, branch, "early_stop_test_accuracy"), f"{branch} (early stop)", "--", color)
    pct_axis(axis, runs)
    _finish(figure, axis, os.path.join(folder, "accuracy.png"), "test accuracy", title)

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for branch in branches(runs):
        plot_band(axis, series(runs, branch, "early_stop_step"), branch)
    pct_axis(axis, runs)
    _finish(figure, axis, os.path.join(folder, "early_stop.png"), "early-stop iteration (min validation loss)", title)

    figure, axis = plt.subplots(figsize=(7, 4.5))
    layers = runs[0]["layers"]
    for layer in next(iter(layers.values()), {}):
        points = {r: [100 * run["layers"][r][layer] for run in runs if r in run["layers"]] for r in sorted(layers)}
        axis.plot(list(points), [np.mean(v) for v in points.values()], marker="o", markersize=3, label=layer)
    axis.set_yscale("log")
    axis.set_xlabel("round")
    axis.grid(True, which="both", alpha=0.3)
    _finish(figure, axis, os.path.join(folder, "layer_density.png"), "% weights remaining in the layer", title)
    plt.close("all")


def _cell(values, digits=4):
    """One value, or mean [min, max] across runs."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}" if digits else f"{values[0]:.0f}"
    return f"{np.mean(values):.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def table(runs) -> str:
    controls = [b for b in branches(runs) if b != "ticket"]
    header = (["round", "% weights remaining", "ticket test acc", "ticket early-stop acc", "early-stop iteration"]
              + [f"{c} test acc" for c in controls] + ["SavedModel bytes", "gzip bytes"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rounds = sorted({int(r["round"]) for run in runs for r in run["rows"]})
    for round_index in rounds:
        def values(branch, column):
            return [float(r[column]) for run in runs for r in run["rows"]
                    if int(r["round"]) == round_index and r["branch"] == branch and r["status"] == "ok"]
        sizes = [run["sizes"][round_index] for run in runs if round_index in run["sizes"]]
        cells = [str(round_index), _cell(values("ticket", "weights_remaining_pct"), 4),
                 _cell(values("ticket", "test_accuracy")), _cell(values("ticket", "early_stop_test_accuracy")),
                 _cell(values("ticket", "early_stop_step"), 0)]
        cells += [_cell(values(c, "test_accuracy")) for c in controls]
        cells += [_cell([float(s[k]) for s in sizes], 0) for k in ("saved_model_bytes", "saved_model_gzip_bytes")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(runs, folder):
    config = runs[0]["config"]
    title = f"{config['model']['name']} on {config['data']['dataset']}"
    os.makedirs(folder, exist_ok=True)
    plot_all(runs, folder, title + (f" ({len(runs)} runs)" if len(runs) > 1 else ""))
    pruning = config["pruning"]
    rule = (f"global {pruning['rate']:.0%} per round" if pruning["strategy"] == "global" else
            f"layerwise: fc {pruning['rate_fc']:.0%}, conv {pruning['rate_conv']:.0%}, "
            f"output {pruning['rate_output']:.0%} per round")
    text = [f"# Lottery-ticket report: {title}", "",
            f"Runs: {', '.join(os.path.abspath(r['dir']) for r in runs)}", "",
            f"Pruning {rule}; rewind to step {config['lottery']['rewind_step']}; "
            f"{config['training']['train_steps']} training steps per round; controls: "
            f"{', '.join(config['lottery']['controls']) or 'none'}.",
            "" if len(runs) == 1 else "\nCells with several runs show mean [min, max].", "",
            table(runs), "", "![test accuracy](accuracy.png)", "", "![early-stop iteration](early_stop.png)", "",
            "![per-layer density](layer_density.png)", "",
            "<details><summary>config.json</summary>", "", "```json", json.dumps(config, indent=2), "```",
            "</details>", ""]
    kept = analysis_sections(_read(os.path.join(folder, "report.md")))  # lth_tf.analyze's, carried over
    rundir.atomic_write(os.path.join(folder, "report.md"), ("\n".join(text) + kept).encode())


# lth_tf.analyze's sections of report.md sit between these markers, so that each
# analysis replaces its own and a new report keeps them all.
SECTION = re.compile(r"<!-- lth_tf\.analyze (\w+) -->\n.*?<!-- /lth_tf\.analyze \1 -->\n", re.S)


def _read(path: str) -> str:
    return open(path).read() if os.path.exists(path) else ""


def analysis_sections(text: str) -> str:
    return "".join(match.group(0) for match in SECTION.finditer(text))


def write_section(folder: str, name: str, markdown: str):
    """Puts analysis `name`'s section into folder/report.md: in place of its
    earlier version, or at the end (a report.md that does not exist yet is
    started with a heading)."""
    path = os.path.join(folder, "report.md")
    text = _read(path) or f"# Analyses in {folder}\n\n"
    section = f"<!-- lth_tf.analyze {name} -->\n{markdown.rstrip()}\n<!-- /lth_tf.analyze {name} -->\n"
    mine = [m for m in SECTION.finditer(text) if m.group(1) == name]
    text = (text[:mine[0].start()] + section + text[mine[0].end():] if mine
            else text + ("" if text.endswith("\n\n") else "\n") + section)
    rundir.atomic_write(path, text.encode())


def cli(argv=None) -> int:
    REPORT_FLAGS.unparse_flags()  # a second call in one process starts from the defaults
    try:
        rest = REPORT_FLAGS(argv if argv is not None else sys.argv)
    except flags.Error as error:
        sys.stderr.write(f"lth_tf.report: error: {error}\n")
        return 2
    dirs = REPORT_FLAGS.output_dir + rest[1:]
    try:
        if not dirs:
            raise RunError("give at least one run directory with --output_dir")
        if len(dirs) > 1 and not REPORT_FLAGS.report_dir:
            raise RunError("several runs need --report_dir for their joint report")
        started = time.time()
        runs = [runs_lib.load_run(d) for d in dirs]
        runs_lib.check_replicates(runs)
        folder = REPORT_FLAGS.report_dir or dirs[0]
        write_report(runs, folder)
    except RunError as error:
        sys.stderr.write(f"lth_tf.report: error: {error}\n")
        return 1
    print(f"report of {len(runs)} run(s) in {time.time() - started:.1f}s: {os.path.join(folder, 'report.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
