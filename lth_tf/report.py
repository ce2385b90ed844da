"""Plots and a markdown report of one or several runs.

    python -m lth_tf.report --output_dir=DIR [DIR ...] [--report_dir=FOLDER]

One run: accuracy.png, early_stop.png, layer_density.png and report.md land
in the run. Several runs of the same config with different seeds: the same
files in --report_dir, each curve the mean with a min-max band across runs.
Runs of several pruning methods (--prune_method, --oneshot, --retrain) on
the same setup, each with any number of seeds: methods.png (accuracy vs %
weights remaining, and vs training steps spent) and a report.md comparing
them, with the at-init methods' sanity checks.
"""
import json
import os
import re
import sys
import time

import numpy as np
from absl import flags

from lth_tf import paths, rundir, stats
from lth_tf import runs as runs_lib
from lth_tf.runs import RunError, branches

REPORT_FLAGS = flags.FlagValues()  # separate from the experiment's flags: this is its own program
flags.DEFINE_list("output_dir", [], "Run directories (more may follow as arguments).", flag_values=REPORT_FLAGS)
flags.DEFINE_string("report_dir", "", "Where the report of several runs goes (default: the run itself for one).",
                    flag_values=REPORT_FLAGS)
FIGURES = ("accuracy.png", "early_stop.png", "layer_density.png")


