"""The tf.data pipelines that feed the training loop and evaluation.

Data order is a pure function of (seed, step), so any step of any round can be
replayed exactly, under any strategy and after any resume.
"""
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
