"""`analyze removal`: how many winning tickets does a network hold, and do more help?

Ticket 1 is the ticket of round R of a run. Its weights are then removed from
the network for good, and IMP searches the remaining weights again: an
ordinary lth_tf run (`--removed_weights`: the union of every earlier ticket,
zero in every branch and never pruned back in) from the same theta_0 with the
run's schedule, rates and seed, pruned round by round down to ticket 1's
per-layer size (`--prune_floor`: the run's round-R masks; a layer with fewer
weights left than that keeps all it has). Its last round is ticket j, beside
its random_prune control, a random mask of the same per-layer size placed
among the same remaining weights; its round 0 is the dense network with
tickets 1..j-1 removed (does it still train?). K-1 searches in all.

The reverse question: the union of the first j tickets, trained from theta_0
(a run started from a ticket file of the union's masks and theta_0).

Everything trained is an ordinary run directory under
FOLDER/removal_round_RR/ (search_J, union_J, random_1), so a rerun resumes
each where it stopped, and report and export work on each.
"""
import dataclasses
import os

import numpy as np

from lth_tf import config as config_lib
from lth_tf import paths, pruning, report, rundir, runs as runs_lib
from lth_tf.analyze import retrain

COLUMNS = ("ticket", "weights_remaining_pct", "removed_pct", "search_rounds", "ticket_test_accuracy",
           "ticket_early_stop_step", "ticket_early_stop_test_accuracy", "random_test_accuracy",
           "dense_removed_test_accuracy", "dense_removed_early_stop_step", "union_weights_remaining_pct",
           "union_test_accuracy", "union_early_stop_step", "dense_test_accuracy")
MATCH = 0.01  # a ticket "matches" the dense network within one point of test accuracy (the rule of this report)


def union(masks_list: list[pruning.Masks]) -> pruning.Masks:
    return {key: np.maximum.reduce([m[key] for m in masks_list]).astype(np.float32) for key in masks_list[0]}


def rounds_to_floor(config: config_lib.PruningConfig, available: pruning.Masks, floors: dict, kinds: dict) -> int:
    """How many of the run's pruning rounds take `available` down to `floors`
    (pruning.prune's counts do not depend on the weights: random ones stand in)."""
    rng, masks, rounds = np.random.default_rng(0), available, 0
    keys = [k for k in masks if pruning.layer_of(k) not in config.exclude]
    def above(masks):
        counts = pruning.layer_counts(masks)
        if config.strategy == "global":
            layers = {pruning.layer_of(k) for k in keys}
            return sum(counts[layer] for layer in layers) > sum(floors[layer] for layer in layers)
        return any(counts[layer] > floors[layer] for layer in counts)
    while above(masks):
        rounds += 1
        if rounds > 10_000:
            raise runs_lib.RunError("the run's pruning schedule never reaches ticket 1's size")
        masks = pruning.prune(config, {k: rng.random(m.shape) for k, m in masks.items()}, masks, kinds, rounds,
                              floors)
    return rounds


def _save_once(path, arrays) -> str:
    if not os.path.exists(path):
        rundir.save_arrays(path, arrays)
    return os.path.abspath(path)


def _row(run, round_index, branch="ticket") -> dict | None:
    rows = [r for r in run["rows"] if int(r["round"]) == round_index and r["branch"] == branch and r["status"] == "ok"]
    return rows[0] if rows else None


def _experiment(config, splits, output_dir, should_stop, what) -> dict:
    """Runs (or resumes, or reads) the lottery experiment of `config` in output_dir."""
    from lth_tf import lottery, training
    with rundir.locked(output_dir):
        experiment = lottery.prepare(config, splits, training.make_strategy("default"), output_dir)
        lottery.run(experiment, lottery.RunOptions(should_stop=should_stop, progress=retrain.BranchLines(what)))
    return runs_lib.load_run(output_dir)


def _train_masks(name, out, base, masks, weights, splits, should_stop) -> dict:
    """A run of round 0 only, started from a ticket file of (masks, weights)."""
    from lth_tf import tickets
    path = os.path.join(out, f"{name}.ticket.npz")
    if not os.path.exists(path):
        tickets.write_ticket(path, masks, weights, dict(
            model=base.model.name, width=base.model.width, input_shape=list(splits.input_shape),
            num_classes=splits.num_classes, dataset=splits.name, round=0, density=pruning.density(masks),
            rewind_step=0, source=os.path.abspath(out)))
    config = dataclasses.replace(base, lottery=dataclasses.replace(base.lottery, rounds=0, controls=(),
                                                                   ticket=os.path.abspath(path)))
    return _experiment(config, splits, os.path.join(out, name), should_stop, name)


