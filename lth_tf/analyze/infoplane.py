"""`analyze infoplane`: tickets, controls and the dense network on the
information plane (Shwartz-Ziv & Tishby 2017): each hidden layer T of a
network as the point (I(X;T), I(T;Y)), moving as it trains.

Each chosen (round, branch) of a run is trained again from where the run's
driver started it, with the run's schedule, and at --snapshots log-spaced
steps (its first and last included) the activations of every hidden layer on
a fixed set of --examples training examples are saved. A hidden layer is
what feeds the next prunable layer (for a residual MLP, the residual stream);
the output layer's softmax is the last T. MLPs only: a convolutional
network is refused (a feature map has no estimator here that would mean
anything at these sample sizes).

The estimator matters (Saxe et al., ICLR 2018), so both are here, in bits:
  binning  every unit's activation in --bins equal-width bins over the layer's
           range at that step; T is the tuple of bins. X is uniform over the
           examples and T a function of it, so I(X;T) = H(T) <= log2(examples)
           and I(T;Y) = H(T) - H(T|Y) <= H(Y).
  kde      T + Gaussian noise of variance --kde_variance, its entropy bounded
           above by the pairwise-distance (KL) bound of Kolchinsky & Tracey
           (2017) as Saxe et al. use it: I(X;T) <= -mean_i log mean_j
           exp(-|t_i - t_j|^2 / 2 var), I(T;Y) the same less its mean within classes.
Activations stay on disk (infoplane/round_RR/BRANCH/activations/), so another
--estimator or --bins recomputes the plane without training. infoplane.csv
holds every estimator's rows; the picture is infoplane_ESTIMATOR.png.
"""
import os

import numpy as np

from lth_tf import models, paths, pruning, report, rundir
from lth_tf import runs as runs_lib
from lth_tf.analyze import retrain

COLUMNS = ("round", "branch", "weights_remaining_pct", "layer", "step", "estimator", "i_xt_bits", "i_ty_bits",
           "h_x_bits", "h_y_bits")


def snapshot_steps(start: int, end: int, snapshots: int) -> list[int]:
    """Up to `snapshots` steps from start to end, both included, evenly spaced on a log scale of steps trained."""
    trained = np.geomspace(1, end - start + 1, snapshots) - 1
    return sorted({start + int(round(t)) for t in trained} | {start, end})


