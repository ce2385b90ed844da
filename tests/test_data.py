"""Dataset sources and the deterministic training pipeline."""
import gzip

import numpy as np
import pytest
import tensorflow as tf

from conftest import write_idx, write_idx_dir
from lth_tf import data, pipeline
from lth_tf.config import DataConfig


def test_fashion_mnist_from_debian_idx_files():
    splits = data.load(DataConfig("fashion_mnist", validation_size=5000))
    assert splits.source == f"IDX files in {data.FASHION_MNIST_DIR}"
    assert splits.x_train.shape == (55000, 28, 28, 1) and splits.x_val.shape == (5000, 28, 28, 1)
    assert splits.x_test.shape == (10000, 28, 28, 1) and splits.x_train.dtype == np.float32
    assert np.bincount(splits.y_test).tolist() == [1000] * 10
    train_and_val = np.concatenate([splits.y_train, splits.y_val])
    assert np.bincount(train_and_val).tolist() == [6000] * 10
    # normalised with the dataset's statistics
    assert abs(float(splits.x_train.mean())) < 0.05 and abs(float(splits.x_train.std()) - 1) < 0.05


def test_mnist_from_an_idx_directory(tmp_path):
    config = DataConfig("mnist", data_dir=str(write_idx_dir(tmp_path, 300, 50)), validation_size=100)
    assert data.train_examples(config) == 300  # from the header, before loading
    splits = data.load(config)
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (200, 100, 50)
    assert splits.input_shape == (28, 28, 1)


def test_truncated_idx_file_is_reported(tmp_path):
    path = tmp_path / "t.gz"
    write_idx(path, np.zeros((10, 4, 4)))
    with gzip.open(path) as f:
        raw = f.read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-5])
    with pytest.raises(data.DataError, match="truncated"):
        data.read_idx(str(path))


@pytest.mark.parametrize("name, server", [("cifar10", "www.cs.toronto.edu"),
                                          ("fashion_mnist", "fashion-mnist.s3-website.eu-central-1.amazonaws.com")])
def test_a_dataset_to_download_fails_at_once_without_network(name, server, tmp_path, monkeypatch):
    """No network (every request goes to a closed local port): tensorflow-datasets is
    never asked to download (minutes of retries); the error says what was tried."""
    import tensorflow_datasets as tfds
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                        lambda *args, **kwargs: pytest.fail("a download was attempted"))
    with pytest.raises(data.DataError) as error:
        data.load(DataConfig(name, data_dir=str(tmp_path)))
    message = str(error.value)
    assert f"its download server {server} does not answer" in message and "no network?" in message
    if name == "fashion_mnist":
        assert "IDX files" in message and str(tmp_path) in message
        assert "apt-get install dataset-fashion-mnist" in message


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(data.DataError, match="mnist1d, fashion_mnist"):
        data.load(DataConfig("imagenet"))


def test_mnist1d_is_generated_offline_and_leaves_numpy_seed_alone(mnist1d):
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    splits = data.load(DataConfig("mnist1d", validation_size=500))
    assert np.random.rand() == expected
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (3500, 500, 1000)
    np.testing.assert_array_equal(splits.x_train, mnist1d.x_train)


def batches(splits, batch_size, seed, start, count, context=None):
    return [(x.numpy(), y.numpy()) for x, y in pipeline.train_batches(splits, batch_size, seed, start, context).take(count)]


def test_training_order_replays_from_any_step(mnist1d):
    epoch = data.steps_per_epoch(mnist1d, 64)
    straight = batches(mnist1d, 64, 3, 0, epoch + 5)
    resumed = batches(mnist1d, 64, 3, epoch - 2, 7)
    for (x1, y1), (x2, y2) in zip(straight[epoch - 2:], resumed):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    # each epoch visits distinct examples (no example twice), the next epoch in another order
    index = {row.tobytes(): i for i, row in enumerate(mnist1d.x_train)}
    assert len(index) == len(mnist1d.x_train)  # MNIST-1D examples are distinct, so they identify themselves
    first = [index[row.tobytes()] for x, _ in straight[:epoch] for row in x]
    assert len(set(first)) == len(first) == epoch * 64
    second = [index[row.tobytes()] for x, _ in straight[epoch:epoch + 5] for row in x]
    assert second != first[:5 * 64]


def test_replica_slices_partition_the_global_batch(mnist1d):
    whole = batches(mnist1d, 64, 0, 10, 2)
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=4)
    worker_1 = batches(mnist1d, 64, 0, 10, 4, context)  # 2 local replicas x 2 steps
    np.testing.assert_array_equal(np.concatenate([worker_1[0][0], worker_1[1][0]]), whole[0][0][32:])
    np.testing.assert_array_equal(np.concatenate([worker_1[2][0], worker_1[3][0]]), whole[1][0][32:])


def test_cifar_augmentation_is_a_shifted_or_flipped_crop_and_deterministic():
    """Each output is one of the 9x9 pad-4 crops of its image, flipped or not; across a batch
    the crops and flips vary (an augmentation that did nothing would fail)."""
    images = tf.constant(np.random.default_rng(0).random((64, 32, 32, 3), dtype=np.float32))
    seed = tf.constant([0, 5], tf.int64)
    out = pipeline.pad_crop_flip(images, seed).numpy()
    np.testing.assert_array_equal(out, pipeline.pad_crop_flip(images, seed).numpy())
    padded = np.pad(images.numpy(), [(0, 0), (4, 4), (4, 4), (0, 0)])
    chosen = []
    for i in range(len(out)):
        found = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
                 if np.array_equal(out[i], padded[i, dy:dy + 32, dx:dx + 32][:, ::-1] if flip
                                   else padded[i, dy:dy + 32, dx:dx + 32])]
        assert len(found) == 1, i
        chosen.append(found[0])
    assert len({(dy, dx) for dy, dx, _ in chosen}) > 20  # of the 81 offsets
    assert 16 < sum(flip for _, _, flip in chosen) < 48
    assert any((dy, dx, flip) != (4, 4, False) for dy, dx, flip in chosen)


def test_synthetic_has_the_shape_of_the_named_dataset():
    splits = data.load(DataConfig("synthetic", synthetic_like="cifar10", validation_size=100))
    assert splits.input_shape == (32, 32, 3) and splits.augment
    assert not data.load(DataConfig("synthetic", synthetic_like="cifar10", validation_size=100,
                                         augment=False)).augment
