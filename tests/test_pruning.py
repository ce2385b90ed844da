"""Pruning rules on plain arrays: exact counts, exact densities, determinism."""
import numpy as np
import pytest

from lth_tf import pruning
from lth_tf.config import PruningConfig


def random_layers(seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"fc1": (40, 32), "fc2": (32, 16), "output": (16, 10)}
    weights = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    return weights, pruning.dense_masks(shapes)


def expected_survivors(count, rate, rounds):
    for _ in range(rounds):
        count -= pruning.count_to_remove(rate, count)
    return count


@pytest.mark.parametrize("rates", [{"fc1": 0.2, "fc2": 0.2, "output": 0.1}, {"fc1": 0.5, "fc2": 0.15, "output": 0.33}])
def test_layerwise_removes_the_rule_count_per_layer_each_round(rates):
    weights, masks = random_layers()
    for r in range(1, 8):
        new = pruning.prune_layerwise(weights, masks, rates)
        for name, mask in new.items():
            assert np.all(mask <= masks[name]), "masks only shrink"
            assert mask.sum() == expected_survivors(mask.size, rates[name], r)
            assert abs(mask.sum() / mask.size - (1 - rates[name]) ** r) * mask.size <= r
        masks = new
        # the survivors are the largest-magnitude weights of each layer
        for name, mask in masks.items():
            kept, dropped = np.abs(weights[name])[mask > 0], np.abs(weights[name])[mask == 0]
            assert kept.min() >= dropped.max()


def test_global_counts_across_included_layers_and_leaves_excluded_alone():
    weights, masks = random_layers()
    included = masks["fc1"].size + masks["fc2"].size
    for r in range(1, 6):
        masks = pruning.prune_global(weights, masks, 0.2, exclude=("output",))
        assert masks["fc1"].sum() + masks["fc2"].sum() == expected_survivors(included, 0.2, r)
        assert masks["output"].sum() == masks["output"].size
    kept = np.concatenate([np.abs(weights[n])[masks[n] > 0] for n in ("fc1", "fc2")])
    dropped = np.concatenate([np.abs(weights[n])[masks[n] == 0] for n in ("fc1", "fc2")])
    assert kept.min() >= dropped.max()


def test_global_ranks_across_layers_not_per_layer():
    weights = {"a": np.full((10,), 0.1, np.float32), "b": np.full((10,), 5.0, np.float32)}
    masks = pruning.prune_global(weights, pruning.dense_masks({"a": (10,), "b": (10,)}), 0.5)
    assert masks["a"].sum() == 0 and masks["b"].sum() == 10


def test_ties_break_deterministically():
    weights = {"a": np.ones((50,), np.float32)}
    first = pruning.prune_layerwise(weights, pruning.dense_masks({"a": (50,)}), {"a": 0.2})
    second = pruning.prune_layerwise(weights, pruning.dense_masks({"a": (50,)}), {"a": 0.2})
    np.testing.assert_array_equal(first["a"], second["a"])
    assert first["a"].sum() == 40


def test_random_masks_keep_exact_per_layer_counts():
    weights, masks = random_layers()
    masks = pruning.prune_layerwise(weights, masks, {"fc1": 0.6, "fc2": 0.3, "output": 0.1})
    randomised = pruning.random_masks_like(masks, np.random.default_rng(1))
    for name in masks:
        assert randomised[name].sum() == masks[name].sum()
        assert set(np.unique(randomised[name])) <= {0.0, 1.0}
    assert not np.array_equal(randomised["fc1"], masks["fc1"])


def test_global_refuses_to_exclude_everything():
    weights, masks = random_layers()
    with pytest.raises(ValueError, match="excluded"):
        pruning.prune_global(weights, masks, 0.2, exclude=tuple(masks))


def test_ties_at_the_threshold_break_by_position():
    weights = {"a": np.array([3, 1, 2, 1, 1, 5], np.float32)}
    masks = pruning.prune_layerwise(weights, pruning.dense_masks({"a": (6,)}), {"a": 0.5})
    np.testing.assert_array_equal(masks["a"], [1, 0, 1, 0, 0, 1])
    masks = pruning.prune_layerwise(weights, pruning.dense_masks({"a": (6,)}), {"a": 0.34})
    np.testing.assert_array_equal(masks["a"], [1, 0, 1, 0, 1, 1])


def test_count_to_remove_rounds_halves_up():
    assert pruning.count_to_remove(0.15, 370) == 56    # 55.5
    assert pruning.count_to_remove(0.1, 145) == 15     # 14.5
    assert pruning.count_to_remove(0.2, 512) == 102    # 102.4
    assert pruning.count_to_remove(0.2, 819) == 164    # 163.8


