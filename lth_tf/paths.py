"""The name of every file in a run directory, in one place: the contract
between the driver that writes a run and everything that reads it (report,
analyze, export, results, the Python API, benchmarks).

    config.json  results.csv  log.txt  .lock
    init/theta_0.npz  init/theta_k.npz                    the weights every round rewinds to
    round_NN/masks.npz                                    the round's ticket masks
    round_NN/<branch>/metrics.json | failed.json          a finished (or diverged) branch
    round_NN/<branch>/weights.npz                         its trained weights
    round_NN/<branch>/masks.npz                           a control's (or the inverted branch's) own masks
    round_NN/<branch>/checkpoints/                        while it trains
    round_NN/ticket/prune_from.npz                        the weights the next round prunes (--prune_from_step)
    round_00/ticket/early_bird/                           the early-bird detector's state and drawn masks
    tickets/round_NN/ticket.npz  tickets/round_NN/saved_model*/  tickets/sizes.csv   exported tickets, their sizes
    tensorboard/round_NN_<branch>/                        a branch's TensorBoard events

An analysis keeps its own outputs under analyze/<name>/, in folders named
by round the same way (round_folder).
"""
import os

CONFIG = "config.json"
RESULTS = "results.csv"
LOG = "log.txt"
LOCK = ".lock"
METRICS = "metrics.json"
FAILED = "failed.json"
WEIGHTS = "weights.npz"
MASKS = "masks.npz"


def round_folder(round_index: int) -> str:
    """round_NN: a round's folder name, in a run and in an analysis's outputs."""
    return f"round_{round_index:02d}"


def rounds_in(folder: str) -> list[int]:
    """The rounds whose round_NN folders `folder` holds (a run, tickets/, an analysis's outputs), sorted."""
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sorted(int(name[len("round_"):]) for name in names if name.startswith("round_")
                  and name[len("round_"):].isdigit())


def config(run: str) -> str:
    return os.path.join(run, CONFIG)


def results(run: str) -> str:
    return os.path.join(run, RESULTS)


def log(run: str) -> str:
    return os.path.join(run, LOG)


def theta_0(run: str) -> str:
    return os.path.join(run, "init", "theta_0.npz")


def theta_k(run: str) -> str:
    return os.path.join(run, "init", "theta_k.npz")


def rewound(run: str, round_index: int) -> str:
    """The weights a round's branches start from: theta_0 in round 0, theta_k after."""
    return theta_0(run) if round_index == 0 else theta_k(run)


def ticket_start(run: str, round_index: int, retrain: str = "rewind", oneshot: bool = False) -> str:
    """The weights a round's ticket trains from (before its masks): the rewind weights under weight
    rewinding; under --retrain=lr_rewind or finetune the previous round's trained ticket (one-shot: the
    dense round's)."""
    if round_index == 0 or retrain == "rewind":
        return rewound(run, round_index)
    return weights(run, 0 if oneshot else round_index - 1, "ticket")


def round_dir(run: str, round_index: int) -> str:
    return os.path.join(run, round_folder(round_index))


def round_masks(run: str, round_index: int) -> str:
    return os.path.join(round_dir(run, round_index), MASKS)


def branch(run: str, round_index: int, name: str) -> str:
    return os.path.join(round_dir(run, round_index), name)


def metrics(run: str, round_index: int, name: str) -> str:
    return os.path.join(branch(run, round_index, name), METRICS)


def failed(run: str, round_index: int, name: str) -> str:
    return os.path.join(branch(run, round_index, name), FAILED)


def weights(run: str, round_index: int, name: str) -> str:
    return os.path.join(branch(run, round_index, name), WEIGHTS)


def branch_masks(run: str, round_index: int, name: str) -> str:
    """A branch's own masks (a control that draws its own, the inverted branch)."""
    return os.path.join(branch(run, round_index, name), MASKS)


def checkpoints(run: str, round_index: int, name: str) -> str:
    return os.path.join(branch(run, round_index, name), "checkpoints")


def prune_from(run: str, round_index: int) -> str:
    return os.path.join(branch(run, round_index, "ticket"), "prune_from.npz")


def pruned_weights(run: str, round_index: int, prune_from_step: int) -> str:
    """What the next round prunes: the round's ticket at --prune_from_step, else its final weights."""
    return prune_from(run, round_index) if prune_from_step else weights(run, round_index, "ticket")


def early_bird(run: str) -> str:
    return os.path.join(branch(run, 0, "ticket"), "early_bird")


def early_bird_state(run: str) -> str:
    return os.path.join(early_bird(run), "state.json")


def tickets(run: str) -> str:
    return os.path.join(run, "tickets")


def ticket_export(run: str, round_index: int) -> str:
    return os.path.join(tickets(run), round_folder(round_index))


def ticket_file(run: str, round_index: int) -> str:
    """The exported ticket itself: masks and rewind weights (lth_tf.tickets' format)."""
    return os.path.join(ticket_export(run, round_index), "ticket.npz")


def sizes(run: str) -> str:
    return os.path.join(tickets(run), "sizes.csv")


def tensorboard(run: str) -> str:
    return os.path.join(run, "tensorboard")


def tensorboard_branch(run: str, round_index: int, name: str) -> str:
    return os.path.join(tensorboard(run), f"{round_folder(round_index)}_{name}")
