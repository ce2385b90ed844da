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


def layer_of(key: str) -> str:
    """The layer a mask belongs to: masks are keyed by layer name (its kernel)
    or 'layer/bias' (its bias, when biases are pruned too)."""
    return key.split("/")[0]


def variable_of(key: str) -> str:
    """The state key ('layer/kernel', 'layer/bias') of the weight a mask covers."""
    return key if "/" in key else f"{key}/kernel"


def is_bias(key: str) -> bool:
    """Whether a mask covers a bias (--prune_biases) rather than a layer's weights proper."""
    return key.endswith("/bias")


def by_layer(masks: Masks) -> dict[str, list[str]]:
    groups = {}
    for key in masks:
        groups.setdefault(layer_of(key), []).append(key)
    return groups


def _prune_together(weights: Masks, masks: Masks, keys: list[str], n: int) -> Masks:
    """The masks of `keys` with the n smallest-magnitude survivors among them, ranked together, removed."""
    return _drop_lowest({k: np.abs(weights[k]) for k in keys}, masks, keys, n)


def _drop_lowest(scores: Masks, masks: Masks, keys: list[str], n: int) -> Masks:
    """The masks of `keys` with the n lowest-scoring survivors among them, ranked together, removed."""
    flat_masks = np.concatenate([masks[k].reshape(-1) for k in keys])
    scores = np.concatenate([np.asarray(scores[k], np.float64).reshape(-1) for k in keys])
    dropped = _drop_smallest(scores, flat_masks, n)
    new_masks, offset = {}, 0
    for key in keys:
        size = masks[key].size
        new_masks[key] = dropped[offset:offset + size].reshape(masks[key].shape)
        offset += size
    return new_masks


def _survivors(masks: Masks, keys) -> int:
    return int(sum(masks[k].sum() for k in keys))


def _floor(floors, keys) -> int:
    """The fewest survivors `keys` may keep: their layers' summed floors (no floors: 0)."""
    return sum(floors[layer] for layer in {layer_of(k) for k in keys}) if floors else 0


def prune_layerwise(weights: Masks, masks: Masks, rates: dict[str, float], floors=None) -> Masks:
    """Removes round(rate x surviving) weights of smallest magnitude per layer
    (a layer's kernel and, where masked, bias ranked together); rates by layer;
    no layer goes below its floor (survivors per layer, optional)."""
    new_masks = dict(masks)
    for layer, keys in by_layer(masks).items():
        survivors = _survivors(masks, keys)
        n = min(count_to_remove(rates[layer], survivors), max(0, survivors - _floor(floors, keys)))
        new_masks.update(_prune_together(weights, masks, keys, n))
    return new_masks


def prune_global(weights: Masks, masks: Masks, rate: float, exclude=(), floors=None) -> Masks:
    """Removes round(rate x surviving) weights of smallest magnitude, ranked
    together across all layers not named in `exclude`, down to their summed floor at most."""
    keys = _included(masks, exclude)
    survivors = _survivors(masks, keys)
    n = min(count_to_remove(rate, survivors), max(0, survivors - _floor(floors, keys)))
    return {**masks, **_prune_together(weights, masks, keys, n)}


def prune_to_density(weights: Masks, masks: Masks, target: float, strategy: str, exclude=(), floors=None) -> Masks:
    """Smallest-magnitude survivors removed until round(target x size) remain
    (or the floor, if higher): in every layer (layerwise) or across the included layers (global)."""
    groups = ([keys for layer, keys in by_layer(masks).items() if layer not in exclude] if strategy == "layerwise"
              else [_included(masks, exclude)])
    new_masks = dict(masks)
    for keys in groups:
        keep = max(int(np.floor(target * sum(masks[k].size for k in keys) + 0.5)), _floor(floors, keys))
        new_masks.update(_prune_together(weights, masks, keys, max(0, _survivors(masks, keys) - keep)))
    return new_masks


