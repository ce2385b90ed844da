"""lth_tf as a library: the command line's experiment on your own model and data.

    import lth_tf
    runs = lth_tf.find_tickets(build, data=(x_train, y_train, x_test, y_test), output_dir="runs/mine",
                               rounds=10, controls=["reinit", "random_prune"], train_steps=5000)
    runs.results        # results.csv's rows

Every keyword is a flag of `python -m lth_tf.main`, with its name, default and
checks (the flags are parsed by absl, as on the command line), so a call and
the command line with the same settings make the same experiment and the same
run directory, which report, analyze, sweeps and TensorBoard read as any other.
Calling again with the same arguments resumes. Nothing here imports TensorFlow
until find_tickets runs.
"""
import dataclasses
import difflib
import os
import sys

import numpy as np
from absl import flags

from lth_tf import paths

# The run directory's copy of arrays given in memory (npz, as --dataset=npz:PATH reads it).
DATA_FILE = "data.npz"
# Flags that are find_tickets's own arguments, not settings.
OWN = {"model": "model", "dataset": "data", "output_dir": "output_dir"}


class Error(Exception):
    """Why find_tickets could not run or finish, in one line (the command line's messages)."""


@dataclasses.dataclass(frozen=True)
class Run:
    """A run directory, as find_tickets leaves it."""
    output_dir: str

    @property
    def results(self) -> list[dict]:
        """results.csv: one row per (round, branch), numbers as numbers."""
        from lth_tf import rundir
        return [{key: _number(value) for key, value in row.items()} for row in rundir.read_results(self.output_dir)]

    @property
    def config(self) -> dict:
        """config.json: every setting of the experiment, resolved."""
        from lth_tf import rundir
        return rundir.read_json(paths.config(self.output_dir))

    def masks(self, round_index: int, branch: str = "ticket") -> dict[str, np.ndarray]:
        """{layer (or layer/weight): 0/1 array} a branch of a round trained under."""
        from lth_tf import runs
        return runs.masks(runs.load_run(self.output_dir), round_index, branch)

    def weights(self, round_index: int, branch: str = "ticket") -> dict[str, np.ndarray]:
        """{layer/weight: array}: a branch's trained weights (masked weights exactly 0)."""
        from lth_tf import rundir
        return rundir.load_arrays(paths.weights(self.output_dir, round_index, branch))

    def summary(self) -> str:
        """The command line's table: accuracy of the ticket and each control per round."""
        from lth_tf import main
        return main.summary_table(self.results)


def find_tickets(model, data="mnist1d", *, output_dir: str, progress: bool = True, **settings) -> Run:
    """Runs (or resumes) an experiment and returns its run directory.

    model: a function returning a Sequential or functional tf.keras model (called with input_shape
        and/or num_classes if it names them), defined at the top level of a module; or a name the
        command line's --model takes (a built-in model, or "package.module:function").
    data: (x_train, y_train, x_test, y_test) arrays with integer labels (kept in the run directory
        as data.npz); (train, test) tf.data.Datasets of (example, label) pairs, read into memory; or
        a name the command line's --dataset takes ("mnist1d", "npz:PATH", "tfds:NAME", ...).
    output_dir: the run directory (a rerun with other settings is refused, as on the command line).
    progress: a line on stderr per finished branch (a bar per branch on a terminal), as the command
        line shows; TensorFlow's and lth_tf's log records go where Python's logging sends them.
    settings: flags of `python -m lth_tf.main` by name (rounds=10, prune_rate_fc=0.2,
        controls=["reinit"], train_steps=5000 or "10ep", ...); the rest keep their defaults.
    Raises Error with one line: for bad input before anything is written; for a run that cannot go on
    (a diverged ticket, a full disk) with its finished rounds kept.
    """
    from lth_tf import console, main
    from lth_tf import flags as lth_flags
    from lth_tf.config import ConfigError
    try:
        for name in set(settings) & set(OWN):
            raise ConfigError(f"{name} is find_tickets's {OWN[name]}= argument, not a setting")
        values = _flag_values({**settings, "model": _model_name(model), "output_dir": output_dir,
                               "dataset": data if isinstance(data, str) else f"npz:{_data_path(output_dir)}"})
        arrays = None if isinstance(data, str) else _arrays(data)
        with _held(values, arrays):
            checked = main.preflight(values)
            shown = console.ExperimentProgress(console.Console(sys.stderr)) if progress else None
            try:
                main.run(values, checked=checked, progress=shown)
            finally:
                if shown:
                    shown.close()
    except (main.PREFLIGHT_ERRORS + (flags.Error,)) as error:
        raise Error(str(error).replace("ERROR:: ", "")) from None
    except Exception as error:
        from lth_tf import lottery
        if isinstance(error, lottery.Failed):
            raise Error(str(error)) from None
        if isinstance(error, OSError):
            raise Error(f"cannot write {error.filename or 'a file'}: {error.strerror or error}; finished rounds "
                        "are kept") from None
        raise
    return Run(lth_flags.output_dir(values))