def pyplot():
    """matplotlib.pyplot, drawing to files (no display needed): every figure of lth_tf is drawn through it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


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


def dense_reference(axis, runs, column, label):
    """The dense network's value (round 0's ticket, mean over runs) as a grey dotted line."""
    dense = [float(r[column]) for run in runs for r in run["rows"]
             if int(r["round"]) == 0 and r["branch"] == "ticket" and r["status"] == "ok"]
    if dense:
        axis.axhline(np.mean(dense), color="grey", linestyle=":", linewidth=1.2, label=label)


def plot_all(runs, folder, title):
    """accuracy.png (Figures 1/3 of the paper: at the end of training and at early stop, side by side),
    early_stop.png (Figure 4 style), layer_density.png."""
    plt = pyplot()
    from matplotlib import ticker

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for axis, column, what in ((axes[0], "test_accuracy", "at the end of training"),
                               (axes[1], "early_stop_test_accuracy", "at the early-stop iteration")):
        for branch in branches(runs):
            plot_band(axis, series(runs, branch, column), branch)
        dense_reference(axis, runs, column, "dense network (round 0)")
        pct_axis(axis, runs)
        axis.set_title(f"test accuracy {what}", fontsize=10)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=8)
    figure.suptitle(title + (f" (mean of {len(runs)} runs, band: min-max)" if len(runs) > 1 else ""))
    figure.savefig(os.path.join(folder, "accuracy.png"), dpi=120, bbox_inches="tight")

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for branch in branches(runs):
        plot_band(axis, series(runs, branch, "early_stop_step"), branch)
    dense_reference(axis, runs, "early_stop_step", "dense network (round 0)")
    pct_axis(axis, runs)
    _finish(figure, axis, os.path.join(folder, "early_stop.png"), "early-stop iteration (min validation loss)", title)

    figure, axis = plt.subplots(figsize=(7, 4.5))
    layers = runs[0]["layers"]
    # Layers pruned at one rate draw on top of each other: hollow markers of falling size and their own dashes
    # keep every one of them visible.
    styles = [("o", "-", 9), ("s", "--", 7), ("^", "-.", 5), ("v", ":", 4), ("D", "-", 3)]
    for index, layer in enumerate(next(iter(layers.values()), {})):
        points = {r: [100 * run["layers"][r][layer] for run in runs if r in run["layers"]] for r in sorted(layers)}
        marker, line, size = styles[index % len(styles)]
        axis.plot(list(points), [np.mean(v) for v in points.values()], marker=marker, linestyle=line,
                  markersize=size, markerfacecolor="none", label=layer)
    axis.set_yscale("log")
    axis.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.yaxis.set_minor_formatter(ticker.NullFormatter())
    axis.set_xlabel("round")
    axis.grid(True, which="both", alpha=0.3)
    _finish(figure, axis, os.path.join(folder, "layer_density.png"), "% weights remaining in the layer", title)
    plt.close("all")


def _cell(values, digits=4):
    """One value, or mean [min, max] across runs."""
    if not values:
        return "-"
    if len(values) == 1 or min(values) == max(values):  # one run, or all alike (a method's fixed cost)
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
        cells += [_cell([float(s[k]) for s in sizes if s.get(k)], 0)  # none for a round exported sparse only
                  for k in ("saved_model_bytes", "saved_model_gzip_bytes")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sanity_table(runs) -> str:
    """For runs with an inverted branch (at-init methods): per round, the
    method's accuracy against its shuffled, reinitialised and inverted masks,
    and whether it beat each (a t test of the paired, same-seed differences:
    lth_tf.stats)."""
    rounds = sorted({int(r["round"]) for run in runs for r in run["rows"] if r["branch"] == "inverted"})
    if not rounds:
        return ""
    checks = [b for b in ("random_prune", "shuffle_layerwise", "reinit", "inverted") if b in branches(runs)]
    header = ["% weights", "method acc"] + [f"{c} acc" for c in checks] + [f"beats {c}?" for c in checks]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for round_index in rounds:
        def by_run(branch):
            return [next((float(r["test_accuracy"]) for r in run["rows"] if int(r["round"]) == round_index
                          and r["branch"] == branch and r["status"] == "ok"), np.nan) for run in runs]
        ticket = np.array(by_run("ticket"))
        pct = next(float(r["weights_remaining_pct"]) for r in runs[0]["rows"] if int(r["round"]) == round_index)
        cells = [f"{pct:.3g}", _cell(list(ticket[~np.isnan(ticket)]))]
        verdicts = []
        for check in checks:
            other = np.array(by_run(check))
            cells.append(_cell(list(other[~np.isnan(other)])))
            verdicts.append(beats(ticket - other))
        lines.append("| " + " | ".join(cells + verdicts) + " |")
    return "\n".join(lines)


def beats(differences) -> str:
    """yes / no / not shown, from paired differences (one per seed; stats.difference), in points."""
    test = stats.difference(100 * np.asarray(differences, float))
    return "-" if test is None else f"{test.verdict()} ({test.text()})"


SANITY_TEXT = ("Sanity checks (Frankle et al., ICLR 2021): the method's mask against the same mask permuted within "
               "each layer over the same weights theta_k (random_prune: the paper's shuffled mask), the mask and the "
               "surviving values permuted together (shuffle_layerwise: a shuffle that keeps the selected values), the "
               "mask trained from fresh weights (reinit), and the lowest-scoring weights at the same per-layer counts "
               "(inverted). A method that does not beat its shuffled mask carries only its per-layer densities. "
               "\"beats\": the method's test accuracy minus the check's, in points, seed by seed; its mean, "
               f"{stats.TEST}; \"not shown\" otherwise.")


def early_bird_text(runs) -> str:
    """When each early-bird ticket was drawn, and how much of the dense training that saved."""
    lines = []
    for run in runs:
        path = paths.early_bird_state(run["dir"])
        if not os.path.exists(path):
            continue
        steps, batch = run["config"]["training"]["train_steps"], run["config"]["training"]["batch_size"]
        spent = {float(r["target_density"]): int(r["training_steps_spent"]) for r in run["rows"]
                 if r["branch"] == "ticket" and r.get("target_density")}
        rewind = run["config"]["lottery"]["rewind_step"]
        retrain = steps - rewind
        for target, state in rundir.read_json(path).items():
            drawn = state["drawn_epoch"]
            if drawn is None:
                lines.append(f"- {os.path.relpath(run['dir'])}, {100 * float(target):.3g}% weights: not drawn "
                             f"(epsilon {run['config']['pruning']['early_bird_epsilon']}); the final weights' mask was used")
            elif float(target) in spent:
                at = spent[float(target)] - retrain  # the draw's step, or the rewind step where that is later
                where = f"step {at}" if at > rewind else f"by the rewind step {rewind}"
                lines.append(f"- {os.path.relpath(run['dir'])}, {100 * float(target):.3g}% weights: drawn at "
                             f"epoch {drawn} ({where} of {steps}, batch {batch}): {1 - at / steps:.0%} of the dense "
                             "training saved")
    return "\n".join(["Early-bird tickets (drawn once under epsilon of the kept weights changed between consecutive "
                      "epochs, 5 epochs in a row):",
                      *lines]) if lines else ""


def method_of(run) -> str:
    """The run's method label (results.csv's method column; imp for runs made before it existed),
    with early_bird's epsilon."""
    label = next((r.get("method") for r in run["rows"] if r.get("method")), "imp")
    if label == "early_bird":
        label += f" eps={run['config']['pruning']['early_bird_epsilon']:g}"
    return label


