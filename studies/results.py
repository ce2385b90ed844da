"""RESULTS.md: the studies (studies/__init__.py) run as sweeps, and the report
that turns their records (studies.records, fed by the sweep directories on
disk) into RESULTS.md and docs/results/.

    python -m studies.results run [--studies=quick,mnist1d_paper] [--results_dir=runs/results] [--parallel=N]
    python -m studies.results report [--results_dir=runs/results] [--out=.]

`make results` runs both; `run` resumes an interrupted study (each sweep
does); `report` adds the finished seeds of every study's sweep directory to
its record under OUT/docs/results/records/, then writes everything from the
records. Every number comes from runs, except the published MNIST-1D and
LeNet numbers they are compared with, quoted with their source.
"""
import csv
import io
import os
import re
import sys
import textwrap

import numpy as np
from absl import flags

import studies
from lth_tf import report, rundir, stats
from lth_tf import runs as runs_lib
from lth_tf.console import duration
from lth_tf.sweep import tables
from studies import records

# The MNIST-1D notebook's printed output (cell 18; "#80" is linspace(0, 1, 100)[79] = 79.8% pruned, our
# round 79 of --prune_step=1/99), test accuracy in % as (last evaluation, best of the 16 evaluations).
PUBLISHED_SOURCE = ("github.com/greydanus/mnist1d, notebooks/lottery-tickets.ipynb at commit 7878d96, "
                    "the printed output of cell 18 (seeds 42 and 43)")
PUBLISHED = [  # (what, round, branch, {seed: (last, best)})
    ("dense", 0, "ticket", {42: (66.4, 66.4), 43: (64.8, 65.4)}),
    ("ticket, 79.8% pruned", 79, "ticket", {42: (72.9, 72.9), 43: (72.1, 72.1)}),
    ("random mask, 79.8% pruned", 79, "random_prune", {42: (68.6, 70.4), 43: (66.3, 69.7)}),
    ("ticket, 97.0% pruned", 96, "ticket", {42: (68.1, 69.0), 43: (67.3, 68.3)}),
    ("random mask, 97.0% pruned", 96, "random_prune", {42: (41.2, 41.2), 43: (43.7, 43.9)}),
]
COMPARE_AT = (21.0, 4.4)  # % weights remaining where the MNIST-1D variants are compared


STUDY_FLAGS = flags.FlagValues()
flags.DEFINE_list("studies", [], "run: the studies to run (default: all); report always covers all.",
                  flag_values=STUDY_FLAGS)
flags.DEFINE_string("results_dir", "runs/results", "Where the studies' sweep directories are.",
                    flag_values=STUDY_FLAGS)
flags.DEFINE_string("out", ".", "report: where RESULTS.md and docs/results/ are written.", flag_values=STUDY_FLAGS)
flags.DEFINE_integer("parallel", 0, "run: experiments at once (lth_tf.sweep's --parallel).", lower_bound=0,
                     flag_values=STUDY_FLAGS)


class MissingSweep(Exception):
    pass


# --- reading --------------------------------------------------------------------------------------------------

def load_study(name: str, variant: str, results_dir: str, records_dir: str) -> dict:
    """The study's record (studies.records) with the finished seeds of its sweep on disk added, written back;
    in the form the report reads (runs in seed order, seeds, sources). MissingSweep if neither has a seed."""
    what = f"{name}{' ' + variant if variant else ''}"
    extra = next(flags for v, flags, _ in studies.STUDIES[name].variants if v == variant)
    settings = records.study_settings([*studies.STUDIES[name].argv, *extra])
    record_path = records.path(records_dir, name, variant)
    old = records.read(record_path)
    new = records.from_sweep(studies.sweep_dir(results_dir, name, variant), KEEP_HISTORY.get(name, lambda _: set()))
    record = records.merge(old, new, settings, what)
    if record is None:
        raise MissingSweep(f"no finished seed in its sweep directory or its record "
                           f"(docs/results/records/{os.path.basename(record_path)}): run "
                           f"`python -m studies.results run --studies={name}` first")
    if record != old:
        records.write(record_path, record)
    return records.loaded(record)


def values(runs, round_index, branch, column) -> list[float]:
    return [float(r[column]) for run in runs for r in run["rows"]
            if int(r["round"]) == round_index and r["branch"] == branch and r["status"] == "ok"]


def nearest_round(runs, pct: float) -> int:
    rounds = {int(r["round"]): float(r["weights_remaining_pct"]) for r in runs[0]["rows"]}
    return min(rounds, key=lambda r: abs(np.log(rounds[r] / pct)))


def cell(vals, scale=100.0, digits=1) -> str:
    """mean [min, max] in % (or plain with scale=1)."""
    if not vals:
        return "-"
    v = np.array(vals) * scale
    return f"{v.mean():.{digits}f} [{v.min():.{digits}f}, {v.max():.{digits}f}]" if len(v) > 1 else f"{v[0]:.{digits}f}"


# --- figures --------------------------------------------------------------------------------------------------

def _dense_line(axis, runs, column="test_accuracy"):
    dense = values(runs, 0, "ticket", column)
    axis.axhline(np.mean(dense), color="gray", linestyle=":", label="dense network (round 0)")


