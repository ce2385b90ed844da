"""`analyze instability`: linear mode connectivity (Frankle, Dziugaite, Roy &
Carbin, ICML 2020).

From theta_k (the dense network's weights after k steps of the run's own
training, under a chosen round's ticket mask; round 0 is the dense network)
two copies train to the end of the schedule with different data orders,
everything else equal. The test error is evaluated at evenly spaced points
(1 - a) theta_A + a theta_B, a in [0, 1], masks applied; where the model has
BatchNorm, its statistics are recomputed at each point on training data.
Instability is the error barrier: the highest error on the path minus the
mean of the two end points' errors. The paper calls a network stable when
the barrier is under 2%; the report does too.

The masks of round r are the run's own (found with its --rewind_step); theta_k
for other k comes from training the dense network k steps, with the run's
data order, from theta_0. `--path=init` draws the error along the straight
line from a round's starting weights (theta_0 / theta_k) to its trained ones.

Files under FOLDER/instability/: theta_k/step_K (a trained piece per k),
round_RR/k_K/pair_P/copy_{a,b} (each copy) and path.json (the evaluated path):
a rerun reads what is there and trains only what is missing.
"""
import os

import numpy as np

from lth_tf import paths, report, rundir, runs as runs_lib
from lth_tf.analyze import retrain

STABLE = 0.02  # the paper's threshold on the error barrier
BN_EXAMPLES = 5000  # training examples that re-estimate BatchNorm statistics at each point of a path


def barrier(errors) -> float:
    """The highest error on the path minus the mean of its end points' (>= 0 for a path that holds them)."""
    errors = np.asarray(errors, dtype=np.float64)
    return float(errors.max() - (errors[0] + errors[-1]) / 2)


def interpolate(a: dict, b: dict, alpha: float) -> dict:
    """(1 - alpha) a + alpha b for every array; exactly a at 0 and b at 1."""
    return {key: ((1 - alpha) * a[key] + alpha * b[key]).astype(a[key].dtype) for key in a}


def has_batchnorm(model) -> bool:
    import tensorflow as tf
    return any(isinstance(layer, tf.keras.layers.BatchNormalization) for layer in model.layers)