def entropy_bits(labels: np.ndarray) -> float:
    """Entropy of the empirical distribution of the rows (or values) of `labels`, in bits."""
    rows = labels.reshape(len(labels), -1)
    _, counts = np.unique(rows, axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def binned(activations: np.ndarray, bins: int) -> np.ndarray:
    """Each unit's value as its bin among `bins` equal-width bins over the layer's range."""
    low, high = float(activations.min()), float(activations.max())
    if high == low:
        return np.zeros(activations.shape, np.int32)
    return np.minimum(((activations - low) / (high - low) * bins).astype(np.int32), bins - 1)


def binning(activations: np.ndarray, labels: np.ndarray, bins: int = 30, variance: float = 0.1) -> tuple:
    """(I(X;T), I(T;Y)) in bits by binning (Shwartz-Ziv & Tishby)."""
    t = binned(activations, bins)
    h_t = entropy_bits(t)
    h_t_given_y = sum(np.mean(labels == y) * entropy_bits(t[labels == y]) for y in np.unique(labels))
    return h_t, h_t - h_t_given_y


def _kde_mi(activations: np.ndarray, variance: float) -> float:
    """-mean_i log2 mean_j exp(-|t_i - t_j|^2 / 2 variance): the KDE upper bound on I(X;T)."""
    t = activations.astype(np.float64)
    n, squares, total = len(t), (t * t).sum(axis=1), 0.0
    for begin in range(0, n, 1024):  # 1024 rows of the distance matrix at a time
        chunk = t[begin:begin + 1024]
        distances = np.maximum(squares[begin:begin + 1024, None] + squares[None, :] - 2 * chunk @ t.T, 0)
        exponent = -distances / (2 * variance)
        peak = exponent.max(axis=1, keepdims=True)
        total += float((peak[:, 0] + np.log(np.exp(exponent - peak).sum(axis=1))).sum())
    return float(-(total / n - np.log(n)) / np.log(2))


def kde(activations: np.ndarray, labels: np.ndarray, bins: int = 30, variance: float = 0.1) -> tuple:
    """(I(X;T), I(T;Y)) in bits, by the KDE upper bound (Kolchinsky & Tracey; Saxe et al.)."""
    i_xt = _kde_mi(activations, variance)
    within = sum(np.mean(labels == y) * _kde_mi(activations[labels == y], variance) for y in np.unique(labels))
    return i_xt, i_xt - within


ESTIMATORS = {"binning": binning, "kde": kde}


def check(run: dict, rounds: list[int], branches: list[str]) -> list[tuple[int, str]]:
    """The (round, branch) networks to train; RunError (one line) for what the run cannot give."""
    model = run["config"]["model"]["name"]
    if models.spec(model)[0] not in ("mlp", "resmlp"):
        kind = "your own model" if models.is_user_model(model) else "convolutional"
        raise runs_lib.RunError(f"infoplane is for MLPs (the built-in mlp_*, resmlp_*, lenet_300_100); "
                                f"--model={model} is {kind}")
    finished = {(int(r["round"]), r["branch"]) for r in run["rows"] if r["status"] == "ok"}
    missing = [r for r in rounds if (r, "ticket") not in finished]
    if missing:
        raise runs_lib.RunError(f"{run['dir']} has no finished round {missing[0]} (finished: "
                                f"{', '.join(str(r) for r in runs_lib.ticket_rounds(run))})")
    chosen = [(r, b) for r in rounds for b in branches if (r, b) in finished]
    absent = [b for b in branches if not any(branch == b for _, branch in chosen)]
    if absent:
        raise runs_lib.RunError(f"{run['dir']} has no finished {absent[0]} branch in rounds "
                                f"{','.join(map(str, rounds))} (it has: {', '.join(runs_lib.branches([run]))})")
    return chosen


def representations(model):
    """A model from the inputs to every hidden layer T (what feeds each prunable layer after the first) and
    the output's softmax; and their names."""
    import tensorflow as tf

    from lth_tf import tfmot_adapter as adapter
    layers = list(adapter.prunable_layers(model).items())
    names = [f"T{i} (into {name})" for i, (name, _) in enumerate(layers[1:], start=1)]
    outputs = [wrapper.input for _, wrapper in layers[1:]] + [tf.keras.layers.Softmax()(model.output)]
    return tf.keras.Model(model.inputs, outputs), names + [f"T{len(layers)} (softmax output)"]


def analyze(run: dict, folder: str, rounds: list[int], branches: list[str], snapshots: int = 30,
            estimator: str = "binning", bins: int = 30, examples: int = 4000, variance: float = 0.1,
            should_stop=lambda: False) -> list[str]:
    chosen = check(run, rounds, branches)
    opened = retrain.open_run(run)
    x, y = opened.splits.x_train[:examples], opened.splits.y_train[:examples]
    probe, layer_names = representations(opened.trainer.model)
    end = opened.config.training.train_steps
    progress = retrain.Progress("infoplane", len(chosen))
    out = os.path.join(folder, "infoplane")
    rows = []
    for round_index, branch in chosen:
        weights, masks, start = retrain.branch_start(run, opened, round_index, branch)
        piece = os.path.join(out, paths.round_folder(round_index), branch)
        steps = snapshot_steps(start, end, snapshots)
        saved = os.path.join(piece, "activations")

        def record(step):
            path = os.path.join(saved, f"step_{step:07d}.npz")
            outputs = probe.predict(x, batch_size=1000, verbose=0)
            rundir.save_arrays(path, {f"T{i}": a.astype(np.float16) for i, a in enumerate(outputs, start=1)})

        if not os.path.exists(os.path.join(piece, paths.METRICS)) and not os.path.exists(
                os.path.join(saved, f"step_{start:07d}.npz")):
            from lth_tf import training
            training.rewind(opened.trainer, weights, masks, start)
            record(start)
        metrics = retrain.train_piece(opened.trainer, opened.splits, weights, masks, start, end, piece, should_stop,
                                      at_steps=steps, on_step=record)
        progress.piece_done(f"round {round_index} {branch}", metrics)
        pct = round(100 * pruning.density(masks), 4)
        for step in steps:
            arrays = rundir.load_arrays(os.path.join(saved, f"step_{step:07d}.npz"))
            for i, name in enumerate(layer_names, start=1):
                i_xt, i_ty = ESTIMATORS[estimator](arrays[f"T{i}"].astype(np.float32), y, bins, variance)
                rows.append(dict(round=round_index, branch=branch, weights_remaining_pct=pct, layer=name, step=step,
                                 estimator=estimator, i_xt_bits=i_xt, i_ty_bits=i_ty,
                                 h_x_bits=float(np.log2(len(x))), h_y_bits=entropy_bits(y)))
    path = os.path.join(folder, "infoplane.csv")
    every = [r for r in rundir.read_csv(path) if r["estimator"] != estimator] + rows
    rundir.write_csv(path, every, COLUMNS)
    png = plot(rows, layer_names, os.path.join(folder, f"infoplane_{estimator}.png"), estimator, bins, variance, len(x))
    report.write_section(folder, f"infoplane_{estimator}", section(rows, layer_names, estimator, bins, variance, len(x)))
    return [path, png]



def _how(estimator, bins, variance, n) -> str:
    return (f"binning, {bins} bins per unit" if estimator == "binning" else
            f"KDE upper bound, noise variance {variance:g}") + f", {n} training examples"


def section(rows, layer_names, estimator, bins, variance, n) -> str:
    lines = [f"## Information plane ({estimator})", "",
             f"Each hidden layer T as (I(X;T), I(T;Y)) in bits while the network trains again ({_how(estimator, bins, variance, n)}; "
             "Shwartz-Ziv & Tishby 2017; the estimator changes the picture, Saxe et al. 2018). "
             f"H(X) = {rows[0]['h_x_bits']:.2f} bits, H(Y) = {rows[0]['h_y_bits']:.2f} bits. At the first and last "
             "snapshot, and the largest I(X;T) on the way (a compression phase shows as I(X;T) falling after it):", "",
             "| round | branch | % weights | layer | first step: I(X;T), I(T;Y) | peak I(X;T) (step) | last step: "
             "I(X;T), I(T;Y) |", "|---|---|---|---|---|---|---|"]
    networks = list(dict.fromkeys((r["round"], r["branch"]) for r in rows))
    for round_index, branch in networks:
        for name in layer_names:
            path = [r for r in rows if (r["round"], r["branch"], r["layer"]) == (round_index, branch, name)]
            first, last, peak = path[0], path[-1], max(path, key=lambda r: r["i_xt_bits"])
            lines.append(f"| {round_index} | {branch} | {first['weights_remaining_pct']:.2f} | {name} | "
                         f"{first['i_xt_bits']:.2f}, {first['i_ty_bits']:.2f} | {peak['i_xt_bits']:.2f} "
                         f"({peak['step']}) | {last['i_xt_bits']:.2f}, {last['i_ty_bits']:.2f} |")
    lines += ["", f"![infoplane](infoplane_{estimator}.png)"]
    return "\n".join(lines)


def plot(rows, layer_names, path, estimator, bins, variance, n) -> str:
    plt = report.pyplot()
    from matplotlib.colors import LogNorm
    networks = list(dict.fromkeys((r["round"], r["branch"]) for r in rows))
    figure, axes = plt.subplots(len(layer_names), len(networks), figsize=(3.4 * len(networks) + 1.2,
                                3.0 * len(layer_names)), sharex=True, sharey=True, squeeze=False)
    h_x, h_y = rows[0]["h_x_bits"], rows[0]["h_y_bits"]
    norm = LogNorm(1, max(r["step"] for r in rows) + 1)
    for column, (round_index, branch) in enumerate(networks):
        for row_index, name in enumerate(layer_names):
            axis = axes[row_index][column]
            path_rows = [r for r in rows if (r["round"], r["branch"], r["layer"]) == (round_index, branch, name)]
            xs, ys = [r["i_xt_bits"] for r in path_rows], [r["i_ty_bits"] for r in path_rows]
            axis.axvline(h_x, color="0.5", ls="--", lw=0.8, label="H(X) = log2(examples)")
            axis.axhline(h_y, color="0.5", ls=":", lw=0.8, label="H(Y)")
            axis.plot(xs, ys, "-", color="0.7", lw=0.8, zorder=1)
            points = axis.scatter(xs, ys, c=[r["step"] + 1 for r in path_rows], cmap="viridis", norm=norm, s=18,
                                  zorder=2)
            if row_index == 0:
                what = "dense" if round_index == 0 else branch
                axis.set_title(f"round {round_index} {what}\n({path_rows[0]['weights_remaining_pct']:.1f}% weights)",
                               fontsize=9)
            if column == 0:
                axis.set_ylabel(f"{name}\nI(T;Y) (bits)", fontsize=8)
            if row_index == len(layer_names) - 1:
                axis.set_xlabel("I(X;T) (bits)")
            axis.grid(alpha=0.3)
    axes[0][0].set_xlim(0, 1.04 * h_x)
    axes[0][0].set_ylim(0, 1.06 * h_y)
    axes[-1][0].legend(fontsize=7, loc="center right")
    figure.colorbar(points, ax=axes, label="training step (+1, log scale)", fraction=0.02, pad=0.02)
    figure.suptitle(f"Information plane per hidden layer (rows): {_how(estimator, bins, variance, n)}", fontsize=10)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path