def study_figure(runs, path, title):
    """Frankle & Carbin's Figures 1 and 4 on one row: the early-stop iteration, the test accuracy there and at the
    end of training, against % weights remaining; the ticket solid, the controls dashed, min-max bands."""
    plt = report.pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for index, branch in enumerate(runs_lib.branches(runs)):  # the ticket first: C0, solid
        for axis, column in zip(axes, ("early_stop_step", "early_stop_test_accuracy", "test_accuracy")):
            report.plot_band(axis, report.series(runs, branch, column), branch, "-" if index == 0 else "--",
                             f"C{index}")
    for axis, column, ylabel in (
            (axes[0], "early_stop_step", "early-stop iteration (min. validation loss)"),
            (axes[1], "early_stop_test_accuracy", "test accuracy at the early-stop iteration"),
            (axes[2], "test_accuracy", "test accuracy at the end of training")):
        _dense_line(axis, runs, column)
        report.pct_axis(axis, runs)
        axis.set_ylabel(ylabel)
    low = min(min(axis.get_ylim()[0] for axis in axes[1:]), 1.0)
    for axis in axes[1:]:  # one accuracy scale for both accuracy panels
        axis.set_ylim(low, max(axis.get_ylim()[1] for axis in axes[1:]))
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{title}: mean and min-max over {len(runs)} seeds" if len(runs) > 1 else f"{title}: one seed")
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


CURVE_TITLES = {"ticket": "winning tickets (rewound to their initialisation)",
                "reinit": "reinit control (the tickets' masks, weights drawn anew)",
                "random_prune": "random_prune control (random masks of the tickets' layer sizes)"}


CURVE_DENSITIES = (51.3, 21.1, 7.0, 3.6)  # Figure 3's % weights remaining
CURVE_CONTROLS = ("reinit",)
SMOOTH = 5  # evaluations in the moving mean of a Figure 3 curve (the paper's curves average five trials)


def curve_branches(rows) -> set:
    """The (round, branch) pairs of one run whose test histories curves_figure draws: what a record keeps."""
    rounds = {0} | {nearest_round([dict(rows=rows)], pct) for pct in CURVE_DENSITIES}
    return {(r, branch) for r in rounds for branch in ("ticket", *CURVE_CONTROLS)}


KEEP_HISTORY = {"lenet_fashion_mnist": curve_branches}


def curves_figure(runs, path, title, densities=CURVE_DENSITIES, controls=CURVE_CONTROLS):
    """Frankle & Carbin's Figure 3: test accuracy against training iteration for the dense network and the
    rounds nearest `densities`% of the weights, the ticket's panel beside each control's, on one scale."""
    plt = report.pyplot()
    panels = ["ticket", *[c for c in controls if c in runs_lib.branches(runs)]]
    smoothed = ""
    rounds = [0] + list(dict.fromkeys(nearest_round(runs, pct) for pct in densities))
    figure, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.8), sharey=True, squeeze=False)
    for axis, branch in zip(axes[0], panels):
        for index, round_index in enumerate(rounds):
            which = "ticket" if round_index == 0 else branch
            histories = [r["test_history"] for run in runs for r in run["rows"] if int(r["round"]) == round_index
                         and r["branch"] == which and r["status"] == "ok" and r.get("test_history")]
            if not histories:
                continue
            length = min(len(h) for h in histories)
            steps = np.array([step for step, _ in histories[0][:length]])
            accuracy = np.array([[a for _, a in h[:length]] for h in histories])
            if length > 4 * SMOOTH:  # each seed's curve a moving mean of SMOOTH evaluations, centred
                kernel = np.ones(SMOOTH) / SMOOTH
                accuracy = np.array([np.convolve(a, kernel, mode="valid") for a in accuracy])
                steps = steps[SMOOTH // 2:SMOOTH // 2 + accuracy.shape[1]]
                smoothed = f"{SMOOTH} evaluations ({SMOOTH * int(steps[1] - steps[0])} iterations)"
            pct = np.mean(values(runs, round_index, which, "weights_remaining_pct"))
            label = "dense network (100%)" if round_index == 0 else f"{branch}, {pct:.1f}% (round {round_index})"
            style = "-" if which == "ticket" else "--"
            line, = axis.plot(steps, accuracy.mean(axis=0), style, color=f"C{index}" if round_index else "black",
                              linewidth=1.2, label=label)
            if len(histories) > 1:
                axis.fill_between(steps, accuracy.min(axis=0), accuracy.max(axis=0), color=line.get_color(),
                                  alpha=0.15)
        axis.set_xlabel("training iteration")
        axis.set_title(CURVE_TITLES.get(branch, branch))
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    finals = [a for run in runs for r in run["rows"] if r.get("test_history") for _, a in r["test_history"][-10:]]
    if finals:  # the paper's zoom: from a little under the worst curve's last evaluations to the best's peak
        peaks = [a for run in runs for r in run["rows"] if r.get("test_history") for _, a in r["test_history"]]
        axes[0][0].set_ylim(min(finals) - 0.02, max(peaks) + 0.005)
    axes[0][0].set_ylabel("test accuracy")
    figure.suptitle(f"{title}: test accuracy during training" + (
        f", mean and min-max over {len(runs)} seeds" if len(runs) > 1 else ", one seed")
        + (f"\n(each seed's curve a moving mean of {smoothed})" if smoothed else ""), y=1.04)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def mnist1d_figure(paper, variants, path):
    """Left: the notebook's setup, final and best accuracy, with the published points.
    Right: ticket minus random-mask accuracy for every variant."""
    plt = report.pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    runs = paper["runs"]
    for branch, name in (("ticket", "ticket"), ("random_prune", "random mask")):
        color = report.plot_band(left, report.series(runs, branch, "test_accuracy"), f"{name}, final (lth_tf)")
        report.plot_band(left, report.series(runs, branch, "best_test_accuracy"), f"{name}, best (lth_tf)", "--",
                         color)
        for what, round_index, b, published in PUBLISHED:
            pct = values(runs, round_index, "ticket", "weights_remaining_pct")
            if b != branch or round_index == 0 or not pct:
                continue
            for last, best in published.values():
                left.plot(pct[0], last / 100, "x", color=color, markersize=9)
                left.plot(pct[0], best / 100, "+", color=color, markersize=11)
    left.plot([], [], "kx", label="published, last (seeds 42, 43)")
    left.plot([], [], "k+", label="published, best (seeds 42, 43)")
    _dense_line(left, runs)
    report.pct_axis(left, runs)
    left.set_ylabel("test accuracy")
    left.set_title("the notebook's setup (linear schedule)")
    left.legend(fontsize=7, handlelength=4)  # long enough to show the best lines dashed
    for name, loaded in variants.items():
        gap = {pct: np.array(v) for pct, v in _gaps(loaded["runs"]).items()}
        report.plot_band(right, gap, name)
    right.axhline(0, color="gray", linestyle=":")
    report.pct_axis(right, variants[next(iter(variants))]["runs"])
    right.set_ylabel("ticket minus random-mask test accuracy (final)")
    right.set_title("which choice carries the effect")
    right.legend(fontsize=7)
    seeds = len(runs)
    figure.suptitle("MLP 500-500 on MNIST-1D: " + (f"mean and min-max over {seeds} seeds" if seeds > 1 else
                                                    "one seed so far"))
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def _gaps(runs) -> dict:
    """{% weights: [ticket - random_prune final accuracy, per run]} over the pruned rounds."""
    gaps = {}
    for run in runs:
        by_key = {(int(r["round"]), r["branch"]): r for r in run["rows"] if r["status"] == "ok"}
        for (round_index, branch), row in by_key.items():
            other = by_key.get((round_index, "random_prune"))
            if branch == "ticket" and other:
                gaps.setdefault(float(row["weights_remaining_pct"]), []).append(
                    float(row["test_accuracy"]) - float(other["test_accuracy"]))
    return dict(sorted(gaps.items(), reverse=True))


# --- text -----------------------------------------------------------------------------------------------------

def command(name, variant_argv, sweep_dir) -> str:
    argv = [*studies.STUDIES[name].argv, *variant_argv, f"--sweep_dir={sweep_dir}"]
    return "python -m lth_tf.sweep " + " ".join(argv)


def timing(loaded) -> str:
    """Which code made each seed, on what, when, in how long."""
    seconds = sum(float(row["seconds"]) for run in loaded["runs"] for row in run["rows"])
    parts = []
    for source in loaded["sources"]:
        seeds = source["seeds"]
        wall = (f"{duration(source['wall_seconds'])} of wall time" if source["wall_seconds"] is not None
                else "wall time not known (not all of its sweep's seeds are here)")
        parts.append(f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))} by lth_tf "
                     f"{', '.join(source['code']) or '(code not recorded)'} on {source['machine']}, finished "
                     f"{source['finished']}: {wall}")
    n = len(loaded["runs"])
    return (f"{n} experiment{'s' * (n > 1)}: " + "; ".join(parts)
            + f". {duration(seconds)} of training time in all (summed over branches)")


