"""Model registry: the networks of the LTH papers by name, without TensorFlow
(flags are checked against it before TensorFlow loads). The Keras builders of
each family are in networks.py.

Layer names are part of the on-disk format (masks and weights are keyed by
them): Dense layers are fc1, fc2, ... and the classifier is always `output`,
so "exclude the output layer" means the same thing for every model.
"""
import re

from lth_tf.config import ConfigError

MODELS = {  # name -> (family, the family builder's first argument)
    "lenet_300_100": ("mlp", (300, 100)),
    "conv2": ("conv", (64,)),
    "conv4": ("conv", (64, 128)),
    "conv6": ("conv", (64, 128, 256)),
    "vgg16": ("vgg", 16),
    "vgg19": ("vgg", 19),
    "resnet20": ("resnet", 20),
    "resnet32": ("resnet", 32),
    "resnet56": ("resnet", 56),
}
MLP_NAME = re.compile(r"(res)?mlp(_[1-9][0-9]*)+")
VALID = (f"{', '.join(MODELS)}, mlp_<w1>_<w2>... for any MLP widths, or resmlp_<w1>_<w2>... for an MLP "
         "whose hidden layers after the first add their input (the MNIST-1D paper's lottery network)")


def is_known(name: str) -> bool:
    return name in MODELS or MLP_NAME.fullmatch(name) is not None


def spec(name: str) -> tuple:
    """(family, argument): ('mlp' or 'resmlp', widths), ('conv', stage widths), ('vgg', depth) or
    ('resnet', depth)."""
    if MLP_NAME.fullmatch(name):
        return name.split("_")[0], tuple(int(w) for w in name.split("_")[1:])
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid: {VALID}")
    return MODELS[name]


INITS = ("default", "pytorch")
# Kernel initialiser families for --initializer (networks.kernel_initializer defines them).
INITIALIZERS = ("glorot_normal", "glorot_uniform", "he_normal", "he_uniform", "lecun_normal", "orthogonal",
                "truncated_normal")
WITH_INIT_CHOICE = ("mlp", "resmlp", "conv")


def check_init(name: str, init: str, initializer: str = ""):
    if init not in INITS:
        raise ConfigError(f"unknown --init={init}; valid: {', '.join(INITS)}")
    if initializer and initializer not in INITIALIZERS:
        raise ConfigError(f"unknown --initializer={initializer}; valid: {', '.join(INITIALIZERS)}")
    if init != "default" and spec(name)[0] not in WITH_INIT_CHOICE:
        raise ConfigError(f"--init={init} is for MLPs and Conv-2/4/6; {name} has its paper's initialiser only")


def check_input(name: str, input_shape):
    """ConfigError unless the model can take examples of `input_shape`: only
    MLPs flatten any shape; the others need (height, width, channels)."""
    if spec(name)[0] not in ("mlp", "resmlp") and len(input_shape) != 3:
        raise ConfigError(f"model {name} needs image inputs (height, width, channels); "
                          f"this dataset's examples have shape {tuple(input_shape)}")
