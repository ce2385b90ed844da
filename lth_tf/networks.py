"""Keras builders of the registry's model families (models.py has the names):
plain, unwrapped functional models; tfmot_adapter wraps them."""
import contextlib

import tensorflow as tf

from lth_tf import models


# The papers' initialisers are untruncated Gaussians (PyTorch xavier_normal_ and
# kaiming_normal_); Keras' GlorotNormal/HeNormal truncate, hence VarianceScaling.
def glorot_normal():
    return tf.keras.initializers.VarianceScaling(1.0, "fan_avg", "untruncated_normal")


def he_normal():
    return tf.keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")


def pytorch_default(fan_in: int) -> dict:
    """PyTorch's nn.Linear / nn.Conv2d initialisation: kernel and bias both
    uniform in +-1/sqrt(fan_in) (kaiming_uniform_ with a=sqrt(5) for the kernel)."""
    bound = fan_in ** -0.5
    return dict(kernel_initializer=tf.keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
                bias_initializer=tf.keras.initializers.RandomUniform(-bound, bound))


def kernel_initializer(name: str):
    """--initializer's families by their definitions (the variance of one
    entry, fans as Keras counts them: a conv kernel's fan in is k x k x c_in)."""
    return {
        "glorot_normal": lambda: tf.keras.initializers.VarianceScaling(1.0, "fan_avg", "untruncated_normal"),
        "glorot_uniform": lambda: tf.keras.initializers.VarianceScaling(1.0, "fan_avg", "uniform"),  # 2/(in+out)
        "he_normal": he_normal,                                                                      # 2/in
        "he_uniform": lambda: tf.keras.initializers.VarianceScaling(2.0, "fan_in", "uniform"),
        "lecun_normal": lambda: tf.keras.initializers.VarianceScaling(1.0, "fan_in", "untruncated_normal"),
        "orthogonal": lambda: tf.keras.initializers.Orthogonal(1.0),  # 1/max(rows, columns) of the flat kernel
        "truncated_normal": lambda: tf.keras.initializers.TruncatedNormal(0.0, 0.1),  # N(0, 0.01) cut at 2 sd
    }[name]()


def layer_init(init: str = "default", initializer: str = ""):
    """f(fan_in, paper kernel initialiser) -> a Dense/Conv layer's initialiser
    arguments: the paper's kernel and zero bias ('default') or PyTorch's
    defaults ('pytorch'), the kernel replaced by --initializer's family if given."""
    def arguments(fan_in: int, paper_kernel=glorot_normal) -> dict:
        made = pytorch_default(fan_in) if init == "pytorch" else dict(kernel_initializer=paper_kernel())
        if initializer:
            made["kernel_initializer"] = kernel_initializer(initializer)
        return made
    return arguments


def dense(x, units, name, activation=None, init=layer_init()):
    return tf.keras.layers.Dense(units, activation, name=name, **init(x.shape[-1]))(x)


def mlp(widths, input_shape, num_classes, width=None, init=layer_init()):
    """Fully connected ReLU network; LeNet-300-100 is mlp((300, 100))."""
    inputs = tf.keras.Input(input_shape, name="inputs")
    x = tf.keras.layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(widths, start=1):
        x = dense(x, units, f"fc{i}", "relu", init)
    outputs = dense(x, num_classes, "output", init=init)
    return tf.keras.Model(inputs, outputs, name="mlp_" + "_".join(map(str, widths)))


def residual_mlp(widths, input_shape, num_classes, width=None, init=layer_init()):
    """MLP whose hidden layers after the first add their input where the widths
    match, h <- h + relu(W h + b): the network of the MNIST-1D paper's
    lottery-ticket notebook (Greydanus & Kobak), resmlp((500, 500))."""
    inputs = tf.keras.Input(input_shape, name="inputs")
    x = tf.keras.layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(widths, start=1):
        y = dense(x, units, f"fc{i}", "relu", init)
        x = tf.keras.layers.Add(name=f"residual{i}")([x, y]) if i > 1 and x.shape[-1] == units else y
    outputs = dense(x, num_classes, "output", init=init)
    return tf.keras.Model(inputs, outputs, name="resmlp_" + "_".join(map(str, widths)))