def check(run, target_round, n_tickets):
    runs_lib.check_iterative(run, "removal", "runs IMP searches whose rounds each prune the last")
    if run["config"]["lottery"]["ticket"]:
        raise runs_lib.RunError(f"{run['dir']} started from a ticket file: removal needs a run from a dense theta_0")
    rounds = [r for r in runs_lib.ticket_rounds(run) if r > 0]
    if target_round not in rounds:
        raise runs_lib.RunError(f"{run['dir']} has no finished pruned round {target_round} for --target_round "
                                f"(finished: {', '.join(map(str, rounds)) or 'none'})")
    if n_tickets < 1:
        raise runs_lib.RunError("--tickets must be at least 1")


def analyze(run: dict, folder: str, target_round: int, n_tickets: int, should_stop=lambda: False) -> list[str]:
    check(run, target_round, n_tickets)
    from lth_tf import tfmot_adapter as adapter
    out = os.path.join(folder, f"removal_{paths.round_folder(target_round)}")
    os.makedirs(out, exist_ok=True)
    base = config_lib.from_dict(run["config"])
    opened = retrain.open_run(run)
    ticket_1 = runs_lib.masks(run, target_round)
    kinds = adapter.layer_kinds(opened.trainer.model, base.model.output_layer)
    floor = _save_once(os.path.join(out, "floor.npz"), ticket_1)
    # Ticket j: the last round of an IMP search with tickets 1..j-1 removed for good.
    searches, found = [(run, target_round)], [ticket_1]
    for j in range(2, n_tickets + 1):
        removed = _save_once(os.path.join(out, f"removed_{j}.npz"), union(found))
        available = {k: 1 - m for k, m in union(found).items()}
        rounds = rounds_to_floor(base.pruning, available, pruning.layer_counts(ticket_1), kinds)
        config = dataclasses.replace(
            base, lottery=dataclasses.replace(base.lottery, rounds=rounds, controls=("random_prune",), removed=removed),
            pruning=dataclasses.replace(base.pruning, floor=floor))
        search = _experiment(config, opened.splits, os.path.join(out, f"search_{j}"), should_stop, f"search {j}")
        searches.append((search, rounds))
        found.append(runs_lib.masks(search, rounds))
    # Ticket 1's random mask: the run's own random_prune, else one trained here.
    random_1 = _row(run, target_round, "random_prune")
    if random_1 is None:
        masks = pruning.random_masks_like(ticket_1, np.random.default_rng([base.lottery.seed, target_round]))
        random_1 = _row(_train_masks("random_1", out, base, masks, runs_lib.rewind_weights(run, target_round),
                                     opened.splits, should_stop), 0)
    # The union of the first j tickets, from theta_0.
    unions = []
    for j in range(1, n_tickets + 1):
        if j == 1 and base.lottery.rewind_step == 0:
            unions.append(_row(run, target_round))  # ticket 1 itself, trained from theta_0 already
        else:
            unions.append(_row(_train_masks(f"union_{j}", out, base, union(found[:j]), runs_lib.rewind_weights(run, 0),
                                            opened.splits, should_stop), 0))
    rows = table(run, searches, found, random_1, unions)
    return write(rows, folder, target_round)


def table(run, searches, found, random_1, unions) -> list[dict]:
    dense = _row(run, 0)
    rows = []
    for j, ((search, last), masks, union_row) in enumerate(zip(searches, found, unions), start=1):
        ticket, dense_removed = _row(search, last), _row(search, 0)
        random = random_1 if j == 1 else _row(search, last, "random_prune")
        removed = pruning.density(union(found[:j - 1])) if j > 1 else 0.0
        rows.append(dict(
            ticket=j, weights_remaining_pct=100 * pruning.density(masks), removed_pct=100 * removed,
            search_rounds=last, ticket_test_accuracy=float(ticket["test_accuracy"]),
            ticket_early_stop_step=int(ticket["early_stop_step"]),
            ticket_early_stop_test_accuracy=float(ticket["early_stop_test_accuracy"]),
            random_test_accuracy=float(random["test_accuracy"]) if random else float("nan"),
            dense_removed_test_accuracy=float(dense_removed["test_accuracy"]),
            dense_removed_early_stop_step=int(dense_removed["early_stop_step"]),
            union_weights_remaining_pct=100 * pruning.density(union(found[:j])),
            union_test_accuracy=float(union_row["test_accuracy"]),
            union_early_stop_step=int(union_row["early_stop_step"]),
            dense_test_accuracy=float(dense["test_accuracy"])))
    return rows


