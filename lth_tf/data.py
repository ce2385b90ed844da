"""Dataset sources and the tf.data pipelines that feed the training loop.

Every source returns `Splits`: in-memory, normalised float32 arrays with a
validation split held out of the training set. Data order is a pure function
of (seed, step), so any step of any round can be replayed exactly.
"""
import dataclasses
import gzip
import os
import random

import numpy as np
import tensorflow as tf

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist

# Per-channel mean and standard deviation of the training images (0..1 scale).
STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3), "mnist1d": (40,)}
DATASETS = ("mnist1d", "fashion_mnist", "mnist", "cifar10", "synthetic")


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


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist1d"
    data_dir: str = ""
    validation_size: int = 500
    synthetic_like: str = "mnist"  # shape of the synthetic set
    augment: bool = True           # pad-crop-flip, for CIFAR-shaped data only
    seed: int = 0


def load(config: DataConfig) -> Splits:
    """Loads a dataset and holds `validation_size` training examples out."""
    if config.dataset not in DATASETS:
        raise DataError(f"unknown dataset {config.dataset!r}; valid: {', '.join(DATASETS)}")
    if config.dataset == "mnist1d":
        (x, y, x_test, y_test), source = _mnist1d(), "mnist1d.data.make_dataset"
    elif config.dataset == "synthetic":
        (x, y, x_test, y_test), source = _synthetic(config.synthetic_like, config.seed), "synthetic"
    else:
        (x, y, x_test, y_test), source = _load_images(config.dataset, config.data_dir)
    name = config.dataset
    if not 0 <= config.validation_size < len(x):
        raise DataError(f"--validation_size={config.validation_size} must be in [0, {len(x)}) for {name}")
    like = config.synthetic_like if name == "synthetic" else name
    scale, mean, std = normalisation = raw_normalisation(like)
    x, x_test = ((a.astype(np.float32) * scale - mean) / std for a in (x, x_test))
    # The validation split is a fixed subset, independent of the experiment's seed.
    order = np.random.default_rng(1234).permutation(len(x))
    val, train = order[: config.validation_size], order[config.validation_size:]
    return Splits(name, source, x[train], y[train].astype(np.int32), x[val], y[val].astype(np.int32),
                  x_test, y_test.astype(np.int32), 10, config.augment and like == "cifar10", normalisation)


def raw_normalisation(kind: str) -> tuple:
    """(scale, mean, std) as float32 arrays that map raw examples (0..255 pixels,
    or MNIST-1D as generated) to model inputs."""
    if kind == "mnist1d":
        scale, mean, std = 1.0, (0.0,), (1.0,)  # make_dataset already standardises
    else:
        scale, (mean, std) = 1 / 255, STATS[kind]
    return np.float32(scale), np.array(mean, np.float32), np.array(std, np.float32)


def _mnist1d():
    """The standard MNIST-1D (the package's default arguments, its own seed)."""
    from mnist1d.data import get_dataset_args, make_dataset
    # make_dataset reseeds numpy's and random's global generators: put them back.
    np_state, py_state = np.random.get_state(), random.getstate()
    data = make_dataset(get_dataset_args())
    np.random.set_state(np_state)
    random.setstate(py_state)
    return data["x"], data["y"], data["x_test"], data["y_test"]


def _synthetic(like, seed):
    if like not in SHAPES:
        raise DataError(f"--synthetic_like={like!r}; valid: {', '.join(SHAPES)}")
    rng = np.random.default_rng(seed)
    shape = SHAPES[like]
    n_train, n_test = 1000, 100  # smoke tests only: sized to be quick, not like the real set

    def images(n):
        if like == "mnist1d":
            return rng.standard_normal((n, *shape)).astype(np.float32)
        return rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    return images(n_train), rng.integers(0, 10, n_train), images(n_test), rng.integers(0, 10, n_test)


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _load_images(name, data_dir):
    """IDX files from a directory when present, else tensorflow-datasets."""
    tried = []
    idx_dir = data_dir or (FASHION_MNIST_DIR if name == "fashion_mnist" else "")
    if name in ("mnist", "fashion_mnist") and idx_dir:
        arrays = _read_idx_dir(idx_dir)
        if arrays is not None:
            x, y, x_test, y_test = arrays
            return (x[..., None], y, x_test[..., None], y_test), f"IDX files in {idx_dir}"
        tried.append(f"IDX files ({', '.join(IDX_FILES)}[.gz]) in {idx_dir}: not found")
    try:
        return _tfds(name, data_dir), "tensorflow-datasets"
    except Exception as error:  # tfds raises many types; all mean "not available"
        tried.append(f"tensorflow-datasets ({type(error).__name__}: {str(error).splitlines()[0][:160]})")
    hint = {"fashion_mnist": "apt-get install dataset-fashion-mnist, or",
            "mnist": "put the four MNIST IDX files in --data_dir, or"}.get(name, "")
    raise DataError(f"could not load {name}: tried {'; '.join(tried)}. To get it: {hint} "
                    f"run once with network access so tensorflow-datasets can download it into --data_dir")


