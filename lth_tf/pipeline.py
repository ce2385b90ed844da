"""What feeds the training loop and evaluation: on one replica, batches
gathered from the arrays inside the compiled loop (ArrayBatches); on several,
tf.data pipelines (train_batches, eval_batches) giving the same examples.

Data order is a pure function of (seed, step), so any step of any round can be
replayed exactly, under any strategy and after any resume.
"""
import weakref

import tensorflow as tf

from lth_tf.data import Splits, steps_per_epoch


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

    def epoch_batches(epoch):
        return tf.data.Dataset.from_tensor_slices(epoch_order(len(splits.x_train), seed, epoch, epoch_steps,
                                                              batch_size))

    def replica_slices(indices):
        slices = tf.reshape(indices, [replicas, per_replica])[first_replica:first_replica + local]
        return tf.data.Dataset.from_tensor_slices(slices)

    def gather(indices, step):
        return gather_batch(x, y, indices, splits.augment, seed, step)

    start_epoch, skip = divmod(start_step, epoch_steps)
    batches = (tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_batches).skip(skip))
    steps = tf.data.Dataset.range(start_step, 2**62)
    dataset = tf.data.Dataset.zip(batches, steps).flat_map(
        lambda indices, step: tf.data.Dataset.zip(replica_slices(indices),
                                                  tf.data.Dataset.from_tensors(step).repeat(local)))
    return dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


_TENSORS = {}  # id(array) -> its tensor, while the array lives


def as_tensor(array):
    """The array as a tf.constant, made once per array: every train() and
    evaluation of a run reads the same copy."""
    key = id(array)
    if key not in _TENSORS:
        _TENSORS[key] = tf.constant(array)
        weakref.finalize(array, _TENSORS.pop, key, None)
    return _TENSORS[key]


def epoch_order(n: int, seed: int, epoch, epoch_steps: int, batch_size: int):
    """[epoch_steps, batch_size] example indices: row b is epoch `epoch`'s batch b."""
    order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64),
                                                     seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]))
    return tf.reshape(order[: epoch_steps * batch_size], [epoch_steps, batch_size])


def gather_batch(x, y, indices, augment: bool, seed: int, step):
    """The examples at `indices`, augmented (if asked) with step `step`'s randomness."""
    images, labels = tf.gather(x, indices), tf.gather(y, indices)
    if augment:
        images = pad_crop_flip(images, tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)]))
    return images, labels


class ArrayBatches:
    """Training batches gathered from the arrays inside the compiled loop (one
    replica): the same examples, step for step, as train_batches, without a
    tf.data pipeline between the steps. `take(n)` hands out the next steps in
    pieces that stay within one epoch: (epoch order, its first batch, first step, steps)."""

    def __init__(self, splits: Splits, batch_size: int, seed: int, start_step: int):
        self.x, self.y = as_tensor(splits.x_train), as_tensor(splits.y_train)
        self.augment, self.seed, self.batch_size = splits.augment, seed, batch_size
        self.epoch_steps, self.step = steps_per_epoch(splits, batch_size), start_step
        self._orders = {}

    def order(self, epoch: int):
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(len(self.x), self.seed, epoch, self.epoch_steps, self.batch_size)}
        return self._orders[epoch]

    def take(self, n: int):
        while n > 0:
            epoch, first = divmod(self.step, self.epoch_steps)
            piece = min(n, self.epoch_steps - first)
            yield self.order(epoch), first, self.step, piece
            self.step, n = self.step + piece, n - piece


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