METHOD_KEYS = {("pruning", k) for k in ("method", "oneshot", "target_density", "score_batches", "synflow_iterations",
                                        "early_bird_epsilon")} | {("lottery", k) for k in ("rounds", "retrain",
                                                                                            "controls")}


def by_method(runs) -> dict[str, list]:
    """{method label: its runs}, checked: runs of a method differ only in seeds, methods only in their own flags."""
    groups = {}
    for run in runs:
        groups.setdefault(method_of(run), []).append(run)
    for group in groups.values():
        runs_lib.check_replicates(group)
    first = runs[0]
    for run in runs[1:]:
        differ = runs_lib.differences(first["config"], run["config"], runs_lib.SEED_KEYS | METHOD_KEYS)
        if differ:
            raise RunError(f"{run['dir']} and {first['dir']} differ in more than their method and seeds: "
                           f"{', '.join(differ)}")
    return groups


def ticket_series(runs, column) -> dict:
    """{x: [test accuracy per run]} of the ticket's pruned rounds, x = `column` (% weights or steps spent)."""
    values = {}
    for run in runs:
        for row in run["rows"]:
            if row["branch"] == "ticket" and row["status"] == "ok" and int(row["round"]) > 0 and row.get(column):
                values.setdefault(float(row[column]), []).append(float(row["test_accuracy"]))
    return dict(sorted(values.items()))


def method_targets(groups: dict) -> list[float]:
    """The target densities of the methods that have them (else the first method's rounds), densest first."""
    return sorted({float(t) for runs in groups.values() for run in runs
                   for t in run["config"]["pruning"]["target_density"]}, reverse=True) or sorted(
        {float(r["weights_remaining_pct"]) / 100 for r in next(iter(groups.values()))[0]["rows"]
         if int(r["round"]) > 0}, reverse=True)


def at_targets(runs, targets) -> list[tuple[float, float, list, list]]:
    """(target, % weights, [test accuracy per run], [steps spent per run]) of each target's round
    (IMP: the round nearest to it on a log scale)."""
    rounds = {int(r["round"]): float(r["weights_remaining_pct"]) for r in runs[0]["rows"]
              if r["branch"] == "ticket" and int(r["round"]) > 0}
    points = []
    for target in targets:
        nearest = min(rounds, key=lambda r: abs(np.log(rounds[r] / (100 * target))))
        rows = [r for run in runs for r in run["rows"] if int(r["round"]) == nearest and r["branch"] == "ticket"
                and r["status"] == "ok"]
        points.append((target, rounds[nearest], [float(r["test_accuracy"]) for r in rows],
                       [float(r["training_steps_spent"] or "nan") for r in rows]))
    return points


