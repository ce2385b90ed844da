"""Your own Keras model and your own arrays through lth_tf: winning tickets of a
small 1-D CNN with BatchNorm, with both controls, in a run directory that
lth_tf.report, lth_tf.analyze, TensorBoard and the exported SavedModels use.

    python -m examples.own_cnn --output_dir=runs/own_cnn             # the Python API
    python -m lth_tf.main --model=examples.own_cnn:build \\
        --dataset=npz:runs/own_cnn/data.npz --output_dir=runs/own_cnn_cli \\
        --rounds=5 --train_steps=2000 --controls=reinit,random_prune --optimizer=adam \\
        --learning_rate=1e-3 --batch_size=64 --prune_rate_fc=0.2 --prune_rate_conv=0.1 \\
        --prune_rate_output=0.1                                       # the same experiment from the shell

Run as a module (-m), the script's builder is recorded as examples.own_cnn:build,
which `python -m lth_tf.analyze` imports to train the analyses that train;
`python examples/own_cnn.py` records __main__:build, which only this script builds.

The arrays here are MNIST-1D (40-point signals, 10 classes) as a researcher
would hold them in memory; any (x_train, y_train, x_test, y_test) with
integer labels works the same way.
"""
import argparse

import lth_tf  # first: it makes tf.keras Keras 2 (tf_keras), which tfmot's pruning wrappers need
import tensorflow as tf


def build(input_shape, num_classes):
    """Called with the data's example shape and class count, under lth_tf's seed (Keras draws the weights)."""
    inputs = tf.keras.Input(input_shape)
    x = tf.keras.layers.Reshape((*input_shape, 1))(inputs)  # 40 points, one channel
    for filters in (16, 32):
        x = tf.keras.layers.Conv1D(filters, 5, padding="same", use_bias=False)(x)
        x = tf.keras.layers.BatchNormalization()(x)
        x = tf.keras.layers.ReLU()(x)
        x = tf.keras.layers.MaxPool1D(2)(x)
    x = tf.keras.layers.Flatten()(x)
    x = tf.keras.layers.Dense(64, activation="relu")(x)
    outputs = tf.keras.layers.Dense(num_classes)(x)  # logits: the last Dense layer is the output layer
    return tf.keras.Model(inputs, outputs)


def arrays():
    """(x_train, y_train, x_test, y_test): MNIST-1D, generated offline by the mnist1d package."""
    from mnist1d.data import get_dataset_args, make_dataset
    generated = make_dataset(get_dataset_args())
    return generated["x"], generated["y"], generated["x_test"], generated["y_test"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="runs/own_cnn")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train_steps", type=int, default=2000)
    args = parser.parse_args()
    runs = lth_tf.find_tickets(build, data=arrays(), output_dir=args.output_dir, rounds=args.rounds,
                               train_steps=args.train_steps, controls=["reinit", "random_prune"],
                               optimizer="adam", learning_rate=1e-3, batch_size=64,
                               prune_rate_fc=0.2, prune_rate_conv=0.1, prune_rate_output=0.1)
    print(runs.summary())
    print(f"run directory: {runs.output_dir} (python -m lth_tf.report --output_dir={runs.output_dir})")


if __name__ == "__main__":
    main()