def kind_densities(rates: dict[str, float], sizes: dict[str, int], target: float) -> dict[str, float]:
    """Per-layer densities (1 - rate)^r, one r for all layers, whose total is
    `target` of the weights: what layerwise IMP with these per-layer rates
    keeps when it reaches `target` overall, reached in one step."""
    total = sum(sizes.values())
    def overall(r):
        return sum(size * (1 - rates[layer]) ** r for layer, size in sizes.items()) / total
    low, high = 0.0, 1.0
    while overall(high) > target:
        high *= 2
    for _ in range(100):  # bisection: overall() falls monotonically in r
        middle = (low + high) / 2
        low, high = (middle, high) if overall(middle) > target else (low, middle)
    return {layer: (1 - rates[layer]) ** high for layer in sizes}


def keep_highest(scores: Masks, masks: Masks, target: float, strategy: str, rates: dict[str, float] | None = None,
                 exclude=()) -> Masks:
    """The surviving weights with the highest scores, round(target x size) of
    them (pruning at initialisation, one-shot pruning): across the layers not
    in `exclude` ranked together (global; excluded layers keep their
    survivors), or per layer (layerwise) at the densities kind_densities()
    gives for `rates` (layer -> rate; one rate for all: `target` in every
    layer). A layer keeps at most its survivors."""
    groups = by_layer(masks)
    if strategy == "global":
        keys = _included(masks, exclude)
        plan = [(keys, target * sum(masks[k].size for k in keys))]
    elif strategy == "layerwise":
        sizes = {layer: sum(masks[k].size for k in keys) for layer, keys in groups.items()}
        densities = kind_densities(rates or dict.fromkeys(groups, 0.2), sizes, target)
        plan = [(keys, densities[layer] * sizes[layer]) for layer, keys in groups.items()]
    else:
        raise ValueError(f"unknown pruning strategy {strategy!r}; valid: layerwise, global")
    new_masks = dict(masks)
    for keys, keep in plan:
        survivors = _survivors(masks, keys)
        new_masks.update(_drop_lowest(scores, masks, keys, max(0, survivors - int(np.floor(keep + 0.5)))))
    return new_masks


def keep_lowest_like(scores: Masks, allowed: Masks, like: Masks) -> Masks:
    """Per layer, as many weights as `like` keeps, the lowest-scoring among
    the `allowed` ones: the inverted mask of the sanity checks (Frankle et
    al. 2021), with the method's own per-layer counts."""
    new_masks = {}
    for layer, keys in by_layer(like).items():
        flipped = {k: -np.asarray(scores[k]) for k in keys}  # scores are floats: negated, their order reverses
        new_masks.update(_drop_lowest(flipped, allowed, keys, _survivors(allowed, keys) - _survivors(like, keys)))
    return new_masks


def mask_distance(a: Masks, b: Masks, changeable: Masks | None = None) -> float:
    """The fraction of the kept weights that changed between masks `a` and `b` (early-bird tickets):
    the entries where they differ over the weights both keep in all, |a xor b| / (|a| + |b|), counted
    over the entries pruning may change (`changeable`'s ones; default: all). It means the same at
    every density: 0 for equal masks, 1 for disjoint ones, 1 - d for two random masks at density d."""
    def inside(m, k):
        return m != 0 if changeable is None else (m != 0) & (changeable[k] != 0)
    differ = sum(np.count_nonzero(inside(a[k], k) != inside(b[k], k)) for k in a)
    kept = sum(np.count_nonzero(inside(a[k], k)) + np.count_nonzero(inside(b[k], k)) for k in a)
    return float(differ / max(kept, 1))


def checksum(masks: Masks) -> float:
    """A number that differs between two sets of masks of these shapes that differ anywhere (almost surely):
    each entry weighted by a fixed random number."""
    rng = np.random.default_rng(0)
    return float(sum(np.dot(masks[k].ravel().astype(np.float64), rng.random(masks[k].size)) for k in sorted(masks)))


