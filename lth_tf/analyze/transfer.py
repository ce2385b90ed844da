"""`analyze transfer`: is a ticket good for another task? (Morcos et al.,
NeurIPS 2019, "One ticket to win them all".)

Task B is an lth_tf experiment given by its flags (--target_flags: a flagfile,
or flags in one string), read as lth_tf.main reads them: e.g. the source run's
flagfile with --classes=5,6,7,8,9, or MNIST-1D generated with other
--mnist1d_* settings. Its model must be the source run's and its examples of
the same shape: A's first-layer masks must fit them.

For each chosen round of run A (found on task A), on B with B's schedule,
from B's rewind step (as B's own tickets train):
  ticket  A's masks and rewind weights theta_k. The output layer is drawn
          afresh (B's classes are not A's); it keeps A's mask where its shape
          is A's and is dense where it is not.
  reinit  the same masks, every weight drawn afresh.
  random  a random mask with the ticket's per-layer counts, over the ticket's weights.
  imp     the ticket IMP finds on B itself, at its round nearest the ticket's
          % weights: an ordinary run of B's flags, without controls, as deep
          as the deepest round chosen.
  dense   that run's round 0.

Everything trained lives under FOLDER/transfer/target_ID/ (ID: a hash of B's
config): target.json, the IMP run imp_run/ (an ordinary run directory), and
one piece per round and branch (round_RR/BRANCH/); a rerun resumes where it
stopped. transfer.csv and transfer.png cover every target analysed into
FOLDER, one panel per target, so a class split and a shifted task land side by side.
"""
import dataclasses
import hashlib
import json
import os
import shlex
import textwrap

import numpy as np

from lth_tf import config as config_lib
from lth_tf import data, paths, pruning, report, rundir
from lth_tf import runs as runs_lib
from lth_tf.analyze import retrain

TRAINED = ("ticket", "reinit", "random")
BRANCHES = ("ticket", "imp", "reinit", "random", "dense")
LABELS = {"ticket": "A's ticket (transferred)", "imp": "IMP on B (B's own ticket)", "reinit": "A's mask, reinitialised",
          "random": "random mask, same layer sizes", "dense": "dense network on B"}
COLUMNS = ("target", "target_id", "round", "branch", "weights_remaining_pct", "test_accuracy", "early_stop_step",
           "early_stop_test_accuracy", "imp_round", "source_weights_remaining_pct", "source_test_accuracy",
           "test_examples")


def target_config(spec: str) -> config_lib.ExperimentConfig:
    """Task B's experiment from --target_flags (a flagfile, or flags in one string); RunError if it is none."""
    from absl import flags

    from lth_tf import flags as lth_flags
    argv = [f"--flagfile={spec}"] if os.path.isfile(spec) else shlex.split(spec)
    if not argv:
        raise runs_lib.RunError("--target_flags is empty: give task B as a flagfile or as lth_tf.main flags")
    lth_flags.FLAGS.unparse_flags()
    try:
        lth_flags.FLAGS(["lth_tf.main", *argv])
        return lth_flags.experiment_config(lth_flags.FLAGS)[0]
    except (flags.Error, config_lib.ConfigError, data.DataError) as error:
        raise runs_lib.RunError(f"--target_flags={spec}: {str(error).replace('ERROR:: ', '')}") from None
    finally:
        lth_flags.FLAGS.unparse_flags()


NOT_THE_TASK = {("lottery", "rounds"), ("lottery", "controls")}  # the analysis sets B's run's own


def describe(source: dict, target: dict) -> str:
    """Task B as the flags in which its config differs from run A's (seeds included)."""
    said = []
    for section, values in target.items():
        for key, value in values.items():
            if (section, key) in NOT_THE_TASK:
                continue
            before = source.get(section, {}).get(key)
            if key == "mnist1d":
                said += [f"mnist1d_{arg}={_text(v)}" for arg, v in sorted(value.items()) if (before or {}).get(arg) != v]
                said += [f"mnist1d_{arg}=default" for arg in sorted(set(before or {}) - set(value))]
            elif value != before:
                said.append(f"{config_lib.flag_of(section, key)}={_text(value)}")
    return " ".join(f"--{s}" for s in dict.fromkeys(said)) or "the source task itself"


