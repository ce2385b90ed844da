"""The one place that touches tensorflow-model-optimization (public API only).

tfmot carries the masks: every Dense/Conv kernel sits in a PruneLowMagnitude
wrapper that owns a mask variable and multiplies the kernel by it (by
assignment) at the start of every forward pass. lth_tf decides the masks
itself, so the wrappers get a schedule that never prunes.
"""
import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

PRUNABLE_TYPES = (tf.keras.layers.Dense, tf.keras.layers.Conv2D)


class NeverPrune(tfmot.sparsity.keras.PruningSchedule):
    """A schedule under which tfmot never recomputes a mask."""

    def __call__(self, step):
        return tf.constant(False), tf.constant(0.0)

    def get_config(self):
        return {}


def wrap(model: tf.keras.Model, prune_biases: bool = False) -> tf.keras.Model:
    """Clone of `model` with Dense/Conv layers wrapped; weights copied over.
    With `prune_biases`, a layer's bias gets a mask too (tfmot masks what a
    layer's get_prunable_weights returns; its registry returns the kernel only).

    prune_low_magnitude(model) would wrap BatchNorm, pooling and Add too, hence
    clone_model with a clone_function.
    """
    def wrap_layer(layer):
        if not isinstance(layer, PRUNABLE_TYPES):
            return layer.__class__.from_config(layer.get_config())
        layer = layer.__class__.from_config(layer.get_config())
        if prune_biases and layer.use_bias:
            layer.get_prunable_weights = lambda: [layer.kernel, layer.bias]
        return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=NeverPrune())

    wrapped = tf.keras.models.clone_model(model, clone_function=wrap_layer)
    assign_state(wrapped, {k: v.numpy() for k, v in state_variables(model).items()})
    start_pruning_step(wrapped)
    return wrapped


def _is_wrapper(layer) -> bool:
    return hasattr(layer, "pruning_vars")


def prunable_layers(model) -> dict:
    """{inner layer name: wrapper} in model order."""
    return {layer.layer.name: layer for layer in model.layers if _is_wrapper(layer)}


def layer_kind(model, name: str) -> str:
    """'output', 'conv' or 'fc': which per-kind pruning rate applies."""
    if name == "output":
        return "output"
    inner = prunable_layers(model)[name].layer
    return "conv" if isinstance(inner, tf.keras.layers.Conv2D) else "fc"


def _masked(model):
    """(mask key, weight variable, mask variable) of every masked weight: the
    key is the layer's name for its kernel, 'layer/bias' for a masked bias."""
    for name, wrapper in prunable_layers(model).items():
        for weight, mask, _threshold in wrapper.pruning_vars:
            yield (name if weight is wrapper.layer.kernel else f"{name}/bias"), weight, mask


def start_pruning_step(model):
    """tfmot refuses to train until each wrapper's step counter is >= 0."""
    callback = tfmot.sparsity.keras.UpdatePruningStep()
    callback.set_model(model)
    callback.on_train_begin()


def mask_for_variable(model) -> list:
    """For each trainable variable of `model`, its mask variable or None."""
    masks = {weight.ref(): mask for _key, weight, mask in _masked(model)}
    return [masks.get(v.ref()) for v in model.trainable_variables]


def get_masks(model) -> dict[str, np.ndarray]:
    return {key: mask.numpy() for key, _weight, mask in _masked(model)}


def get_kernels(model) -> dict[str, np.ndarray]:
    """The masked weights, keyed like the masks."""
    return {key: weight.numpy() for key, weight, _mask in _masked(model)}


def set_masks(model, masks: dict[str, np.ndarray]):
    """Installs masks and zeroes the weights where they are 0."""
    masked = list(_masked(model))
    if set(masks) != {key for key, _, _ in masked}:
        raise ValueError(f"masks are for {sorted(masks)}, the model masks {sorted(k for k, _, _ in masked)}")
    for key, _weight, mask in masked:
        if tuple(mask.shape) != masks[key].shape:
            raise ValueError(f"mask for {key} has shape {masks[key].shape}, expected {tuple(mask.shape)}")
        mask.assign(masks[key].astype(mask.dtype.as_numpy_dtype))
    apply_masks(model)


def apply_masks(model):
    """weight <- weight * mask. After apply_gradients a weight is dense until the
    wrapper's next forward pass: call this before reading or saving weights."""
    for _key, weight, mask in _masked(model):
        weight.assign(weight * mask)


def state_variables(model) -> dict[str, tf.Variable]:
    """The variables that define a network: trainable weights and BatchNorm
    statistics, keyed 'layer/weight' by the unwrapped layer's name. Masks,
    thresholds and tfmot's step counters are left out."""
    state = {}
    for layer in model.layers:
        inner = layer.layer if _is_wrapper(layer) else layer
        for variable in inner.weights:
            short = variable.name.split("/")[-1].split(":")[0]
            state[f"{inner.name}/{short}"] = variable
    return state


def get_state(model) -> dict[str, np.ndarray]:
    return {key: v.numpy() for key, v in state_variables(model).items()}


def assign_state(model, state: dict[str, np.ndarray]):
    variables = state_variables(model)
    if set(state) != set(variables):
        missing, extra = set(variables) - set(state), set(state) - set(variables)
        raise ValueError(f"weights do not fit the model: missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(extra)[:3]}")
    for key, variable in variables.items():
        if tuple(variable.shape) != state[key].shape:
            raise ValueError(f"weight {key} has shape {state[key].shape}, expected {tuple(variable.shape)}")
        variable.assign(state[key])


def strip(model) -> tf.keras.Model:
    """A plain Keras model sharing the wrapped model's (masked) variables."""
    apply_masks(model)
    return unwrapped_view(model)


def unwrapped_view(model) -> tf.keras.Model:
    """A plain Keras model over the wrapped model's own inner layers and variables.

    The training loop's forward pass: it skips the wrappers' per-forward work
    (a step counter, a conditional mask update that synchronises replicas
    under a mirrored strategy, weight <- weight * mask), which the masked
    gradients make redundant: a weight that is 0 with a 0 gradient and 0
    optimizer moments stays exactly 0. The masks stay in the wrappers."""
    return tfmot.sparsity.keras.strip_pruning(model)
