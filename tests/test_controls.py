"""The controls registry (reinit, random_prune, reinit_rescaled,
reinit_signed, shuffle_layerwise) on plain arrays and in the driver, and the
--initializer families."""
import dataclasses
import logging

import numpy as np
import pytest

from conftest import run_tiny, tiny_config
from lth_tf import config as config_lib
from lth_tf import controls, lottery, networks, pruning, rundir
from lth_tf.config import ModelConfig

SIGMA = 0.05


def fresh(seed):
    """An 'initialiser': Gaussian kernels of sd SIGMA, biases 0.1 (so it is visible where they come from)."""
    rng = np.random.default_rng(seed)
    return {"fc1/kernel": rng.normal(0, SIGMA, (400, 300)).astype(np.float32),
            "fc1/bias": np.full(300, 0.1, np.float32),
            "output/kernel": rng.normal(0, SIGMA, (300, 10)).astype(np.float32),
            "output/bias": np.full(10, 0.1, np.float32)}


@pytest.fixture()
def ticket():
    """theta_k and masks of density 0.2 (fc1) and 0.5 (output)."""
    rng = np.random.default_rng(123)
    theta_k = fresh(99)
    masks = {"fc1": (rng.random((400, 300)) < 0.2).astype(np.float32),
             "output": (rng.random((300, 10)) < 0.5).astype(np.float32)}
    return theta_k, masks


def test_the_registry_holds_the_configs_controls_and_keeps_the_old_seeds():
    assert tuple(controls.CONTROLS) == config_lib.CONTROL_NAMES
    # control seeds come from the position in config.CONTROL_NAMES: runs made before must resume with the same ones
    assert config_lib.CONTROL_NAMES[:2] == ("reinit", "random_prune")
    assert [lottery.control_seed(0, 1, "reinit"), lottery.control_seed(0, 1, "random_prune"),
            lottery.control_seed(0, 3, "reinit")] == [901243215, 3884055042, 3679268941]  # as lth_tf made them before


def test_reinit_rescaled_restores_the_dense_per_unit_variance_with_exact_zeros(ticket):
    theta_k, masks = ticket
    weights, same_masks = controls.reinit_rescaled(theta_k, masks, 7, fresh)
    assert same_masks is masks
    kernel, mask = weights["fc1/kernel"], masks["fc1"]
    assert np.all(kernel[mask == 0] == 0.0)
    fan_in = kernel.shape[0]
    # each unit's summed input variance: sum over its surviving inputs of w^2, against fan_in x sigma^2 (dense)
    per_unit = (kernel ** 2).sum(axis=0)
    assert per_unit.mean() == pytest.approx(fan_in * SIGMA ** 2, rel=0.03)
    plain, _ = controls.reinit(theta_k, masks, 7, fresh)
    assert (plain["fc1/kernel"] ** 2).sum(axis=0).mean() == pytest.approx(0.2 * fan_in * SIGMA ** 2, rel=0.05)
    np.testing.assert_array_equal(kernel[mask > 0], plain["fc1/kernel"][mask > 0] / np.float32(np.sqrt(mask.mean())))
    np.testing.assert_array_equal(weights["fc1/bias"], fresh(7)["fc1/bias"])  # biases: fresh, not rescaled


def test_reinit_signed_keeps_every_sign_of_theta_k_with_fresh_magnitudes(ticket):
    theta_k, masks = ticket
    weights, _ = controls.reinit_signed(theta_k, masks, 7, fresh)
    for layer, mask in masks.items():
        kernel, alive = weights[f"{layer}/kernel"], mask > 0
        np.testing.assert_array_equal(np.sign(kernel[alive]), np.sign(theta_k[f"{layer}/kernel"][alive]))
        np.testing.assert_array_equal(np.abs(kernel[alive]), np.abs(fresh(7)[f"{layer}/kernel"][alive]))
        assert np.all(kernel[~alive] == 0)