def total_time(names, records_dir: str) -> str:
    """The wall time of the sweeps behind the records, summed: what `make results` costs, run one after another."""
    seconds, sweeps = 0.0, 0
    for name in names:
        for variant, _, _ in studies.STUDIES[name].variants:
            for source in (records.read(records.path(records_dir, name, variant)) or {}).get("sources", []):
                if source["wall_seconds"] is not None:
                    seconds += source["wall_seconds"]
                    sweeps += 1
    return (f"The {sweeps} sweep{'s' * (sweeps != 1)} below took {duration(seconds)} of wall time in all on this "
            "project's machine (each sweep's own time, summed; `make results` runs them one after another).")


def study_table(runs) -> str:
    controls = [b for b in runs_lib.branches(runs) if b != "ticket"]
    header = ["round", "% weights", "ticket test acc (%)", "ticket early-stop iter"] + [
        f"{c} test acc (%)" for c in controls]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for round_index in sorted({int(r["round"]) for r in runs[0]["rows"]}):
        pct = values(runs, round_index, "ticket", "weights_remaining_pct")
        row = [str(round_index), f"{np.mean(pct):.2f}", cell(values(runs, round_index, "ticket", "test_accuracy")),
               cell(values(runs, round_index, "ticket", "early_stop_step"), 1, 0)]
        row += [cell(values(runs, round_index, c, "test_accuracy")) for c in controls]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def headline(runs) -> str:
    """Where the ticket stops matching the dense network, and the sparsest round's comparison."""
    dense = np.mean(values(runs, 0, "ticket", "test_accuracy"))
    rounds = sorted({int(r["round"]) for r in runs[0]["rows"]})
    matching = [r for r in rounds if np.mean(values(runs, r, "ticket", "test_accuracy")) >= dense]
    last = rounds[-1]
    pct = lambda r: np.mean(values(runs, r, "ticket", "weights_remaining_pct"))  # noqa: E731
    seeds = f"mean of {len(runs)} seeds" if len(runs) > 1 else "one seed"
    text = f"Dense: {100 * dense:.1f}% test accuracy ({seeds}). "
    if max(matching) > 0:
        text += (f"The ticket's mean test accuracy is at or above it at rounds as sparse as "
                 f"{pct(max(matching)):.1f}% of the weights (round {max(matching)}). ")
    controls = [c for c in runs_lib.branches(runs) if c != "ticket"]
    parts = [f"ticket {cell(values(runs, last, 'ticket', 'test_accuracy'))}"] + [
        f"{c} {cell(values(runs, last, c, 'test_accuracy'))}" for c in controls]
    text += f"At {pct(last):.1f}% (round {last}): " + ", ".join(parts) + "."
    tests = {c: test for c in controls
             if (test := stats.difference(seed_differences(runs, (last, "ticket"), (last, c), "test_accuracy")))}
    if tests:
        tested = any(test.p is not None for test in tests.values())
        text += (" Ticket minus " + "; ticket minus ".join(f"{c}: {test.text()}" for c, test in tests.items())
                 + f" (points of test accuracy{'; two-sided t test over seeds, paired' if tested else ''}).")
    return text