def _text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def check(run: dict, target: config_lib.ExperimentConfig, rounds: list[int]):
    """RunError (one line) unless A's rounds exist and B can take A's masks."""
    source = config_lib.from_dict(run["config"])
    if (source.model.name, source.model.width) != (target.model.name, target.model.width):
        raise runs_lib.RunError(f"task B's --model={target.model.name} --width={target.model.width} is not the "
                                f"source run's --model={source.model.name} --width={source.model.width}")
    shape_a, shape_b = data.input_shape(source.data), data.input_shape(target.data)
    if tuple(shape_a) != tuple(shape_b):
        raise runs_lib.RunError(f"task B's examples have shape {tuple(shape_b)}, the source run's {tuple(shape_a)}: "
                                "A's masks do not fit a network for B (transfer needs inputs of one shape)")
    if target.pruning.method != "imp" or target.pruning.oneshot:
        raise runs_lib.RunError("task B's own ticket is found by iterative IMP: leave --prune_method and --oneshot "
                                "out of --target_flags")
    finished = [r for r in runs_lib.ticket_rounds(run) if r > 0]
    missing = [r for r in rounds if r not in finished]
    if not rounds or missing:
        raise runs_lib.RunError(f"{run['dir']} has no finished pruned round {missing[0] if missing else ''} for "
                                f"--rounds (finished: {', '.join(map(str, finished)) or 'none'})")


def transferred(theta_a: dict, masks_a: pruning.Masks, fresh_b: dict, dense_b: pruning.Masks, output="output"):
    """(weights, masks) of A's ticket in B's network: A's theta_k and masks, the
    output layer's (named `output`) weights from fresh_b, its mask A's where the
    shapes agree and dense where they do not. RunError if any other layer differs in shape."""
    masks = {}
    for key, ones in dense_b.items():
        if key in masks_a and masks_a[key].shape == ones.shape:
            masks[key] = masks_a[key].astype(np.float32)
        elif pruning.layer_of(key) == output:
            masks[key] = ones
        else:
            raise runs_lib.RunError(f"layer {key} has shape {ones.shape} on task B, not "
                                    f"{getattr(masks_a.get(key), 'shape', 'absent')} as in the source run")
    weights = {name: value if pruning.layer_of(name) == output else theta_a[name] for name, value in fresh_b.items()}
    return _masked(weights, masks), masks


def _masked(weights: dict, masks: pruning.Masks) -> dict:
    return {**weights, **{pruning.variable_of(k): weights[pruning.variable_of(k)] * m for k, m in masks.items()}}


def piece_start(branch: str, theta_a, masks_a, fresh, dense_b, seeds: dict, output="output"):
    """(weights, masks) a trained branch starts from; fresh(seed) is B's initialiser; `output`
    names the output layer (B's own weights)."""
    weights, masks = transferred(theta_a, masks_a, fresh(seeds["ticket"]), dense_b, output)
    if branch == "reinit":
        return _masked(fresh(seeds["reinit"]), masks), masks
    if branch == "random":
        random_masks = pruning.random_masks_like(masks, np.random.default_rng(seeds["random"]))
        unmasked = {name: value if pruning.layer_of(name) == output else theta_a[name]
                    for name, value in fresh(seeds["ticket"]).items()}
        return _masked(unmasked, random_masks), random_masks
    return weights, masks


def branch_seeds(seed: int, round_index: int) -> dict:
    return {branch: int(np.random.SeedSequence([seed, round_index, 20261123, n]).generate_state(1)[0])
            for n, branch in enumerate(TRAINED)}