def _model_name(model) -> str:
    if isinstance(model, str):
        return model
    from lth_tf import models
    return models.import_path(model)


def _data_path(output_dir: str) -> str:
    return os.path.abspath(os.path.join(output_dir, DATA_FILE))


def _arrays(data) -> tuple:
    """(x_train, y_train, x_test, y_test) of arrays, or of two tf.data.Datasets read into memory."""
    from lth_tf.config import ConfigError
    if isinstance(data, (tuple, list)) and len(data) == 4:
        return tuple(np.asarray(a) for a in data)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(hasattr(d, "as_numpy_iterator") for d in data):
        return _read_dataset(data[0], "train") + _read_dataset(data[1], "test")
    raise ConfigError(f"data must be (x_train, y_train, x_test, y_test) arrays, (train, test) tf.data.Datasets "
                      f"or a --dataset name, not a {type(data).__name__}")


def _read_dataset(dataset, split: str) -> tuple:
    """(x, y) of a tf.data.Dataset of (example, label) pairs, batched or not."""
    from lth_tf.config import ConfigError
    if not isinstance(dataset.element_spec, tuple) or len(dataset.element_spec) != 2:
        raise ConfigError(f"the {split} dataset must yield (example, label) pairs")
    xs, ys = [], []
    batched = len(dataset.element_spec[1].shape) > 0  # labels are scalars; a batch of them is not
    for item in dataset.as_numpy_iterator():
        if not isinstance(item, tuple) or len(item) != 2:
            raise ConfigError(f"the {split} dataset must yield (example, label) pairs")
        x, y = item
        xs.extend(x if batched else [x])
        ys.extend(np.reshape(y, -1) if batched else [y])
    if not xs:
        raise ConfigError(f"the {split} dataset is empty")
    return np.stack(xs), np.asarray(ys)


def _held(values, arrays):
    import contextlib
    from lth_tf import data
    return data.held(values.dataset[len("npz:"):], arrays) if arrays is not None else contextlib.nullcontext()


def _flag_values(settings: dict) -> flags.FlagValues:
    """A fresh copy of the command line's flags (lth_tf.flags, at their defaults), parsed from `settings`."""
    from lth_tf import flags as lth_flags
    from lth_tf.config import ConfigError
    values = lth_flags.fresh_copy()
    argv = ["lth_tf"]
    for name, value in settings.items():
        if name not in values:
            close = difflib.get_close_matches(name, list(values), 1)
            raise ConfigError(f"unknown setting {name}{f' (did you mean {close[0]}?)' if close else ''}; the "
                              "settings are the flags of python -m lth_tf.main --help")
        argv.append(_argument(name, value))
    values(argv)
    return values


def _argument(name: str, value) -> str:
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if isinstance(value, (list, tuple)):
        return f"--{name}={','.join(str(v) for v in value)}"
    return f"--{name}={value}"


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
