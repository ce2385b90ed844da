"""tensorflow-datasets sets: --dataset=tfds:NAME[/CONFIG][:TRAIN_SPLIT,TEST_SPLIT], any
classification set with one fixed-shape input feature and a class label, loaded into memory.
tensorflow_datasets (and with it TensorFlow) is imported only when such a set is used."""
import functools
from urllib.parse import urlsplit

from lth_tf.data.base import DataError

PROBE_SECONDS = 5  # how long an unprepared tensorflow-datasets set may take to show its server answers


def _tfds_parts(dataset: str) -> tuple[str, str, str]:
    """(tensorflow-datasets name, training split, test split) of tfds:NAME[/CONFIG][:TRAIN,TEST]."""
    name, _, splits = dataset[len("tfds:"):].partition(":")
    train, _, test = (splits or "train,test").partition(",")
    if not name or not train or not test or "," in test:
        raise DataError(f"--dataset={dataset}: expected tfds:NAME[/CONFIG][:TRAIN_SPLIT,TEST_SPLIT], "
                        "e.g. tfds:cifar10 or tfds:imagenette/160px:train,validation")
    return name, train, test


def tfds_name(dataset: str) -> str:
    return _tfds_parts(dataset)[0]


def _tfds_builder(dataset: str, data_dir: str):
    """The set's tensorflow-datasets builder and (image key, label key); DataError if it has none."""
    import tensorflow_datasets as tfds
    name = _tfds_parts(dataset)[0]
    try:
        builder = tfds.builder(name, data_dir=data_dir or None)
    except Exception as error:  # DatasetNotFoundError, a bad config name, a missing extra dependency
        raise DataError(f"--dataset={dataset}: tensorflow-datasets has no set {name} "
                        f"({type(error).__name__}: {str(error).strip().splitlines()[0][:160]})") from None
    features = builder.info.features
    supervised = builder.info.supervised_keys
    image, label = supervised[:2] if supervised and all(isinstance(k, str) for k in supervised[:2]) else \
        ("image", "label")
    if label not in features or not getattr(features[label], "num_classes", None):
        raise DataError(f"--dataset={dataset}: {name} has no class-label feature (its features: "
                        f"{', '.join(features.keys())}); lth_tf reads classification sets")
    if image not in features:
        raise DataError(f"--dataset={dataset}: {name} has no input feature {image!r} (its features: "
                        f"{', '.join(features.keys())})")
    shape = tuple(features[image].shape)
    if not shape or None in shape:
        raise DataError(f"--dataset={dataset}: {name}'s {image} has shape {shape}, not one fixed shape; resize the "
                        "examples and save them as an npz file (--dataset=npz:PATH)")
    return builder, image, label


@functools.lru_cache(maxsize=8)
def tfds_facts(dataset: str, data_dir: str) -> dict:
    """input_shape, num_classes and the training labels of a tensorflow-datasets set (loaded once)."""
    builder, image, label = _tfds_builder(dataset, data_dir)
    return dict(input_shape=tuple(builder.info.features[image].shape),
                num_classes=int(builder.info.features[label].num_classes),
                train_labels=tfds_arrays(dataset, data_dir)[1])


@functools.lru_cache(maxsize=2)
def tfds_arrays(dataset: str, data_dir: str):
    """(x_train, y_train, x_test, y_test) of a tensorflow-datasets set, downloaded and prepared first
    if it must be and its server answers: offline, that fails in seconds, not minutes of retries."""
    import tensorflow_datasets as tfds
    builder, image, label = _tfds_builder(dataset, data_dir)
    _, train, test = _tfds_parts(dataset)
    if not builder.is_prepared():
        _check_reachable(builder.url_infos or {}, str(builder.data_dir))
        builder.download_and_prepare()
    try:
        splits = builder.as_dataset(split=[train, test])
    except Exception as error:  # an unknown split name
        raise DataError(f"--dataset={dataset}: cannot read splits {train}, {test} "
                        f"({type(error).__name__}: {str(error).splitlines()[0][:160]})") from None
    arrays = ()
    for split in splits:  # one batch of the whole split (batch_size=-1 needs split sizes a mock lacks)
        whole = tfds.as_numpy(split.batch(max(1, int(split.cardinality()))).get_single_element())
        arrays += (whole[image], whole[label])
    for a in arrays:
        a.setflags(write=False)
    return arrays


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
