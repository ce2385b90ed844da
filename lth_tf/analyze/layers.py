"""`analyze layers`: which layers get pruned hardest?

Per round and layer (its kernel, and its bias where biases are pruned): the %
of the layer's weights remaining and the layer's share of all surviving
weights, against depth. Under layerwise pruning the rates fix the first; under
global pruning this is where magnitude pruning chose to cut. A layer with no
weight left is collapsed: nothing passes through it (the run's log warned
when pruning produced it); the table flags it and the figure marks it.
Several runs (seeds): means, and in how many of them a layer collapsed.
"""
import os

import numpy as np

from lth_tf import pruning, report, rundir, runs as runs_lib

COLUMNS = ("round", "weights_remaining_pct", "depth", "layer", "size", "remaining", "layer_remaining_pct",
           "share_of_surviving_pct", "collapsed_runs", "runs")


def run_table(run) -> list[dict]:
    """One row per (round, layer) of one run, from each round's ticket densities."""
    theta_0 = runs_lib.start_weights(run, 0)
    pct = {int(r["round"]): float(r["weights_remaining_pct"]) for r in run["rows"] if r["branch"] == "ticket"}
    rows = []
    for round_index in runs_lib.ticket_rounds(run):
        densities = run["layers"][round_index]
        groups = pruning.by_layer(densities)
        sizes = {layer: sum(theta_0[pruning.variable_of(k)].size for k in keys) for layer, keys in groups.items()}
        remaining = {layer: sum(round(densities[k] * theta_0[pruning.variable_of(k)].size) for k in keys)
                     for layer, keys in groups.items()}
        total = sum(remaining.values())
        for depth, layer in enumerate(groups, start=1):
            rows.append(dict(round=round_index, weights_remaining_pct=pct[round_index], depth=depth, layer=layer,
                             size=sizes[layer], remaining=remaining[layer],
                             layer_remaining_pct=100 * remaining[layer] / sizes[layer],
                             share_of_surviving_pct=100 * remaining[layer] / total if total else 0.0,
                             collapsed=all(densities[k] == 0 for k in groups[layer] if not pruning.is_bias(k))))
    return rows


def table(runs) -> list[dict]:
    """Rows of every run, averaged over the runs per (round, layer)."""
    groups = {}
    for run in runs:
        for row in run_table(run):
            groups.setdefault((row["round"], row["layer"]), []).append(row)
    rows = []
    for (round_index, layer), group in sorted(groups.items(), key=lambda item: (item[0][0], item[1][0]["depth"])):
        rows.append(dict(round=round_index, weights_remaining_pct=np.mean([r["weights_remaining_pct"] for r in group]),
                         depth=group[0]["depth"], layer=layer, size=group[0]["size"],
                         remaining=np.mean([r["remaining"] for r in group]),
                         layer_remaining_pct=np.mean([r["layer_remaining_pct"] for r in group]),
                         share_of_surviving_pct=np.mean([r["share_of_surviving_pct"] for r in group]),
                         collapsed_runs=sum(r["collapsed"] for r in group), runs=len(group)))
    return rows


