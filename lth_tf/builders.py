"""The model a run trains, built fresh from its ModelConfig: a built-in network
(networks.py) or a user's builder function, `package.module:function`.

A builder is called with no arguments, or with `input_shape` and/or
`num_classes` if its signature names them, under lth_tf's seed (Keras draws
the initial weights). It must return a Sequential or functional tf.keras
(tf_keras) model: check() refuses anything else before the run directory is
touched, one line saying why. lth_tf.find_tickets records a function it is
given as module:qualname, so a resumed run, an export and an analysis build
the same model by importing it again.

Layers are found by type and place, never by name: whichever layers a
builder makes prunable (tfmot_adapter.PRUNED_WEIGHTS) are pruned, the last
Dense layer at the output rate unless --output_layer names another, and all
other layers (BatchNorm, pooling, ...) are carried along and rewound.
"""
import inspect

import tensorflow as tf

from lth_tf import models, networks
from lth_tf import tfmot_adapter as adapter
from lth_tf.config import ConfigError, ModelConfig


def build(model: ModelConfig, input_shape, num_classes: int) -> tf.keras.Model:
    """A fresh, plain (unwrapped) model; weights from the global TensorFlow seed."""
    if not models.is_user_model(model.name):
        return networks.build(model.name, input_shape, num_classes, model.width or None, model.init,
                              model.initializer)
    # Layers a builder leaves unnamed get Keras's names (dense, dense_1, ...) from a per-process
    # counter; from zero at every build, each build (in any process) names them alike, and the
    # masks and weights, keyed by layer name, fit every build.
    tf.keras.backend.reset_uids()
    built = call(models.load(model.name), model.name, input_shape, num_classes)
    return check(built, model, input_shape, num_classes)


def call(function, name: str, input_shape, num_classes: int):
    """function(), passing input_shape and num_classes to the parameters so named."""
    offered = dict(input_shape=tuple(input_shape), num_classes=num_classes)
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        parameters = []
    takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters)
    required = [p.name for p in parameters if p.default is p.empty and p.name not in offered
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if required:
        raise ConfigError(f"--model={name}: the builder's parameters {', '.join(required)} get no value; a builder "
                          "takes no arguments, or input_shape and/or num_classes")
    kwargs = {key: value for key, value in offered.items()
              if takes_any or key in {p.name for p in parameters}}
    try:
        return function(**kwargs)
    except Exception as error:
        raise ConfigError(f"--model={name}: the builder raised {type(error).__name__}: "
                          f"{models.first_line(error)}") from None


def check(model, config: ModelConfig, input_shape, num_classes: int) -> tf.keras.Model:
    """`model` if lth_tf can prune and train it on this data (an unbuilt Sequential is built for
    `input_shape`); ConfigError with one line otherwise."""
    name = config.name
    why = adapter.unwrappable(model)
    if why:
        raise ConfigError(f"--model={name}: {why}")
    if not model.built:
        model.build((None, *input_shape))
    expected = tuple(model.input_shape[1:]) if isinstance(model.input_shape, tuple) else None
    if expected is None or len(expected) != len(input_shape) or any(
            e is not None and e != s for e, s in zip(expected, input_shape)):
        raise ConfigError(f"--model={name}: the model takes inputs of shape {expected or model.input_shape}; this "
                          f"dataset's examples have shape {tuple(input_shape)}")
    if len(model.outputs) != 1 or model.outputs[0].shape[-1] != num_classes:
        shapes = ", ".join(str(tuple(output.shape)) for output in model.outputs)
        raise ConfigError(f"--model={name}: the model's output has shape {shapes}; the data have {num_classes} "
                          f"classes (one logit per class)")
    prunable = adapter.prunable_layer_names(model)
    if not prunable:
        raise ConfigError(f"--model={name}: no layer lth_tf can prune ({adapter.PRUNABLE_NAMES}, or a layer "
                          "implementing tfmot's PrunableLayer)")
    if config.output_layer and config.output_layer not in prunable:
        raise ConfigError(f"--output_layer={config.output_layer} is not a prunable layer of {name}; prunable: "
                          f"{', '.join(prunable)}")
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    if isinstance(last, tf.keras.layers.Softmax) or getattr(activation, "__name__", "") == "softmax":
        raise ConfigError(f"--model={name}: the model ends in a softmax ({last.name}); lth_tf trains on logits "
                          "(from_logits=True): leave the output linear")
    return model
