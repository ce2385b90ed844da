"""The one place that touches tensorflow-model-optimization (public API only).

tfmot carries the masks: every Dense/Conv kernel sits in a PruneLowMagnitude
wrapper that owns a mask variable and multiplies the kernel by it (by
assignment) at the start of every forward pass. lth_tf decides the masks
itself, so the wrappers get a schedule that never prunes.
"""
import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from lth_tf.config import ConfigError

L = tf.keras.layers
# The layers whose weights lth_tf masks, and which weights (a layer implementing tfmot's PrunableLayer
# says itself). SeparableConv prunes its pointwise kernel, as tfmot's registry does.
PRUNED_WEIGHTS = {L.Dense: ("kernel",), L.Conv1D: ("kernel",), L.Conv2D: ("kernel",), L.Conv3D: ("kernel",),
                  L.DepthwiseConv1D: ("depthwise_kernel",), L.DepthwiseConv2D: ("depthwise_kernel",),
                  L.SeparableConv1D: ("pointwise_kernel",), L.SeparableConv2D: ("pointwise_kernel",)}
PRUNABLE_NAMES = "Dense, Conv1D/2D/3D and their Transpose, DepthwiseConv1D/2D, SeparableConv1D/2D"
CONV_TYPES = (L.Conv1D, L.Conv2D, L.Conv3D, L.DepthwiseConv1D, L.DepthwiseConv2D, L.SeparableConv1D,
              L.SeparableConv2D)  # the Transpose layers subclass Conv1D/2D/3D


def check_keras():
    """ConfigError unless tf.keras is Keras 2 (tf_keras), the only Keras tfmot wraps: it is Keras 3 when
    TensorFlow's Keras was used before lth_tf (which sets TF_USE_LEGACY_KERAS=1) was imported."""
    import tf_keras
    if tf.keras.Model is not tf_keras.Model:
        raise ConfigError("tf.keras is Keras 3 in this process: it was used before lth_tf was imported; import "
                          "lth_tf before tensorflow, or set TF_USE_LEGACY_KERAS=1 before TensorFlow loads")


def pruned_weights(layer) -> list:
    """The weights of `layer` that get masks ([] for a layer lth_tf does not prune), biases not included."""
    if isinstance(layer, tfmot.sparsity.keras.PrunableLayer):
        return list(layer.get_prunable_weights())
    names = next((names for kind, names in PRUNED_WEIGHTS.items() if isinstance(layer, kind)), ())
    return [getattr(layer, name) for name in names]


def is_prunable(layer) -> bool:
    return isinstance(layer, tfmot.sparsity.keras.PrunableLayer) or isinstance(layer, tuple(PRUNED_WEIGHTS))


def prunable_layer_names(model) -> list[str]:
    """The layers of a plain model that wrap() wraps, in model order."""
    return [layer.name for layer in model.layers if is_prunable(layer)]


def output_layer_name(model, named: str = "") -> str:
    """The layer pruned at the output rate: `named`, else the last Dense layer ('' if there is none).
    In the built-in models that is the classifier, `output`."""
    inner = [layer.layer if _is_wrapper(layer) else layer for layer in model.layers]
    dense = [layer.name for layer in inner if type(layer) is L.Dense]
    return named or (dense[-1] if dense else "")


def unwrappable(model) -> str:
    """Why tfmot's wrappers cannot carry `model`'s masks ('' if they can): a Keras 3 model, a subclassed
    model, a model inside the model, or a layer that cannot be rebuilt from its config or whose
    weights share a name."""
    if not isinstance(model, tf.keras.Model):
        if any(cls.__module__.split(".")[0] == "keras" for cls in type(model).__mro__):
            return ("it is a Keras 3 model (import keras); tfmot's pruning wrappers need Keras 2: build it with "
                    "tf.keras (lth_tf sets TF_USE_LEGACY_KERAS=1, so tf.keras is tf_keras): import tensorflow as "
                    "tf; tf.keras.Sequential([...]), or import tf_keras")
        return f"the builder returned a {type(model).__name__}, not a tf.keras model"
    user_classes = [cls for cls in type(model).__mro__ if not cls.__module__.startswith(("tf_keras", "keras"))
                    and cls is not object]
    if not (isinstance(model, tf.keras.Sequential) or getattr(model, "_is_graph_network", False)) or any(
            "call" in vars(cls) for cls in user_classes):
        return (f"{type(model).__name__} is a subclassed model (its own call()); tfmot cannot wrap those: build "
                "it as a tf.keras.Sequential or with the functional API (tf.keras.Input -> layers -> tf.keras.Model)")
    for layer in model.layers:
        if "/" in layer.name:
            return f"layer {layer.name} has a / in its name; lth_tf keys masks and weights by layer/weight"
        if isinstance(layer, tf.keras.Model):
            return (f"layer {layer.name} is a model inside the model, whose layers would not be pruned: build "
                    "one flat Sequential or functional model")
        names = [_short_name(variable) for variable in layer.weights]
        if len(set(names)) != len(names):
            return (f"layer {layer.name} ({type(layer).__name__}) has several weights named "
                    f"{next(n for n in names if names.count(n) > 1)}; lth_tf keys weights by layer/name")
        try:
            layer.__class__.from_config(layer.get_config())
        except Exception as error:  # NotImplementedError for a custom layer without get_config, TypeError, ...
            return (f"layer {layer.name} ({type(layer).__name__}) cannot be rebuilt from its get_config() "
                    f"({type(error).__name__}); tfmot's wrapping clones every layer: give it a get_config()")
    return ""


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
        layer = layer.__class__.from_config(layer.get_config())
        if not is_prunable(layer):
            return layer
        if not isinstance(layer, tfmot.sparsity.keras.PrunableLayer) or prune_biases:
            # The wrapper masks what get_prunable_weights returns (tfmot's registry: kernels only).
            custom = layer.get_prunable_weights if isinstance(layer, tfmot.sparsity.keras.PrunableLayer) else None
            def weights(layer=layer, custom=custom):
                chosen = custom() if custom else pruned_weights(layer)
                bias = getattr(layer, "bias", None) if prune_biases and getattr(layer, "use_bias", False) else None
                return chosen + ([bias] if bias is not None else [])
            layer.get_prunable_weights = weights
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


def layer_kinds(model, output_layer: str = "") -> dict[str, str]:
    """{prunable layer: 'output', 'conv' or 'fc'}: which per-kind pruning rate applies, by the
    layer's type and place (output_layer_name), never by its name."""
    output = output_layer_name(model, output_layer)
    return {name: "output" if name == output else "conv" if isinstance(wrapper.layer, CONV_TYPES) else "fc"
            for name, wrapper in prunable_layers(model).items()}


def _short_name(variable) -> str:
    return variable.name.split("/")[-1].split(":")[0]


def _masked(model):
    """(mask key, weight variable, mask variable) of every masked weight: the
    key is the layer's name for its kernel, 'layer/weight' for another masked
    weight ('layer/bias', 'layer/depthwise_kernel', ...)."""
    for name, wrapper in prunable_layers(model).items():
        for weight, mask, _threshold in wrapper.pruning_vars:
            short = _short_name(weight)
            yield (name if short == "kernel" else f"{name}/{short}"), weight, mask


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
            state[f"{inner.name}/{_short_name(variable)}"] = variable
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