def unconverged(loaded) -> str:
    """A sentence where every branch's early stop is its last step (the validation loss still falling at the
    end), else ''."""
    steps = loaded["settings"]["training"]["train_steps"]
    stops = [int(float(row["early_stop_step"])) for run in loaded["runs"] for row in run["rows"]
             if row["status"] == "ok"]
    if stops and all(stop == steps for stop in stops):
        return (f" Every branch of every round has its lowest validation loss at its last step ({steps:,}): "
                "none has converged, so the early-stop columns say nothing here.")
    return ""


def published_table(paper) -> str:
    runs = paper["runs"]
    lines = ["| | lth_tf final | lth_tf best | notebook seed 42 last / best | notebook seed 43 last / best |",
             "|---|---|---|---|---|"]
    for what, round_index, branch, published in PUBLISHED:
        lines.append(f"| {what} | {cell(values(runs, round_index, branch, 'test_accuracy'))} | "
                     f"{cell(values(runs, round_index, branch, 'best_test_accuracy'))} | "
                     + " | ".join(f"{last:.1f} / {best:.1f}" for last, best in published.values()) + " |")
    return "\n".join(lines)


def run_gaps(runs, round_index) -> list:
    """Per run: ticket minus random-mask final accuracy in the round, None where either did not finish."""
    gaps = []
    for run in runs:
        ticket, random = values([run], round_index, "ticket", "test_accuracy"), values(
            [run], round_index, "random_prune", "test_accuracy")
        gaps.append(ticket[0] - random[0] if ticket and random else None)
    return gaps


def compare_at(runs, pct) -> tuple:
    """(% weights of the nearest round, ticket accuracies, random-mask accuracies, gaps of the runs with both)."""
    r = nearest_round(runs, pct)
    ticket, random = values(runs, r, "ticket", "test_accuracy"), values(runs, r, "random_prune", "test_accuracy")
    gaps = [gap for gap in run_gaps(runs, r) if gap is not None]
    return np.mean(values(runs, r, "ticket", "weights_remaining_pct")), ticket, random, gaps


