"""Pruning strategies: pure functions from weights and masks to new masks.

Masks are dicts {layer name: float32 array of 0/1}; weights are dicts with the
same keys. Nothing here knows about TensorFlow, so the rules are tested on
plain arrays.
"""
import numpy as np

from lth_tf.config import PruningConfig

Masks = dict[str, np.ndarray]


def count_to_remove(rate: float, remaining: int) -> int:
    """round(rate x remaining), halves rounded up."""
    return int(np.floor(rate * remaining + 0.5))


def _drop_smallest(scores: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Flat mask with the n lowest-scoring surviving entries set to 0.

    Ties at the threshold break by position, so the result is deterministic.
    O(size) with a partition: a full sort of VGG-19's 20M weights takes seconds.
    """
    new_mask = mask.copy()
    if n == 0:
        return new_mask
    scores = np.where(mask > 0, scores, np.inf)
    threshold = np.partition(scores, n - 1)[n - 1]
    below = scores < threshold
    ties = np.flatnonzero(scores == threshold)[: n - int(below.sum())]
    new_mask[below] = 0
    new_mask[ties] = 0
    return new_mask


def prune_layerwise(weights: Masks, masks: Masks, rates: dict[str, float]) -> Masks:
    """Removes round(rate x surviving) weights of smallest magnitude per layer."""
    new_masks = {}
    for name, mask in masks.items():
        flat = mask.reshape(-1)
        n = count_to_remove(rates[name], int(flat.sum()))
        dropped = _drop_smallest(np.abs(weights[name]).reshape(-1), flat, n)
        new_masks[name] = dropped.reshape(mask.shape)
    return new_masks


def prune_global(weights: Masks, masks: Masks, rate: float, exclude=()) -> Masks:
    """Removes round(rate x surviving) weights of smallest magnitude, ranked
    together across all layers not named in `exclude`."""
    names = [n for n in masks if n not in exclude]
    if not names:
        raise ValueError("global pruning: every prunable layer is excluded")
    flat_masks = np.concatenate([masks[n].reshape(-1) for n in names])
    scores = np.concatenate([np.abs(weights[n]).reshape(-1) for n in names])
    n = count_to_remove(rate, int(flat_masks.sum()))
    dropped = _drop_smallest(scores, flat_masks, n)
    new_masks = dict(masks)
    offset = 0
    for name in names:
        size = masks[name].size
        new_masks[name] = dropped[offset:offset + size].reshape(masks[name].shape)
        offset += size
    return new_masks


def random_masks_like(masks: Masks, rng: np.random.Generator) -> Masks:
    """Masks with exactly the same number of survivors per layer, placed at random."""
    new_masks = {}
    for name, mask in masks.items():
        flat = np.zeros(mask.size, np.float32)
        flat[rng.permutation(mask.size)[: int(mask.sum())]] = 1
        new_masks[name] = flat.reshape(mask.shape)
    return new_masks


def dense_masks(shapes: dict[str, tuple]) -> Masks:
    return {name: np.ones(shape, np.float32) for name, shape in shapes.items()}


def density(masks: Masks) -> float:
    """Fraction of prunable weights that survive."""
    total = sum(m.size for m in masks.values())
    return float(sum(m.sum() for m in masks.values()) / total)


def layer_densities(masks: Masks) -> dict[str, float]:
    return {name: float(m.sum() / m.size) for name, m in masks.items()}


def prune(config: PruningConfig, weights: Masks, masks: Masks, kinds: dict[str, str]) -> Masks:
    """One IMP pruning step; `kinds` maps layer name -> 'fc' | 'conv' | 'output'."""
    if config.strategy == "global":
        return prune_global(weights, masks, config.rate, config.exclude)
    if config.strategy == "layerwise":
        rates = {"fc": config.rate_fc, "conv": config.rate_conv, "output": config.rate_output}
        return prune_layerwise(weights, masks, {name: rates[kinds[name]] for name in masks})
    raise ValueError(f"unknown pruning strategy {config.strategy!r}; valid: layerwise, global")