def conv_net(stages, input_shape, num_classes, width=None, init=layer_init()):
    """Conv-2/4/6 of Frankle & Carbin (2019), Figure 2: pairs of 3x3 convs, each
    pair followed by 2x2 max pooling, then FC 256-256-output."""
    inputs = tf.keras.Input(input_shape, name="inputs")
    x, n = inputs, 0
    for filters in stages:
        for _ in range(2):
            n += 1
            x = tf.keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{n}",
                                       **init(9 * x.shape[-1]))(x)
        x = tf.keras.layers.MaxPool2D(2, name=f"pool{n // 2}")(x)
    x = tf.keras.layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = dense(x, 256, f"fc{i}", "relu", init)
    outputs = dense(x, num_classes, "output", init=init)
    return tf.keras.Model(inputs, outputs, name="conv%d" % (2 * len(stages)))


VGG_PLANS = {  # open_lth cifar_vgg plans: integers are conv widths, "M" max pooling
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512],
}


def vgg(depth, input_shape, num_classes, width=None, init=layer_init()):
    """CIFAR VGG with BatchNorm as in open_lth: conv-BN-ReLU blocks, 2x2 average
    pooling of the last feature map, one linear classifier."""
    inputs = tf.keras.Input(input_shape, name="inputs")
    x, n = inputs, 0
    for item in VGG_PLANS[depth]:
        if item == "M":
            x = tf.keras.layers.MaxPool2D(2, name=f"pool{n}")(x)
            continue
        n += 1
        x = tf.keras.layers.Conv2D(item, 3, padding="same", name=f"conv{n}", **init(9 * x.shape[-1], he_normal))(x)
        x = tf.keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"bn{n}")(x)
        x = tf.keras.layers.ReLU(name=f"relu{n}")(x)
    x = tf.keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = tf.keras.layers.Dense(num_classes, name="output", **init(x.shape[-1], he_normal))(x)
    return tf.keras.Model(inputs, outputs, name=f"vgg{depth}")


def resnet(depth, input_shape, num_classes, width=None, init=layer_init()):
    """CIFAR ResNet of He et al. (2016) as in open_lth: 3 stages of (depth-2)/6
    basic blocks, widths w, 2w, 4w (w = 16 by default), 1x1 conv shortcuts
    where the shape changes."""
    width = width or 16
    blocks = (depth - 2) // 6

    def conv_bn(x, filters, kernel, stride, name):
        kernel_init = init(kernel * kernel * x.shape[-1], he_normal)["kernel_initializer"]  # no bias
        x = tf.keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name,
                                   kernel_initializer=kernel_init)(x)
        return tf.keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name + "_bn")(x)

    inputs = tf.keras.Input(input_shape, name="inputs")
    x = tf.keras.layers.ReLU(name="stem_relu")(conv_bn(inputs, width, 3, 1, "stem"))
    for stage in range(3):
        filters = width * 2 ** stage
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"s{stage + 1}b{block + 1}"
            y = tf.keras.layers.ReLU(name=name + "_relu1")(conv_bn(x, filters, 3, stride, name + "_conv1"))
            y = conv_bn(y, filters, 3, 1, name + "_conv2")
            if stride != 1 or x.shape[-1] != filters:
                x = conv_bn(x, filters, 1, stride, name + "_shortcut")
            x = tf.keras.layers.ReLU(name=name + "_relu2")(tf.keras.layers.Add(name=name + "_add")([x, y]))
    x = tf.keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    outputs = tf.keras.layers.Dense(num_classes, name="output", **init(x.shape[-1], he_normal))(x)
    return tf.keras.Model(inputs, outputs, name=f"resnet{depth}")


def build(name: str, input_shape, num_classes: int, width: int | None = None, init: str = "default",
          initializer: str = ""):
    """Builds the named model with fresh weights from the global TF seed."""
    models.check_input(name, input_shape)
    models.check_init(name, init, initializer)
    family, argument = models.spec(name)
    return FAMILIES[family](argument, input_shape, num_classes, width, init=layer_init(init, initializer))


@contextlib.contextmanager
def precision(mixed: bool):
    """Layers built inside compute in float16 with float32 variables
    (mixed_float16) when `mixed`, in float32 otherwise."""
    with dtype_policy("mixed_float16" if mixed else "float32"):
        yield


@contextlib.contextmanager
def dtype_policy(name: str):
    """Layers built inside take Keras's dtype policy `name` ("float32",
    "mixed_float16", "float64"). The previous policy comes back after; one
    that only followed floatx is unset again, so that it follows floatx still
    (an explicit "float32" policy would ignore a later set_floatx)."""
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        followed_floatx = previous.name == tf.keras.backend.floatx()
        tf.keras.mixed_precision.set_global_policy(None if followed_floatx else previous)


FAMILIES = {"mlp": mlp, "resmlp": residual_mlp, "conv": conv_net, "vgg": vgg, "resnet": resnet}
