"""`analyze landscape`: what the loss looks like around dense and pruned networks.

Method (Li, Xu, Taylor, Studer & Goldstein, NeurIPS 2018, "Visualizing the loss
landscape of neural nets"): for round R's trained ticket θ (round 0: the dense
network) under its masks m, two random directions d1, d2 over the kernels of the
masked layers. Each is Gaussian, times m (a pruned weight stays exactly 0), then
rescaled per filter (the last axis of a Keras kernel: a Conv output channel, a
Dense output neuron) so that the filter's direction has the norm of that filter of
θ: d[..., j] <- d[..., j] * |θ[..., j]| / |d[..., j]|. Biases and BatchNorm
parameters and statistics get zero direction. The scale-invariance of ReLU nets
makes raw distances meaningless; filter-normalised ones compare networks.

The loss is the mean sparse categorical cross-entropy (the model outputs logits)
in eval mode (BatchNorm on its trained statistics), without weight decay, on the
first `examples` training and the first `examples` test examples:
  line:  L(θ + a·d1),        a on `resolution` points of [-span, span];
  plane: L(θ + a·d1 + b·d2), a, b on the same points.
Both contain a = b = 0 exactly (0 is added to an even resolution's points).
Numbers to check "pruned is smoother" against:
  rise at span/2 = (L(θ + span/2·d1) + L(θ − span/2·d1)) / 2 − L(θ), train and test;
  top Hessian eigenvalue: of the training loss (the same examples) w.r.t. the masked
    kernel weights only (the vector is zero where m is), by power iteration on
    Hessian-vector products (double backprop); the Rayleigh quotient after
    HESSIAN_ITERATIONS steps (the eigenvalue largest in magnitude, in practice the top one).
Directions and the power iteration's start are seeded by (SEED, round): reruns are identical.
Each round is saved to landscape/round_NN.npz when done and read back on a rerun
with the same settings. Outputs: landscape.csv (every point), landscape_summary.csv
(the numbers), landscape.png and the report section.
"""
import os
import time

import numpy as np

from lth_tf import paths, pruning, report, rundir, runs as runs_lib
from lth_tf.console import duration
from lth_tf.runs import RunError

SEED = 20180612
HESSIAN_ITERATIONS = 20
BATCH = 500  # examples per forward pass
COLUMNS = ("round", "weights_remaining_pct", "set", "kind", "a", "b", "loss", "accuracy")
SUMMARY = ("round", "weights_remaining_pct", "train_loss_centre", "test_loss_centre", "rise_train", "rise_test",
           "hessian_top")


def filter_normalised_direction(weights: dict, masks: dict, rng: np.random.Generator) -> dict:
    """{state key: direction} for every key of `weights`: a masked, filter-normalised
    Gaussian for the kernel of each masked layer, zeros for the rest (biases, BatchNorm)."""
    direction = {key: np.zeros_like(value) for key, value in weights.items()}
    for key in sorted(k for k in masks if not pruning.is_bias(k)):  # sorted: the same draws whatever the file order
        variable = pruning.variable_of(key)
        theta = weights[variable] * masks[key]
        d = rng.standard_normal(theta.shape) * masks[key]
        axes = tuple(range(theta.ndim - 1))  # all but the filter / neuron axis
        theta_norm = np.sqrt((theta.astype(np.float64) ** 2).sum(axes, keepdims=True))
        d_norm = np.sqrt((d ** 2).sum(axes, keepdims=True))
        direction[variable] = (d * np.divide(theta_norm, d_norm, out=np.zeros_like(d_norm), where=d_norm > 0)
                               ).astype(theta.dtype)
    return direction


def grid_axis(resolution: int, span: float) -> np.ndarray:
    axis = np.linspace(-span, span, resolution)
    axis[np.isclose(axis, 0.0, atol=1e-9 * span)] = 0.0  # linspace's middle point may miss 0 by rounding
    return np.union1d(axis, [0.0])