def layer_counts(masks: Masks) -> dict[str, int]:
    """Surviving weights per layer (kernel and, where masked, bias together): a floor for prune()."""
    return {layer: _survivors(masks, keys) for layer, keys in by_layer(masks).items()}


def _included(masks: Masks, exclude) -> list[str]:
    keys = [k for k in masks if layer_of(k) not in exclude]
    if not keys:
        raise ValueError("global pruning: every prunable layer is excluded")
    return keys


def random_masks_like(masks: Masks, rng: np.random.Generator, allowed: Masks | None = None) -> Masks:
    """Masks with exactly the same number of survivors per layer, placed at
    random (among the positions `allowed` keeps, if given)."""
    new_masks = {}
    for name, mask in masks.items():
        flat = np.zeros(mask.size, np.float32)
        places = np.arange(mask.size) if allowed is None else np.flatnonzero(allowed[name])
        flat[places[rng.permutation(places.size)[: int(mask.sum())]]] = 1
        new_masks[name] = flat.reshape(mask.shape)
    return new_masks


def dense_masks(shapes: dict[str, tuple]) -> Masks:
    return {name: np.ones(shape, np.float32) for name, shape in shapes.items()}


def without(masks: Masks, removed: Masks) -> Masks:
    """`masks` less the entries `removed` marks with a nonzero (--removed_weights)."""
    return {key: (masks[key] * (removed[key] == 0)).astype(np.float32) for key in masks}


def density(masks: Masks) -> float:
    """Fraction of prunable weights that survive."""
    total = sum(m.size for m in masks.values())
    return float(sum(m.sum() for m in masks.values()) / total)


def layer_densities(masks: Masks) -> dict[str, float]:
    return {name: float(m.sum() / m.size) for name, m in masks.items()}


def collapsed_layers(masks: Masks) -> list[str]:
    """Layers whose weights (kernels, biases aside) have no survivor: nothing passes through them."""
    return [layer for layer, keys in by_layer(masks).items() if not any(masks[k].any() for k in keys if not is_bias(k))]


def linear_target(config: PruningConfig, round_index: int) -> float:
    """--prune_schedule=linear: the fraction of weights left after `round_index` rounds."""
    return max(0.0, 1.0 - round_index * config.step)


def layer_rates(config: PruningConfig, kinds: dict[str, str]) -> dict[str, float]:
    """Layerwise: each layer's rate by its kind ('fc', 'conv' or 'output'); 0 for an excluded layer."""
    rates = {"fc": config.rate_fc, "conv": config.rate_conv, "output": config.rate_output}
    return {layer: 0.0 if layer in config.exclude else rates[kind] for layer, kind in kinds.items()}


def prune(config: PruningConfig, weights: Masks, masks: Masks, kinds: dict[str, str], round_index: int,
          floors: dict[str, int] | None = None) -> Masks:
    """One IMP pruning step, to the masks of round `round_index`; `weights` and
    `masks` share keys; `kinds` maps layer name -> 'fc' | 'conv' | 'output'.
    Layers in config.exclude are never pruned.

    geometric: per-kind (layerwise) or one (global) fraction of the surviving
    weights per round; linear: the cumulative pruned fraction grows by
    config.step per round, the same in every layer (layerwise) or overall (global).
    `floors` (layer -> survivors, from layer_counts): no layer (layerwise) or
    total (global) is pruned below them.
    """
    if config.schedule == "linear":
        return prune_to_density(weights, masks, linear_target(config, round_index), config.strategy,
                                config.exclude, floors)
    if config.strategy == "global":
        return prune_global(weights, masks, config.rate, config.exclude, floors)
    if config.strategy == "layerwise":
        return prune_layerwise(weights, masks, layer_rates(config, kinds), floors)
    raise ValueError(f"unknown pruning strategy {config.strategy!r}; valid: layerwise, global")
