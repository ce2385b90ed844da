"""The controls a ticket is compared with in every pruned round: a registry of
plain functions (theta_k, masks, seed, fresh, allowed) -> (weights, masks).

theta_k are the weights the ticket rewinds to, `masks` the ticket's masks,
`seed` the control's own seed for this round, fresh(seed) the weights of
a newly initialised network (the run's initialiser), and `allowed` the masks
of the positions a control may place weights at (None: all; a run with
--removed_weights excludes those). Weights come back zero
outside the masks they come with; variables without a mask (unpruned biases,
BatchNorm) come from theta_k, or from fresh(seed) for the reinit family.
Nothing here knows about TensorFlow. Adding a control: a function here, its
name appended to config.CONTROL_NAMES (the order seeds the controls).
"""
from typing import Callable

import numpy as np

from lth_tf import pruning

Weights = dict[str, np.ndarray]
Fresh = Callable[[int], Weights]


def _masked(weights: Weights, masks: pruning.Masks) -> Weights:
    return {**weights, **{pruning.variable_of(k): weights[pruning.variable_of(k)] * m for k, m in masks.items()}}


def reinit(theta_k: Weights, masks: pruning.Masks, seed: int, fresh: Fresh, allowed=None):
    """The ticket's mask, fresh weights: is the ticket its structure alone?
    (Frankle & Carbin's random reinitialisation.)"""
    return _masked(fresh(seed), masks), masks


def random_prune(theta_k: Weights, masks: pruning.Masks, seed: int, fresh: Fresh, allowed=None):
    """A random mask with the ticket's per-layer counts over theta_k: does the
    placement matter? (Frankle & Carbin's random pruning.)"""
    random_masks = pruning.random_masks_like(masks, np.random.default_rng(seed), allowed)
    return _masked(theta_k, random_masks), random_masks


def reinit_rescaled(theta_k: Weights, masks: pruning.Masks, seed: int, fresh: Fresh, allowed=None):
    """reinit with every surviving kernel weight times 1/sqrt(its layer's
    density), so a unit's summed input variance is the dense initialisation's
    on average over the layer's units: do tickets win only because sparse
    reinit starts too small? Biases keep their fresh values (they are not
    summed over inputs)."""
    weights = _masked(fresh(seed), masks)
    for key, mask in masks.items():
        if not pruning.is_bias(key) and mask.any():
            kernel = weights[pruning.variable_of(key)]
            weights[pruning.variable_of(key)] = (kernel / np.sqrt(mask.mean())).astype(kernel.dtype)
    return weights, masks


def reinit_signed(theta_k: Weights, masks: pruning.Masks, seed: int, fresh: Fresh, allowed=None):
    """Fresh magnitudes with theta_k's signs under the mask: do the signs carry
    the ticket? (Zhou et al. 2019, "Deconstructing lottery tickets".)"""
    weights = fresh(seed)
    for key in masks:
        variable = pruning.variable_of(key)
        weights[variable] = np.abs(weights[variable]) * np.sign(theta_k[variable])
    return _masked(weights, masks), masks


def shuffle_layerwise(theta_k: Weights, masks: pruning.Masks, seed: int, fresh: Fresh, allowed=None):
    """theta_k's surviving values and the mask permuted together within each
    layer (among the allowed positions): per-layer counts and values kept, placement destroyed."""
    rng = np.random.default_rng(seed)
    weights, shuffled = dict(theta_k), {}
    for key, mask in masks.items():
        variable = pruning.variable_of(key)
        places = np.arange(mask.size) if allowed is None else np.flatnonzero(allowed[key])
        order = places[rng.permutation(places.size)]
        flat_mask, flat_weights = np.zeros(mask.size, mask.dtype), np.zeros(mask.size, theta_k[variable].dtype)
        flat_mask[places] = mask.reshape(-1)[order]
        flat_weights[places] = (theta_k[variable] * mask).reshape(-1)[order]
        shuffled[key], weights[variable] = flat_mask.reshape(mask.shape), flat_weights.reshape(mask.shape)
    return weights, shuffled


CONTROLS = {"reinit": reinit, "random_prune": random_prune, "reinit_rescaled": reinit_rescaled,
            "reinit_signed": reinit_signed, "shuffle_layerwise": shuffle_layerwise}
