"""The training loop keeps pruned weights at exactly zero after every step."""
import numpy as np
import pytest
import tensorflow as tf

from lth_tf import data, networks, pipeline, training
from lth_tf import tfmot_adapter as adapter
from lth_tf.config import DataConfig, TrainingConfig


def half_masks(model, seed=0):
    rng = np.random.default_rng(seed)
    return {name: (rng.random(mask.shape) < 0.5).astype(np.float32)
            for name, mask in adapter.get_masks(model).items()}


@pytest.mark.parametrize("optimizer, weight_decay", [("sgd", 5e-4), ("adam", 0.0), ("adam", 1e-4)])
def test_masked_weights_are_exactly_zero_after_every_step(mnist1d, optimizer, weight_decay):
    strategy = tf.distribute.get_strategy()
    config = TrainingConfig(optimizer=optimizer, learning_rate=0.05, weight_decay=weight_decay,
                                     batch_size=32, train_steps=8)
    tf.keras.utils.set_random_seed(0)
    model = adapter.wrap(networks.build("mlp_64_32", mnist1d.input_shape, 10))
    trainer = training.make_trainer(model, config, strategy)
    masks = half_masks(model)
    adapter.set_masks(model, masks)
    before = adapter.get_kernels(model)
    iterator = training.batches(trainer, mnist1d, 0)  # the default path: gathered inside the compiled loop
    for _ in range(8):
        trainer.train_steps(iterator, tf.constant(1))
        kernels = adapter.get_kernels(model)  # raw variables, no re-masking
        for name, mask in masks.items():
            assert np.all(kernels[name][mask == 0] == 0.0)
    for name, mask in masks.items():
        assert not np.array_equal(kernels[name][mask > 0], before[name][mask > 0]), "survivors were trained"