def evaluate_round(opened, run: dict, round_index: int, resolution: int, span: float, examples: int) -> dict:
    """The round's line, plane, rises and Hessian eigenvalue (arrays for round_NN.npz)."""
    import tensorflow as tf
    from lth_tf import hessian, training
    from lth_tf import tfmot_adapter as adapter
    theta, masks = runs_lib.final_weights(run, round_index), runs_lib.masks(run, round_index)
    training.rewind(opened.trainer, theta, masks, 0)
    theta = adapter.get_state(opened.trainer.model)  # masked, as the model holds it
    rng = np.random.default_rng([SEED, round_index])
    d1, d2 = (filter_normalised_direction(theta, masks, rng) for _ in range(2))
    kernels = [pruning.variable_of(k) for k in masks if not pruning.is_bias(k)]
    variables = [adapter.state_variables(opened.trainer.model)[k] for k in kernels]
    constants = [[tf.constant(source[k]) for k in kernels] for source in (theta, d1, d2)]
    model, s = opened.trainer.model, opened.splits
    sets = [[(tf.constant(x[i:i + BATCH]), tf.constant(y[i:i + BATCH].astype(np.int32)))
             for i in range(0, len(x), BATCH)]
            for x, y in ((s.x_train[:examples], s.y_train[:examples]), (s.x_test[:examples], s.y_test[:examples]))]

    @tf.function
    def point(a, b):  # [train loss, train accuracy, test loss, test accuracy] at θ + a·d1 + b·d2
        for variable, t, u, w in zip(variables, *constants):
            variable.assign(t + a * u + b * w)  # exactly θ at a = b = 0; the wrapper re-applies the mask
        out = []
        for batches in sets:
            loss = correct = count = 0.0
            for x, y in batches:
                logits = model(x, training=False)
                loss += tf.reduce_sum(tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
                correct += tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), y), tf.float32))
                count += tf.cast(tf.size(y), tf.float32)
            out += [loss / count, correct / count]
        return tf.stack(out)

    def at(a, b):  # tensors, not Python floats: one trace for every point
        return point(tf.constant(a, tf.float32), tf.constant(b, tf.float32)).numpy()

    axis = grid_axis(resolution, span)
    line = np.array([at(a, 0.0) for a in axis])
    plane = np.array([[at(a, b) for a in axis] for b in axis])  # plane[j, i]: b = axis[j], a = axis[i]
    half = np.array([at(a, 0.0) for a in (-span / 2, span / 2)])
    centre = at(0.0, 0.0)
    for variable, t in zip(variables, constants[0]):
        variable.assign(t)
    rise = half.mean(0)[[0, 2]] - centre[[0, 2]]

    masks_t = [tf.constant(masks[k], tf.float32) for k in masks if not pruning.is_bias(k)]
    train, n = sets[0], float(sum(int(y.shape[0]) for _, y in sets[0]))

    def train_loss(x, y):  # the batch's share of the mean training loss
        logits = model(x, training=False)
        return tf.reduce_sum(tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)) / n

    @tf.function
    def hvp(vector):  # H·v of the training loss over the kernels, restricted to the mask
        return [h * m for h, m in zip(hessian.vector_product(train_loss, variables, vector, train), masks_t)]

    vector = [tf.constant(rng.standard_normal(m.shape).astype(np.float32)) * m for m in masks_t]
    eigenvalue = 0.0
    for _ in range(HESSIAN_ITERATIONS):
        norm = tf.sqrt(tf.add_n([tf.reduce_sum(v * v) for v in vector]))
        if norm == 0:
            break
        vector = [v / norm for v in vector]
        product = hvp(vector)
        eigenvalue = float(tf.add_n([tf.reduce_sum(v * h) for v, h in zip(vector, product)]))
        vector = product
    return dict(axis=axis, line=line, plane=plane, centre=centre, rise=rise, hessian_top=np.float64(eigenvalue),
                settings=np.array([resolution, span, examples, HESSIAN_ITERATIONS], np.float64))