def test_shuffle_layerwise_keeps_each_layers_count_and_values_and_moves_them(ticket):
    theta_k, masks = ticket
    weights, shuffled = controls.shuffle_layerwise(theta_k, masks, 7, fresh)
    for layer, mask in masks.items():
        kernel = weights[f"{layer}/kernel"]
        assert shuffled[layer].sum() == mask.sum()
        assert not np.array_equal(shuffled[layer], mask)
        np.testing.assert_array_equal(np.sort(kernel[shuffled[layer] > 0]),
                                      np.sort(theta_k[f"{layer}/kernel"][mask > 0]))
        assert np.all(kernel[shuffled[layer] == 0] == 0)
        np.testing.assert_array_equal(weights[f"{layer}/bias"], theta_k[f"{layer}/bias"])
    again, _ = controls.shuffle_layerwise(theta_k, masks, 7, fresh)
    np.testing.assert_array_equal(again["fc1/kernel"], weights["fc1/kernel"])  # its seed fixes it


def test_random_prune_keeps_counts_and_theta_k_under_its_mask(ticket):
    theta_k, masks = ticket
    weights, random = controls.random_prune(theta_k, masks, 7, fresh)
    assert {k: m.sum() for k, m in random.items()} == {k: m.sum() for k, m in masks.items()}
    np.testing.assert_array_equal(weights["fc1/kernel"], theta_k["fc1/kernel"] * random["fc1"])


def test_every_control_trains_in_the_driver_and_saves_its_own_masks(mnist1d, tmp_path):
    experiment, rows = run_tiny(mnist1d, tmp_path, rounds=1, controls=config_lib.CONTROL_NAMES)
    assert [r["branch"] for r in rows if r["round"] == 1] == ["ticket", *config_lib.CONTROL_NAMES]
    ticket_masks = lottery.round_masks(experiment, 1)
    for branch in config_lib.CONTROL_NAMES:
        weights = rundir.load_arrays(tmp_path / "round_01" / branch / "weights.npz")
        own = tmp_path / "round_01" / branch / "masks.npz"
        masks = rundir.load_arrays(own) if own.exists() else ticket_masks
        assert own.exists() == (branch in ("random_prune", "shuffle_layerwise"))
        for key, mask in masks.items():
            assert mask.sum() == ticket_masks[key].sum()
            assert np.all(weights[pruning.variable_of(key)][mask == 0] == 0), (branch, key)


def test_a_collapsed_layer_is_warned_about_and_the_run_goes_on(mnist1d, tmp_path, monkeypatch, caplog):
    prune = pruning.prune

    def collapse_fc2(*args):
        return {**prune(*args), "fc2": np.zeros((32, 16), np.float32)}
    monkeypatch.setattr(pruning, "prune", collapse_fc2)
    with caplog.at_level(logging.WARNING):
        _, rows = run_tiny(mnist1d, tmp_path, rounds=1, controls=())
    assert "layer fc2 (layer collapse)" in caplog.text
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert float(rows[1]["test_accuracy"]) < 0.2  # a constant output: one class of ten


# The variance of one entry of a 300 x 400 kernel, by each family's definition.
VARIANCES = {"glorot_normal": 2 / 700, "glorot_uniform": 2 / 700, "he_normal": 2 / 300, "he_uniform": 2 / 300,
             "lecun_normal": 1 / 300, "orthogonal": 1 / 400,
             "truncated_normal": 0.01 * 0.7737413}  # N(0, 0.1^2) redrawn beyond 2 sd


@pytest.mark.parametrize("name", sorted(VARIANCES))
def test_each_initializer_has_the_variance_of_its_definition(name):
    import tensorflow as tf
    tf.keras.utils.set_random_seed(0)
    model = networks.build("mlp_400", (300,), 10, initializer=name)
    kernel = model.get_layer("fc1").kernel.numpy()
    assert kernel.var() == pytest.approx(VARIANCES[name], rel=0.03)
    assert abs(kernel.mean()) < 0.1 * kernel.std()
    if name.endswith("uniform"):
        assert np.abs(kernel).max() <= np.sqrt(3 * VARIANCES[name]) * (1 + 1e-6)
    if name == "orthogonal":
        np.testing.assert_allclose(kernel @ kernel.T, np.eye(300), atol=1e-5)
    if name == "truncated_normal":
        assert np.abs(kernel).max() <= 0.2
    assert not model.get_layer("fc1").bias.numpy().any()  # biases keep --init's (zero by default)


def test_the_initializer_draws_theta_0_and_the_reinit_controls(mnist1d):
    config = dataclasses.replace(tiny_config(), model=ModelConfig("mlp_256", initializer="he_uniform"))
    for seed in (0, lottery.control_seed(0, 1, "reinit")):
        kernel = lottery.initial_state(config, mnist1d, seed)["fc1/kernel"]
        assert kernel.var() == pytest.approx(2 / 40, rel=0.05)
        assert np.abs(kernel).max() <= np.sqrt(6 / 40)


