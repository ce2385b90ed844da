"""Dataset sources: in-memory, normalised numpy arrays with a validation split.

--dataset names a built-in set (mnist1d, fashion_mnist, mnist, cifar10,
synthetic) or a prefixed source of SOURCES: `npz:PATH` (a researcher's arrays
x_train, y_train, x_test, y_test, read without unpickling) or
`tfds:NAME[/CONFIG][:TRAIN,TEST]` (any tensorflow-datasets classification set
with an image and a label feature).
Every source returns `Splits`. Nothing here imports TensorFlow except the
tensorflow-datasets source, when it is used: flags are checked against the
datasets' facts (shapes, training-set sizes) before TensorFlow loads. The
tf.data pipelines that feed the training loop are in pipeline.py.

Sets without known constants (npz, most tensorflow-datasets sets) are
normalised by the training split's own per-channel mean and standard
deviation, which complete() computes once and config.json records, with a
fingerprint (SHA-256) of an npz file's arrays: a rerun on other data is
refused like any other change of config.
"""
import dataclasses
import functools
from typing import Callable

import numpy as np

from lth_tf.config import DataConfig
from lth_tf.data.base import DataError
from lth_tf.data.builtin import (FASHION_MNIST_DIR, MNIST1D_ARGS, NUM_CLASSES, SHAPES, SYNTHETIC_TRAIN, check_mnist1d,
                                 idx_dir, idx_paths, idx_shape, load_images, mnist1d, mnist1d_key, read_idx,
                                 synthetic)
from lth_tf.data.npz import NPZ_KEYS, channel_statistics, held, npz_arrays, npz_facts, save_held
from lth_tf.data.tfds_sets import tfds_arrays, tfds_facts, tfds_name

__all__ = ["DataError", "Splits", "load", "check", "complete", "is_known", "train_examples", "input_shape",
           "num_classes", "steps_per_epoch", "default_validation_size", "normalisation_of", "raw_normalisation",
           "held", "save_held", "channel_statistics", "read_idx", "FASHION_MNIST_DIR", "SHAPES", "DATASETS",
           "MNIST1D_ARGS", "NPZ_KEYS"]