def _read_idx_dir(directory):
    paths = []
    for stem in IDX_FILES:
        found = [p for p in (os.path.join(directory, stem), os.path.join(directory, stem + ".gz"))
                 if os.path.exists(p)]
        if not found:
            return None
        paths.append(found[0])
    return tuple(read_idx(p) for p in paths)


def read_idx(path) -> np.ndarray:
    """Reads one IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: header says {shape}, found {data.size} values")
    return data.reshape(shape)


def _tfds(name, data_dir):
    import tensorflow_datasets as tfds
    splits = tfds.load(name, split=["train", "test"], data_dir=data_dir or None,
                       as_supervised=True, batch_size=-1)
    (x, y), (x_test, y_test) = tfds.as_numpy(splits)
    return x, y, x_test, y_test


# ---------------------------------------------------------------- pipelines

def steps_per_epoch(splits: Splits, batch_size: int) -> int:
    return len(splits.x_train) // batch_size


def train_batches(splits: Splits, batch_size: int, seed: int, start_step: int,
                  context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """Per-replica training batches from `start_step` on, forever.

    Epoch e visits the training set in the order stateless_shuffle(seed, e),
    dropping the last partial batch; global batch b of that epoch is split
    into equal per-replica slices. Step s is therefore the same examples
    whatever the strategy and wherever a run was resumed.
    """
    context = context or tf.distribute.InputContext()
    replicas = context.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"batch size {batch_size} is not divisible by {replicas} replicas")
    per_replica = batch_size // replicas
    local = replicas // context.num_input_pipelines
    first_replica = context.input_pipeline_id * local
    epoch_steps = steps_per_epoch(splits, batch_size)
    x, y = tf.constant(splits.x_train), tf.constant(splits.y_train)
    n = len(splits.x_train)

    def epoch_batches(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=[seed, epoch])
        return tf.data.Dataset.from_tensor_slices(tf.reshape(order[: epoch_steps * batch_size],
                                                             [epoch_steps, batch_size]))

    def replica_slices(indices):
        slices = tf.reshape(indices, [replicas, per_replica])[first_replica:first_replica + local]
        return tf.data.Dataset.from_tensor_slices(slices)

    def gather(indices, step):
        images, labels = tf.gather(x, indices), tf.gather(y, indices)
        if splits.augment:
            images = pad_crop_flip(images, tf.stack([tf.cast(seed, tf.int64), step]))
        return images, labels

    start_epoch, skip = divmod(start_step, epoch_steps)
    batches = (tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_batches).skip(skip))
    steps = tf.data.Dataset.range(start_step, 2**62)
    dataset = tf.data.Dataset.zip(batches, steps).flat_map(
        lambda indices, step: tf.data.Dataset.zip(replica_slices(indices),
                                                  tf.data.Dataset.from_tensors(step).repeat(local)))
    return dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def pad_crop_flip(images, seed):
    """Pad 4 pixels, crop back to size at a random offset, flip half (stateless)."""
    n, h, w = tf.shape(images)[0], images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [4, 4], [4, 4], [0, 0]])
    offsets = tf.random.stateless_uniform([n, 2], seed, 0, 9, dtype=tf.int32)
    rows = offsets[:, :1] + tf.range(h)[None]
    cols = offsets[:, 1:] + tf.range(w)[None]
    cropped = tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform([n], seed + 1, 0, 2, dtype=tf.int32) > 0
    return tf.where(flip[:, None, None, None], tf.reverse(cropped, axis=[2]), cropped)


def eval_batches(x, y, batch_size: int) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(tf.data.AUTOTUNE)