def hand_made():
    """theta_k, masks (fc1 with a masked bias, fc2 pruned away entirely) and fresh(seed) of two small layers."""
    rng = np.random.default_rng(0)
    theta = {"fc1/kernel": rng.normal(size=(6, 5)).astype(np.float32), "fc1/bias": rng.normal(size=5).astype(
        np.float32), "fc2/kernel": rng.normal(size=(5, 3)).astype(np.float32)}
    masks = {"fc1": (rng.random((6, 5)) < 0.4).astype(np.float32), "fc1/bias": np.array([1, 0, 1, 1, 0], np.float32),
             "fc2": np.zeros((5, 3), np.float32)}

    def fresh(seed):
        generator = np.random.default_rng(seed)
        return {key: generator.normal(size=value.shape).astype(np.float32) for key, value in theta.items()}
    return theta, masks, fresh


def test_random_prune_places_the_tickets_counts_among_the_allowed_positions_by_its_seed():
    theta, masks, fresh = hand_made()
    allowed = {key: np.ones_like(mask) for key, mask in masks.items()}
    allowed["fc1"][:3] = 0  # the first three rows were removed for good
    weights, random = controls.random_prune(theta, masks, 7, fresh, allowed)
    assert not (random["fc1"] * (1 - allowed["fc1"])).any() and random["fc1"].sum() == masks["fc1"].sum()
    assert all(random[k].dtype == np.float32 for k in random)
    again = controls.random_prune(theta, masks, 7, fresh, allowed)[1]
    other = controls.random_prune(theta, masks, 8, fresh, allowed)[1]
    assert np.array_equal(again["fc1"], random["fc1"]) and not np.array_equal(other["fc1"], random["fc1"])
    np.testing.assert_array_equal(weights["fc1/kernel"], theta["fc1/kernel"] * random["fc1"])


def test_reinit_rescaled_rescales_kernels_only_and_leaves_a_layer_pruned_away_at_zero():
    theta, masks, fresh = hand_made()
    weights, _ = controls.reinit_rescaled(theta, masks, 3, fresh)
    new = fresh(3)
    np.testing.assert_allclose(weights["fc1/kernel"], new["fc1/kernel"] * masks["fc1"] / np.sqrt(masks["fc1"].mean()),
                               rtol=1e-6)
    np.testing.assert_array_equal(weights["fc1/bias"], new["fc1/bias"] * masks["fc1/bias"])  # not summed over inputs
    np.testing.assert_array_equal(weights["fc2/kernel"], np.zeros((5, 3), np.float32))
    assert all(value.dtype == np.float32 for value in weights.values())


def test_reinit_signed_gives_a_zero_theta_k_weight_a_zero():
    theta, masks, fresh = hand_made()
    theta["fc1/kernel"][np.unravel_index(np.argmax(masks["fc1"]), (6, 5))] = 0  # a kept weight that is exactly 0
    weights, _ = controls.reinit_signed(theta, masks, 3, fresh)
    assert np.isfinite(weights["fc1/kernel"]).all()
    expected = np.abs(fresh(3)["fc1/kernel"]) * np.sign(theta["fc1/kernel"]) * masks["fc1"]
    np.testing.assert_array_equal(weights["fc1/kernel"], expected)


def test_shuffle_layerwise_moves_weights_only_among_the_allowed_positions():
    theta, masks, fresh = hand_made()
    allowed = {key: np.ones_like(mask) for key, mask in masks.items()}
    allowed["fc1"][:3] = 0
    masks = dict(masks, fc1=masks["fc1"] * allowed["fc1"])  # the ticket keeps only allowed weights
    weights, shuffled = controls.shuffle_layerwise(theta, masks, 5, fresh, allowed)
    assert not (shuffled["fc1"] * (1 - allowed["fc1"])).any() and shuffled["fc1"].sum() == masks["fc1"].sum()
    assert sorted(weights["fc1/kernel"][shuffled["fc1"] > 0]) == sorted(theta["fc1/kernel"][masks["fc1"] > 0])
    assert shuffled["fc1"].dtype == np.float32 and weights["fc1/kernel"].dtype == np.float32