def plot(rows, path, title):
    plt = report.pyplot()
    layers = list(dict.fromkeys(r["layer"] for r in sorted(rows, key=lambda r: r["depth"])))
    rounds = sorted({r["round"] for r in rows})
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(rounds)))
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    floor = min([r["layer_remaining_pct"] for r in rows if r["layer_remaining_pct"] > 0] or [1.0]) / 3
    for colour, round_index in zip(colours, rounds):
        mine = sorted((r for r in rows if r["round"] == round_index), key=lambda r: r["depth"])
        label = f"round {round_index} ({mine[0]['weights_remaining_pct']:.3g}% left)"
        left.plot([r["depth"] for r in mine], [max(r["layer_remaining_pct"], floor) for r in mine], marker="o",
                  markersize=3, color=colour, label=label)
        right.plot([r["depth"] for r in mine], [r["share_of_surviving_pct"] for r in mine], marker="o",
                   markersize=3, color=colour, label=label)
        collapsed = [r for r in mine if r["collapsed_runs"]]
        if collapsed:
            left.plot([r["depth"] for r in collapsed], [floor] * len(collapsed), "x", color="red", markersize=10,
                      markeredgewidth=2, label=f"collapsed (no weight left), round {round_index}")
    left.set_yscale("log")
    from matplotlib import ticker
    left.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    left.yaxis.set_minor_formatter(ticker.FuncFormatter(  # 2, 5, 20, 50: enough to read, not a crowd
        lambda value, _: f"{value:g}" if f"{value:g}"[0] in "25" else ""))
    left.set_ylabel("% of the layer's weights remaining (log)")
    right.set_ylabel("layer's share of all surviving weights (%)")
    for axis in (left, right):
        axis.set_xticks(range(1, len(layers) + 1), layers, rotation=45 if len(layers) > 8 else 0, fontsize=8)
        axis.set_xlabel("layer, input to output")
        axis.grid(True, which="both", alpha=0.3)
    if len(rounds) > 6:  # a colour bar of rounds instead of a legend that would hide the lines
        bar = figure.colorbar(plt.cm.ScalarMappable(plt.Normalize(rounds[0], rounds[-1] / 0.9), "viridis"),
                              ax=right)
        bar.set_label("round")
        bar.ax.set_ylim(rounds[0], rounds[-1])
        if any(r["collapsed_runs"] for r in rows):
            left.legend(handles=[h for h in left.get_lines() if h.get_label().startswith("collapsed")], fontsize=7)
    else:
        left.legend(fontsize=7)
    left.set_title(title)
    right.set_title("where the surviving weights are")
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def analyze(runs, folder: str) -> list[str]:
    runs_lib.check_replicates(runs)
    rows = table(runs)
    csv_path, png_path = os.path.join(folder, "layers.csv"), os.path.join(folder, "layers.png")
    rundir.write_csv(csv_path, rows, COLUMNS, significant=6)
    config = runs[0]["config"]
    plot(rows, png_path, f"Per-layer pruning, {config['model']['name']} ({config['pruning']['strategy']}"
                         f"{', ' + str(len(runs)) + ' runs' if len(runs) > 1 else ''})")
    report.write_section(folder, "layers", section(rows, config["pruning"]["strategy"], len(runs)))
    return [csv_path, png_path]


def section(rows, strategy, n_runs) -> str:
    layers = list(dict.fromkeys(r["layer"] for r in sorted(rows, key=lambda r: r["depth"])))
    by_key = {(r["round"], r["layer"]): r for r in rows}
    collapsed = sorted({(r["round"], r["layer"], r["collapsed_runs"]) for r in rows if r["collapsed_runs"]})
    first = {}
    for round_index, layer, count in collapsed:
        first.setdefault(layer, (round_index, count))
    header = ["round", "% weights remaining"] + [f"{layer} % left (share %)" for layer in layers]
    lines = ["## Where pruning cut: per-layer density", "",
             f"{strategy} pruning{f', mean of {n_runs} runs' if n_runs > 1 else ''}. Each cell: % of the layer's "
             "weights remaining, and in brackets its share of all surviving weights. "
             + ("Collapsed layers (no weight left, no signal passes): " + "; ".join(
                 f"**{layer}** from round {r} ({count} of {n_runs} runs)" for layer, (r, count) in first.items())
                + "." if first else "No layer collapsed."), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for round_index in sorted({r["round"] for r in rows}):
        cells = [str(round_index), f"{by_key[(round_index, layers[0])]['weights_remaining_pct']:.3g}"]
        for layer in layers:
            r = by_key[(round_index, layer)]
            flag = " **collapsed**" if r["collapsed_runs"] else ""
            cells.append(f"{r['layer_remaining_pct']:.3g} ({r['share_of_surviving_pct']:.1f}){flag}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![per-layer pruning](layers.png)", ""]
    return "\n".join(lines)