def test_linear_schedule_keeps_one_minus_round_times_step_of_every_layer():
    from lth_tf.config import PruningConfig
    weights, masks = random_layers()
    kinds = {"fc1": "fc", "fc2": "fc", "output": "output"}
    config = PruningConfig(schedule="linear", step=0.07, rate_fc=0.5, rate_output=0.5)  # rates do not apply
    for r in range(1, 12):
        new = pruning.prune(config, weights, masks, kinds, r)
        for name, mask in new.items():
            assert np.all(mask <= masks[name]), "masks only shrink"
            assert mask.sum() == int(np.floor((1 - 0.07 * r) * mask.size + 0.5))
        masks = new


def test_linear_global_schedule_counts_all_included_layers_together():
    from lth_tf.config import PruningConfig
    weights, masks = random_layers()
    config = PruningConfig(strategy="global", schedule="linear", step=0.1, exclude=("output",))
    masks = pruning.prune(config, weights, masks, {}, 3)
    total = masks["fc1"].size + masks["fc2"].size
    assert masks["fc1"].sum() + masks["fc2"].sum() == int(np.floor(0.7 * total + 0.5))
    assert masks["output"].sum() == masks["output"].size


def test_a_layers_bias_is_ranked_with_its_kernel():
    weights = {"fc1": np.full((4, 5), 1.0, np.float32), "fc1/bias": np.array([0.5, 3, 3, 0.1, 3], np.float32),
               "fc2": np.full((5, 2), 2.0, np.float32)}
    masks = pruning.dense_masks({k: v.shape for k, v in weights.items()})
    new = pruning.prune_layerwise(weights, masks, {"fc1": 0.2, "fc2": 0.5})
    # fc1's group has 25 entries: the 5 smallest are the biases 0.1 and 0.5 and three kernel entries (ties by position)
    np.testing.assert_array_equal(new["fc1/bias"], [0, 1, 1, 0, 1])
    assert new["fc1"].sum() == 17 and new["fc2"].sum() == 5
    assert pruning.layer_of("fc1/bias") == "fc1" and pruning.variable_of("fc1/bias") == "fc1/bias"
    assert pruning.variable_of("fc1") == "fc1/kernel"


@pytest.mark.parametrize("strategy", ["layerwise", "global"])
def test_a_floor_stops_pruning_at_its_counts(strategy):
    rng = np.random.default_rng(3)
    masks = {"a": np.ones((10, 10), np.float32), "b": np.ones((10, 4), np.float32)}
    floors = {"a": 55, "b": 30}
    config = PruningConfig(strategy=strategy, rate_fc=0.3, rate_output=0.3, rate=0.3)
    kinds = {"a": "fc", "b": "output"}
    for round_index in range(1, 6):
        masks = pruning.prune(config, {k: rng.random(m.shape) for k, m in masks.items()}, masks, kinds,
                              round_index, floors)
    counts = pruning.layer_counts(masks)
    if strategy == "layerwise":
        assert counts == floors
    else:
        assert sum(counts.values()) == sum(floors.values())


def test_random_masks_stay_among_the_allowed_positions():
    allowed = {"a": (np.arange(100) % 3 == 0).reshape(10, 10).astype(np.float32)}
    masks = {"a": np.zeros((10, 10), np.float32)}
    masks["a"].flat[:20] = 1
    drawn = pruning.random_masks_like(masks, np.random.default_rng(0), allowed)
    assert drawn["a"].sum() == 20 and not np.any(drawn["a"] * (1 - allowed["a"]))


def test_linear_global_pruning_ranks_the_layers_together():
    """Under global pruning a layer of larger weights keeps more of them: every kept weight of the included
    layers outweighs every removed one (layer by layer it would keep 70% of each)."""
    from lth_tf.config import PruningConfig
    weights, masks = random_layers()
    weights = dict(weights, fc2=10 * weights["fc2"])
    config = PruningConfig(strategy="global", schedule="linear", step=0.1)
    new = pruning.prune(config, weights, masks, {}, 3)
    kept = np.concatenate([np.abs(weights[k])[new[k] > 0] for k in new])
    removed = np.concatenate([np.abs(weights[k])[new[k] == 0] for k in new])
    assert kept.min() > removed.max()
    assert new["fc2"].mean() > 0.9 and new["fc1"].mean() < 0.7


def test_linear_pruning_stops_at_each_layers_floor_and_again_at_its_target_removes_nothing():
    from lth_tf.config import PruningConfig
    weights, masks = random_layers()
    config = PruningConfig(schedule="linear", step=0.1)
    floors = {"fc1": 1000, "fc2": 100, "output": 10}  # fc1 has 1280 weights: 70% is 896, below its floor
    new = pruning.prune(config, weights, masks, {}, 3, floors)
    assert {k: int(m.sum()) for k, m in new.items()} == {"fc1": 1000, "fc2": 358, "output": 112}
    # already at round 3's density: round 3 again removes no weight
    for key, mask in pruning.prune(config, weights, new, {}, 3, floors).items():
        np.testing.assert_array_equal(mask, new[key])


