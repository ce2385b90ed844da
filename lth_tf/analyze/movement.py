"""`analyze movement`: do ticket weights move more? (Frankle & Carbin 2019,
Appendix F.5.)

For round r's trained ticket and each layer's kernel, the weights alive in round r are
split by what round r+1 did with them: kept (the next ticket) or pruned. For
both sets: how far training moved them, |theta_final - theta_start|, how
large they started, |theta_start| (theta_0 in round 0, theta_k after; under
--retrain=lr_rewind or finetune the previous round's trained weights), and
the fraction whose sign flipped during training (of those that did not start at 0). Table: medians and kept /
pruned ratios per round and layer; figure: the two sets' histograms for one
round (--round). Several runs (seeds) are pooled.
"""
import os

import numpy as np

from lth_tf import pruning, report, rundir, runs as runs_lib
from lth_tf.runs import RunError

COLUMNS = ("round", "weights_remaining_pct", "layer", "kept", "pruned", "median_movement_kept",
           "median_movement_pruned", "movement_ratio", "median_start_kept", "median_start_pruned", "start_ratio",
           "sign_flipped_kept", "sign_flipped_pruned")


def split(start, final, mask_now, mask_next) -> dict:
    """Arrays of one layer: movement and starting magnitude of the weights that
    round r+1 keeps and prunes, and whether each one's sign flipped."""
    alive = mask_now > 0
    kept, pruned = alive & (mask_next > 0), alive & (mask_next == 0)
    movement, magnitude = np.abs(final - start), np.abs(start)
    flipped, signed = np.sign(final) != np.sign(start), start != 0  # a weight that starts at 0 has no sign to flip
    return dict(movement_kept=movement[kept], movement_pruned=movement[pruned], start_kept=magnitude[kept],
                start_pruned=magnitude[pruned], flipped_kept=flipped[kept & signed],
                flipped_pruned=flipped[pruned & signed])


def summary(arrays: dict) -> dict:
    """Medians, kept / pruned ratios and sign-flip fractions of split()'s arrays."""
    def median(values):
        return float(np.median(values)) if values.size else float("nan")

    def ratio(a, b):
        return a / b if b else float("nan")
    stats = dict(kept=int(arrays["movement_kept"].size), pruned=int(arrays["movement_pruned"].size))
    for what in ("movement", "start"):
        stats[f"median_{what}_kept"] = median(arrays[f"{what}_kept"])
        stats[f"median_{what}_pruned"] = median(arrays[f"{what}_pruned"])
        stats[f"{what}_ratio"] = ratio(stats[f"median_{what}_kept"], stats[f"median_{what}_pruned"])
    for which in ("kept", "pruned"):
        flipped = arrays[f"flipped_{which}"]
        stats[f"sign_flipped_{which}"] = float(flipped.mean()) if flipped.size else float("nan")
    return stats


