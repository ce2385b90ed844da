"""Pruning methods other than iterative magnitude pruning: a registry of
scoring functions, and pruning at initialisation by them.

A method maps a network (a plain, unwrapped Keras model holding the masked
weights), the current masks and training data to scores keyed like the
masks, higher = keep. `prune_at_init` keeps the highest-scoring weights at a
target density, in one step or, for SynFlow, over an exponential schedule.
Adding a method is one function and one registry entry; the IMP driver only
asks for a round's masks.

    snip            |dL/dw * w| on --score_batches batches (Lee et al., ICLR 2019)
    grasp           w * Hg, Hg the Hessian-gradient product of the loss with its
                    logits divided by 200, by double backprop; the paper's score
                    is -w * Hg and it removes the highest (Wang et al., ICLR 2020)
    synflow         |w * dR/dw|, R the summed output of the network with every
                    parameter replaced by its absolute value on an all-ones
                    input, BatchNorm in inference mode, in float64; applied over
                    --synflow_iterations rounds of an exponential density
                    schedule (Tanaka et al., NeurIPS 2020)
    magnitude_init  |w|: the magnitude baseline of Frankle et al. (ICLR 2021)
    random          uniform random scores: random pruning, global or layerwise
"""
import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from lth_tf import hessian, networks, pruning
from lth_tf import tfmot_adapter as adapter
from lth_tf.config import PruningConfig

GRASP_TEMPERATURE = 200.0


@dataclasses.dataclass
class Scoring:
    """What a method may look at besides the network and its masks."""
    build: Callable[[], tf.keras.Model]  # a fresh plain model of the run's architecture (in the current floatx)
    batches: list                         # [(images, labels)]: the run's first training batches
    config: PruningConfig
    seed: int


def _masked_kernels(model, masks) -> list[tuple[str, tf.Variable]]:
    variables = adapter.state_variables(model)
    return [(key, variables[pruning.variable_of(key)]) for key in masks]


def _loss(model, images, labels, temperature: float):
    logits = model(images, training=True) / temperature
    return tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))


def gradients(model, masks, batches, temperature=1.0) -> dict[str, np.ndarray]:
    """The gradient of the mean loss over `batches` (each batch weighted equally) w.r.t. the masked weights."""
    keys, variables = zip(*_masked_kernels(model, masks))
    total = [tf.zeros_like(v) for v in variables]
    for images, labels in batches:
        with tf.GradientTape() as tape:
            loss = _loss(model, images, labels, temperature)
        total = [t + g for t, g in zip(total, tape.gradient(loss, variables))]
    return {key: (t / len(batches)).numpy() for key, t in zip(keys, total)}


def snip(model, masks, scoring: Scoring) -> dict[str, np.ndarray]:
    weights = adapter.get_state(model)
    grads = gradients(model, masks, scoring.batches)
    return {key: np.abs(grads[key] * weights[pruning.variable_of(key)]) for key in masks}


def hessian_gradient(model, masks, batches, temperature: float) -> dict[str, np.ndarray]:
    """Hg over the masked weights, H and g of the mean loss over `batches`:
    g first, then the gradient of (dL/dw . g) with g held constant."""
    keys, variables = zip(*_masked_kernels(model, masks))
    g = [tf.constant(v) for v in gradients(model, masks, batches, temperature).values()]
    total = hessian.vector_product(lambda images, labels: _loss(model, images, labels, temperature), variables, g,
                                   batches)
    return {key: (t / len(batches)).numpy() for key, t in zip(keys, total)}


def grasp(model, masks, scoring: Scoring) -> dict[str, np.ndarray]:
    weights = adapter.get_state(model)
    hg = hessian_gradient(model, masks, scoring.batches, GRASP_TEMPERATURE)
    return {key: weights[pruning.variable_of(key)] * hg[key] for key in masks}


def synflow(model, masks, scoring: Scoring) -> dict[str, np.ndarray]:
    """`model` is a float64 copy whose every variable already holds its absolute value."""
    keys, variables = zip(*_masked_kernels(model, masks))
    ones = tf.ones([1, *model.input_shape[1:]], model.variables[0].dtype)
    with tf.GradientTape() as tape:
        flow = tf.reduce_sum(model(ones, training=False))
    grads = tape.gradient(flow, variables)
    return {key: np.abs((g * v).numpy()) for key, g, v in zip(keys, grads, variables)}


def magnitude_init(model, masks, scoring: Scoring) -> dict[str, np.ndarray]:
    weights = adapter.get_state(model)
    return {key: np.abs(weights[pruning.variable_of(key)]) for key in masks}


def random(model, masks, scoring: Scoring) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(scoring.seed)
    return {key: rng.random(mask.shape) for key, mask in masks.items()}


@dataclasses.dataclass(frozen=True)
class Method:
    score: Callable
    uses_data: bool
    passes_per_batch: int = 1                   # forward-backward passes per scoring batch (cost accounting)
    iterations: Callable[[PruningConfig], int] = lambda config: 1
    float64_abs: bool = False                   # score a float64 copy with every variable made absolute


AT_INIT = {
    "snip": Method(snip, uses_data=True),
    "grasp": Method(grasp, uses_data=True, passes_per_batch=3),
    "synflow": Method(synflow, uses_data=False, iterations=lambda config: config.synflow_iterations,
                      float64_abs=True),
    "magnitude_init": Method(magnitude_init, uses_data=False),
    "random": Method(random, uses_data=False),
}
"""Methods that prune at initialisation (at theta_k, with --rewind_step): their scoring."""


def scoring_passes(config: PruningConfig) -> int:
    """Forward-backward passes spent on scoring, each counted as a training step
    in training_steps_spent (SynFlow's are of one example, the others of a batch)."""
    method = AT_INIT[config.method]
    per_iteration = config.score_batches * method.passes_per_batch if method.uses_data else 1
    return per_iteration * method.iterations(config)


def prune_at_init(name: str, state: dict, masks: pruning.Masks, scoring: Scoring, target: float,
                  rates: dict | None = None) -> tuple[pruning.Masks, pruning.Masks]:
    """(masks at `target` density, the first pass's scores): method `name`
    scores the network `state` under `masks` (all weights not yet pruned), and
    the highest scores are kept; over an exponential schedule of
    target^(i/n), i = 1..n, rescoring the survivors, for an iterative method."""
    method, config = AT_INIT[name], scoring.config
    model = _scoring_model(scoring, method.float64_abs)
    iterations = method.iterations(config)
    first, current = None, masks
    for i in range(1, iterations + 1):
        adapter.assign_state(model, _masked_state(state, current, method.float64_abs))
        scores = method.score(model, current, scoring)
        first = scores if first is None else first
        density = target ** (i / iterations) if iterations > 1 else target
        current = pruning.keep_highest(scores, current, density, config.strategy, rates, config.exclude)
    return current, first


def _masked_state(state, masks, absolute: bool) -> dict:
    state = dict(state)
    for key, mask in masks.items():
        state[pruning.variable_of(key)] = state[pruning.variable_of(key)] * mask
    if absolute:
        state = {key: np.abs(value).astype(np.float64) for key, value in state.items()}
    return state


def _scoring_model(scoring: Scoring, float64: bool):
    if not float64:
        return scoring.build()
    floatx = tf.keras.backend.floatx()
    tf.keras.backend.set_floatx("float64")  # the inputs
    try:
        with networks.dtype_policy("float64"):  # the layers, whatever global policy is set
            return scoring.build()
    finally:
        tf.keras.backend.set_floatx(floatx)
