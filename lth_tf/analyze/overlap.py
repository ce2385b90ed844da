"""`analyze overlap`: does IMP find the same ticket each time?

For runs that differ only in their seed (or, with one --seed, only in
--data_order_seed: SGD noise), every pair of runs, round and layer: the
Jaccard overlap |A & B| / |A | B| of the two ticket masks, the fraction of A's
kept weights also kept in B, and the chance level of both for two independent
uniformly random masks with the same per-layer counts (the hypergeometric
expectation, computed exactly), with overlap / chance. The runs'
random_prune masks, where both have them, are the sanity line: about 1 x
chance (across seeds; with one --seed the controls' masks are the same).
"""
import itertools
import os

import numpy as np
from scipy import stats

from lth_tf import report, rundir, runs as runs_lib
from lth_tf.runs import RunError

COLUMNS = ("run_a", "run_b", "round", "weights_remaining_pct", "branch", "layer", "layer_remaining_pct", "kept_a",
           "kept_b", "size", "both", "jaccard", "chance_jaccard", "jaccard_over_chance", "a_kept_in_b",
           "chance_a_kept_in_b")


def chance_jaccard(size: int, a: int, b: int) -> float:
    """E[|A & B| / |A | B|] for independent uniformly random subsets of sizes
    a and b of `size` items: |A & B| is hypergeometric (draw b of size items,
    a of them marked)."""
    if a == 0 and b == 0:
        return float("nan")
    mean = a * b / size
    spread = 12 * np.sqrt(a * b * (size - a) * (size - b) / (size ** 2 * max(size - 1, 1)))
    # beyond 12 standard deviations the probabilities are below 1e-30: millions-of-weights layers stay fast
    both = np.arange(max(0, a + b - size, int(mean - spread)), min(a, b, int(np.ceil(mean + spread))) + 1)
    return float(np.sum(stats.hypergeom.pmf(both, size, a, b) * both / (a + b - both)))


def mask_overlap(mask_a: np.ndarray, mask_b: np.ndarray) -> dict:
    """Overlap of two masks of one layer, and its chance level."""
    a_set, b_set = mask_a.reshape(-1) > 0, mask_b.reshape(-1) > 0
    a, b, both, size = int(a_set.sum()), int(b_set.sum()), int((a_set & b_set).sum()), a_set.size
    jaccard = both / (a + b - both) if a + b else float("nan")
    chance = chance_jaccard(size, a, b)
    return dict(kept_a=a, kept_b=b, size=size, both=both, jaccard=jaccard, chance_jaccard=chance,
                jaccard_over_chance=jaccard / chance if chance else float("nan"),
                a_kept_in_b=both / a if a else float("nan"), chance_a_kept_in_b=b / size)


def comparison(runs) -> str:
    """What the runs' differences make of the overlap, or RunError: runs must
    differ in their seeds only, all in --seed or all only in --data_order_seed."""
    if len(runs) < 2:
        raise RunError("overlap compares two or more runs: give them with --output_dir=RUN_A,RUN_B")
    runs_lib.check_replicates(runs)
    seeds = {run["config"]["lottery"]["seed"] for run in runs}
    orders = {run["config"]["training"]["seed"] for run in runs}
    if len(seeds) == len(runs):
        return "seeds"
    if len(seeds) == 1 and len(orders) == len(runs):
        return "data_order"
    raise RunError("overlap needs runs of different --seed each, or of one --seed and different --data_order_seed "
                   f"each; these have --seed {sorted(seeds)} and --data_order_seed {sorted(orders)}")


def table(runs) -> list[dict]:
    rows = []
    for run_a, run_b in itertools.combinations(runs, 2):
        pct = {int(r["round"]): float(r["weights_remaining_pct"]) for r in run_a["rows"] if r["branch"] == "ticket"}
        shared = sorted(set(runs_lib.ticket_rounds(run_a)) & set(runs_lib.ticket_rounds(run_b)) - {0})
        if not shared:
            raise RunError(f"{run_a['dir']} and {run_b['dir']} share no pruned round: run them to round 1 or more")
        for round_index in shared:
            pairs = [("ticket", runs_lib.masks(run_a, round_index), runs_lib.masks(run_b, round_index))]
            if all("random_prune" in r["config"]["lottery"]["controls"] for r in (run_a, run_b)):
                pairs.append(("random_prune", runs_lib.masks(run_a, round_index, "random_prune"),
                              runs_lib.masks(run_b, round_index, "random_prune")))
            for branch, masks_a, masks_b in pairs:
                for layer in masks_a:
                    rows.append(dict(run_a=run_a["dir"], run_b=run_b["dir"], round=round_index,
                                     weights_remaining_pct=pct[round_index], branch=branch, layer=layer,
                                     layer_remaining_pct=100 * float(masks_a[layer].mean()),
                                     **mask_overlap(masks_a[layer], masks_b[layer])))
    return rows