def pooled(runs, round_index: int) -> dict[str, dict]:
    """{layer: split()'s arrays concatenated over the runs} for one round."""
    layers = {}
    for run in runs:
        start, final = runs_lib.start_weights(run, round_index), runs_lib.final_weights(run, round_index)
        now, after = runs_lib.masks(run, round_index), runs_lib.masks(run, round_index + 1)
        for key in (k for k in now if not pruning.is_bias(k)):  # kernels: masked biases (--prune_biases) are not weights
            variable = pruning.variable_of(key)
            parts = split(start[variable], final[variable], now[key], after[key])
            layers.setdefault(key, []).append(parts)
    return {key: {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
            for key, parts in layers.items()}


def rounds_with_next(runs) -> list[int]:
    for run in runs:
        runs_lib.check_iterative(run, "movement", "splits round r's weights by what round r+1 pruned of them")
    common = set.intersection(*(set(runs_lib.ticket_rounds(run)) for run in runs))
    found = sorted(r for r in common if r + 1 in common)
    if not found:
        raise RunError(f"{runs[0]['dir']}: movement needs a trained round and the next round's masks; "
                       "run the experiment with --rounds=1 or more")
    return found


def plot(arrays: dict, path: str, title: str, bins: int):
    plt = report.pyplot()
    figure, axes = plt.subplots(2, len(arrays), figsize=(3.2 * len(arrays) + 1, 6), squeeze=False)
    for column, (layer, parts) in enumerate(arrays.items()):
        for row, (what, xlabel) in enumerate((("movement", "|θ_final − θ_start|"), ("start", "|θ_start|"))):
            axis = axes[row][column]
            values = np.concatenate([parts[f"{what}_kept"], parts[f"{what}_pruned"]])
            edges = np.linspace(0, (np.percentile(values, 99.5) if values.size else 0) or 1, bins + 1)
            for which, colour in (("kept", "C0"), ("pruned", "C3")):
                data = parts[f"{what}_{which}"]
                if data.size:
                    axis.hist(np.clip(data, 0, edges[-1]), edges, density=True, alpha=0.5, color=colour,
                              label=f"{which} next round ({data.size}, median {np.median(data):.3g})")
            axis.set_xlabel(xlabel + " (weight units)")
            axis.set_ylabel("density")
            axis.set_title(layer if row == 0 else "")
            axis.legend(fontsize=6)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def analyze(runs, folder: str, round_index: int = 0, bins: int = 40) -> list[str]:
    runs_lib.check_replicates(runs)
    found = rounds_with_next(runs)
    if round_index not in found:
        raise RunError(f"--round={round_index}: movement can show rounds {', '.join(map(str, found))} of these runs "
                       "(a trained round and the next one's masks)")
    pct = {int(r["round"]): float(r["weights_remaining_pct"]) for r in runs[0]["rows"] if r["branch"] == "ticket"}
    rows, shown = [], None
    for r in found:
        arrays = pooled(runs, r)
        shown = arrays if r == round_index else shown
        rows += [dict(round=r, weights_remaining_pct=pct[r], layer=layer, **summary(parts))
                 for layer, parts in arrays.items()]
    csv_path, png_path = os.path.join(folder, "movement.csv"), os.path.join(folder, "movement.png")
    rundir.write_csv(csv_path, rows, COLUMNS, significant=6)
    plot(shown, png_path, f"Round {round_index}'s ticket ({pct[round_index]:.3g}% weights): the weights round "
         f"{round_index + 1} keeps vs prunes{f', {len(runs)} runs pooled' if len(runs) > 1 else ''}", bins)
    report.write_section(folder, "movement", section(rows, round_index, len(runs)))
    return [csv_path, png_path]


def section(rows, round_index, n_runs) -> str:
    header = ["round", "% weights", "layer", "median movement kept / pruned (ratio)",
              "median \\|θ_start\\| kept / pruned (ratio)", "sign flipped: kept, pruned"]
    lines = ["## Do ticket weights move more? (Frankle & Carbin, Appendix F.5)", "",
             "Weights alive in a round's ticket, split by whether the next round keeps or prunes them: how far "
             "training moved them (|θ_final − θ_start|), how large they started (θ_start: θ_0 in round 0, θ_k "
             f"after), and how many changed sign{f'; {n_runs} runs pooled' if n_runs > 1 else ''}. "
             f"Histograms: round {round_index}.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append(f"| {r['round']} | {r['weights_remaining_pct']:.3g} | {r['layer']} | "
                     f"{r['median_movement_kept']:.3g} / {r['median_movement_pruned']:.3g} "
                     f"({r['movement_ratio']:.2f}) | "
                     f"{r['median_start_kept']:.3g} / {r['median_start_pruned']:.3g} ({r['start_ratio']:.2f}) | "
                     f"{r['sign_flipped_kept']:.1%}, {r['sign_flipped_pruned']:.1%} |")
    lines += ["", "![weight movement](movement.png)", ""]
    return "\n".join(lines)
