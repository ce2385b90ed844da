"""Training throughput with tfmot masks vs the identical unwrapped model.

    python benchmarks/throughput.py [--repeats=7] [--resnet_steps=10] [--mirrored [--cpu_devices=2]]

Both models run the same lth_tf training loop (training.make_trainer) on the
same batches; the masked model carries 50%-density masks in every prunable
layer. Each chunk (one LeNet epoch, or --resnet_steps ResNet steps) is one
compiled call, the variants alternating chunk by chunk. Rows: LeNet-300-100 on
Fashion-MNIST at batch 128 (SGD) in the default path (--xla unset: auto) and
with XLA forced off and on; ResNet-20 on CIFAR-shaped data at batch 128, and
with --mixed_precision when a GPU is present; with --mirrored, both again under
MirroredStrategy on the available devices (GPUs, else --cpu_devices logical
CPUs). Ends with one table of medians: ms/step, masked/unwrapped, and the
masked LeNet epoch (468 steps).
"""
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

import lth_tf  # noqa: F401
from lth_tf import data, networks, training
from lth_tf import tfmot_adapter as adapter
from lth_tf.config import DataConfig, TrainingConfig
from readme_block import provenance, write_block

flags.DEFINE_integer("resnet_steps", 10, "ResNet-20 steps per timed chunk.")
flags.DEFINE_integer("repeats", 11, "Timed chunks per variant, alternating between variants; medians are reported.")
flags.DEFINE_bool("mirrored", False, "Also run both models under MirroredStrategy on the available devices.")
flags.DEFINE_integer("cpu_devices", 2, "Logical CPUs for --mirrored when there is no GPU.")
flags.DEFINE_string("readme", "", "Also write the table into this file, between its <!-- throughput --> and "
                    "<!-- /throughput --> lines (make benchmark: docs/speed.md).")
FLAGS = flags.FLAGS


def make(name, splits, masked, batch_size, strategy, xla="auto", mixed=False):
    with strategy.scope(), networks.precision(mixed):
        tf.keras.utils.set_random_seed(0)
        model = networks.build(name, splits.input_shape, splits.num_classes)
        if masked:
            model = adapter.wrap(model)
            rng = np.random.default_rng(0)
            adapter.set_masks(model, {n: (rng.random(m.shape) < 0.5).astype(np.float32)
                                      for n, m in adapter.get_masks(model).items()})
        config = TrainingConfig(optimizer="sgd", learning_rate=0.01, momentum=0.9, batch_size=batch_size,
                                xla=xla, mixed_precision=mixed)
        return training.make_trainer(model, config, strategy)


def timed_chunks(trainers, splits, steps, repeats):
    """Seconds per chunk of `steps` steps, the variants alternating chunk by chunk
    so that a slow spell of the machine hits them alike. One untimed chunk first
    (tracing and warm-up)."""
    iterators, seconds = {}, {variant: [] for variant in trainers}
    for variant, trainer in trainers.items():
        iterators[variant] = training.batches(trainer, splits, 0)  # as training.train feeds the steps
        trainer.train_steps(iterators[variant], steps)
    for _ in range(repeats):
        for variant, trainer in trainers.items():
            start = time.perf_counter()
            float(trainer.train_steps(iterators[variant], steps)[0])
            seconds[variant].append(time.perf_counter() - start)
    return seconds


def compare(label, name, splits, batch_size, steps, strategy, **options) -> tuple[dict, dict]:
    """Prints median examples/s of both variants; returns the median and the
    best (fastest chunk's) seconds per step of each: on a machine shared with
    others, noise only ever adds time, so the best chunks show the code's own cost."""
    trainers = {variant: make(name, splits, variant == "masked", batch_size, strategy, **options)
                for variant in ("unwrapped", "masked")}
    seconds = timed_chunks(trainers, splits, steps, FLAGS.repeats)
    per_step = {variant: float(np.median(s)) / steps for variant, s in seconds.items()}
    best = {variant: min(s) / steps for variant, s in seconds.items()}
    for variant, step in per_step.items():
        spread = f"{best[variant] * 1e3:.2f}-{max(seconds[variant]) / steps * 1e3:.2f}"
        print(f"{label:<44} {variant:<10} {batch_size / step:>8.0f} examples/s  "
              f"{step * 1e3:7.2f} ms/step (range {spread})", flush=True)
    return per_step, best


def main(argv):
    del argv
    if FLAGS.mirrored and not tf.config.list_physical_devices("GPU"):
        training.split_cpu(FLAGS.cpu_devices)
    gpu = bool(tf.config.list_logical_devices("GPU"))
    default = tf.distribute.get_strategy()
    print(f"TensorFlow {tf.__version__}, {len(tf.config.list_logical_devices('CPU'))} CPU device(s), "
          f"{len(tf.config.list_logical_devices('GPU'))} GPU(s)")
    fashion = data.load(DataConfig("fashion_mnist", validation_size=0))
    cifar = data.load(DataConfig("synthetic", synthetic_like="cifar10", validation_size=0))
    epoch = data.steps_per_epoch(fashion, 128)
    lenet = ("lenet_300_100", fashion, 128, epoch)
    resnet = ("resnet20", cifar, 128, FLAGS.resnet_steps)
    rows = [("LeNet-300-100, Fashion-MNIST, b128 (default: --xla auto)", lenet, default, {}),
            ("LeNet-300-100, same, --noxla", lenet, default, dict(xla=False)),
            ("LeNet-300-100, same, --xla", lenet, default, dict(xla=True)),
            ("ResNet-20, CIFAR-shaped, b128 (default)", resnet, default, {})]
    if gpu:
        rows.append(("ResNet-20, same, --mixed_precision", resnet, default, dict(mixed=True)))
    if FLAGS.mirrored:
        mirrored = training.make_strategy("mirrored")
        where = f"{mirrored.num_replicas_in_sync} {'GPUs' if gpu else 'logical CPUs'}"
        rows += [(f"LeNet-300-100, mirrored on {where}", lenet, mirrored, {}),
                 (f"ResNet-20, mirrored on {where}", resnet, mirrored, {})]
    table = []
    for label, (name, splits, batch, steps), strategy, options in rows:
        per_step, best = compare(label, name, splits, batch, steps, strategy, **options)
        epochs = (f"{epoch * per_step['masked']:.3f} / {epoch * best['masked']:.3f}" if name == "lenet_300_100"
                  else "-")
        table.append(f"| {label} | {per_step['unwrapped'] * 1e3:.2f} | {per_step['masked'] * 1e3:.2f} | "
                     f"{per_step['unwrapped'] / per_step['masked']:.3f} / {best['unwrapped'] / best['masked']:.3f} "
                     f"| {epochs} |")
    lines = [f"{provenance()}: {FLAGS.repeats} alternating chunks (LeNet: one epoch, {epoch} steps; "
             f"ResNet: {FLAGS.resnet_steps} steps), SGD; median / best chunk.", "",
             "| workload | unwrapped ms/step | masked ms/step | masked/unwrapped: median / best "
             "| masked LeNet epoch (s): median / best |",
             "| --- | --- | --- | --- | --- |", *table]
    print("\n" + "\n".join(lines))
    if FLAGS.readme:
        write_block(FLAGS.readme, "throughput", lines)


if __name__ == "__main__":
    app.run(main)