def test_learning_rate_schedule_warms_up_and_drops():
    schedule = training.StepSchedule(0.1, milestones=(100, 200), drop=0.1, warmup=10)
    rates = [float(schedule(s)) for s in (0, 4, 9, 50, 99, 100, 199, 200, 500)]
    np.testing.assert_allclose(rates, [0.01, 0.05, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_reset_optimizer_zeroes_moments_and_sets_the_step(mnist1d):
    strategy = tf.distribute.get_strategy()
    config = TrainingConfig(optimizer="sgd", batch_size=32, train_steps=5, eval_every=5, log_every=5)
    model = adapter.wrap(networks.build("mlp_16", mnist1d.input_shape, 10))
    trainer = training.make_trainer(model, config, strategy)
    history = training.train(trainer, mnist1d, 0, 5)
    assert [r["step"] for r in history] == [5]
    assert any(np.any(v.numpy()) for v in trainer.optimizer.variables[1:])
    training.reset_optimizer(trainer, 3)
    assert training.global_step(trainer) == 3
    assert all(not np.any(v.numpy()) for v in trainer.optimizer.variables)  # its own step count too


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_the_first_update_after_a_rewind_is_a_fresh_optimizers(mnist1d, optimizer):
    """Rewound to step k = 5 after 8 steps: the next update equals that of a freshly made
    optimizer from theta_k, with the schedule's rate at step k (Adam's bias correction from
    step 1, SGD's momentum buffer empty), and the global step goes on from k."""
    strategy = tf.distribute.get_strategy()
    config = TrainingConfig(optimizer=optimizer, learning_rate=0.01, milestones=(3,), lr_drop=0.1,
                            batch_size=32, train_steps=10, eval_every=100, log_every=100)
    tf.keras.utils.set_random_seed(0)
    model = adapter.wrap(networks.build("mlp_16", mnist1d.input_shape, 10))
    trainer = training.make_trainer(model, config, strategy)
    theta_k = [v.numpy() for v in model.trainable_variables]
    training.train(trainer, mnist1d, 0, 8)
    for variable, value in zip(model.trainable_variables, theta_k):
        variable.assign(value)
    training.reset_optimizer(trainer, 5)

    images, labels = next(iter(pipeline.train_batches(mnist1d, 32, config.seed, 5)))  # the batch of step 5
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    grads = tape.gradient(loss, model.trainable_variables)
    fresh = (tf.keras.optimizers.Adam(0.001) if optimizer == "adam" else
             tf.keras.optimizers.SGD(0.001, momentum=config.momentum))  # 0.01 x 0.1: the rate at step 5
    copies = [tf.Variable(value) for value in theta_k]
    fresh.apply_gradients(zip(grads, copies))

    training.train(trainer, mnist1d, 5, 6)
    assert training.global_step(trainer) == 6
    for variable, expected in zip(model.trainable_variables, copies):
        np.testing.assert_allclose(variable.numpy(), expected.numpy(), rtol=1e-5, atol=1e-7)


def test_early_stop_picks_the_minimum_validation_loss():
    history = [dict(step=10, val_loss=1.0, test_accuracy=0.5), dict(step=20, val_loss=0.7, test_accuracy=0.6),
               dict(step=30, val_loss=0.9, test_accuracy=0.65)]
    assert training.early_stop(history) == history[1]
    assert training.early_stop([dict(step=5, test_accuracy=0.1)])["step"] == 5


def test_diverging_loss_raises_with_the_step(mnist1d):
    strategy = tf.distribute.get_strategy()
    config = TrainingConfig(optimizer="sgd", learning_rate=1e6, batch_size=32, train_steps=40,
                                     eval_every=10, log_every=10)
    model = adapter.wrap(networks.build("mlp_16", mnist1d.input_shape, 10))
    trainer = training.make_trainer(model, config, strategy)
    with pytest.raises(training.Diverged, match="at step"):
        training.train(trainer, mnist1d, 0, 40)


@pytest.mark.parametrize("name, shape, prunable", [
    ("lenet_300_100", (28, 28, 1), 3), ("mlp_20_20_20", (40,), 4), ("conv2", (32, 32, 3), 5),
    ("conv4", (32, 32, 3), 7), ("conv6", (32, 32, 3), 9), ("vgg16", (32, 32, 3), 14),
    ("vgg19", (32, 32, 3), 17), ("resnet20", (32, 32, 3), 22), ("resnet32", (32, 32, 3), 34),
    ("resnet56", (32, 32, 3), 58), ("resmlp_500_500", (40,), 3),
])
def test_models_wrap_only_dense_and_conv_kernels(name, shape, prunable):
    model = adapter.wrap(networks.build(name, shape, 10))
    layers = adapter.prunable_layers(model)
    assert len(layers) == prunable and list(layers)[-1] == "output"
    masked = adapter.mask_for_variable(model)
    for variable, mask in zip(model.trainable_variables, masked):
        assert (mask is not None) == variable.name.endswith("kernel:0"), variable.name
    assert model(tf.zeros((2, *shape)), training=False).shape == (2, 10)


def test_resnet_width_scales_channels():
    model = networks.build("resnet20", (32, 32, 3), 10, width=32)
    assert model.get_layer("stem").filters == 32 and model.get_layer("s3b1_conv1").filters == 128
    assert model.count_params() > 3 * networks.build("resnet20", (32, 32, 3), 10).count_params()


def test_paper_initialisers_are_untruncated_with_the_right_scale():
    tf.keras.utils.set_random_seed(0)
    lenet = networks.build("lenet_300_100", (28, 28, 1), 10)
    kernel = lenet.get_layer("fc1").kernel.numpy()
    assert kernel.std() == pytest.approx(np.sqrt(2 / (784 + 300)), rel=0.02)
    assert np.abs(kernel).max() > 2.5 * kernel.std()  # a truncated normal stops at 2 std
    resnet = networks.build("resnet20", (32, 32, 3), 10)
    conv = resnet.get_layer("s2b1_conv2").kernel.numpy()
    assert conv.std() == pytest.approx(np.sqrt(2 / (3 * 3 * 32)), rel=0.05)


@pytest.mark.parametrize("strategy_name, xla", [("default", False), ("mirrored", False), ("default", True)],
                         ids=["default", "mirrored", "xla"])
def test_conv_batchnorm_zeros_after_every_step_and_rewound_statistics(strategy_name, xla, request):
    """ResNet-20 (width 4, BatchNorm): pruned kernels exactly 0 after every step on one
    device, on two mirrored replicas and under XLA; rewinding restores the BatchNorm statistics."""
    splits = data.load(DataConfig("synthetic", synthetic_like="cifar10", validation_size=0))
    strategy = (request.getfixturevalue("mirrored_strategy") if strategy_name == "mirrored"
                else tf.distribute.get_strategy())
    config = TrainingConfig(optimizer="sgd", learning_rate=0.1, batch_size=16, train_steps=3, xla=xla)
    with strategy.scope():
        tf.keras.utils.set_random_seed(0)
        model = adapter.wrap(networks.build("resnet20", splits.input_shape, 10, width=4))
        trainer = training.make_trainer(model, config, strategy)
    masks, theta = half_masks(model), adapter.get_state(model)
    training.rewind(trainer, theta, masks, 0)
    iterator = training.batches(trainer, splits, 0)  # tf.data on two replicas, gathered in the loop on one
    for _ in range(3):
        trainer.train_steps(iterator, tf.constant(1))
        kernels = adapter.get_kernels(model)
        for name, mask in masks.items():
            assert np.all(kernels[name][mask == 0] == 0.0), name
    statistics = [key for key in theta if key.endswith(("moving_mean", "moving_variance"))]
    assert len(statistics) == 2 * 21  # the stem, 18 block convs and 2 shortcut convs, each with BatchNorm
    trained = adapter.get_state(model)
    assert all(not np.array_equal(trained[key], theta[key]) for key in statistics)
    training.rewind(trainer, theta, masks, 0)
    rewound = adapter.get_state(model)
    for key in statistics:
        np.testing.assert_array_equal(rewound[key], theta[key])


def test_residual_mlp_adds_the_input_of_equal_width_hidden_layers():
    tf.keras.utils.set_random_seed(0)
    model = networks.build("resmlp_8_8_4", (6,), 3)
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    dense = {name: model.get_layer(name) for name in ("fc1", "fc2", "fc3", "output")}
    h = tf.nn.relu(dense["fc1"](x))
    h = h + tf.nn.relu(dense["fc2"](h))  # 8 -> 8: residual
    h = tf.nn.relu(dense["fc3"](h))      # 8 -> 4: plain
    np.testing.assert_allclose(model(x).numpy(), dense["output"](h).numpy(), rtol=1e-6)


def test_pytorch_init_is_uniform_in_one_over_sqrt_fan_in_biases_included():
    tf.keras.utils.set_random_seed(0)
    model = networks.build("mlp_500", (40,), 10, init="pytorch")
    for name, fan_in in (("fc1", 40), ("output", 500)):
        layer = model.get_layer(name)
        for values in (layer.kernel.numpy(), layer.bias.numpy()):
            bound = fan_in ** -0.5
            assert np.abs(values).max() <= bound and np.abs(values).max() > 0.9 * bound
            assert values.std() == pytest.approx(bound / np.sqrt(3), rel=0.2)  # uniform, not normal


def test_bias_masks_keep_biases_exactly_zero_through_training(mnist1d):
    strategy = training.make_strategy("default")
    with strategy.scope():
        model = adapter.wrap(networks.build("mlp_16", mnist1d.input_shape, 10, init="pytorch"), prune_biases=True)
        masks = adapter.get_masks(model)
        assert set(masks) == {"fc1", "fc1/bias", "output", "output/bias"}
        masks["fc1/bias"][::2] = 0
        adapter.set_masks(model, masks)
        trainer = training.make_trainer(model, TrainingConfig(optimizer="adam", learning_rate=0.01, batch_size=50,
                                                              train_steps=20, eval_every=10, log_every=10), strategy)
    training.train(trainer, mnist1d, 0, 20)
    bias = model.get_layer("prune_low_magnitude_fc1").layer.bias.numpy()
    assert np.all(bias[::2] == 0) and np.all(bias[1::2] != 0)


def test_init_choice_is_refused_for_models_with_their_own_initialiser():
    from lth_tf import models
    from lth_tf.config import ConfigError
    with pytest.raises(ConfigError, match="resnet20 has its paper's initialiser only"):
        models.check_init("resnet20", "pytorch")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mixed_precision_keeps_float32_masks_and_exact_zeros_and_rewinds_the_loss_scale(mnist1d, optimizer):
    """mixed_float16: float16 compute, float32 variables and masks; pruned weights
    exactly 0 after every step; a rewind starts the loss scale over."""
    strategy = tf.distribute.get_strategy()
    config = TrainingConfig(optimizer=optimizer, learning_rate=0.05, batch_size=32, train_steps=6,
                            mixed_precision=True)
    tf.keras.utils.set_random_seed(0)
    with networks.precision(True):
        model = adapter.wrap(networks.build("mlp_64_32", mnist1d.input_shape, 10))
    assert tf.keras.mixed_precision.global_policy().name == "float32"  # only inside the block
    trainer = training.make_trainer(model, config, strategy)
    masks, theta = half_masks(model), adapter.get_state(model)
    training.rewind(trainer, theta, masks, 0)
    inner = adapter.prunable_layers(model)["fc1"].layer
    assert inner.compute_dtype == "float16" and inner.kernel.dtype == tf.float32
    assert all(mask.dtype == tf.float32 for _, _, mask in adapter._masked(model))  # noqa: SLF001
    iterator = training.batches(trainer, mnist1d, 0)
    for _ in range(6):
        loss, _ = trainer.train_steps(iterator, tf.constant(1))
        assert np.isfinite(loss.numpy())
        kernels = adapter.get_kernels(model)
        for name, mask in masks.items():
            assert np.all(kernels[name][mask == 0] == 0.0), name
    assert not np.array_equal(adapter.get_kernels(model)["fc1"], theta["fc1/kernel"] * masks["fc1"])
    assert training.global_step(trainer) == 6  # skipped steps (non-finite scaled gradients) count too
    trainer.optimizer.dynamic_counter.assign(7)
    training.rewind(trainer, theta, masks, 0)
    assert float(trainer.optimizer.loss_scale) == training.INITIAL_LOSS_SCALE
    assert int(trainer.optimizer.dynamic_counter) == 0 and training.global_step(trainer) == 0


def test_xla_auto_compiles_networks_without_convolutions_on_one_replica(mirrored_strategy):
    default = tf.distribute.get_strategy()
    mlp = networks.build("mlp_64_32", (40,), 10)
    conv = networks.build("conv2", (28, 28, 1), 10)
    assert training.use_xla("auto", adapter.wrap(mlp), default)
    assert not training.use_xla("auto", adapter.wrap(conv), default)
    assert not training.use_xla("auto", adapter.wrap(mlp), mirrored_strategy)
    assert training.use_xla(True, conv, default) and not training.use_xla(False, mlp, default)
    with pytest.raises(ValueError, match="single replica"):
        training.use_xla(True, mlp, mirrored_strategy)


@pytest.mark.parametrize("like", ["mnist1d", "cifar10"], ids=["plain", "augmented"])
def test_batches_gathered_in_the_loop_are_the_pipelines_step_for_step(mnist1d, like):
    splits = mnist1d if like == "mnist1d" else data.load(DataConfig("synthetic", synthetic_like="cifar10",
                                                                        validation_size=0))
    epoch = data.steps_per_epoch(splits, 64)
    start = epoch - 3  # the pieces cross an epoch end
    arrays = pipeline.ArrayBatches(splits, 64, 7, start)
    expected = iter(pipeline.train_batches(splits, 64, 7, start))
    pieces = list(arrays.take(5))
    assert [(first, step, n) for _, first, step, n in pieces] == [(epoch - 3, start, 3), (0, epoch, 2)]
    for order, first, step, n in pieces:
        for i in range(n):
            images, labels = pipeline.gather_batch(arrays.x, arrays.y, order[first + i], splits.augment, 7, step + i)
            want_images, want_labels = next(expected)
            np.testing.assert_array_equal(images.numpy(), want_images.numpy())
            np.testing.assert_array_equal(labels.numpy(), want_labels.numpy())
    assert arrays.step == start + 5


@pytest.mark.parametrize("xla", [False, True], ids=["plain", "xla"])
def test_training_from_gathered_batches_equals_training_from_the_pipeline(mnist1d, xla):
    """The default path (batches gathered inside the compiled chunk) trains the
    same steps as the tf.data pipeline: bit for bit without XLA, to float
    tolerance with the whole chunk under XLA."""
    config = TrainingConfig(optimizer="adam", learning_rate=0.01, batch_size=100, train_steps=50, xla=xla)
    strategy = tf.distribute.get_strategy()
    weights = {}
    for source in ("arrays", "pipeline"):
        tf.keras.utils.set_random_seed(0)
        model = adapter.wrap(networks.build("mlp_64_32", mnist1d.input_shape, 10))
        trainer = training.make_trainer(model, config, strategy)
        adapter.set_masks(model, half_masks(model))
        epoch = data.steps_per_epoch(mnist1d, 100)
        batches = (training.batches(trainer, mnist1d, epoch - 10) if source == "arrays" else
                   iter(pipeline.train_batches(mnist1d, 100, 0, epoch - 10)))
        assert isinstance(batches, pipeline.ArrayBatches) == (source == "arrays")
        trainer.train_steps(batches, 25)  # across an epoch end
        weights[source] = adapter.get_state(model)
    for key, value in weights["pipeline"].items():
        if xla:
            np.testing.assert_allclose(weights["arrays"][key], value, rtol=1e-4, atol=1e-6)
        else:
            np.testing.assert_array_equal(weights["arrays"][key], value, err_msg=key)


def test_evaluation_from_the_arrays_equals_the_pipelines(mnist1d):
    tf.keras.utils.set_random_seed(0)
    model = adapter.wrap(networks.build("mlp_64_32", mnist1d.input_shape, 10))
    trainer = training.make_trainer(model, TrainingConfig(batch_size=100), tf.distribute.get_strategy())
    x, y = mnist1d.x_test[:777], mnist1d.y_test[:777]  # a last batch of 277
    from_arrays = training.evaluate(trainer, x, y)
    totals = trainer.evaluate_batches(pipeline.eval_batches(x, y, 500)).numpy()
    assert totals[2] == 777
    assert from_arrays == (training.short_float(totals[0] / totals[2]), float(totals[1]) / float(totals[2]))
