"""--dataset=npz:PATH: a researcher's arrays x_train, y_train, x_test, y_test (any example
shape, integer labels 0..K-1), read without unpickling, checked, and fingerprinted; and the
arrays lth_tf.find_tickets is given, held in memory until the run directory that keeps them exists."""
import contextlib
import functools
import hashlib
import io
import os
import zipfile

import numpy as np

from lth_tf import rundir
from lth_tf.config import DataConfig
from lth_tf.data.base import DataError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# Arrays held for an npz path that is not written yet: lth_tf.find_tickets's in-memory data, saved
# into the run directory once the run has claimed it (save_held).
_HELD: dict[str, tuple] = {}


@contextlib.contextmanager
def held(path: str, arrays: tuple):
    """Inside the block, npz:`path` reads `arrays` (x_train, y_train, x_test, y_test; DataError if they
    are not a classification set), whether or not the file exists; save_held writes them there."""
    key = os.path.abspath(path)
    _HELD[key] = _checked(dict(zip(NPZ_KEYS, arrays)), "the data")
    _facts.cache_clear()
    try:
        yield
    finally:
        _HELD.pop(key, None)
        _facts.cache_clear()


def save_held(config: DataConfig):
    """Writes the held arrays of `config`'s npz path into that file, unless it exists."""
    path = os.path.abspath(config.dataset[4:]) if config.dataset.startswith("npz:") else ""
    if path in _HELD and not os.path.exists(path):
        buffer = io.BytesIO()
        np.savez(buffer, **dict(zip(NPZ_KEYS, _HELD[path])))
        rundir.atomic_write(path, buffer.getvalue())


def npz_arrays(path: str) -> tuple:
    """(x_train, y_train, x_test, y_test) of an npz file, checked; numpy never unpickles."""
    held = _HELD.get(os.path.abspath(path))
    return held if held is not None else _read_npz(path, *_stamp(path))


def _stamp(path: str) -> tuple:
    try:
        stat = os.stat(path)
    except OSError as error:
        raise DataError(f"--dataset=npz:{path}: cannot read it ({error.strerror})") from None
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=2)
def _read_npz(path: str, mtime: int, size: int) -> tuple:
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [key for key in NPZ_KEYS if key not in f.files]
            if missing:
                raise DataError(f"{path} has no {', '.join(missing)} (it holds {', '.join(f.files) or 'nothing'}; "
                                f"lth_tf reads {', '.join(NPZ_KEYS)})")
            arrays = {key: f[key] for key in NPZ_KEYS}
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise DataError(f"{path} holds pickled Python objects, which lth_tf never loads (pickles can run "
                            "code); save plain numeric arrays (np.savez with numbers, not lists of objects)") from None
        raise DataError(f"{path} is not a readable npz file ({error})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path} is not a readable npz file ({type(error).__name__}: {error})") from None
    return _checked(arrays, path)


def _checked(arrays: dict, where: str) -> tuple:
    """The four arrays, labels flattened to int64; DataError naming the first thing wrong."""
    for key in NPZ_KEYS:
        if not isinstance(arrays[key], np.ndarray):
            arrays[key] = np.asarray(arrays[key])
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if y.ndim == 2 and y.shape[1] == 1:
            y = arrays[f"y_{split}"] = y[:, 0]
        if x.ndim < 2 or len(x) == 0:
            raise DataError(f"{where}: x_{split} has shape {x.shape}; expected examples along the first axis")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{where}: y_{split} has shape {y.shape}, x_{split} {x.shape}: one integer label per "
                            "example (not one-hot)")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{where}: y_{split} holds {y.dtype} values; labels must be integers 0..K-1")
        if y.min() < 0:
            raise DataError(f"{where}: y_{split} has a negative label ({y.min()}); labels must be 0..K-1")
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise DataError(f"{where}: x_{split} holds {x.dtype} values, not numbers")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise DataError(f"{where}: x_{split} holds NaN or infinite values")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DataError(f"{where}: x_train's examples have shape {arrays['x_train'].shape[1:]}, x_test's "
                        f"{arrays['x_test'].shape[1:]}")
    classes = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    if classes < 2:
        raise DataError(f"{where}: every label is 0; a classification set needs at least two classes")
    return tuple(arrays[key].astype(np.int64) if key.startswith("y") else arrays[key] for key in NPZ_KEYS)


def npz_facts(path: str) -> dict:
    """input_shape, num_classes, train_labels, fingerprint (SHA-256 of the arrays) and normalisation."""
    held = os.path.abspath(path) in _HELD
    return _facts(path, "held" if held else _stamp(path))  # held() clears the cache on the way in and out


@functools.lru_cache(maxsize=4)
def _facts(path: str, version) -> dict:
    x_train, y_train, x_test, y_test = npz_arrays(path)
    digest = hashlib.sha256()
    for array in (x_train, y_train, x_test, y_test):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return dict(input_shape=tuple(x_train.shape[1:]), num_classes=int(max(y_train.max(), y_test.max())) + 1,
                train_labels=y_train, fingerprint=digest.hexdigest(), normalisation=channel_statistics(x_train))


def channel_statistics(x: np.ndarray) -> dict:
    """{"mean": [...], "std": [...]} of training examples: per channel (the last axis) for examples
    of rank 2 or more (images, sequences of channels), one of each for flat feature vectors. A
    constant channel gets std 1."""
    axes = tuple(range(x.ndim - 1)) if x.ndim > 2 else None
    mean = np.asarray(np.mean(x, axis=axes, dtype=np.float64)).reshape(-1)
    std = np.asarray(np.std(x, axis=axes, dtype=np.float64)).reshape(-1)
    return {"mean": [float(m) for m in mean], "std": [float(d) if d > 0 else 1.0 for d in std]}
