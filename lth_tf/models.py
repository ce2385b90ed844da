"""Model registry: the networks of the LTH papers by name, and a user's own
model as `package.module:function`, without TensorFlow (flags are checked
against it before TensorFlow loads). The Keras builders of each family are in
networks.py; builders.py builds either kind.

Layer names are part of the on-disk format (masks and weights are keyed by
them). In the built-in models Dense layers are fc1, fc2, ... and the
classifier is always `output`; a user's model keeps its own names, and its
output layer is its last Dense layer unless --output_layer names another.
"""
import importlib
import importlib.util
import re
import sys

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
IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
VALID = (f"{', '.join(MODELS)}, mlp_<w1>_<w2>... for any MLP widths, resmlp_<w1>_<w2>... for an MLP "
         "whose hidden layers after the first add their input (the MNIST-1D paper's lottery network), "
         "or package.module:function for your own model")


def is_known(name: str) -> bool:
    return name in MODELS or MLP_NAME.fullmatch(name) is not None or is_user_model(name)


def is_user_model(name: str) -> bool:
    """Whether `name` is an import path package.module:function of a user's builder."""
    return IMPORT_PATH.fullmatch(name) is not None


def check_importable(name: str):
    """ConfigError unless the module of a user model's import path can be found
    (without running it; its parent packages are imported)."""
    module = name.split(":")[0]
    try:
        found = module == "__main__" or importlib.util.find_spec(module) is not None
    except (ImportError, ValueError) as error:
        found, why = False, f" ({type(error).__name__}: {error})"
    else:
        why = ""
    if not found:
        raise ConfigError(f"--model={name}: no module {module} can be imported{why}; run from the folder that "
                          "holds it, or add that folder to PYTHONPATH")


def import_path(function) -> str:
    """module:qualname of a builder function, checked to lead back to it; ConfigError otherwise. A
    function of a script run as `python -m package.script` is recorded under the script's module
    name, which other processes (analyses, sweeps) import; one of `python script.py` as __main__."""
    module = getattr(function, "__module__", "")
    if module == "__main__":
        module = _running_module_name() or module
    name = f"{module}:{getattr(function, '__qualname__', '')}"
    if not callable(function) or "<" in name or not is_user_model(name):
        raise ConfigError(f"the model builder {function!r} is not a function defined at the top level of a module "
                          "(lth_tf imports it again by its name to resume a run): define it with def at module level")
    if load(name) is not function:
        raise ConfigError(f"the model builder {name} cannot be imported back under that name")
    return name


def load(name: str):
    """The function at import path `name` (module:qualname); ConfigError if there is none."""
    module_name, _, qualname = name.partition(":")
    try:
        if module_name == _running_module_name() and module_name not in sys.modules:
            found = sys.modules["__main__"]  # the script run with python -m itself, not a second copy of it
        else:
            found = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or the module's own code failing
        raise ConfigError(f"--model={name}: importing {module_name} failed ({type(error).__name__}: "
                          f"{first_line(error)})") from None
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is None:
        hint = (" (a builder defined in the script that started a run can only be built by that script: put it in "
                "a module to resume or analyse the run from the command line)" if module_name == "__main__" else "")
        raise ConfigError(f"--model={name}: {module_name} has no {qualname}{hint}")
    if not callable(found):
        raise ConfigError(f"--model={name}: {qualname} is a {type(found).__name__}, not a function")
    return found


def _running_module_name() -> str:
    """The module name of the script run with `python -m NAME` ('' for `python script.py`)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", "") or ""


def spec(name: str) -> tuple:
    """(family, argument): ('mlp' or 'resmlp', widths), ('conv', stage widths), ('vgg', depth),
    ('resnet', depth) or ('user', import path)."""
    if is_user_model(name):
        return "user", name
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
    if (init != "default" or initializer) and is_user_model(name):
        raise ConfigError(f"--init and --initializer are for the built-in models; {name} initialises its own "
                          "layers (set their kernel_initializer in the builder)")
    if init != "default" and spec(name)[0] not in WITH_INIT_CHOICE:
        raise ConfigError(f"--init={init} is for MLPs and Conv-2/4/6; {name} has its paper's initialiser only")


def check_input(name: str, input_shape):
    """ConfigError unless the model can take examples of `input_shape`: only
    MLPs flatten any shape; the others need (height, width, channels)."""
    if spec(name)[0] not in ("mlp", "resmlp", "user") and len(input_shape) != 3:
        raise ConfigError(f"model {name} needs image inputs (height, width, channels); "
                          f"this dataset's examples have shape {tuple(input_shape)}")


def first_line(error: BaseException) -> str:
    """An exception's message, cut to one line for a one-line error."""
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