def write(rows, folder, target_round) -> list[str]:
    csv_path, png_path = os.path.join(folder, "removal.csv"), os.path.join(folder, "removal.png")
    rundir.write_csv(csv_path, rows, COLUMNS)
    plot(rows, png_path, target_round)
    report.write_section(folder, "removal", section(rows, target_round))
    return [csv_path, png_path]


def plot(rows, path, target_round):
    plt = report.pyplot()
    j = [r["ticket"] for r in rows]
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.5))
    left.plot(j, [r["ticket_test_accuracy"] for r in rows], "o-", label="ticket j (found with tickets 1..j-1 removed)")
    left.plot(j, [r["random_test_accuracy"] for r in rows], "s--", label="random mask, same size, same remaining weights")
    left.plot(j, [r["dense_removed_test_accuracy"] for r in rows], "^:", label="all remaining weights (tickets 1..j-1 removed)")
    middle.plot(j, [r["union_test_accuracy"] for r in rows], "o-", color="C3", label="union of tickets 1..j, from θ0")
    for axis in (left, middle):
        axis.axhline(rows[0]["dense_test_accuracy"], color="gray", ls=":", label="dense network (round 0)")
        axis.set_ylabel("test accuracy at the end of training")
    low, high = min(left.get_ylim()[0], middle.get_ylim()[0]), max(left.get_ylim()[1], middle.get_ylim()[1])
    for axis in (left, middle):  # one accuracy scale for both
        axis.set_ylim(low, high)
    right.plot(j, [r["ticket_early_stop_step"] for r in rows], "o-", label="ticket j")
    right.plot(j, [r["union_early_stop_step"] for r in rows], "o-", color="C3", label="union of tickets 1..j")
    right.set_ylabel("early-stop iteration (min. validation loss)")
    for axis, title in ((left, "disjoint tickets, one after another"), (middle, "more tickets together"),
                        (right, "how fast they learn")):
        axis.set_xlabel("ticket number j")
        axis.set_xticks(j)
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"Ticket removal from round {target_round}'s ticket "
                    f"({rows[0]['weights_remaining_pct']:.1f}% of the weights)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def section(rows, target_round) -> str:
    dense = rows[0]["dense_test_accuracy"]
    lines = [f"## Ticket removal (round {target_round})", "",
             f"Ticket 1 is round {target_round}'s ticket; ticket j was found by IMP with tickets 1..j-1 removed for "
             "good. Test accuracy at the end of training; a ticket *matches* the dense network when it is within "
             f"{100 * MATCH:g} point of it ({100 * dense:.2f}%).", "",
             "| ticket | % weights | % removed before | ticket acc | random mask acc | all remaining acc | "
             "union 1..j acc (% weights) | ticket / union early stop |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['ticket']} | {r['weights_remaining_pct']:.2f} | {r['removed_pct']:.2f} | "
                     f"{100 * r['ticket_test_accuracy']:.2f} | {100 * r['random_test_accuracy']:.2f} | "
                     f"{100 * r['dense_removed_test_accuracy']:.2f} | {100 * r['union_test_accuracy']:.2f} "
                     f"({r['union_weights_remaining_pct']:.1f}) | {r['ticket_early_stop_step']} / "
                     f"{r['union_early_stop_step']} |")
    matching = [r["ticket"] for r in rows if r["ticket_test_accuracy"] >= dense - MATCH]
    winning = [r["ticket"] for r in rows if r["ticket"] in matching and r["ticket_test_accuracy"] > r["random_test_accuracy"]]
    lines += ["", f"Tickets that match the dense network: {', '.join(map(str, matching)) or 'none'}; of them, better "
              f"than their random mask: {', '.join(map(str, winning)) or 'none'}. With tickets 1..{len(rows) - 1} "
              f"removed the remaining weights reach {100 * rows[-1]['dense_removed_test_accuracy']:.2f}%. The union "
              f"of all {len(rows)} tickets reaches {100 * rows[-1]['union_test_accuracy']:.2f}% "
              f"(ticket 1 alone {100 * rows[0]['union_test_accuracy']:.2f}%).", "", "![removal](removal.png)"]
    return "\n".join(lines)