def recompute_batchnorm(model, x_train, batch_size=500, examples=BN_EXAMPLES):
    """Every BatchNorm layer's moving statistics set to the mean over batches of
    training data (momentum i/(i+1) at batch i makes the moving average a running mean)."""
    import tensorflow as tf
    layers = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
        layer.moving_variance.assign(tf.ones_like(layer.moving_variance))
    for i, start in enumerate(range(0, min(examples, len(x_train)), batch_size)):
        for layer in layers:
            layer.momentum = i / (i + 1)
        model(x_train[start:start + batch_size], training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


def evaluate_path(opened, a: dict, b: dict, masks, alphas: int) -> dict:
    """Test error and loss at `alphas` evenly spaced points from a to b."""
    from lth_tf import training
    trainer, splits = opened.trainer, opened.splits
    points = np.linspace(0.0, 1.0, alphas)
    errors, losses = [], []
    batchnorm = has_batchnorm(trainer.model)
    for alpha in points:
        training.rewind(trainer, interpolate(a, b, alpha), masks, 0)
        if batchnorm:
            recompute_batchnorm(trainer.model, splits.x_train)
        loss, accuracy = training.evaluate(trainer, splits.x_test, splits.y_test)
        errors.append(1.0 - accuracy)
        losses.append(loss)
    return dict(alphas=points.tolist(), test_error=errors, test_loss=losses, error_barrier=barrier(errors),
                loss_barrier=barrier(losses))


def theta_k(opened, run, k: int, out: str, progress, should_stop) -> dict:
    """The dense network's weights after k steps of the run's training (the run's own file where it has it)."""
    if k == 0:
        return runs_lib.start_weights(run, 0)
    if k == opened.config.lottery.rewind_step:
        return runs_lib.rewind_weights(run, 1)
    folder = os.path.join(out, "theta_k", f"step_{k}")
    metrics = retrain.train_piece(opened.trainer, opened.splits, runs_lib.start_weights(run, 0),
                                  runs_lib.masks(run, 0), 0, k, folder, should_stop)
    progress.piece_done(f"theta_k at step {k}", metrics)
    return rundir.load_arrays(os.path.join(folder, paths.WEIGHTS))


def check(run, rounds, rewind_steps, opened_steps=None):
    finished = runs_lib.ticket_rounds(run)
    missing = [r for r in rounds if r not in finished]
    if missing:
        raise runs_lib.RunError(f"{run['dir']} has no finished round {missing[0]} "
                                f"(finished: {', '.join(map(str, finished))})")
    end = run["config"]["training"]["train_steps"]
    late = [k for k in rewind_steps if not 0 <= k < end]
    if late:
        raise runs_lib.RunError(f"--rewind_steps={late[0]} is not a step inside the run's training (0..{end - 1})")


def analyze(run, folder, rounds, rewind_steps, pairs=1, alphas=30, path="pairs",
            should_stop=lambda: False) -> list[str]:
    check(run, rounds, rewind_steps)
    opened = retrain.open_run(run)
    out = os.path.join(folder, "instability")
    if path == "init":
        return _init_paths(run, opened, folder, rounds, alphas)
    end = opened.config.training.train_steps
    progress = retrain.Progress("instability", len({k for k in rewind_steps if k not in (0, opened.config.lottery
                                                   .rewind_step)}) + 2 * len(rounds) * len(rewind_steps) * pairs)
    points, barriers = [], []
    for k in rewind_steps:
        start = theta_k(opened, run, k, out, progress, should_stop)
        for round_index in rounds:
            masks = runs_lib.masks(run, round_index)
            pct = _pct(run, round_index)
            for pair in range(pairs):
                where = os.path.join(out, paths.round_folder(round_index), f"k_{k}", f"pair_{pair}")
                ends = []
                for copy in ("a", "b"):
                    trainer = retrain.with_data_order(opened.trainer, retrain.data_seed(pair, ord(copy)))
                    metrics = retrain.train_piece(trainer, opened.splits, start, masks, k, end,
                                                  os.path.join(where, f"copy_{copy}"), should_stop)
                    progress.piece_done(f"round {round_index} k={k} pair {pair} copy {copy}", metrics)
                    ends.append(rundir.load_arrays(os.path.join(where, f"copy_{copy}", paths.WEIGHTS)))
                result_path = os.path.join(where, "path.json")
                if not os.path.exists(result_path):
                    rundir.write_json(result_path, evaluate_path(opened, *ends, masks, alphas))
                result = rundir.read_json(result_path)
                barriers.append(dict(round=round_index, weights_remaining_pct=pct, rewind_step=k, pair=pair,
                                     error_barrier=result["error_barrier"], loss_barrier=result["loss_barrier"],
                                     error_a=result["test_error"][0], error_b=result["test_error"][-1]))
                points += [dict(round=round_index, weights_remaining_pct=pct, rewind_step=k, pair=pair, alpha=a,
                                test_error=e, test_loss=loss)
                           for a, e, loss in zip(result["alphas"], result["test_error"], result["test_loss"])]
    files = [rundir.write_csv(os.path.join(folder, "instability.csv"), points),
             rundir.write_csv(os.path.join(folder, "instability_barriers.csv"), barriers)]
    files.append(plot(points, barriers, os.path.join(folder, "instability.png")))
    report.write_section(folder, "instability", section(barriers))
    return files


def _pct(run, round_index) -> float:
    return next(float(r["weights_remaining_pct"]) for r in run["rows"]
                if int(r["round"]) == round_index and r["branch"] == "ticket")


def summarise(barriers) -> list[dict]:
    """Mean, min and max error barrier over pairs, per (round, k)."""
    groups = {}
    for row in barriers:
        groups.setdefault((row["round"], row["rewind_step"]), []).append(row)
    return [dict(round=r, weights_remaining_pct=group[0]["weights_remaining_pct"], rewind_step=k,
                 mean=float(np.mean([g["error_barrier"] for g in group])),
                 low=min(g["error_barrier"] for g in group), high=max(g["error_barrier"] for g in group),
                 n=len(group), end_error=float(np.mean([(g["error_a"] + g["error_b"]) / 2 for g in group])))
            for (r, k), group in sorted(groups.items())]


def section(barriers) -> str:
    rows = summarise(barriers)
    lines = ["## Instability (linear mode connectivity)", "",
             "Two copies trained from theta_k with different data orders; the error barrier is the highest test "
             "error on the straight line between them minus the mean of the end points' errors (Frankle et al., "
             f"ICML 2020). Stable: barrier under {100 * STABLE:g}%.", "",
             "| round | % weights | rewind step k | error barrier, mean [min, max] (%) | end points' error (%) | pairs | "
             "stable |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['round']} | {r['weights_remaining_pct']:.2f} | {r['rewind_step']} | {100 * r['mean']:.2f} "
                     f"[{100 * r['low']:.2f}, {100 * r['high']:.2f}] | {100 * r['end_error']:.2f} | {r['n']} | "
                     f"{'yes' if r['mean'] < STABLE else 'no'} |")
    for round_index in sorted({r["round"] for r in rows}):
        stable = [r["rewind_step"] for r in rows if r["round"] == round_index and r["mean"] < STABLE]
        lines.append("")
        lines.append(f"Round {round_index}: " + (f"stable from k = {min(stable)} on the steps tried"
                                                 if stable else "not stable at any k tried") + ".")
    lines += ["", "![instability](instability.png)"]
    return "\n".join(lines)


def plot(points, barriers, path) -> str:
    plt = report.pyplot()
    rows = summarise(barriers)
    steps = sorted({r["rewind_step"] for r in rows})
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for n, round_index in enumerate(sorted({r["round"] for r in rows})):
        mine = [r for r in rows if r["round"] == round_index]
        x = [steps.index(r["rewind_step"]) for r in mine]
        label = f"round {round_index} ({mine[0]['weights_remaining_pct']:.1f}% weights)"
        left.plot(x, [100 * r["mean"] for r in mine], "o-", color=f"C{n}", label=label)
        left.fill_between(x, [100 * r["low"] for r in mine], [100 * r["high"] for r in mine], color=f"C{n}", alpha=0.2)
        for m, k in enumerate(steps):
            curve = [p for p in points if p["round"] == round_index and p["rewind_step"] == k]
            alphas = sorted({p["alpha"] for p in curve})
            mean = [100 * np.mean([p["test_error"] for p in curve if p["alpha"] == a]) for a in alphas]
            right.plot(alphas, mean, ["-", "--", ":", "-."][m % 4], color=f"C{n}", label=f"round {round_index}, k={k}")
    left.axhline(100 * STABLE, color="gray", ls="--", label=f"stable below {100 * STABLE:g}%")
    left.set_xticks(range(len(steps)), [str(k) for k in steps])
    left.set_xlabel("rewind step k (iterations trained before the copies split)")
    left.set_ylabel("test error barrier (percentage points)")
    left.set_title("instability vs rewind step (mean, min-max over pairs)")
    right.set_xlabel("interpolation α (0 = copy A, 1 = copy B)")
    right.set_ylabel("test error (%)")
    right.set_title("test error along the straight line between the copies")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _init_paths(run, opened, folder, rounds, alphas) -> list[str]:
    """--path=init: error along each round's starting weights -> trained weights."""
    plt = report.pyplot()
    rows = []
    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    for n, round_index in enumerate(rounds):
        masks = runs_lib.masks(run, round_index)
        result = evaluate_path(opened, runs_lib.start_weights(run, round_index),
                               runs_lib.final_weights(run, round_index), masks, alphas)
        pct = _pct(run, round_index)
        rows += [dict(round=round_index, weights_remaining_pct=pct, alpha=a, test_error=e, test_loss=loss)
                 for a, e, loss in zip(result["alphas"], result["test_error"], result["test_loss"])]
        axis.plot(result["alphas"], 100 * np.array(result["test_error"]), color=f"C{n}",
                  label=f"round {round_index} ({pct:.1f}% weights)")
    axis.set_xlabel("interpolation α (0 = the round's start: θ0, θk or, LR rewinding, the last round's, 1 = trained)")
    axis.set_ylabel("test error (%)")
    axis.set_title("test error from the starting to the trained weights")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    png = os.path.join(folder, "instability_init.png")
    figure.savefig(png, dpi=110)
    plt.close(figure)
    csv_path = rundir.write_csv(os.path.join(folder, "instability_init.csv"), rows)
    report.write_section(folder, "instability_init", "## Error from the start to the trained weights\n\n"
                         "![instability_init](instability_init.png)")
    return [csv_path, png]
