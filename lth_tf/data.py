"""Dataset sources: in-memory, normalised numpy arrays with a validation split.

Every source returns `Splits`. Nothing here imports TensorFlow except the
tensorflow-datasets source, when it is used: flags are checked against the
datasets' facts (shapes, training-set sizes) before TensorFlow loads. The
tf.data pipelines that feed the training loop are in pipeline.py.
"""
import dataclasses
import functools
import gzip
import json
import os
import random
from urllib.parse import urlsplit

import numpy as np

from lth_tf.config import DataConfig

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist

# Per-channel mean and standard deviation of the training images (0..1 scale).
STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3), "mnist1d": (40,)}
# Training examples (validation split included) of the standard sets; load() checks them.
TRAIN_SIZES = {"mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000, "mnist1d": 4000}
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 1000, 100  # beside the validation split, whatever its size
NUM_CLASSES = 10
# Training examples per class of the standard sets (tensorflow-datasets' copies; load() checks them).
CLASS_COUNTS = {"mnist": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
                "fashion_mnist": (6000,) * 10, "cifar10": (5000,) * 10}
# The arguments of mnist1d.data.make_dataset that --mnist1d_<name> flags set (its url is a download).
MNIST1D_ARGS = ("num_samples", "train_split", "template_len", "padding", "scale_coeff", "max_translation",
                "corr_noise_scale", "iid_noise_scale", "shear_scale", "shuffle_seq", "final_seq_length", "seed")
DATASETS = ("mnist1d", "fashion_mnist", "mnist", "cifar10", "synthetic")
PROBE_SECONDS = 5  # how long an unprepared tensorflow-datasets set may take to show its server answers


class DataError(Exception):
    """A dataset could not be loaded; the message says what was tried."""


@dataclasses.dataclass(frozen=True)
class Splits:
    name: str
    source: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    augment: bool  # pad-4 random crop + horizontal flip (CIFAR)
    normalisation: tuple  # (scale, mean, std): model input = (raw * scale - mean) / std

    @property
    def input_shape(self):
        return self.x_train.shape[1:]


def load(config: DataConfig) -> Splits:
    """Loads a dataset and holds `validation_size` training examples out."""
    check(config)
    name = config.dataset
    if name == "mnist1d":
        arrays = _mnist1d(_mnist1d_key(config.mnist1d))
        source = "mnist1d.data.make_dataset" + "".join(f", {k}={v}" for k, v in sorted(config.mnist1d.items()))
    elif name == "synthetic":
        arrays = _synthetic(config.synthetic_like, config.seed, config.validation_size + SYNTHETIC_TRAIN,
                            num_classes(config))
        source = "synthetic"
    else:
        arrays, source = _load_images(name, config.data_dir)
    x, y, x_test, y_test = arrays if name == "synthetic" else _of_classes(arrays, config.classes)
    expected = train_examples(config)
    if len(x) != expected:
        raise DataError(f"{name} from {source} has {len(x)} training examples, expected {expected}")
    like = config.synthetic_like if name == "synthetic" else name
    scale, mean, std = normalisation = raw_normalisation(like)
    x, x_test = ((a.astype(np.float32) * scale - mean) / std for a in (x, x_test))
    # The validation split is a fixed subset, independent of the experiment's seed.
    order = np.random.default_rng(1234).permutation(len(x))
    val, train = order[: config.validation_size], order[config.validation_size:]
    return Splits(name, source, x[train], y[train].astype(np.int32), x[val], y[val].astype(np.int32),
                  x_test, y_test.astype(np.int32), num_classes(config), config.augment and like == "cifar10",
                  normalisation)


def num_classes(config: DataConfig) -> int:
    return len(config.classes) or NUM_CLASSES


def _of_classes(arrays, classes: tuple):
    """The examples of `classes` alone, labelled by their place in it; all when classes is empty."""
    if not classes:
        return arrays
    x, y, x_test, y_test = arrays
    label = np.full(NUM_CLASSES, -1, np.int64)
    label[list(classes)] = np.arange(len(classes))
    keep, keep_test = label[y] >= 0, label[y_test] >= 0
    return x[keep], label[y[keep]], x_test[keep_test], label[y_test[keep_test]]


def check(config: DataConfig):
    """The dataset flags, checked without loading anything; DataError if wrong."""
    if config.dataset not in DATASETS:
        raise DataError(f"unknown dataset {config.dataset!r}; valid: {', '.join(DATASETS)}")
    if config.dataset == "synthetic" and config.synthetic_like not in SHAPES:
        raise DataError(f"--synthetic_like={config.synthetic_like!r}; valid: {', '.join(SHAPES)}")
    classes = config.classes
    if classes and (len(set(classes)) != len(classes) or not set(classes) <= set(range(NUM_CLASSES))
                    or len(classes) < 2):
        raise DataError(f"--classes={','.join(map(str, classes))}: at least two distinct classes of "
                        f"0..{NUM_CLASSES - 1}")
    if config.mnist1d:
        _check_mnist1d(config)
    total = train_examples(config)
    if not 0 <= config.validation_size < total:
        raise DataError(f"--validation_size={config.validation_size} must be in [0, {total}) for {config.dataset}")


def train_examples(config: DataConfig) -> int:
    """Training examples (the validation split included) that load() returns,
    known without loading: the IDX files' header, or the standard set's size.
    The synthetic set is as large as its validation split needs."""
    if config.dataset == "synthetic":
        return config.validation_size + SYNTHETIC_TRAIN
    if config.dataset == "mnist1d" and (config.mnist1d or config.classes):
        y = _mnist1d(_mnist1d_key(config.mnist1d))[1]  # generated once per process and kept
        return int(np.isin(y, config.classes or range(NUM_CLASSES)).sum())
    paths = _idx_paths(_idx_dir(config.dataset, config.data_dir))
    if paths and config.classes:
        return int(np.isin(read_idx(paths[1]), config.classes).sum())
    if paths:
        return _idx_shape(paths[1])[0]
    if config.classes:
        return sum(CLASS_COUNTS[config.dataset][c] for c in config.classes)
    return TRAIN_SIZES[config.dataset]


def steps_per_epoch(splits: Splits, batch_size: int) -> int:
    return len(splits.x_train) // batch_size


def input_shape(config: DataConfig) -> tuple:
    if config.dataset == "mnist1d" and "final_seq_length" in config.mnist1d:
        return (config.mnist1d["final_seq_length"],)
    return SHAPES[config.synthetic_like if config.dataset == "synthetic" else config.dataset]


def raw_normalisation(kind: str) -> tuple:
    """(scale, mean, std) as float32 arrays that map raw examples (0..255 pixels,
    or MNIST-1D as generated) to model inputs."""
    if kind == "mnist1d":
        scale, mean, std = 1.0, (0.0,), (1.0,)  # make_dataset already standardises
    else:
        scale, (mean, std) = 1 / 255, STATS[kind]
    return np.float32(scale), np.array(mean, np.float32), np.array(std, np.float32)


def _check_mnist1d(config: DataConfig):
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


def _mnist1d_key(overrides: dict) -> str:
    return json.dumps(overrides, sort_keys=True)


@functools.lru_cache(maxsize=4)
def _mnist1d(overrides: str):
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


def _synthetic(like, seed, n_train, classes=NUM_CLASSES):
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


def _load_images(name, data_dir):
    """IDX files from a directory when present, else tensorflow-datasets."""
    tried = []
    idx_dir = _idx_dir(name, data_dir)
    if idx_dir:
        paths = _idx_paths(idx_dir)
        if paths:
            x, y, x_test, y_test = (read_idx(p) for p in paths)
            return (x[..., None], y, x_test[..., None], y_test), f"IDX files in {idx_dir}"
        tried.append(f"IDX files ({', '.join(IDX_FILES)}[.gz]) in {idx_dir}: not found")
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


def _idx_dir(name, data_dir) -> str:
    """Where IDX files of `name` may be: --data_dir, or Debian's Fashion-MNIST."""
    if name not in ("mnist", "fashion_mnist"):
        return ""
    return data_dir or (FASHION_MNIST_DIR if name == "fashion_mnist" else "")


def _idx_paths(directory) -> list[str]:
    """The four IDX files (plain or .gz) in `directory`, in IDX_FILES order; [] unless all are there."""
    paths = []
    for stem in IDX_FILES if directory else ():
        found = [p for p in (os.path.join(directory, stem), os.path.join(directory, stem + ".gz"))
                 if os.path.exists(p)]
        if not found:
            return []
        paths.append(found[0])
    return paths


def _idx_shape(path) -> tuple:
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        header = f.read(4)
        if len(header) < 4 or header[:3] != b"\0\0\x08":
            raise DataError(f"{path} is not an unsigned-byte IDX file")
        raw = f.read(4 * header[3])
    return tuple(int.from_bytes(raw[4 * i: 4 * i + 4], "big") for i in range(header[3]))


def read_idx(path) -> np.ndarray:
    """Reads one IDX file (the MNIST format), gzipped or not."""
    shape = _idx_shape(path)
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        raw = f.read()
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * len(shape))
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: header says {shape}, found {data.size} values")
    return data.reshape(shape)


def _tfds(name, data_dir):
    """tensorflow-datasets' copy, downloaded and prepared first if it must be
    and its server answers: offline, that fails in seconds, not minutes of retries."""
    import tensorflow_datasets as tfds
    builder = tfds.builder(name, data_dir=data_dir or None)
    if not builder.is_prepared():
        _check_reachable(builder.url_infos or {}, str(builder.data_dir))
        builder.download_and_prepare()
    splits = builder.as_dataset(split=["train", "test"], as_supervised=True, batch_size=-1)
    (x, y), (x_test, y_test) = tfds.as_numpy(splits)
    return x, y, x_test, y_test


def _check_reachable(urls, data_dir):
    """One request per download host, bounded by PROBE_SECONDS; DataError if any fails."""
    import requests
    by_host = {urlsplit(url).netloc: url for url in sorted(urls)}
    for host, url in sorted(by_host.items()):
        try:
            requests.head(url, timeout=PROBE_SECONDS, allow_redirects=True)
        except requests.RequestException as error:
            raise DataError(f"not prepared in {data_dir}, and its download server {host} does not answer "
                            f"({type(error).__name__}; no network?)") from None