def mean_by(rows, *keys) -> dict:
    """{key values: mean of the numeric columns over the rows (pairs of runs) that share them}."""
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return {key: {c: float(np.mean([r[c] for r in group])) for c in ("weights_remaining_pct", "jaccard",
                                                                    "chance_jaccard", "jaccard_over_chance",
                                                                    "a_kept_in_b", "chance_a_kept_in_b")}
            for key, group in groups.items()}


def plot(runs, rows, path, title):
    plt = report.pyplot()
    means = mean_by(rows, "branch", "layer", "round")
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, layer in enumerate(layers):
        color = f"C{i % 10}"
        for branch, style in (("ticket", "-"), ("random_prune", ":")):
            points = sorted(((m["weights_remaining_pct"], m) for (b, l, _), m in means.items()
                             if b == branch and l == layer), key=lambda p: -p[0])
            if not points:
                continue
            x = [p for p, _ in points]
            name = f"{layer}, {'ticket' if branch == 'ticket' else 'random_prune (sanity)'}"
            left.plot(x, [m["jaccard"] for _, m in points], style, marker="o", markersize=3, color=color, label=name)
            right.plot(x, [m["jaccard_over_chance"] for _, m in points], style, marker="o", markersize=3,
                       color=color, label=name)
            if branch == "ticket":
                left.plot(x, [m["chance_jaccard"] for _, m in points], "--", color=color, alpha=0.6,
                          label=f"{layer}, chance (random masks)")
    right.axhline(1, color="black", linewidth=0.8)
    for axis, ylabel in ((left, "Jaccard overlap |A∩B| / |A∪B|"), (right, "overlap / chance")):
        report.pct_axis(axis, runs)
        axis.set_ylabel(ylabel)
        axis.legend(fontsize=7)
    left.set_title(title)
    right.set_title("overlap relative to two random masks of the same sizes")
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def analyze(runs, folder: str) -> list[str]:
    kind = comparison(runs)
    rows = table(runs)
    csv_path, png_path = os.path.join(folder, "overlap.csv"), os.path.join(folder, "overlap.png")
    rundir.write_csv(csv_path, rows, COLUMNS, significant=6)
    what = ("runs of different --seed (different theta_0 and controls)" if kind == "seeds" else
            "runs of one seed (the same theta_0) and different data orders: mask stability under SGD noise")
    plot(runs, rows, png_path, f"Overlap of ticket masks, {len(runs)} runs: "
         + ("different seeds" if kind == "seeds" else "same theta_0, other data order"))
    report.write_section(folder, "overlap", section(rows, what, len(runs)))
    return [csv_path, png_path]


def section(rows, what, n_runs) -> str:
    means = mean_by(rows, "round", "layer", "branch")
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    rounds = sorted({r["round"] for r in rows})
    header = ["round", "% weights remaining"] + [f"{layer}: Jaccard (chance, ratio)" for layer in layers]
    lines = ["## Overlap of ticket masks", "",
             f"{n_runs} {what}; the mean over the {n_runs * (n_runs - 1) // 2} pair(s) of runs. Chance: the "
             "expected overlap of two independent random masks with the same per-layer counts (hypergeometric, "
             "exact). `overlap.csv` also has the fraction of A's kept weights kept in B, and the random_prune "
             "masks' overlap (the sanity line, about 1 x chance across seeds).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for round_index in rounds:
        cells = [str(round_index), f"{means[(round_index, layers[0], 'ticket')]['weights_remaining_pct']:.3g}"]
        for layer in layers:
            m = means[(round_index, layer, "ticket")]
            cells.append(f"{m['jaccard']:.3f} ({m['chance_jaccard']:.3f}, {m['jaccard_over_chance']:.2f}x)")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![mask overlap](overlap.png)", ""]
    return "\n".join(lines)