# Per-channel mean and standard deviation of the training images (0..1 scale).
STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
# Training examples (validation split included) of the standard sets; load() checks them.
TRAIN_SIZES = {"mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000, "mnist1d": 4000}
# Training examples per class of the standard sets (tensorflow-datasets' copies; load() checks them).
CLASS_COUNTS = {"mnist": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
                "fashion_mnist": (6000,) * 10, "cifar10": (5000,) * 10}
DATASETS = ("mnist1d", "fashion_mnist", "mnist", "cifar10", "synthetic")  # built in; also the SOURCES below


@dataclasses.dataclass(frozen=True)
class Source:
    """A --dataset=PREFIX:... source of arrays. facts(dataset, data_dir): what the flags are checked against
    before TensorFlow loads, {"input_shape", "num_classes", "train_labels"} (and, where the data may change
    under one name, "fingerprint" and "normalisation"); arrays(dataset, data_dir): the raw (x_train,
    y_train, x_test, y_test); constants(dataset): the built-in set whose normalisation constants fit its
    raw examples, or "" to normalise by its own training split's statistics."""
    form: str                    # how --dataset names it, for error messages
    facts: Callable[[str, str], dict]
    arrays: Callable[[str, str], tuple]
    constants: Callable[[str], str] = lambda dataset: ""


# Every prefixed source, by prefix: adding one is a module of lth_tf/data/ with its facts and arrays, and a line.
SOURCES = {
    "npz": Source("npz:PATH", lambda dataset, data_dir: npz_facts(dataset[4:]),
                  lambda dataset, data_dir: npz_arrays(dataset[4:])),
    "tfds": Source("tfds:NAME[/CONFIG][:TRAIN_SPLIT,TEST_SPLIT]", tfds_facts, tfds_arrays,
                   lambda dataset: tfds_name(dataset) if tfds_name(dataset) in STATS else ""),
}


def source_of(dataset: str) -> Source | None:
    """The prefixed source `dataset` names (npz:..., tfds:...), None for a built-in set."""
    prefix, colon, _ = dataset.partition(":")
    return SOURCES.get(prefix) if colon else None


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
        arrays = mnist1d(mnist1d_key(config.mnist1d))
        source = "mnist1d.data.make_dataset" + "".join(f", {k}={v}" for k, v in sorted(config.mnist1d.items()))
    elif name == "synthetic":
        arrays = synthetic(config.synthetic_like, config.seed, config.validation_size + SYNTHETIC_TRAIN,
                            num_classes(config))
        source = "synthetic"
    elif source_of(name):
        arrays, source = source_of(name).arrays(name, config.data_dir), name
    else:
        arrays, source = load_images(name, config.data_dir)
    x, y, x_test, y_test = arrays if name == "synthetic" else _of_classes(arrays, config.classes,
                                                                         source_classes(config))
    expected = train_examples(config)
    if len(x) != expected:
        raise DataError(f"{name} from {source} has {len(x)} training examples, expected {expected}")
    source_kind = source_of(name)
    like = config.synthetic_like if name == "synthetic" else source_kind.constants(name) if source_kind else name
    scale, mean, std = normalisation = normalisation_of(config)
    x, x_test = ((a.astype(np.float32) * scale - mean) / std for a in (x, x_test))
    # The validation split is a fixed subset, independent of the experiment's seed.
    order = np.random.default_rng(1234).permutation(len(x))
    val, train = order[: config.validation_size], order[config.validation_size:]
    return Splits(name, source, x[train], y[train].astype(np.int32), x[val], y[val].astype(np.int32),
                  x_test, y_test.astype(np.int32), num_classes(config), config.augment and like == "cifar10",
                  normalisation)


def num_classes(config: DataConfig) -> int:
    return len(config.classes) or source_classes(config)


def source_classes(config: DataConfig) -> int:
    """Classes of the whole set (before --classes picks some)."""
    if source_of(config.dataset):
        return facts(config)["num_classes"]
    return NUM_CLASSES


def facts(config: DataConfig) -> dict:
    """A prefixed source's facts (Source.facts)."""
    return source_of(config.dataset).facts(config.dataset, config.data_dir)


def _of_classes(arrays, classes: tuple, total: int = NUM_CLASSES):
    """The examples of `classes` alone, labelled by their place in it; all when classes is empty."""
    if not classes:
        return arrays
    x, y, x_test, y_test = arrays
    label = np.full(total, -1, np.int64)
    label[list(classes)] = np.arange(len(classes))
    keep, keep_test = label[y] >= 0, label[y_test] >= 0
    return x[keep], label[y[keep]], x_test[keep_test], label[y_test[keep_test]]


def is_known(name: str) -> bool:
    """Whether --dataset=name is a form this module reads (not whether the data exist)."""
    return name in DATASETS or (source_of(name) is not None and len(name.split(":")[1]) > 0)


def check(config: DataConfig):
    """The dataset flags, checked without loading anything but an npz file's
    arrays or a tensorflow-datasets set's description; DataError if wrong."""
    if not is_known(config.dataset):
        raise DataError(f"unknown dataset {config.dataset!r}; valid: {', '.join(DATASETS)}, "
                        + " or ".join(source.form for source in SOURCES.values()))
    if config.dataset == "synthetic" and config.synthetic_like not in SHAPES:
        raise DataError(f"--synthetic_like={config.synthetic_like!r}; valid: {', '.join(SHAPES)}")
    classes, total = config.classes, source_classes(config)
    if classes and (len(set(classes)) != len(classes) or not set(classes) <= set(range(total))
                    or len(classes) < 2):
        raise DataError(f"--classes={','.join(map(str, classes))}: at least two distinct classes of "
                        f"0..{total - 1}")
    if config.mnist1d:
        check_mnist1d(config)
    total = train_examples(config)
    if not 0 <= config.validation_size < total:
        raise DataError(f"--validation_size={config.validation_size} must be in [0, {total}) for {config.dataset}")


def train_examples(config: DataConfig) -> int:
    """Training examples (the validation split included) that load() returns,
    known without loading: the IDX files' header, or the standard set's size.
    The synthetic set is as large as its validation split needs."""
    if config.dataset == "synthetic":
        return config.validation_size + SYNTHETIC_TRAIN
    if source_of(config.dataset):
        labels = facts(config)["train_labels"]
        return int(np.isin(labels, config.classes).sum()) if config.classes else len(labels)
    if config.dataset == "mnist1d" and (config.mnist1d or config.classes):
        y = mnist1d(mnist1d_key(config.mnist1d))[1]  # generated once per process and kept
        return int(np.isin(y, config.classes or range(NUM_CLASSES)).sum())
    paths = idx_paths(idx_dir(config.dataset, config.data_dir))
    if paths and config.classes:
        return int(np.isin(read_idx(paths[1]), config.classes).sum())
    if paths:
        return idx_shape(paths[1])[0]
    if config.classes:
        return sum(CLASS_COUNTS[config.dataset][c] for c in config.classes)
    return TRAIN_SIZES[config.dataset]


def steps_per_epoch(splits: Splits, batch_size: int) -> int:
    return len(splits.x_train) // batch_size


def input_shape(config: DataConfig) -> tuple:
    if source_of(config.dataset):
        return facts(config)["input_shape"]
    if config.dataset == "mnist1d" and "final_seq_length" in config.mnist1d:
        return (config.mnist1d["final_seq_length"],)
    return SHAPES[config.synthetic_like if config.dataset == "synthetic" else config.dataset]


def default_validation_size(config: DataConfig) -> int:
    """--validation_size=-1: 500 for MNIST-1D, 5000 for the other built-in sets, a tenth of the
    training set for npz and tensorflow-datasets sets."""
    if config.dataset == "mnist1d":
        return 500
    if config.dataset in DATASETS:
        return 5000
    return train_examples(dataclasses.replace(config, validation_size=0)) // 10


def complete(config: DataConfig) -> DataConfig:
    """`config` with what config.json records of data that may change under the same name: an npz
    file's fingerprint, and the normalisation of a set without known constants (computed on its
    training split, validation examples included). Reads an npz file, or loads a tensorflow-datasets
    set without known constants; the built-in sets are returned as they are."""
    source = source_of(config.dataset)
    if source is None:
        return config
    found = facts(config)
    if "fingerprint" in found:
        config = dataclasses.replace(config, fingerprint=found["fingerprint"])
    if not source.constants(config.dataset):
        config = dataclasses.replace(config, normalisation=found.get("normalisation") or _statistics(
            config.dataset, config.data_dir))
    return config


@functools.lru_cache(maxsize=2)
def _statistics(dataset: str, data_dir: str) -> dict:
    return channel_statistics(source_of(dataset).arrays(dataset, data_dir)[0])


def normalisation_of(config: DataConfig) -> tuple:
    """(scale, mean, std) as float32 arrays that map the set's raw examples to model inputs."""
    if config.normalisation:
        stats = config.normalisation
        return np.float32(1.0), np.array(stats["mean"], np.float32), np.array(stats["std"], np.float32)
    if source_of(config.dataset):
        return raw_normalisation(source_of(config.dataset).constants(config.dataset))
    return raw_normalisation(config.synthetic_like if config.dataset == "synthetic" else config.dataset)


def raw_normalisation(kind: str) -> tuple:
    """(scale, mean, std) as float32 arrays that map raw examples (0..255 pixels,
    or MNIST-1D as generated) to model inputs."""
    if kind == "mnist1d":
        scale, mean, std = 1.0, (0.0,), (1.0,)  # make_dataset already standardises
    else:
        scale, (mean, std) = 1 / 255, STATS[kind]
    return np.float32(scale), np.array(mean, np.float32), np.array(std, np.float32)