def analyze(run: dict, folder: str, rounds: list[int], resolution: int = 25, span: float = 1.0,
            examples: int = 2000) -> list[str]:
    available = runs_lib.ticket_rounds(run)
    unknown = [r for r in rounds if r not in available]
    if unknown or not rounds:
        asked = ", ".join(map(str, unknown)) or "(none given)"
        raise RunError(f"{run['dir']} has no trained round {asked}: landscape can show "
                       f"rounds {', '.join(map(str, available))}")
    pct = {int(r["round"]): float(r["weights_remaining_pct"]) for r in run["rows"] if r["branch"] == "ticket"}
    settings = np.array([resolution, span, examples, HESSIAN_ITERATIONS], np.float64)
    results, opened, spent, computed = {}, None, 0.0, 0
    for done, r in enumerate(rounds, start=1):
        path, started = os.path.join(folder, "landscape", f"{paths.round_folder(r)}.npz"), time.time()
        saved = rundir.load_arrays(path) if os.path.exists(path) else None
        if saved is not None and np.array_equal(saved["settings"], settings):
            results[r], how = saved, "done before"
        else:  # not yet, or with other settings
            if opened is None:
                from lth_tf.analyze import retrain  # TensorFlow loads here, only when something is computed
                opened = retrain.open_run(run)
            results[r] = evaluate_round(opened, run, r, resolution, span, examples)
            rundir.save_arrays(path, results[r])
            computed, spent = computed + 1, spent + time.time() - started
            how = f"{time.time() - started:.1f}s"
        print(f"landscape [{done}/{len(rounds)}] round {r} ({pct[r]:.3g}% weights): {how}, about "
              f"{duration(spent / max(1, computed) * (len(rounds) - done))} left", flush=True)
    rows, summary = [], []
    for r, res in results.items():
        axis = res["axis"]
        for s, name in enumerate(("train", "test")):
            rows += [dict(round=r, weights_remaining_pct=pct[r], set=name, kind="line", a=float(a), b=0.0,
                          loss=float(res["line"][i, 2 * s]), accuracy=float(res["line"][i, 2 * s + 1]))
                     for i, a in enumerate(axis)]
            rows += [dict(round=r, weights_remaining_pct=pct[r], set=name, kind="plane", a=float(a), b=float(b),
                          loss=float(res["plane"][j, i, 2 * s]), accuracy=float(res["plane"][j, i, 2 * s + 1]))
                     for j, b in enumerate(axis) for i, a in enumerate(axis)]
        summary.append(dict(round=r, weights_remaining_pct=pct[r], train_loss_centre=float(res["centre"][0]),
                            test_loss_centre=float(res["centre"][2]), rise_train=float(res["rise"][0]),
                            rise_test=float(res["rise"][1]), hessian_top=float(res["hessian_top"])))
    written = [os.path.join(folder, name) for name in ("landscape.csv", "landscape_summary.csv", "landscape.png")]
    for path, columns, table in ((written[0], COLUMNS, rows), (written[1], SUMMARY, summary)):
        rundir.write_csv(path, table, columns, significant=6)
    plot(results, pct, written[2], run["config"]["model"]["name"])
    report.write_section(folder, "landscape", section(summary, span, examples))
    return written