def analyze(run: dict, folder: str, target_spec: str, rounds: list[int], should_stop=lambda: False) -> list[str]:
    target = target_config(target_spec)
    check(run, target, rounds)
    from lth_tf import lottery, training
    from lth_tf import tfmot_adapter as adapter
    target_dict = json.loads(json.dumps(dataclasses.asdict(target)))
    target_id = hashlib.sha1(json.dumps(target_dict, sort_keys=True).encode()).hexdigest()[:10]
    label = describe(run["config"], target_dict)
    out = os.path.join(folder, "transfer", f"target_{target_id}")
    os.makedirs(out, exist_ok=True)
    rundir.write_json(os.path.join(out, "target.json"), dict(label=label, spec=target_spec, config=target_dict,
                                                            source=os.path.abspath(run["dir"])))
    # B's own IMP run: its dense round and its tickets.
    imp_config = dataclasses.replace(target, lottery=dataclasses.replace(target.lottery, rounds=max(rounds),
                                                                         controls=()))
    splits = data.load(imp_config.data)
    imp_dir = os.path.join(out, "imp_run")
    with rundir.locked(imp_dir):
        experiment = lottery.prepare(imp_config, splits, training.make_strategy("default"), imp_dir)
        lottery.run(experiment, lottery.RunOptions(export="none", should_stop=should_stop,
                                                   progress=retrain.BranchLines(f"transfer: IMP on B ({label})")))
    imp_run = runs_lib.load_run(imp_dir)
    dense_b = {key: np.ones_like(mask) for key, mask in experiment.initial_masks.items()}
    output = adapter.output_layer_name(experiment.trainer.model, target.model.output_layer)
    drawn = {}

    def fresh(seed):  # B's initialiser under `seed` (each drawn once)
        if seed not in drawn:
            drawn[seed] = lottery.initial_state(imp_config, splits, seed)
        return dict(drawn[seed])
    start, end = target.lottery.rewind_step, target.training.train_steps
    progress = retrain.Progress("transfer", len(rounds) * len(TRAINED))
    rows = [dict(_imp_row(imp_run, 0, "dense", label, target_id), test_examples=len(splits.y_test))]
    for round_index in rounds:
        theta_a, masks_a = runs_lib.rewind_weights(run, round_index), runs_lib.masks(run, round_index)
        source = next(r for r in run["rows"] if int(r["round"]) == round_index and r["branch"] == "ticket")
        for branch in TRAINED:
            weights, masks = piece_start(branch, theta_a, masks_a, fresh, dense_b,
                                         branch_seeds(target.lottery.seed, round_index), output)
            piece = os.path.join(out, paths.round_folder(round_index), branch)
            metrics = retrain.train_piece(experiment.trainer, splits, weights, masks, start, end, piece, should_stop)
            progress.piece_done(f"round {round_index} {branch}", metrics)
            rows.append(dict(target=label, target_id=target_id, round=round_index, branch=branch,
                             weights_remaining_pct=round(100 * pruning.density(masks), 4),
                             test_accuracy=metrics["final"]["test_accuracy"],
                             early_stop_step=metrics["early_stop"]["step"],
                             early_stop_test_accuracy=metrics["early_stop"]["test_accuracy"],
                             source_weights_remaining_pct=source["weights_remaining_pct"],
                             source_test_accuracy=source["test_accuracy"]))
        nearest = min(runs_lib.ticket_rounds(imp_run), key=lambda r: abs(
            np.log(_pct(imp_run, r)) - np.log(rows[-1]["weights_remaining_pct"])))
        rows.append(dict(_imp_row(imp_run, nearest, "imp", label, target_id), round=round_index,
                         imp_round=nearest, source_weights_remaining_pct=source["weights_remaining_pct"],
                         source_test_accuracy=source["test_accuracy"]))
    path = os.path.join(folder, "transfer.csv")
    earlier = [r for r in rundir.read_csv(path) if r["target_id"] != target_id]
    every = earlier + rows
    rundir.write_csv(path, every, COLUMNS)
    png = plot(every, os.path.join(folder, "transfer.png"), run["dir"], task_text(run["config"]))
    report.write_section(folder, "transfer", section(every, run["dir"], task_text(run["config"])))
    return [path, png]


def _pct(run, round_index) -> float:
    return next(float(r["weights_remaining_pct"]) for r in run["rows"]
                if int(r["round"]) == round_index and r["branch"] == "ticket")


def _imp_row(imp_run, round_index, branch, label, target_id) -> dict:
    row = next(r for r in imp_run["rows"] if int(r["round"]) == round_index and r["branch"] == "ticket")
    return dict(target=label, target_id=target_id, round=round_index, branch=branch,
                weights_remaining_pct=float(row["weights_remaining_pct"]), test_accuracy=float(row["test_accuracy"]),
                early_stop_step=int(row["early_stop_step"]),
                early_stop_test_accuracy=float(row["early_stop_test_accuracy"]), imp_round=round_index)



def _targets(rows) -> list[str]:
    return list(dict.fromkeys(r["target_id"] for r in rows))


def _of(rows, target_id, branch) -> list[dict]:
    return sorted((r for r in rows if r["target_id"] == target_id and r["branch"] == branch),
                  key=lambda r: int(r["round"]))


