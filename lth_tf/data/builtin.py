"""The built-in sets' readers: MNIST-1D (generated), synthetic data, and
MNIST-format IDX files (tensorflow-datasets' copy when there are none)."""
import functools
import gzip
import json
import os
import random

import numpy as np

from lth_tf.config import DataConfig
from lth_tf.data.base import DataError
from lth_tf.data.tfds_sets import tfds_arrays

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3), "mnist1d": (40,)}
NUM_CLASSES = 10
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 1000, 100  # beside the validation split, whatever its size
# The arguments of mnist1d.data.make_dataset that --mnist1d_<name> flags set (its url is a download).
MNIST1D_ARGS = ("num_samples", "train_split", "template_len", "padding", "scale_coeff", "max_translation",
                "corr_noise_scale", "iid_noise_scale", "shear_scale", "shuffle_seq", "final_seq_length", "seed")


def check_mnist1d(config: DataConfig):
    if config.dataset != "mnist1d":
        raise DataError(f"--mnist1d_* flags set the MNIST-1D generator; --dataset={config.dataset} is another set")
    unknown = set(config.mnist1d) - set(MNIST1D_ARGS)
    if unknown:
        raise DataError(f"unknown mnist1d generator arguments {', '.join(sorted(unknown))}; valid: "
                        f"{', '.join(MNIST1D_ARGS)}")
    args = _mnist1d_args(config.mnist1d)
    if not 0 < args["train_split"] < 1:
        raise DataError(f"--mnist1d_train_split={args['train_split']} must be in (0, 1)")
    if args["num_samples"] < NUM_CLASSES or args["final_seq_length"] < 1 or args["template_len"] < 1:
        raise DataError("--mnist1d_num_samples must be at least 10, --mnist1d_final_seq_length and "
                        "--mnist1d_template_len at least 1")
    if len(args["padding"]) != 2 or not 0 <= args["padding"][0] <= args["padding"][1]:
        raise DataError(f"--mnist1d_padding={','.join(map(str, args['padding']))}: two sizes, low <= high")


def _mnist1d_args(overrides: dict) -> dict:
    from mnist1d.data import get_dataset_args
    return {**get_dataset_args(as_dict=True), **overrides}


def mnist1d_key(overrides: dict) -> str:
    return json.dumps(overrides, sort_keys=True)


@functools.lru_cache(maxsize=4)
def mnist1d(overrides: str):
    """MNIST-1D as make_dataset generates it (the package's arguments, its own seed,
    those in `overrides` (JSON) replaced); the standard set when it is {}."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView
    # make_dataset reseeds numpy's and random's global generators: put them back.
    np_state, py_state = np.random.get_state(), random.getstate()
    generated = make_dataset(ObjectView(_mnist1d_args(json.loads(overrides))))
    np.random.set_state(np_state)
    random.setstate(py_state)
    arrays = generated["x"], generated["y"], generated["x_test"], generated["y_test"]
    for a in arrays:
        a.setflags(write=False)  # shared by every load of this process
    return arrays


def synthetic(like, seed, n_train, classes=NUM_CLASSES):
    rng = np.random.default_rng(seed)
    shape = SHAPES[like]

    def images(n):
        if like == "mnist1d":
            return rng.standard_normal((n, *shape)).astype(np.float32)
        return rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    return (images(n_train), rng.integers(0, classes, n_train),
            images(SYNTHETIC_TEST), rng.integers(0, classes, SYNTHETIC_TEST))


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def load_images(name, data_dir):
    """IDX files from a directory when present, else tensorflow-datasets."""
    tried = []
    folder = idx_dir(name, data_dir)
    if folder:
        paths = idx_paths(folder)
        if paths:
            x, y, x_test, y_test = (read_idx(p) for p in paths)
            return (x[..., None], y, x_test[..., None], y_test), f"IDX files in {folder}"
        tried.append(f"IDX files ({', '.join(IDX_FILES)}[.gz]) in {folder}: not found")
    try:
        return _tfds(name, data_dir), "tensorflow-datasets"
    except DataError as error:
        tried.append(f"tensorflow-datasets: {error}")
    except Exception as error:  # tfds raises many types; all mean "not available"
        tried.append(f"tensorflow-datasets ({type(error).__name__}: {str(error).splitlines()[0][:200]})")
    hint = {"fashion_mnist": "apt-get install dataset-fashion-mnist, or ",
            "mnist": "put the four MNIST IDX files in --data_dir, or "}.get(name, "")
    raise DataError(f"could not load {name}: tried {'; '.join(tried)}. To get it: {hint}"
                    f"run once with network access so tensorflow-datasets can download it into --data_dir")


def idx_dir(name, data_dir) -> str:
    """Where IDX files of `name` may be: --data_dir, or Debian's Fashion-MNIST."""
    if name not in ("mnist", "fashion_mnist"):
        return ""
    return data_dir or (FASHION_MNIST_DIR if name == "fashion_mnist" else "")


def idx_paths(directory) -> list[str]:
    """The four IDX files (plain or .gz) in `directory`, in IDX_FILES order; [] unless all are there."""
    paths = []
    for stem in IDX_FILES if directory else ():
        found = [p for p in (os.path.join(directory, stem), os.path.join(directory, stem + ".gz"))
                 if os.path.exists(p)]
        if not found:
            return []
        paths.append(found[0])
    return paths


def idx_shape(path) -> tuple:
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        header = f.read(4)
        if len(header) < 4 or header[:3] != b"\0\0\x08":
            raise DataError(f"{path} is not an unsigned-byte IDX file")
        raw = f.read(4 * header[3])
    return tuple(int.from_bytes(raw[4 * i: 4 * i + 4], "big") for i in range(header[3]))


def read_idx(path) -> np.ndarray:
    """Reads one IDX file (the MNIST format), gzipped or not."""
    shape = idx_shape(path)
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        raw = f.read()
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * len(shape))
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: header says {shape}, found {data.size} values")
    return data.reshape(shape)


def _tfds(name, data_dir):
    """A built-in set's tensorflow-datasets copy (see tfds_arrays)."""
    return tfds_arrays(f"tfds:{name}", data_dir)