def plot(results: dict, pct: dict, path: str, model: str):
    plt = report.pyplot()
    from matplotlib import colors, ticker
    n = len(results)
    planes = [res["plane"][..., 0] for res in results.values()]
    low, high = min(p.min() for p in planes), max(p.max() for p in planes)
    # Log-spaced levels when the loss is positive: the bowl's floor, where the rounds differ, gets its share.
    norm = colors.LogNorm(low, high) if low > 0 else colors.Normalize(low, high)
    levels = np.geomspace(low, high, 30) if low > 0 else np.linspace(low, high, 30)
    figure = plt.figure(figsize=(4.3 * n + 1.5, 13))
    grid = figure.add_gridspec(3, n + 1, width_ratios=[1] * n + [0.05], height_ratios=[1, 1, 0.9], hspace=0.35)
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.85, n))
    line_axis = figure.add_subplot(grid[2, :n])
    for column, (r, res) in enumerate(results.items()):
        axis, title, loss = res["axis"], f"round {r}: {pct[r]:.3g}% weights", res["plane"][..., 0]
        contour = figure.add_subplot(grid[0, column])
        filled = contour.contourf(axis, axis, loss, levels=levels, norm=norm, cmap="viridis")
        contour.contour(axis, axis, loss, levels=levels[::3], colors="white", linewidths=0.4)
        contour.plot([0], [0], "r+", markersize=12, markeredgewidth=2, label="trained weights")
        contour.set(xlabel="direction 1 (filter-normalised)", ylabel="direction 2 (filter-normalised)",
                    title=title + "\ntraining loss", aspect="equal")
        contour.legend(loc="upper right", fontsize=7)
        surface = figure.add_subplot(grid[1, column], projection="3d")
        a, b = np.meshgrid(axis, axis)
        surface.plot_surface(a, b, loss, cmap="viridis", norm=norm, rcount=len(axis), ccount=len(axis),
                             linewidth=0.2, edgecolor="k", alpha=0.9)
        surface.set(xlabel="direction 1", ylabel="direction 2", zlabel="training loss", zlim=(min(0, low), high),
                    title=title)
        for s, style in ((0, "-"), (2, "--")):
            line_axis.plot(axis, res["line"][:, s], style, color=colours[column],
                           label=f"{title}, {'train' if s == 0 else 'test'}")
    bar = figure.colorbar(filled, cax=figure.add_subplot(grid[0, n]))
    bar.set_label("training loss (same levels in every round)")
    if low > 0:
        bar.ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
        bar.ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        bar.ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    line_axis.set(xlabel="direction 1 (filter-normalised)", ylabel="loss",
                  title="1-D slices along direction 1 (train solid, test dashed)")
    line_axis.grid(alpha=0.3)
    line_axis.legend(fontsize=7, ncol=max(1, n // 2))
    figure.suptitle(f"Loss landscape around each round's trained ticket, {model}", y=0.93)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def section(summary: list[dict], span: float, examples: int) -> str:
    header = ["round", "% weights", "train loss at centre", f"rise at {span / 2:g} (train)", "rise (test)",
              "top Hessian eigenvalue"]
    lines = ["## Loss landscape around the tickets (Li et al., 2018)", "",
             f"Training loss on the first {examples} training and test examples around each round's trained "
             "weights, along filter-normalised random directions over the surviving kernel weights. Rise: mean loss "
             f"at ±{span / 2:g} along direction 1 minus the loss at the weights; top Hessian eigenvalue of the "
             f"training loss over the surviving kernel weights ({HESSIAN_ITERATIONS} power iterations).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [f"| {s['round']} | {s['weights_remaining_pct']:.3g} | {s['train_loss_centre']:.4g} | "
              f"{s['rise_train']:.4g} | {s['rise_test']:.4g} | {s['hessian_top']:.4g} |" for s in summary]
    lines += ["", verdict(summary), "", "![loss landscape](landscape.png)", ""]
    return "\n".join(lines)


def verdict(summary: list[dict]) -> str:
    """One sentence, from the numbers: is the sparsest round smoother than the densest?"""
    if len(summary) < 2:
        return "One round only: nothing to compare."
    dense = max(summary, key=lambda s: (s["weights_remaining_pct"], -s["round"]))
    sparse = min(summary, key=lambda s: (s["weights_remaining_pct"], -s["round"]))
    lower = [sparse[k] < dense[k] for k in ("rise_train", "hessian_top")]
    judged = ("smoother than {} by both measures" if all(lower) else "not smoother than {} by either measure"
              if not any(lower) else "smoother than {} by its " + ("loss rise" if lower[0] else "Hessian eigenvalue")
              + " only")
    dense_name = f"round {dense['round']} ({dense['weights_remaining_pct']:.3g}% weights)"
    return (f"Round {sparse['round']} ({sparse['weights_remaining_pct']:.3g}% weights) is {judged.format(dense_name)}: "
            f"training-loss rise {sparse['rise_train']:.3g} "
            f"vs {dense['rise_train']:.3g}, top Hessian eigenvalue {sparse['hessian_top']:.3g} vs "
            f"{dense['hessian_top']:.3g}.")