def test_global_pruning_with_every_layer_excluded_says_so():
    weights, masks = random_layers()
    with pytest.raises(ValueError, match="^global pruning: every prunable layer is excluded$"):
        pruning.prune_global(weights, masks, 0.2, exclude=("fc1", "fc2", "output"))


def test_random_masks_keep_the_counts_in_float32():
    _, masks = random_layers()
    masks = dict(masks, fc1=(np.arange(1280).reshape(40, 32) % 3 == 0).astype(np.float32))
    new = pruning.random_masks_like(masks, np.random.default_rng(0))
    assert all(new[k].dtype == np.float32 and new[k].sum() == masks[k].sum() for k in masks)


@pytest.mark.parametrize("target", [0.9, 0.5, 0.05])
def test_kind_densities_reach_the_target_above_and_below_one_rounds_density(target):
    """Per-layer densities (1 - rate)^r with one r, their total the target: also for a target reached in less
    than one round (0.9 above 0.8 and 0.9, one round's densities)."""
    rates, sizes = {"fc1": 0.2, "output": 0.1}, {"fc1": 1000, "output": 100}
    densities = pruning.kind_densities(rates, sizes, target)
    r = np.log(densities["fc1"]) / np.log(0.8)
    assert densities["output"] == pytest.approx(0.9 ** r, rel=1e-9)
    assert (1000 * densities["fc1"] + 100 * densities["output"]) / 1100 == pytest.approx(target, rel=1e-9)


def test_without_drops_the_removed_entries_and_keeps_float32():
    masks = {"fc1/kernel": np.array([[1, 1], [0, 1]], np.float32), "fc1/bias": np.array([1, 1], np.float32)}
    removed = {"fc1/kernel": np.array([[0, 2], [1, 0]], np.int8), "fc1/bias": np.array([0, 0], np.int8)}
    kept = pruning.without(masks, removed)
    assert kept["fc1/kernel"].tolist() == [[1, 0], [0, 1]] and kept["fc1/bias"].tolist() == [1, 1]
    assert all(mask.dtype == np.float32 for mask in kept.values())


def test_one_rate_for_every_layer_keeps_the_target_in_each():
    scores, masks = random_layers()
    new = pruning.keep_highest(scores, masks, 0.25, "layerwise")  # no rates: the same density everywhere
    assert {k: int(m.sum()) for k, m in new.items()} == {"fc1": 320, "fc2": 128, "output": 40}
    for name, mask in new.items():
        assert scores[name][mask > 0].min() >= scores[name][mask == 0].max()


def test_a_layer_already_below_the_target_keeps_all_its_survivors():
    scores, masks = random_layers()
    masks = dict(masks, output=np.zeros((16, 10), np.float32))
    masks["output"][0, :5] = 1
    new = pruning.keep_highest(scores, masks, 0.25, "layerwise")
    assert np.array_equal(new["output"], masks["output"])
    assert int(new["fc1"].sum()) == 320


def test_an_unknown_strategy_is_named_in_the_error():
    weights, masks = random_layers()
    with pytest.raises(ValueError, match="unknown pruning strategy 'ring'; valid: layerwise, global"):
        pruning.keep_highest(weights, masks, 0.5, "ring")
    with pytest.raises(ValueError, match="unknown pruning strategy 'ring'; valid: layerwise, global"):
        pruning.prune(PruningConfig(strategy="ring"), weights, masks, {}, 1)


def test_without_floors_a_layer_can_be_pruned_to_nothing():
    weights, masks = random_layers()
    new = pruning.prune_layerwise(weights, masks, {"fc1": 0.2, "fc2": 0.2, "output": 1.0})
    assert new["output"].sum() == 0 and new["fc1"].sum() == 1024


def test_dense_masks_are_float32_ones():
    masks = pruning.dense_masks({"fc1": (3, 2), "output": (2,)})
    assert all(m.dtype == np.float32 and m.shape == s and np.all(m == 1)
               for m, s in zip(masks.values(), [(3, 2), (2,)]))


def test_layer_densities_are_each_layers_kept_fraction():
    masks = {"fc1": np.array([[1, 0], [0, 0]], np.float32), "output": np.array([1, 1, 0, 1, 0], np.float32)}
    assert pruning.layer_densities(masks) == pytest.approx({"fc1": 0.25, "output": 0.6}, rel=1e-6)


def test_layer_rates_follow_each_layers_kind_and_excluded_layers_keep_everything():
    config = PruningConfig(rate_fc=0.2, rate_conv=0.15, rate_output=0.1, exclude=("conv2",))
    kinds = {"conv1": "conv", "conv2": "conv", "fc1": "fc", "output": "output"}
    assert pruning.layer_rates(config, kinds) == {"conv1": 0.15, "conv2": 0.0, "fc1": 0.2, "output": 0.1}