def variants_table(variants: dict, about: dict) -> str:
    lines = ["| variant | what differs from the notebook | " + " | ".join(
        f"~{pct:g}% weights: ticket / random mask / gap (points)" for pct in COMPARE_AT) + " |",
        "|---|---|" + "---|" * len(COMPARE_AT)]
    for name, loaded in variants.items():
        cells = []
        for pct in COMPARE_AT:
            actual, ticket, random, gaps = compare_at(loaded["runs"], pct)
            cells.append(f"{actual:.1f}%: {cell(ticket)} / {cell(random)} / {cell(gaps)}")
        lines.append(f"| {name} | {about[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gap_ranking(variants: dict) -> str:
    """The variants ordered by the ticket's mean lead over the random mask, at each comparison density."""
    text = []
    for pct in COMPARE_AT:
        leads = {name: compare_at(loaded["runs"], pct)[3] for name, loaded in variants.items()}
        order = sorted((name for name in leads if leads[name]), key=lambda name: -np.mean(leads[name]))
        text.append(f"At about {pct:g}% of the weights, the ticket's mean lead over the random mask, largest first: "
                    + ", ".join(f"{name} {100 * np.mean(leads[name]):+.1f} ({len(leads[name])} "
                                f"seed{'s' * (len(leads[name]) > 1)})" for name in order) + ".")
    return " ".join(text)


def band_gaps(loaded, pct) -> dict:
    """Per seed, the ticket's lead over the random mask averaged over the rounds within a factor of 1.25 of
    `pct`% of the weights (the notebook's schedule has ~10 rounds there, the geometric 1-2; the nearest
    round if none is): one number a seed, since rounds of one run are not independent draws."""
    rounds = {int(r["round"]) for run in loaded["runs"] for r in run["rows"]
              if r["branch"] == "ticket" and 0.8 <= float(r["weights_remaining_pct"]) / pct <= 1.25} or {
        nearest_round(loaded["runs"], pct)}  # none there: the nearest round
    by_round = [run_gaps(loaded["runs"], r) for r in sorted(rounds)]
    per_seed = {}
    for index, seed in enumerate(loaded["seeds"]):
        gaps = [gaps[index] for gaps in by_round if gaps[index] is not None]
        if gaps:
            per_seed[seed] = 100 * float(np.mean(gaps))
    return per_seed


def band_summary(variants: dict) -> str:
    lines = ["The ticket's lead over the random mask (points), each seed's mean over the rounds within a factor of "
             "1.25 of each density (the notebook's schedule prunes 1% per round, so it has many rounds there; the "
             f"nearest round if none is), then over seeds. Test: {stats.TEST}.", ""]
    for pct in COMPARE_AT:
        parts = [f"{name} {test.text()}" for name, loaded in variants.items()
                 if (test := stats.difference(band_gaps(loaded, pct).values()))]
        lines.append(f"- {pct / 1.25:.3g}–{pct * 1.25:.3g}% weights: " + "; ".join(parts) + ".")
    return "\n".join(lines)


def paired_changes(variants: dict, pct) -> dict:
    """Each variant's band lead over the random mask minus the geometric variant's, in points, seed by seed."""
    base, changes = band_gaps(variants["geometric"], pct), {}
    for name, loaded in variants.items():
        mine = band_gaps(loaded, pct)
        common = sorted(set(mine) & set(base))
        if name != "geometric" and common:
            changes[name] = [mine[seed] - base[seed] for seed in common]
    return changes


def effects(variants: dict) -> str:
    """Each variant against the geometric one, paired by seed: how the
    ticket's lead over the random mask changes with the one thing it changes."""
    if "geometric" not in variants or len(variants) < 2:
        return ""
    lines = ["Each variant against the geometric one, paired by seed: its ticket's band lead over the random mask "
             "minus the geometric variant's, in points. Each variant changes one thing of the geometric one (the "
             "table says what; lth_tf_defaults all of them): negative means that change shrinks the ticket's "
             f"lead. Test: {stats.TEST}.", ""]
    for pct in COMPARE_AT:
        tests = {name: stats.difference(c) for name, c in paired_changes(variants, pct).items()}
        order = sorted(tests, key=lambda name: tests[name].mean)
        lines.append(f"- ~{pct:g}% weights: " + "; ".join(f"{name} {tests[name].text()}" for name in order) + ".")
    return "\n".join(lines)


def verdict(variants: dict) -> str:
    """What the numbers above say, by the t tests over seeds (lth_tf.stats)."""
    lines = [f"What carries the effect, by the tests above ({stats.TEST}):", ""]
    tests = 0
    for pct in COMPARE_AT:
        shown, undecided = [], []
        for name, loaded in variants.items():
            test = stats.difference(band_gaps(loaded, pct).values())
            if test is not None and test.p is not None:
                (shown if test.p < stats.ALPHA else undecided).append(
                    f"{name} ({test.mean:+.1f}, {stats.p_text(test.p)})")
        moves = []
        tests += len(shown) + len(undecided)
        if "geometric" in variants:
            for name, change in paired_changes(variants, pct).items():
                test = stats.difference(change)
                tests += test.p is not None
                if test.p is not None and test.p < stats.ALPHA:
                    moves.append(f"{name} {test.verdict('raises', 'lowers')} it "
                                 f"({test.mean:+.1f}, {stats.p_text(test.p)})")
        said = ([f"shown (nonzero) for {', '.join(shown)}"] if shown else []) + (
            [f"not shown for {', '.join(undecided)}"] if undecided else [])
        lines.append(f"- ~{pct:g}% weights: the ticket's lead over the random mask is "
                     f"{'; '.join(said) or 'untested (one seed)'}. "
                     + (f"Changes shown to move it: {'; '.join(moves)}." if moves
                        else "No change is shown to move it."))
    if tests > 1:
        lines += ["", f"These are {tests} tests at p < {stats.ALPHA:g}, not corrected for their number: about "
                  f"{tests * stats.ALPHA:.1f} of them would come out shown by chance alone if nothing differed, so a "
                  "lone p near the threshold is weak evidence."]
    return "\n".join(lines)


# --- LeNet-300-100 beside Frankle & Carbin ---------------------------------------------------------------------

LENET_SOURCE = ("Frankle & Carbin, \"The Lottery Ticket Hypothesis\", ICLR 2019 (arXiv:1803.03635v5), Section 2 "
                "and Figures 1, 3 and 4: LeNet-300-100 on MNIST, test accuracy at the early-stop iteration")
LENET_PAPER = {  # what Section 2 says, in its words where short
    "best": "best at 13.5%: \"improving by more than 0.3 percentage points\"",
    "at_13.5": "more than +0.3 points",
    "sparsest": "\"returning to the level of the original network when Pm = 3.6%\" (2.9% in the reinit paragraph)",
    "at_3.6": "back at dense's level",
    "stop_dense": "\"38% earlier than for the original network\" at 21% (1.61x)",
    "stop_reinit": "\"2.51x faster than when reinitialized\" at 21%",
    "ticket_reinit_21": "\"half a percentage point more accurate\" than reinit at 21%",
    "reinit_21": "reinit \"drops off from the original accuracy when Pm = 21.1%\"",
    "reinit_7": "reinit's accuracy \"diminishes steadily\" with pruning",
    "random_21": "random sparse networks learn slower and end lower (Figure 1, dashed)",
}
ACCURACY = "early_stop_test_accuracy"  # the paper's Figures 1 and 4: test accuracy at the early-stop iteration


def per_seed(runs, round_index, branch, column) -> list:
    """One value a run (seed), None where that run has no finished row."""
    found = [values([run], round_index, branch, column) for run in runs]
    return [v[0] if v else None for v in found]


def seed_differences(runs, a, b, column, scale=100.0) -> list:
    """Per seed, `column` of (round, branch) a minus b, times `scale`; None where either side is missing."""
    return [None if x is None or y is None else scale * (x - y)
            for x, y in zip(per_seed(runs, *a, column), per_seed(runs, *b, column))]


def _ratios(runs, a, b, column) -> list:
    return [x / y for x, y in zip(per_seed(runs, *a, column), per_seed(runs, *b, column))
            if x is not None and y is not None and y > 0]


PAPER_DIRECTION = {  # the verdict that agrees with the paper, for the findings that have a direction
    "best": "above dense", "at_13.5": "above dense", "stop_dense": "ticket stops sooner",
    "stop_reinit": "ticket stops sooner", "ticket_reinit_21": "ticket above reinit", "reinit_21": "below dense",
    "reinit_7": "below dense", "random_21": "below dense"}


def agreement(key, verdict_text) -> str:
    """'holds' where the test shows the paper's direction, 'opposite' where it shows the other, else as it is."""
    expected = PAPER_DIRECTION.get(key)
    if expected is None or verdict_text in ("-", "not shown"):
        return "-" if expected is None else "not shown"
    return "holds" if verdict_text == expected else "opposite"


def lenet_rows(runs) -> list[tuple]:
    """(what, the paper, lth_tf's mean [min, max] over seeds, the test, the verdict, whether the paper's direction
    holds) for each of the paper's LeNet findings; differences are per seed (the seed is the unit, lth_tf.stats)."""
    dense = (0, "ticket")
    rounds = [r for r in sorted({int(row["round"]) for run in runs for row in run["rows"]}) if r > 0
              and per_seed(runs, r, "ticket", ACCURACY).count(None) < len(runs)]
    if not rounds:
        return []
    pct = lambda r: np.mean(values(runs, r, "ticket", "weights_remaining_pct"))  # noqa: E731
    mean = lambda r, b="ticket": np.mean(values(runs, r, b, ACCURACY) or [np.nan])  # noqa: E731
    rows = []

    def accuracy_row(key, what, a, b, yes, no):
        diffs = seed_differences(runs, a, b, ACCURACY)
        test = stats.difference(diffs)
        if test is None:
            return
        verdict_text = test.verdict(yes, no)
        rows.append((what, LENET_PAPER[key], f"{cell([d for d in diffs if d is not None], 1, 1)} points",
                     test.text() if test.p is not None else "-", verdict_text, agreement(key, verdict_text)))

    best = max(rounds, key=mean)
    accuracy_row("best", f"best ticket, {pct(best):.1f}% (round {best}), minus dense", (best, "ticket"), dense,
                 "above dense", "below dense")
    r = nearest_round(runs, 13.5)
    accuracy_row("at_13.5", f"ticket at {pct(r):.1f}% (round {r}) minus dense", (r, "ticket"), dense,
                 "above dense", "below dense")
    at_or_above = [r for r in rounds if mean(r) >= mean(0)]
    rows.append(("sparsest ticket whose mean is at or above dense", LENET_PAPER["sparsest"],
                 f"{pct(max(at_or_above)):.1f}% (round {max(at_or_above)})" if at_or_above else "none", "-", "-",
                 "-"))
    r = nearest_round(runs, 3.6)
    accuracy_row("at_3.6", f"ticket at {pct(r):.1f}% (round {r}) minus dense", (r, "ticket"), dense,
                 "above dense", "below dense")
    r = nearest_round(runs, 21.1)
    for key, other, what in (("stop_dense", dense, "dense"), ("stop_reinit", (r, "reinit"), "reinit")):
        ratios = _ratios(runs, other, (r, "ticket"), "early_stop_step")
        test = stats.difference(seed_differences(runs, other, (r, "ticket"), "early_stop_step", 1.0))
        if ratios and test is not None:
            verdict_text = test.verdict("ticket stops sooner", "ticket stops later")
            rows.append((f"early-stop iteration at {pct(r):.1f}% (round {r}): {what}'s / the ticket's",
                         LENET_PAPER[key], f"{cell(ratios, 1, 2)}x",
                         f"{what} minus ticket, iterations: {test.text(0)}" if test.p is not None else "-",
                         verdict_text, agreement(key, verdict_text)))
    accuracy_row("ticket_reinit_21", f"ticket minus reinit at {pct(r):.1f}% (round {r})", (r, "ticket"),
                 (r, "reinit"), "ticket above reinit", "ticket below reinit")
    for key, branch, target in (("reinit_21", "reinit", 21.1), ("reinit_7", "reinit", 7.0),
                                ("random_21", "random_prune", 21.1)):
        r = nearest_round(runs, target)
        accuracy_row(key, f"{branch} at {pct(r):.1f}% (round {r}) minus dense", (r, branch), dense,
                     "above dense", "below dense")
    return rows


def lenet_table(runs) -> str:
    lines = ["| finding | the paper (MNIST) | lth_tf (Fashion-MNIST), mean [min, max] over seeds | test over seeds "
             "| verdict | the paper's direction |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in lenet_rows(runs)]
    return "\n".join(lines)


def lenet_pattern(runs) -> str:
    """The verdict on the paper's pattern: its directional findings, by what the tests over seeds show."""
    rows = [row for row in lenet_rows(runs) if row[5] != "-"]
    by = {outcome: [row[0] for row in rows if row[5] == outcome] for outcome in ("holds", "not shown", "opposite")}
    return (f"Does the paper's pattern hold on Fashion-MNIST? Of its {len(rows)} findings with a direction, the tests "
            f"over {len(runs)} seeds show {len(by['holds'])} in the paper's direction"
            + (f" ({'; '.join(by['holds'])})" if by["holds"] else "")
            + f", {len(by['opposite'])} in the opposite one" + (f" ({'; '.join(by['opposite'])})" if by["opposite"]
                                                               else "")
            + f", and cannot tell for {len(by['not shown'])}" + (f" ({'; '.join(by['not shown'])})"
                                                                 if by["not shown"] else "") + ".")


def protocol_time(loaded) -> str:
    """Each seed's whole protocol: its branches' training time (results.csv), summed."""
    per_run = [sum(float(row["seconds"]) for row in run["rows"]) for run in loaded["runs"]]
    trainings = sorted({len(run["rows"]) for run in loaded["runs"]})
    minutes = cell([t / 60 for t in per_run], 1, 0)
    return (f"One seed's whole protocol ({' to '.join(map(str, trainings))} trainings) took {minutes} minutes of "
            "training time (its branches' own times, summed; the sweep runs experiments side by side, each on its "
            "share of the cores).")


# --- what other files quote: the configs' Expect lines, the README's picture ---------------------------------------

def write_block(path: str, name: str, lines: list[str], comment: str = ""):
    """Replaces the lines between the file's `{comment}<!-- name -->` and `{comment}<!-- /name -->` lines."""
    with open(path) as f:
        text = f.read()
    block = re.compile(rf"^({re.escape(comment)}<!-- {re.escape(name)} -->\n).*?^({re.escape(comment)}"
                       rf"<!-- /{re.escape(name)} -->)$", re.S | re.M)
    if not block.search(text):
        raise ValueError(f"{path} has no {comment}<!-- {name} --> ... {comment}<!-- /{name} --> lines")
    body = "".join(f"{comment}{line}\n" for line in lines)
    rundir.atomic_write(path, block.sub(lambda m: m.group(1) + body + m.group(2), text).encode())


def wrapped(text: str, width: int = 106) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False)


def seeds_text(seeds) -> str:
    seeds = list(seeds)
    return (f"seeds {seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2
            else f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}")


def minutes_per_seed(runs) -> str:
    return cell([sum(float(row["seconds"]) for row in run["rows"]) / 60 for run in runs], 1, 0)


def lenet_expect(loaded) -> list[str]:
    runs, parts = loaded["runs"], [f"dense {cell(values(loaded['runs'], 0, 'ticket', ACCURACY))}%"]
    for what, _, value, _, verdict_text, _ in lenet_rows(runs):
        if what.startswith(("best ticket", "sparsest", "ticket minus reinit")) or (
                what.startswith("early-stop") and "reinit" in what):
            parts.append(f"{what}: {value}" + (f" (by the test: {verdict_text})" if verdict_text != "-" else ""))
    return wrapped(f"Expect (RESULTS.md, section 3, written by `make results-report`; {seeds_text(loaded['seeds'])}, "
                   "test accuracy at the early-stop iteration, mean [min, max] over seeds, t tests over seeds): "
                   + "; ".join(parts) + f". {minutes_per_seed(runs)} min of training a seed (all its trainings) on "
                   "this project's 2-core machine.")


def mnist1d_expect(loaded) -> list[str]:
    runs = loaded["runs"]
    at = {r: (np.mean(values(runs, r, "ticket", "weights_remaining_pct")),
              cell(values(runs, r, "ticket", "test_accuracy")), cell(values(runs, r, "random_prune", "test_accuracy")))
          for _, r, branch, _ in PUBLISHED if r and values(runs, r, "ticket", "test_accuracy")}
    text = (f"Expect (RESULTS.md, section 2, written by `make results-report`; {seeds_text(loaded['seeds'])}, with "
            f"--xla; final test accuracy, mean [min, max]): dense {cell(values(runs, 0, 'ticket', 'test_accuracy'))}%; "
            + "; ".join(f"at {100 - pct:.1f}% pruned (round {r}) ticket {ticket}% vs random mask {random}%"
                        for r, (pct, ticket, random) in at.items()) + ". The ticket's lead over the random mask "
            "(points; each seed's mean over the rounds within a factor of 1.25 of the density, t test over seeds): "
            + "; ".join(f"~{pct:g}% of the weights {test.text()}" for pct in COMPARE_AT
                        if (test := stats.difference(band_gaps(loaded, pct).values())))
            + ". The notebook printed " + " and ".join(
                f"{PUBLISHED[i][3][42][0]} vs {PUBLISHED[i + 1][3][42][0]}" for i in (1, 3))
            + f" for its seed 42. {minutes_per_seed(runs)} min of training a seed on this project's 2-core machine.")
    return wrapped(text)


def readme_picture(loaded) -> list[str]:
    """The README's first picture: Figures 1 and 4 of the LeNet study, and what they show, in numbers."""
    runs = loaded["runs"]
    findings = {row[0]: row for row in lenet_rows(runs)}
    sparsest = findings.get("sparsest ticket whose mean is at or above dense", (None, None, "none"))[2]
    stops = [row for what, row in findings.items() if what.startswith("early-stop iteration") and "reinit" in what]
    where = stops[0][0].split("early-stop iteration at ")[1].split(":")[0] if stops else ""
    caption = (f"*LeNet-300-100 on Fashion-MNIST with Frankle & Carbin's protocol (50,000 iterations a round, 20 "
               f"rounds; RESULTS.md, section 3), {len(runs)} seeds: the winning ticket (solid) against the same masks "
               f"reinitialised and random masks of the same layer sizes (dashed). The ticket's mean test accuracy at "
               f"its early-stop iteration is at or above the dense network's down to {sparsest} of the weights"
               + (f"; at {where} it reaches its early-stop iteration {stops[0][2]} sooner than the reinit "
                  f"control does (t test over seeds: {stops[0][4]})" if stops else "")
               + ".*")
    return [f"![{studies.STUDIES['lenet_fashion_mnist'].title}](docs/results/lenet_fashion_mnist.png)", "",
            *wrapped(caption, 78)]


QUOTED = (  # (study, variant, file, block, what writes it, comment)
    ("lenet_fashion_mnist", "", "configs/lenet_fashion_mnist.flags", "expect", lenet_expect, "# "),
    ("lenet_fashion_mnist", "", "README.md", "results_picture", readme_picture, ""),
    ("mnist1d_paper", "paper", "configs/mnist1d_paper.flags", "expect", mnist1d_expect, "# "),
)


def write_quoted(out: str, records_dir: str):
    """The blocks other files quote from the records, where the file is under `out` and the record exists."""
    for name, variant, relative, block, lines, comment in QUOTED:
        record, path = records.read(records.path(records_dir, name, variant)), os.path.join(out, relative)
        if record and os.path.exists(path):
            write_block(path, block, lines(records.loaded(record)), comment)


# --- RESULTS.md ------------------------------------------------------------------------------------------------

def write(names, results_dir: str, out: str) -> int:
    """RESULTS.md and docs/results/ under `out`; studies without finished sweeps are listed as not run."""
    figures = os.path.join(out, "docs", "results")
    os.makedirs(figures, exist_ok=True)
    text = ["# Results", "",
            "What lth_tf's tickets look like on real data. Regenerated by `make results` (runs the sweeps below, "
            "resumable) or `make results-report` (rebuilds this file and `docs/results/` from the records in "
            "`docs/results/records/`, one per sweep, after adding to them the finished seeds of the sweep "
            "directories on disk, so that seeds run in different sessions add up); no number here is typed by "
            "hand. Each study says which lth_tf commit made its seeds. Cells are mean [min, max] over seeds; "
            "figures show the mean with a min-max band.", "", None, ""]
    for number, name in enumerate(names, start=1):
        study = studies.STUDIES[name]
        text += [f"## {number}. {study.title}", "", study.about, ""]
        try:
            text += SECTIONS.get(name, _study_section)(name, results_dir, figures)
        except MissingSweep as missing:
            text += [f"No results yet: {missing}.", ""]
        except (runs_lib.RunError, records.StaleRecord) as mixed:  # a sweep directory holding runs of other settings
            print(f"studies.results: {name} not published: {mixed}", file=sys.stderr)
            text += [f"Not published: {mixed}.", ""]
    text[text.index(None)] = total_time(names, os.path.join(figures, "records"))
    rundir.atomic_write(os.path.join(out, "RESULTS.md"), "\n".join(text).encode())
    write_quoted(out, os.path.join(figures, "records"))
    print(f"studies.results: wrote {os.path.join(out, 'RESULTS.md')} and {figures}")
    return 0


def _study_section(name, results_dir, figures, loaded=None) -> list[str]:
    loaded = loaded or load_study(name, "", results_dir, os.path.join(figures, "records"))
    study_figure(loaded["runs"], os.path.join(figures, f"{name}.png"), studies.STUDIES[name].title)
    buffer = io.StringIO()  # sweep.csv's columns over the finished seeds
    writer = csv.DictWriter(buffer, tables.SWEEP_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(tables.aggregate(loaded["runs"]))
    rundir.atomic_write(os.path.join(figures, f"{name}.csv"), buffer.getvalue().encode())
    return [f"Command: `{command(name, (), studies.sweep_dir('runs/results', name))}`", "",
            f"{timing(loaded)}.", "", headline(loaded["runs"]) + unconverged(loaded), "",
            f"![{name}](docs/results/{name}.png)", "", study_table(loaded["runs"]), "",
            f"All columns (std, min, max, early-stop accuracy): [docs/results/{name}.csv](docs/results/{name}.csv)", ""]


def _lenet_section(name, results_dir, figures) -> list[str]:
    """The common section, then Figure 3 and the table beside the paper."""
    loaded = load_study(name, "", results_dir, os.path.join(figures, "records"))
    curves_figure(loaded["runs"], os.path.join(figures, f"{name}_curves.png"), studies.STUDIES[name].title)
    return _study_section(name, results_dir, figures, loaded) + [
        protocol_time(loaded), "",
        "### Beside the paper", "",
        f"The paper: {LENET_SOURCE}. lth_tf: the same protocol on Fashion-MNIST (no lottery-ticket numbers are "
        "published for it, so the comparison is of the pattern, not the digits). The differences are per seed "
        f"and in points of test accuracy at the early-stop iteration; test: {stats.TEST}.", "",
        lenet_table(loaded["runs"]), "", lenet_pattern(loaded["runs"]), "",
        "Test accuracy during training (the paper's Figure 3: the dense network and the tickets nearest 51.3%, "
        "21.1%, 7.0% and 3.6% of the weights, beside the reinit control at the same rounds):", "",
        f"![{name} curves](docs/results/{name}_curves.png)", ""]


def _mnist1d_section(name, results_dir, figures) -> list[str]:
    study = studies.STUDIES[name]
    loaded, about = {}, {}
    for variant, _, what in study.variants:
        try:
            loaded[variant] = load_study(name, variant, results_dir, os.path.join(figures, "records"))
            about[variant] = what
        except MissingSweep:
            continue
    if "paper" not in loaded:
        raise MissingSweep(f"the paper variant has no finished seed: run `python -m studies.results run "
                           f"--studies={name}` first")
    paper = loaded["paper"]
    mnist1d_figure(paper, loaded, os.path.join(figures, f"{name}.png"))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["variant", "round", "branch", "weights_remaining_pct", "seed_index", "test_accuracy",
                     "best_test_accuracy"])
    for variant, result in loaded.items():
        for index, run in enumerate(result["runs"]):
            for row in run["rows"]:
                writer.writerow([variant, row["round"], row["branch"], row["weights_remaining_pct"], index,
                                 row["test_accuracy"], row["best_test_accuracy"]])
    rundir.atomic_write(os.path.join(figures, f"{name}.csv"), buffer.getvalue().encode())
    commands = [f"- {variant}: `{command(name, extra, studies.sweep_dir('runs/results', name, variant))}` — "
                f"{timing(loaded[variant])}" for variant, extra, _ in study.variants if variant in loaded]
    missing = [variant for variant, _, _ in study.variants if variant not in loaded]
    return ["Commands and the time each took here:", "", *commands, "",
            *([f"No results yet for: {', '.join(missing)}.", ""] if missing else []),
            f"![{name}](docs/results/{name}.png)", "",
            "### Side by side with the published numbers", "",
            f"Published: {PUBLISHED_SOURCE}. \"final\"/\"last\" is the test accuracy at the end of training; "
            "\"best\" the best of the evaluations every 100 steps (chosen on the test set, as the notebook does).",
            "", published_table(paper), "",
            "### What the setup changes", "",
            "Final test accuracy of the ticket and of the random mask (same per-layer size, same initial weights), "
            "and their gap in percentage points, near two densities:", "",
            variants_table(loaded, about), "", gap_ranking(loaded), "", band_summary(loaded), "", effects(loaded), "",
            verdict(loaded), "",
            f"Per-run numbers: [docs/results/{name}.csv](docs/results/{name}.csv)", ""]


SECTIONS = {"mnist1d_paper": _mnist1d_section, "lenet_fashion_mnist": _lenet_section}


def cli(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    STUDY_FLAGS.unparse_flags()
    if {"--help", "-h", "--helpfull"} & set(argv[1:]):
        print(__doc__.split("\n\n")[1] + "\n\nStudies: " + ", ".join(studies.STUDIES) + "\n"
              + STUDY_FLAGS.get_help())
        return 0
    try:
        rest = STUDY_FLAGS(argv)[1:]
        if rest not in (["run"], ["report"]):
            raise ValueError("give one command: run or report")
        names = studies.selected(STUDY_FLAGS.studies)
    except (flags.Error, ValueError) as error:
        sys.stderr.write(f"studies.results: error: {error}\n")
        return 2
    if rest == ["run"]:
        return studies.run(names, STUDY_FLAGS.results_dir, STUDY_FLAGS.parallel)
    return write(list(studies.STUDIES), STUDY_FLAGS.results_dir, STUDY_FLAGS.out)


if __name__ == "__main__":
    sys.exit(cli())
