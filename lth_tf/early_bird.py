"""Early-bird tickets (You et al., ICLR 2020), adapted to unstructured
magnitude masks: while the dense network trains, the magnitude mask at each
target density is drawn at every epoch end; the ticket is drawn at the first
epoch whose mask and those of the WINDOW epochs before it changed by less
than epsilon from one epoch to the next (the paper's FIFO queue of the last
5 distances). The paper's normalised Hamming distance over all channels can
differ by at most 2·min(d, 1-d) at density d, so one epsilon means something
else at every density; here the distance is the fraction of the kept weights
that changed (pruning.mask_distance: 0 for equal masks, 1 for disjoint ones,
1 - d for two random masks at density d).

The detector keeps its state in a folder, so a dense round resumed from a
checkpoint goes on detecting: state.json ({target: {"distances": {epoch:
distance}, "drawn_epoch": epoch or null}}), the masks of recent epochs, and
drawn_I.npz, target I's ticket, written before the state that says it was
drawn (the sparse round takes it only once state.json says so).
"""
import glob
import os
import re
from typing import Callable

import numpy as np

from lth_tf import pruning, rundir

WINDOW = 5


def drawn_epoch(distances: dict[int, float], epsilon: float, window: int = WINDOW) -> int | None:
    """The first epoch e for which the distances of epochs e-window+1 .. e
    (each epoch's mask against the epoch before) are all known and below epsilon."""
    for epoch in sorted(distances):
        recent = [distances.get(e) for e in range(epoch - window + 1, epoch + 1)]
        if all(d is not None and d < epsilon for d in recent):
            return epoch
    return None


class Detector:
    """Feeds each epoch's weights to the masks of every target density.

    `masks_of(weights, target)` gives the magnitude masks; distances are
    pruning.mask_distance over the `changeable` entries (None: all). Epoch masks older
    than the oldest kept checkpoint's epoch are deleted as checkpoints come (a
    resume starts there)."""

    def __init__(self, folder: str, targets, epsilon: float, masks_of: Callable, changeable=None):
        self.folder, self.targets, self.epsilon = folder, list(targets), epsilon
        self.masks_of, self.changeable = masks_of, changeable
        self.state = read_state(folder) or {str(t): dict(distances={}, drawn_epoch=None) for t in self.targets}
        self.kept_from = 0

    def observe(self, epoch: int, weights: dict):
        current = {}
        previous = self._epoch_masks(epoch - 1)
        for index, target in enumerate(self.targets):
            masks = self.masks_of(weights, target)
            record = self.state[str(target)]
            if previous is not None:
                before = {key[len(f"{index}:"):]: m for key, m in previous.items() if key.startswith(f"{index}:")}
                record["distances"][str(epoch)] = pruning.mask_distance(before, masks, self.changeable)
            distances = {int(e): d for e, d in record["distances"].items()}
            if record["drawn_epoch"] is None and drawn_epoch(distances, self.epsilon) == epoch:
                record["drawn_epoch"] = epoch
                rundir.save_arrays(os.path.join(self.folder, f"drawn_{index}.npz"), masks)
            current.update({f"{index}:{key}": m.astype(np.uint8) for key, m in masks.items()})
        rundir.save_arrays(os.path.join(self.folder, f"epoch_{epoch:05d}.npz"), current)
        rundir.write_json(os.path.join(self.folder, "state.json"), self.state)
        for old in _epochs(self.folder):
            if old < min(self.kept_from, epoch - 1):
                os.unlink(os.path.join(self.folder, f"epoch_{old:05d}.npz"))

    def checkpointed(self, epoch: int):
        """The oldest kept checkpoint is at (or within) `epoch`: a resume never needs older masks."""
        self.kept_from = epoch

    def _epoch_masks(self, epoch: int):
        path = os.path.join(self.folder, f"epoch_{epoch:05d}.npz")
        return rundir.load_arrays(path) if os.path.exists(path) else None


def _epochs(folder: str) -> list[int]:
    return sorted(int(re.search(r"epoch_(\d+)\.npz$", p).group(1)) for p in glob.glob(os.path.join(folder, "epoch_*")))


def read_state(folder: str) -> dict | None:
    path = os.path.join(folder, "state.json")
    return rundir.read_json(path) if os.path.exists(path) else None


def drawn_masks(folder: str, index: int, target: float) -> dict | None:
    """The ticket drawn for target `index` (density `target`), or None if state.json does not say it was drawn."""
    record = (read_state(folder) or {}).get(str(target))
    if record is None or record["drawn_epoch"] is None:
        return None
    return rundir.load_arrays(os.path.join(folder, f"drawn_{index}.npz"))


def clear_epochs(folder: str):
    """The epoch masks, once the dense round has finished (state.json stays)."""
    for epoch in _epochs(folder):
        os.unlink(os.path.join(folder, f"epoch_{epoch:05d}.npz"))