def plot_methods(groups: dict, path: str, title: str):
    """methods.png: test accuracy vs % weights remaining (every round), and vs
    training steps spent (at each target density, one marker per density)."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5), sharey=True)
    dense = [float(r["test_accuracy"]) for runs in groups.values() for run in runs for r in run["rows"]
             if int(r["round"]) == 0 and r["branch"] == "ticket" and r["status"] == "ok"]
    targets, markers = method_targets(groups), "osD^vp*h<>"
    palette = list(plt.get_cmap("tab10").colors) + ["black", "gold", "navy", "lime"]  # no colour twice
    for (name, runs), color in zip(groups.items(), palette * 2):
        style = {"imp": "-", "oneshot": "--", "early_bird": ":"}.get(name.split("+")[0].split(" ")[0], "-.")
        plot_band(left, dict(reversed(ticket_series(runs, "weights_remaining_pct").items())),
                  f"{name} ({len(runs)} seed{'s' * (len(runs) > 1)})", style, color)
        points = at_targets(runs, targets)
        right.plot([np.mean(p[3]) for p in points], [np.mean(p[2]) for p in points], style, color=color,
                   linewidth=0.8, alpha=0.6)
        for (_, _, accuracy, steps), marker in zip(points, markers):
            mean = np.mean(accuracy)
            right.errorbar(np.mean(steps), mean, yerr=[[mean - min(accuracy)], [max(accuracy) - mean]], fmt=marker,
                           color=color, markersize=5, capsize=2)
    for axis in (left, right):
        axis.axhline(np.mean(dense), color="black", linewidth=0.8, linestyle="--")
        axis.grid(True, which="both", alpha=0.3)
    pct_axis(left, [{"rows": [r for runs in groups.values() for run in runs for r in run["rows"]]}])
    left.set_ylabel("test accuracy at the end of training")
    left.set_title("accuracy vs sparsity (every round; band: min-max over seeds)")
    left.legend(handles=left.get_lines()[:len(groups)] + [Line2D([], [], color="black", linestyle="--",
                                                                 linewidth=0.8, label="dense network")], fontsize=7)
    right.set_xscale("log")
    from matplotlib import ticker
    right.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
    right.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:,.0f}"))
    right.xaxis.set_minor_formatter(ticker.NullFormatter())
    right.set_xlabel("training steps spent on the ticket (all its trainings and scoring passes; log scale)")
    right.set_title("accuracy vs cost (at each target density)")
    right.legend(handles=[Line2D([], [], color="gray", marker=m, linestyle="", label=f"~{100 * t:.3g}% weights")
                          for t, m in zip(targets, markers)], fontsize=7, loc="lower right")
    figure.suptitle(title)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def methods_table(groups: dict) -> str:
    """Per method and target density (IMP: its round nearest to it): test accuracy and steps spent."""
    targets = method_targets(groups)
    header = ["method"] + [f"~{100 * t:.3g}% weights: acc / steps" for t in targets]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, runs in groups.items():
        cells = [name]
        for target, pct, accuracy, steps in at_targets(runs, targets):
            cells.append(f"{_cell(accuracy, 3)} / {_cell(steps, 0)}"
                         + ("" if abs(pct / (100 * target) - 1) < 0.05 else f" (at {pct:.3g}%)"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_methods_report(groups: dict, folder: str):
    config = next(iter(groups.values()))[0]["config"]
    title = f"{config['model']['name']} on {config['data']['dataset']}: pruning methods"
    os.makedirs(folder, exist_ok=True)
    plot_methods(groups, os.path.join(folder, "methods.png"), title)
    text = [f"# {title}", "", "Runs: " + ", ".join(os.path.relpath(run["dir"]) for runs in groups.values()
                                                   for run in runs), "",
            "Test accuracy at the end of training of each method's ticket at each target density (IMP: its round "
            "nearest to it), then the training steps spent on it: every training that produced its mask and its "
            "own, scoring passes counted as steps. Cells with several seeds show mean [min, max].", "",
            methods_table(groups), "", "![methods](methods.png)", ""]
    for name, runs in groups.items():
        table_text = sanity_table(runs)
        if table_text:
            text += [f"## Sanity checks: {name}", "", table_text, ""]
    if any(sanity_table(runs) for runs in groups.values()):
        text += [SANITY_TEXT, ""]
    for runs in groups.values():
        text += [early_bird_text(runs), ""] if early_bird_text(runs) else []
    rundir.atomic_write(os.path.join(folder, "report.md"), "\n".join(text).encode())


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
            table(runs), "", *([sanity_table(runs), "", SANITY_TEXT, ""] if sanity_table(runs) else []),
            *([early_bird_text(runs), ""] if early_bird_text(runs) else []),
            "![test accuracy](accuracy.png)", "", "![early-stop iteration](early_stop.png)", "",
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
        folder = REPORT_FLAGS.report_dir or dirs[0]
        if len({method_of(run) for run in runs}) > 1:
            write_methods_report(by_method(runs), folder)
        else:
            runs_lib.check_replicates(runs)
            write_report(runs, folder)
    except RunError as error:
        sys.stderr.write(f"lth_tf.report: error: {error}\n")
        return 1
    except OSError as error:  # a run directory we may read but not write
        sys.stderr.write(f"lth_tf.report: error: cannot write {error.filename or 'the report'}: "
                         f"{error.strerror or error}; give --report_dir=A_WRITABLE_FOLDER\n")
        return 1
    print(f"report of {len(runs)} run(s) in {time.time() - started:.1f}s: {os.path.join(folder, 'report.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
