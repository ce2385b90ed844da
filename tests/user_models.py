"""Builders a researcher might write, good and bad, for the tests of your own
model and data. Importable as `user_models` (pytest puts tests/ on sys.path)
and, from the repository root, as `tests.user_models` (--model=tests.user_models:NAME)."""
import lth_tf  # noqa: F401  (tf.keras is tf_keras)
import tensorflow as tf
import tensorflow_model_optimization as tfmot

L = tf.keras.layers


def small_cnn(input_shape, num_classes):
    """A CNN with BatchNorm and a depthwise convolution; every layer named by Keras."""
    inputs = tf.keras.Input(input_shape)
    x = L.Conv2D(6, 3, padding="same", use_bias=False)(inputs)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, padding="same")(x)
    x = L.MaxPool2D(2)(x)
    x = L.Flatten()(x)
    x = L.Dense(16, activation="relu")(x)
    return tf.keras.Model(inputs, L.Dense(num_classes)(x))


def sequential_mlp():
    """No arguments, no input shape: lth_tf builds it for the data."""
    return tf.keras.Sequential([L.Flatten(), L.Dense(12, activation="relu"), L.Dense(4)])


def returns_nothing(input_shape, num_classes):
    tf.keras.Sequential([L.Dense(num_classes)])


class Subclassed(tf.keras.Model):
    def __init__(self, num_classes):
        super().__init__()
        self.flatten, self.dense = L.Flatten(), L.Dense(num_classes)

    def call(self, inputs):
        return self.dense(self.flatten(inputs))


def subclassed(num_classes):
    return Subclassed(num_classes)


def keras3(input_shape, num_classes):
    import keras  # Keras 3, TensorFlow's default Keras since 2.16
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_classes)])


def no_prunable_layer(input_shape):
    """8x8 images to 4 outputs by pooling alone."""
    inputs = tf.keras.Input(input_shape)
    return tf.keras.Model(inputs, L.Flatten()(L.AveragePooling2D(4)(inputs)))


def three_outputs(input_shape):
    return tf.keras.Sequential([tf.keras.Input(input_shape), L.Flatten(), L.Dense(3)])


def softmax_output(input_shape, num_classes):
    return tf.keras.Sequential([tf.keras.Input(input_shape), L.Flatten(), L.Dense(num_classes, "softmax")])


def needs_width(input_shape, width):
    return tf.keras.Sequential([tf.keras.Input(input_shape), L.Flatten(), L.Dense(width)])


def nested(input_shape, num_classes):
    inputs = tf.keras.Input(input_shape)
    block = tf.keras.Sequential([L.Flatten(), L.Dense(8)])
    return tf.keras.Model(inputs, L.Dense(num_classes)(block(inputs)))


def softmax_layer(input_shape, num_classes):
    return tf.keras.Sequential([tf.keras.Input(input_shape), L.Flatten(), L.Dense(num_classes),
                                L.Activation("softmax", name="activation")])


def slash_in_a_name(input_shape, num_classes):
    return tf.keras.Sequential([tf.keras.Input(input_shape), L.Flatten(), L.Dense(num_classes, name="block/fc")])


class Scale(L.Layer, tfmot.sparsity.keras.PrunableLayer):
    """A custom layer that tells tfmot which of its weights to prune."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=input_shape[1:], initializer="ones")

    def call(self, inputs):
        return inputs * self.w

    def get_prunable_weights(self):
        return [self.w]


def with_a_prunable_custom_layer(input_shape, num_classes):
    inputs = tf.keras.Input(input_shape)
    x = Scale(name="scale")(L.Flatten()(inputs))
    x = L.Dense(10, activation="relu", name="hidden")(x)
    return tf.keras.Model(inputs, L.Dense(num_classes, name="logits")(x))


NOT_A_FUNCTION = 3


def svd_mlp(input_shape, num_classes):
    """An MLP with a layer TFLite cannot convert (a singular value decomposition), named 'svd'."""
    inputs = tf.keras.Input(input_shape)
    x = L.Dense(16, activation="relu")(L.Flatten()(inputs))
    x = L.Lambda(lambda h: tf.linalg.svd(tf.reshape(h, [-1, 4, 4]), compute_uv=False), name="svd")(x)
    return tf.keras.Model(inputs, L.Dense(num_classes)(x))