def section(rows, source_dir, task_a) -> str:
    lines = ["## Transfer: A's tickets trained on another task", "",
             f"Tickets of {source_dir} (task A: {task_a}) trained on task B from A's masks and rewind weights (output layer "
             "drawn afresh, dense where B's class count changes its shape), beside B's own IMP ticket at the "
             "nearest density, A's mask reinitialised, a random mask of the same per-layer sizes, and the dense "
             "network on B (Morcos et al., NeurIPS 2019). Test accuracy on B at the end of training.", ""]
    for target_id in _targets(rows):
        dense = _of(rows, target_id, "dense")
        label = (dense or _of(rows, target_id, "ticket"))[0]["target"]
        examples = f" ({dense[0]['test_examples']} test examples)" if dense and dense[0].get("test_examples") else ""
        lines += [f"### B: {label}", "",
                  f"Dense network on B: {float(dense[0]['test_accuracy']):.4f}{examples}." if dense else "", "",
                  "| A's round | % weights | A's ticket on A | transferred | IMP on B (% weights) | reinit | random |",
                  "|---|---|---|---|---|---|---|"]
        by = {b: {int(r["round"]): r for r in _of(rows, target_id, b)} for b in BRANCHES}
        for round_index in sorted(by["ticket"]):
            t, imp = by["ticket"][round_index], by["imp"].get(round_index)
            cell = lambda b: f"{float(by[b][round_index]['test_accuracy']):.4f}" if round_index in by[b] else ""  # noqa: E731
            lines.append(f"| {round_index} | {float(t['weights_remaining_pct']):.2f} | "
                         f"{float(t['source_test_accuracy']):.4f} | {cell('ticket')} | "
                         + (f"{float(imp['test_accuracy']):.4f} ({float(imp['weights_remaining_pct']):.2f})"
                            if imp else "") + f" | {cell('reinit')} | {cell('random')} |")
        lines.append("")
    lines.append("![transfer](transfer.png)")
    return "\n".join(lines)


def task_text(config: dict) -> str:
    """A run's task in flags: its dataset, class subset and MNIST-1D generator settings."""
    data_config = config["data"]
    return " ".join([f"--dataset={data_config['dataset']}"]
                    + ([f"--classes={_text(data_config['classes'])}"] if data_config.get("classes") else [])
                    + [f"--mnist1d_{k}={_text(v)}" for k, v in sorted(data_config.get("mnist1d", {}).items())])


def plot(rows, path, source_dir, task_a) -> str:
    plt = report.pyplot()
    from matplotlib import ticker
    targets = _targets(rows)
    figure, axes = plt.subplots(1, len(targets), figsize=(6.2 * len(targets), 4.6), squeeze=False)
    styles = {"ticket": ("C0", "o-"), "imp": ("C3", "s--"), "reinit": ("C1", "^:"), "random": ("C2", "v:")}
    for axis, target_id in zip(axes[0], targets):
        for branch, (color, style) in styles.items():
            mine = _of(rows, target_id, branch)
            if mine:
                axis.plot([float(r["weights_remaining_pct"]) for r in mine], [100 * float(r["test_accuracy"])
                          for r in mine], style, color=color, markersize=4, label=LABELS[branch])
        dense = _of(rows, target_id, "dense")
        if dense:
            accuracy, n = float(dense[0]["test_accuracy"]), int(dense[0].get("test_examples") or 0)
            se = 100 * np.sqrt(accuracy * (1 - accuracy) / max(n, 1))
            axis.axhline(100 * accuracy, color="k", lw=1, label=LABELS["dense"])
        if dense and n:  # the test set's size (transfer.csv of an earlier lth_tf lacks it)
            axis.axhspan(100 * accuracy - se, 100 * accuracy + se, color="k", alpha=0.08,
                         label=f"±1 binomial SE ({n} test examples)")
        axis.set_xscale("log")
        axis.invert_xaxis()
        axis.xaxis.set_major_locator(ticker.FixedLocator(sorted({float(r["weights_remaining_pct"])
                                                                for r in _of(rows, target_id, "ticket")})))
        axis.xaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
        axis.xaxis.set_minor_formatter(ticker.NullFormatter())
        axis.set_xlabel("% weights remaining")
        label = (dense or _of(rows, target_id, "ticket"))[0]["target"]
        axis.set_title(textwrap.fill(f"task B: {label}", 70), fontsize=9)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
        axis.set_ylabel("test accuracy on task B (%)")
    figure.suptitle(f"Tickets found on task A ({task_a}: {os.path.normpath(source_dir)}) trained on task B",
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
