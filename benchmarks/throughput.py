"""Training throughput with tfmot masks vs the identical unwrapped model.

    python benchmarks/throughput.py [--repeats=7] [--resnet_steps=10]

Both models run the same lth_tf training loop (training.make_trainer) on the
same batches; the masked model carries 50%-density masks in every prunable
layer. Each chunk (one LeNet epoch, or --resnet_steps ResNet steps) is one
compiled call. Prints median examples/s for both, their ratio, and the
median seconds per masked
LeNet-300-100 epoch of Fashion-MNIST at batch 128 (468 steps, SGD), with
and without --xla.
"""
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

import lth_tf  # noqa: F401
from lth_tf import data, networks, pipeline, training
from lth_tf import tfmot_adapter as adapter
from lth_tf.config import DataConfig, TrainingConfig

flags.DEFINE_integer("resnet_steps", 10, "ResNet-20 steps per timed chunk.")
flags.DEFINE_integer("repeats", 7, "Timed chunks per variant, alternating between variants; medians are reported.")
FLAGS = flags.FLAGS


def make(name, splits, masked, batch_size, xla=False):
    tf.keras.utils.set_random_seed(0)
    model = networks.build(name, splits.input_shape, splits.num_classes)
    if masked:
        model = adapter.wrap(model)
        rng = np.random.default_rng(0)
        adapter.set_masks(model, {n: (rng.random(m.shape) < 0.5).astype(np.float32)
                                  for n, m in adapter.get_masks(model).items()})
    config = TrainingConfig(optimizer="sgd", learning_rate=0.01, momentum=0.9, batch_size=batch_size,
                                     xla=xla)
    return training.make_trainer(model, config, tf.distribute.get_strategy())


def timed_chunks(trainers, splits, steps, repeats):
    """Seconds per chunk of `steps` steps, the variants alternating chunk by chunk
    so that a slow spell of the machine hits them alike. One untimed chunk first
    (tracing and warm-up)."""
    iterators, seconds = {}, {variant: [] for variant in trainers}
    for variant, trainer in trainers.items():
        iterators[variant] = iter(trainer.strategy.distribute_datasets_from_function(
            lambda c, t=trainer: pipeline.train_batches(splits, t.config.batch_size, 0, 0, c)))
        trainer.train_steps(iterators[variant], tf.constant(steps))
    for _ in range(repeats):
        for variant, trainer in trainers.items():
            start = time.perf_counter()
            float(trainer.train_steps(iterators[variant], tf.constant(steps))[0])
            seconds[variant].append(time.perf_counter() - start)
    return seconds


def compare(label, name, splits, batch_size, steps, xla=False):
    """Prints median examples/s of both variants and their ratio; returns the
    median seconds per step."""
    trainers = {variant: make(name, splits, variant == "masked", batch_size, xla)
                for variant in ("unwrapped", "masked")}
    seconds = timed_chunks(trainers, splits, steps, FLAGS.repeats)
    per_step = {variant: float(np.median(s)) / steps for variant, s in seconds.items()}
    for variant, step in per_step.items():
        spread = f"{min(seconds[variant]) / steps * 1e3:.2f}-{max(seconds[variant]) / steps * 1e3:.2f}"
        print(f"{label:<36} {variant:<10} {batch_size / step:>8.0f} examples/s  "
              f"{step * 1e3:6.2f} ms/step (range {spread})")
    print(f"{label:<36} masked/unwrapped throughput: {per_step['unwrapped'] / per_step['masked']:.3f}")
    return per_step


def main(argv):
    print(f"TensorFlow {tf.__version__}, {len(tf.config.list_logical_devices('CPU'))} CPU device(s), "
          f"{len(tf.config.list_logical_devices('GPU'))} GPU(s)")
    fashion = data.load(DataConfig("fashion_mnist", validation_size=0))
    epoch = data.steps_per_epoch(fashion, 128)
    for xla in (False, True):
        label = "LeNet-300-100 Fashion-MNIST b128" + (" xla" if xla else "")
        per_step = compare(label, "lenet_300_100", fashion, 128, epoch, xla)
        print(f"{label:<36} masked epoch ({epoch} steps, SGD): {epoch * per_step['masked']:.3f} s")
    cifar = data.load(DataConfig("synthetic", synthetic_like="cifar10", validation_size=0))
    compare("ResNet-20 synthetic CIFAR b128", "resnet20", cifar, 128, FLAGS.resnet_steps)


if __name__ == "__main__":
    app.run(main)
