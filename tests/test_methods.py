"""Cheaper tickets: pruning at initialisation (SNIP, GraSP, SynFlow, magnitude,
random) with its sanity checks, one-shot pruning, learning-rate rewinding and
fine-tuning, early-bird tickets."""
import dataclasses
import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from conftest import check_every_step, tiny_config

from lth_tf import early_bird, lottery, methods, networks, paths, pruning, rundir, training
from lth_tf import tfmot_adapter as adapter
from lth_tf.config import PruningConfig


def two_layer_net(weights, dtype="float32"):
    """input 3 -> fc1 (2 units, relu) -> output (2 logits), with the given weights."""
    inputs = tf.keras.Input((3,), dtype=dtype)
    hidden = tf.keras.layers.Dense(2, "relu", name="fc1", dtype=dtype)(inputs)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2, name="output", dtype=dtype)(hidden))
    adapter.assign_state(model, {k: np.asarray(v, dtype) for k, v in weights.items()})
    return model


HAND = {"fc1/kernel": [[0.5, -0.3], [0.2, 0.8], [-0.6, 0.1]], "fc1/bias": [0.1, -0.05],
        "output/kernel": [[0.7, -0.4], [-0.2, 0.9]], "output/bias": [0.0, 0.05]}
X = np.array([[1.0, 0.5, -0.2], [-0.3, 0.8, 0.4], [0.6, -0.1, 0.9], [0.2, 0.3, 0.1]], np.float32)
Y = np.array([0, 1, 1, 0], np.int32)
MASKS = {"fc1": np.ones((3, 2), np.float32), "output": np.ones((2, 2), np.float32)}


def hand_gradients(w, x, y):
    """Backpropagation of the mean cross-entropy of the two-layer net, by hand."""
    w = {k: np.asarray(v, np.float64) for k, v in w.items()}
    pre = x @ w["fc1/kernel"] + w["fc1/bias"]
    hidden = np.maximum(pre, 0)
    logits = hidden @ w["output/kernel"] + w["output/bias"]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d_logits = (p - np.eye(2)[y]) / len(y)
    d_pre = d_logits @ w["output/kernel"].T * (pre > 0)
    return {"fc1": x.T @ d_pre, "output": hidden.T @ d_logits}


def test_snip_scores_are_the_gradient_times_the_weight_by_hand():
    scoring = methods.Scoring(None, [(X, Y), (X, Y)], PruningConfig(), 0)  # a mean over batches: one batch's
    scores = methods.snip(two_layer_net(HAND), MASKS, scoring)
    grads = hand_gradients(HAND, X, Y)
    for key in MASKS:
        expected = np.abs(grads[key] * np.asarray(HAND[f"{key}/kernel"]))
        np.testing.assert_allclose(scores[key], expected, rtol=1e-5, atol=1e-7)


def test_grasp_scores_are_the_weight_times_hg_from_finite_differences():
    model = two_layer_net(HAND, "float64")
    x = X.astype(np.float64)
    kernels = [adapter.state_variables(model)[f"{k}/kernel"] for k in MASKS]

    def gradient():
        with tf.GradientTape() as tape:
            loss = methods._loss(model, x, Y, methods.GRASP_TEMPERATURE)  # noqa: SLF001
        return [g.numpy() for g in tape.gradient(loss, kernels)]
    g = gradient()
    original = [k.numpy() for k in kernels]
    epsilon = 1e-3 / max(np.abs(v).max() for v in g)
    difference = []
    for sign in (1, -1):
        for kernel, start, direction in zip(kernels, original, g):
            kernel.assign(start + sign * epsilon * direction)
        difference.append(gradient())
    for kernel, start in zip(kernels, original):
        kernel.assign(start)
    hg = [(plus - minus) / (2 * epsilon) for plus, minus in zip(*difference)]
    # the same batch twice: Hg is a mean over the batches, so it must equal that one batch's
    scores = methods.grasp(model, MASKS, methods.Scoring(None, [(x, Y), (x, Y)], PruningConfig(), 0))
    for key, start, expected in zip(MASKS, original, hg):
        # the registry keeps the highest w * Hg: GraSP's score -w * Hg, its highest removed
        np.testing.assert_allclose(scores[key], start * expected, rtol=1e-4, atol=1e-12)


def test_synflow_scores_are_the_path_norm_flow_by_hand_and_ignore_the_data():
    absolute = {k: np.abs(np.asarray(v)) for k, v in HAND.items()}
    scores = methods.synflow(two_layer_net(absolute, "float64"), MASKS, None)
    w1, b1, w2 = absolute["fc1/kernel"], absolute["fc1/bias"], absolute["output/kernel"]
    # all-ones input, positive weights: every relu passes, R = sum_jk w2_jk (sum_i w1_ij + b1_j) + sum_k b2_k
    np.testing.assert_allclose(scores["fc1"], w1 * w2.sum(1)[None, :], rtol=1e-12)
    np.testing.assert_allclose(scores["output"], w2 * (w1.sum(0) + b1)[:, None], rtol=1e-12)
    def masks_from(name, batches):
        scoring = methods.Scoring(lambda: two_layer_net(HAND), batches,
                                  PruningConfig(strategy="global", synflow_iterations=3), 0)
        return methods.prune_at_init(name, {k: np.asarray(v, np.float32) for k, v in HAND.items()}, MASKS,
                                     scoring, 0.5)[0]
    data_sets = ([(X, Y)], [(-X, 1 - Y)])
    synflow = [masks_from("synflow", batches) for batches in data_sets]
    snip = [masks_from("snip", batches) for batches in data_sets]
    assert all(np.array_equal(synflow[0][k], synflow[1][k]) for k in MASKS)
    assert not all(np.array_equal(snip[0][k], snip[1][k]) for k in MASKS)  # where data counts, these two differ


@pytest.fixture(scope="module")
def network(mnist1d):
    """(theta_0, dense masks, build, batches, per-layer rates) of the tiny MLP on MNIST-1D."""
    config = tiny_config()
    build = lambda: lottery.build_plain(config, mnist1d)  # noqa: E731
    state = lottery.initial_state(config, mnist1d, 0)
    masks = pruning.dense_masks({k: state[pruning.variable_of(k)].shape for k in ("fc1", "fc2", "output")})
    batches = [(mnist1d.x_train[i:i + 50], mnist1d.y_train[i:i + 50]) for i in (0, 50)]
    return state, masks, build, batches, {"fc1": 0.2, "fc2": 0.2, "output": 0.1}


@pytest.mark.parametrize("strategy", ["global", "layerwise"])
@pytest.mark.parametrize("name", list(methods.AT_INIT))
def test_every_method_hits_the_target_density_to_one_weight_per_layer(network, name, strategy):
    state, masks, build, batches, rates = network
    config = PruningConfig(strategy=strategy, synflow_iterations=5, score_batches=2)
    target = 0.1
    new, _ = methods.prune_at_init(name, state, masks, methods.Scoring(build, batches, config, 3), target, rates)
    sizes = {k: m.size for k, m in masks.items()}
    kept = {k: int(m.sum()) for k, m in new.items()}
    if strategy == "global":
        assert sum(kept.values()) == round(target * sum(sizes.values()))
    else:
        densities = pruning.kind_densities(rates, sizes, target)
        assert all(abs(kept[k] - densities[k] * sizes[k]) <= 1 for k in masks)
        assert abs(sum(kept.values()) - target * sum(sizes.values())) <= len(masks)
        assert densities["output"] > densities["fc1"] == pytest.approx(densities["fc2"])


def test_synflow_keeps_every_layer_where_snip_collapses_one(network):
    state, masks, build, batches, rates = network
    config = PruningConfig(strategy="global", synflow_iterations=30)
    target = 0.004  # 8 of 1,952 weights
    synflow, _ = methods.prune_at_init("synflow", state, masks, methods.Scoring(build, batches, config, 0), target)
    snip, _ = methods.prune_at_init("snip", state, masks, methods.Scoring(build, batches, config, 0), target)
    assert not pruning.collapsed_layers(synflow) and all(m.sum() > 0 for m in synflow.values())
    assert pruning.collapsed_layers(snip)


def method_config(train_steps=30, rounds=2, controls=("reinit", "shuffle_layerwise"), training_changes=None,
                  **pruning_changes):
    config = tiny_config(rounds=rounds, controls=controls)
    return dataclasses.replace(config, pruning=dataclasses.replace(config.pruning, **pruning_changes),
                               training=dataclasses.replace(config.training, train_steps=train_steps,
                                                            **(training_changes or {})))


def run(config, splits, folder):
    experiment = lottery.prepare(config, splits, training.make_strategy("default"), str(folder))
    return experiment, lottery.run(experiment, lottery.RunOptions(export="none", tensorboard=False))


def test_an_at_init_run_trains_its_sanity_checks_with_exact_zeros(mnist1d, tmp_path, monkeypatch):
    checked = []
    check_every_step(monkeypatch, checked)
    experiment, rows = run(method_config(method="snip", target_density=(0.5, 0.2)), mnist1d, tmp_path)
    assert [(r["round"], r["branch"]) for r in rows] == [(0, "ticket")] + [
        (r, b) for r in (1, 2) for b in ("ticket", "reinit", "shuffle_layerwise", "inverted")]
    assert len(checked) == 30 + 8 * 25  # the dense round, then 8 branches from step k = 5
    assert {(r["method"], r["target_density"], r["training_steps_spent"]) for r in rows if r["round"] == 2} == {
        ("snip", 0.2, 5 + 1 + 25)}  # theta_k at step 5, one scoring batch, the retraining
    for round_index, target in ((1, 0.5), (2, 0.2)):
        folder = experiment.path(f"round_{round_index:02d}")
        ticket = rundir.load_arrays(os.path.join(folder, "masks.npz"))
        for branch in ("shuffle_layerwise", "inverted"):
            other = rundir.load_arrays(os.path.join(folder, branch, "masks.npz"))
            assert pruning.layer_counts(other) == pruning.layer_counts(ticket)
            weights = rundir.load_arrays(os.path.join(folder, branch, "weights.npz"))
            assert all(not np.any(weights[f"{k}/kernel"][other[k] == 0]) for k in other)
        sizes = {k: m.size for k, m in ticket.items()}
        assert abs(sum(m.sum() for m in ticket.values()) - target * sum(sizes.values())) <= len(sizes)
    inverted = rundir.load_arrays(experiment.path("round_02", "inverted", "masks.npz"))
    ticket = rundir.load_arrays(experiment.path("round_02", "masks.npz"))
    assert all(not np.any(inverted[k] * ticket[k]) for k in ticket)  # under half of each layer: disjoint
    # An inverted branch whose masks were lost (its folder deleted) is scored again to the same masks.
    shutil.rmtree(experiment.path("round_02", "inverted"))
    run(method_config(method="snip", target_density=(0.5, 0.2)), mnist1d, tmp_path)
    again = rundir.load_arrays(experiment.path("round_02", "inverted", "masks.npz"))
    assert all(np.array_equal(again[k], inverted[k]) for k in inverted)


def test_snip_collapsing_a_layer_is_warned_about_and_the_run_finishes(mnist1d, tmp_path, caplog):
    config = method_config(train_steps=10, rounds=1, controls=(), method="snip", target_density=(0.004,),
                           strategy="global")
    with caplog.at_level(logging.WARNING):
        experiment, rows = run(config, mnist1d, tmp_path)
    assert "layer collapse" in caplog.text
    assert [r["status"] for r in rows] == ["ok"] * 3  # the ticket and the inverted mask


def recorded_training(monkeypatch) -> list:
    """(global step, learning rate, weights) at the start and end of every training.train call."""
    calls, train = [], training.train

    def recording(trainer, *args, **kwargs):
        start = (training.global_step(trainer), training.current_learning_rate(trainer),
                 adapter.get_state(trainer.model))
        history = train(trainer, *args, **kwargs)
        calls.append((start, (training.global_step(trainer), training.current_learning_rate(trainer))))
        return history
    monkeypatch.setattr(training, "train", recording)
    return calls


@pytest.mark.parametrize("retrain", ["lr_rewind", "finetune"])
def test_lr_rewinding_and_fine_tuning_go_on_from_the_trained_weights(mnist1d, tmp_path, monkeypatch, retrain):
    calls = recorded_training(monkeypatch)
    config = method_config(rounds=1, controls=(), training_changes=dict(milestones=(20,), lr_drop=0.1))
    config = dataclasses.replace(config, lottery=dataclasses.replace(config.lottery, retrain=retrain))
    experiment, rows = run(config, mnist1d, tmp_path)
    (start_step, start_rate, start_weights), (end_step, end_rate) = calls[-1]  # round 1's ticket
    dense = rundir.load_arrays(experiment.path("round_00", "ticket", "weights.npz"))
    masks = rundir.load_arrays(experiment.path("round_01", "masks.npz"))
    for key in dense:
        mask = masks.get(key.split("/")[0], 1) if key.endswith("/kernel") else 1
        np.testing.assert_array_equal(start_weights[key], dense[key] * mask)
    assert (start_step, end_step) == (5, 30)  # the schedule from the rewind step k to its end
    expected = (0.05, 0.005) if retrain == "lr_rewind" else (0.005, 0.005)
    assert (start_rate, end_rate) == pytest.approx(expected, rel=1e-6)
    assert rows[-1]["method"] == f"imp+{retrain}" and rows[-1]["training_steps_spent"] == 30 + 25


def test_one_shot_prunes_the_dense_weights_straight_to_each_target(mnist1d, tmp_path):
    experiment, rows = run(method_config(rounds=2, controls=(), oneshot=True, target_density=(0.5, 0.2)),
                           mnist1d, tmp_path)
    from scipy.optimize import brentq
    dense = rundir.load_arrays(experiment.path("round_00", "ticket", "weights.npz"))
    sizes, rates = {"fc1": 40 * 32, "fc2": 32 * 16, "output": 16 * 10}, {"fc1": 0.2, "fc2": 0.2, "output": 0.1}
    for round_index, target in ((1, 0.5), (2, 0.2)):
        # By hand: every layer at (1 - its rate)^r, one r for all, so that the total keeps `target` of 1952.
        r = brentq(lambda r: sum(n * (1 - rates[k]) ** r for k, n in sizes.items()) - target * 1952, 0, 100)
        masks = rundir.load_arrays(experiment.path(f"round_{round_index:02d}", "masks.npz"))
        for key, mask in masks.items():
            assert mask.sum() == np.floor(sizes[key] * (1 - rates[key]) ** r + 0.5), (target, key)
            magnitude = np.abs(dense[f"{key}/kernel"])  # the dense round's largest weights, layer by layer
            assert magnitude[mask > 0].min() > magnitude[mask == 0].max()
    assert [(r["method"], r["training_steps_spent"]) for r in rows] == [("oneshot", 30), ("oneshot", 55),
                                                                        ("oneshot", 55)]


def test_the_early_bird_distance_is_the_fraction_of_kept_weights_that_changed():
    a = {"fc1": np.array([[1, 1, 0, 0], [1, 0, 0, 0]], np.float32), "output": np.array([1, 0], np.float32)}
    b = {"fc1": np.array([[1, 0, 1, 0], [1, 0, 0, 0]], np.float32), "output": np.array([1, 0], np.float32)}
    assert pruning.mask_distance(a, a) == 0
    assert pruning.mask_distance(a, b) == 2 / 8  # one of four kept weights moved: 2 entries differ, 4 + 4 kept
    disjoint = {k: 1 - m for k, m in a.items()}
    assert pruning.mask_distance(a, disjoint) == 1
    one, none = {"fc1": np.array([1, 0], np.float32)}, {"fc1": np.array([0, 0], np.float32)}
    assert pruning.mask_distance(one, none) == 1 and pruning.mask_distance(none, none) == 0
    # Entries no pruning can change (removed for good, or excluded under global pruning) are left out.
    changeable = {"fc1": np.array([[1, 1, 1, 1], [0, 0, 0, 0]], np.float32), "output": np.zeros(2, np.float32)}
    assert pruning.mask_distance(a, b, changeable) == 2 / 4


@pytest.mark.parametrize("density", [0.5, 0.05])
def test_two_random_masks_are_one_minus_the_density_apart_at_any_density(density):
    """The old distance (over every entry) put two random 5% masks 0.095 apart, under any epsilon >= 0.1."""
    rng = np.random.default_rng(0)
    n = 200_000
    def random_mask():
        mask = np.zeros(n, np.float32)
        mask[rng.choice(n, int(n * density), replace=False)] = 1
        return {"fc1": mask}
    assert abs(pruning.mask_distance(random_mask(), random_mask()) - (1 - density)) < 0.01


def test_the_early_bird_detector_fires_once_five_distances_are_below_epsilon():
    assert early_bird.drawn_epoch({2: 0.3, 3: 0.05, 4: 0.04, 5: 0.01, 6: 0.0, 7: 0.0, 8: 0.0}, 0.1) == 7
    assert early_bird.drawn_epoch({2: 0.05, 3: 0.05, 4: 0.05, 5: 0.05}, 0.1) is None  # not five yet
    assert early_bird.drawn_epoch({2: 0.0, 3: 0.0, 5: 0.0, 6: 0.0, 7: 0.0, 8: 0.0}, 0.1) is None  # epoch 4 unknown
    assert early_bird.drawn_epoch({e: 0.2 for e in range(2, 30)}, 0.1) is None


def test_the_early_bird_detector_draws_converging_masks_and_resumes(tmp_path):
    rng = np.random.default_rng(0)
    final = {"fc1/kernel": rng.normal(size=(20, 10))}
    def masks_of(weights, target):
        return pruning.keep_highest({"fc1": np.abs(weights["fc1/kernel"])}, {"fc1": np.ones((20, 10))}, target,
                                    "global")
    def weights(epoch):  # converging: identical from epoch 4 on
        return {"fc1/kernel": final["fc1/kernel"] + (rng.normal(size=(20, 10)) if epoch < 4 else 0)}
    detector = early_bird.Detector(str(tmp_path), [0.5, 0.1], 0.01, masks_of)
    for epoch in range(1, 7):
        detector.observe(epoch, weights(epoch))
    detector.checkpointed(5)  # the oldest kept checkpoint: the masks of epoch 5 on stay
    detector.observe(7, weights(7))
    assert sorted(f for f in os.listdir(tmp_path) if f.startswith("epoch_")) == [
        "epoch_00005.npz", "epoch_00006.npz", "epoch_00007.npz"]
    detector = early_bird.Detector(str(tmp_path), [0.5, 0.1], 0.01, masks_of)
    for epoch in range(6, 12):  # resumed from the checkpoint in epoch 5: the state and epoch 5's masks from the folder
        detector.observe(epoch, weights(epoch))
    state = early_bird.read_state(str(tmp_path))
    assert state["0.5"]["drawn_epoch"] == state["0.1"]["drawn_epoch"] == 9  # distances 0 at epochs 5..9
    for index, target in enumerate([0.5, 0.1]):  # the largest |w| of the converged weights, counted by hand
        largest = np.argsort(-np.abs(final["fc1/kernel"]).ravel())[:int(200 * target)]
        np.testing.assert_array_equal(np.flatnonzero(early_bird.drawn_masks(str(tmp_path), index, target)["fc1"]),
                                      np.sort(largest))


def test_a_drawn_ticket_counts_only_once_the_state_says_it_was_drawn(tmp_path):
    """A kill between a ticket's masks and the state that records the draw: the ticket was not drawn."""
    rundir.save_arrays(str(tmp_path / "drawn_0.npz"), {"fc1": np.ones((2, 2), np.float32)})
    rundir.write_json(str(tmp_path / "state.json"), {"0.5": dict(distances={}, drawn_epoch=None)})
    assert early_bird.drawn_masks(str(tmp_path), 0, 0.5) is None
    rundir.write_json(str(tmp_path / "state.json"), {"0.5": dict(distances={}, drawn_epoch=3)})
    assert early_bird.drawn_masks(str(tmp_path), 0, 0.5)["fc1"].shape == (2, 2)


def test_an_early_bird_run_trains_the_drawn_ticket_and_counts_the_steps_to_the_draw(mnist1d, tmp_path):
    config = method_config(train_steps=400, rounds=1, controls=(), method="early_bird", target_density=(0.3,),
                           early_bird_epsilon=0.09, training_changes=dict(batch_size=100, eval_every=50))
    experiment, rows = run(config, mnist1d, tmp_path)
    folder = paths.early_bird(experiment.output_dir)
    state = early_bird.read_state(folder)
    distances = {int(e): d for e, d in state["0.3"]["distances"].items()}
    assert sorted(distances) == list(range(2, 12))  # 35 steps an epoch: epochs 1..11, each against the one before
    below = [e for e in sorted(distances) if all(distances.get(e - back, 1) < 0.09 for back in range(5))]
    assert below and below[0] > 6  # a distance at or above epsilon made the detector wait past the first chance
    drawn = below[0]
    assert state["0.3"]["drawn_epoch"] == drawn
    assert not [f for f in os.listdir(folder) if f.startswith("epoch_")]
    assert rows[-1]["method"] == "early_bird" and rows[-1]["training_steps_spent"] == drawn * 35 + 395
    masks = rundir.load_arrays(experiment.path("round_01", "masks.npz"))
    assert abs(pruning.density(masks) - 0.3) < 0.01
    np.testing.assert_array_equal(masks["fc1"], early_bird.drawn_masks(folder, 0, 0.3)["fc1"])
    from lth_tf import report, runs
    saved = round(100 * (1 - drawn * 35 / 400))
    assert f"30% weights: drawn at epoch {drawn} (step {drawn * 35} of 400, batch 100): {saved}% of the dense " \
        "training saved" in report.early_bird_text([runs.load_run(experiment.output_dir)])


def test_the_early_bird_report_says_when_the_rewind_step_comes_after_the_draw(tmp_path):
    """The dense training a ticket needs ends at its draw, or at the rewind step k where that is later."""
    from lth_tf import report
    folder = tmp_path / "round_00" / "ticket" / "early_bird"
    folder.mkdir(parents=True)
    rundir.write_json(str(folder / "state.json"), {"0.3": dict(distances={}, drawn_epoch=2)})  # step 70 at 35 a epoch
    rows = [dict(branch="ticket", target_density="0.3", training_steps_spent="250")]  # max(70, k=100) + 150
    config = dict(training=dict(train_steps=250, batch_size=100), lottery=dict(rewind_step=100),
                  pruning=dict(early_bird_epsilon=0.5))
    text = report.early_bird_text([dict(dir=str(tmp_path), config=config, rows=rows)])
    assert "30% weights: drawn at epoch 2 (by the rewind step 100 of 250, batch 100): 60% of the dense training" in text


@pytest.fixture(scope="module")
def three_methods(mnist1d, tmp_path_factory):
    """Tiny runs of imp, one-shot and SNIP on one setup."""
    configs = {"imp": method_config(10, 2, ()), "oneshot": method_config(10, 2, (), oneshot=True,
                                                                         target_density=(0.8, 0.6)),
               "snip": method_config(10, 2, ("reinit", "shuffle_layerwise"), method="snip", target_density=(0.8, 0.6))}
    return {name: run(config, mnist1d, tmp_path_factory.mktemp(name))[0].output_dir for name, config in configs.items()}


@pytest.mark.xdist_group("three_methods")
def test_a_report_over_several_methods_compares_them_on_one_chart(three_methods, tmp_path):
    from lth_tf import report
    folder = tmp_path / "compared"
    assert report.cli(["report", f"--report_dir={folder}", *three_methods.values()]) == 0
    assert os.path.getsize(folder / "methods.png") > 10_000
    text = open(folder / "report.md").read()
    table = [line for line in text.splitlines() if line.startswith("| ") and "/" in line and "weights" not in line]
    assert [line.split(" | ")[0] for line in table] == ["| imp", "| oneshot", "| snip"]
    assert "## Sanity checks: snip" in text and "beats inverted?" in text and "1 seed)" in text
    assert "(at 80%)" not in text  # imp's round 1 (80.4%) stands for the 80% target


@pytest.mark.xdist_group("three_methods")
def test_a_report_refuses_methods_on_different_setups(three_methods, mnist1d, tmp_path):
    from lth_tf import report
    config = method_config(10, 2, ())
    other = run(dataclasses.replace(config, training=dataclasses.replace(config.training, learning_rate=0.01)),
                mnist1d, tmp_path / "other")[0].output_dir
    with pytest.raises(report.RunError, match="differ in more than their method and seeds: --learning_rate"):
        report.by_method([report.runs_lib.load_run(d) for d in (three_methods["snip"], other)])


@pytest.mark.parametrize("method, controls", [
    ("snip", ("reinit", "random_prune", "shuffle_layerwise")),   # the sanity checks join an at-init method's run
    ("random", ()),                                               # random pruning is its own shuffle
    ("early_bird", ()),
])
def test_an_at_init_method_brings_the_sanity_checks_with_the_papers_shuffled_mask(method, controls):
    from lth_tf import flags as lth_flags
    lth_flags.FLAGS.unparse_flags()
    try:
        lth_flags.FLAGS(["lth_tf.main", f"--prune_method={method}", "--target_density=0.5", "--controls=none"])
        config, _ = lth_flags.experiment_config(lth_flags.FLAGS)
    finally:
        lth_flags.FLAGS.unparse_flags()
    assert config.lottery.controls == controls


def test_workers_whose_masks_differ_all_stop(network, monkeypatch):
    """Two workers scored apart (a near-tie): each sees the other's checksum through all_workers_mean, and both
    stop with one line, instead of training different networks (or one hanging in a collective)."""
    import types
    masks = network[1]
    other = dict(masks, fc1=masks["fc1"].copy())
    other["fc1"][0, 0] = 0
    assert pruning.checksum(masks) != pruning.checksum(other) and pruning.checksum(masks) == pruning.checksum(
        {k: m.copy() for k, m in masks.items()})
    experiment = types.SimpleNamespace(trainer=types.SimpleNamespace(strategy=None),
                                       config=types.SimpleNamespace(pruning=types.SimpleNamespace(method="snip")))
    for mine, theirs in ((masks, other), (other, masks)):
        exchanged = iter([pruning.checksum(theirs), 1.0])  # the other worker's checksum, then its verdict
        monkeypatch.setattr(training, "all_workers_mean", lambda strategy, value: (value + next(exchanged)) / 2)
        with pytest.raises(lottery.Failed, match="the workers made different masks .* --deterministic"):
            lottery.check_workers_agree(experiment, 1, mine)
    same = iter([pruning.checksum(masks), 0.0])
    monkeypatch.setattr(training, "all_workers_mean", lambda strategy, value: (value + next(same)) / 2)
    lottery.check_workers_agree(experiment, 1, masks)  # agreeing workers go on


def test_synflow_scores_a_batchnorm_network_in_float64_with_its_statistics():
    """ResNet-20 (BatchNorm after every convolution) is scored in float64 with
    every variable made absolute, BatchNorm in inference mode: every layer's
    scores are finite and positive, and the moving statistics enter the flow.
    Float64 even after lottery.prepare's precision() has set a global policy."""
    with networks.precision(False):
        pass
    tf.keras.utils.set_random_seed(0)
    build = lambda: networks.build("resnet20", (32, 32, 3), 10)  # noqa: E731
    model = build()
    state = adapter.get_state(model)
    masks = pruning.dense_masks({name: state[f"{name}/kernel"].shape
                                 for name in adapter.prunable_layers(adapter.wrap(model))})
    scoring = methods.Scoring(build, [], PruningConfig(strategy="global", synflow_iterations=1), 0)
    variances = [key for key in state if key.endswith("/moving_variance")]
    assert variances
    scores = {}
    for scale in (1.0, 4.0):
        scaled = {**state, **{key: state[key] * scale for key in variances}}
        new, scores[scale] = methods.prune_at_init("synflow", scaled, masks, scoring, 0.1)
        assert sum(int(m.sum()) for m in new.values()) == round(0.1 * sum(m.size for m in masks.values()))
    for key, score in scores[1.0].items():
        assert score.dtype == np.float64 and np.isfinite(score).all() and (score > 0).all(), key
    assert not np.allclose(scores[1.0]["output"], scores[4.0]["output"])


def test_random_scores_follow_the_runs_seed():
    from lth_tf.config import PruningConfig
    masks = {"fc1": np.ones((30, 20), np.float32), "output": np.ones((20, 10), np.float32)}

    def scores(seed):
        return methods.random(None, masks, methods.Scoring(build=None, batches=[], config=PruningConfig(), seed=seed))
    for key in masks:
        np.testing.assert_array_equal(scores(3)[key], scores(3)[key])
        assert not np.array_equal(scores(3)[key], scores(4)[key])


def test_scoring_passes_count_each_methods_batches_and_iterations():
    assert methods.scoring_passes(PruningConfig(method="snip", score_batches=3)) == 3
    assert methods.scoring_passes(PruningConfig(method="grasp", score_batches=2)) == 6  # g, then Hg: 3 passes
    assert methods.scoring_passes(PruningConfig(method="synflow", score_batches=3, synflow_iterations=7)) == 7
    assert methods.scoring_passes(PruningConfig(method="random", score_batches=3)) == 1


def test_snip_scores_a_batchnorm_network_in_training_mode():
    """Scores come from the loss as training sees it: batch statistics, not the (initial) moving ones."""
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((3,))
    hidden = tf.keras.layers.BatchNormalization(name="bn")(tf.keras.layers.Dense(4, name="fc1")(inputs))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2, name="output")(tf.keras.layers.ReLU()(hidden)))
    masks = {"fc1": np.ones((3, 4), np.float32), "output": np.ones((4, 2), np.float32)}
    scores = methods.snip(model, masks, methods.Scoring(None, [(X, Y)], PruningConfig(), 0))
    kernels = [model.get_layer(name).kernel for name in ("fc1", "output")]

    def by_tape(training):
        with tf.GradientTape() as tape:
            logits = model(X, training=training)
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(Y, logits, from_logits=True))
        return [np.abs(g.numpy() * k.numpy()) for g, k in zip(tape.gradient(loss, kernels), kernels)]
    for key, expected, inference in zip(masks, by_tape(True), by_tape(False)):
        np.testing.assert_allclose(scores[key], expected, rtol=1e-5, atol=1e-8)
        assert not np.allclose(scores[key], inference, rtol=1e-3)


def test_pruning_at_init_leaves_an_excluded_layer_dense(network):
    state, masks, build, batches, rates = network
    config = PruningConfig(strategy="global", exclude=("output",))
    new, _ = methods.prune_at_init("snip", state, masks, methods.Scoring(build, batches, config, 3), 0.1)
    assert new["output"].all()
    assert new["fc1"].sum() + new["fc2"].sum() == round(0.1 * (masks["fc1"].size + masks["fc2"].size))


def test_an_iterative_method_rescores_on_its_schedule_and_returns_the_first_pass_scores(monkeypatch):
    passes = []
    def recording(model, masks, scoring):
        scores = methods.synflow(model, masks, scoring)
        passes.append((masks, scores))
        return scores
    monkeypatch.setitem(methods.AT_INIT, "synflow", dataclasses.replace(methods.AT_INIT["synflow"], score=recording))
    scoring = methods.Scoring(lambda: two_layer_net(HAND), [], PruningConfig(strategy="global", synflow_iterations=2), 0)
    state = {k: np.asarray(v, np.float32) for k, v in HAND.items()}
    new, first = methods.prune_at_init("synflow", state, MASKS, scoring, 0.25)
    assert len(passes) == 2  # one scoring pass per iteration
    (masks_1, scores_1), (masks_2, scores_2) = passes
    assert all(np.array_equal(masks_1[k], MASKS[k]) for k in MASKS)
    # 10 weights: 0.25^(1/2) keeps 5 after the first pass, 0.25^(2/2) keeps 3 (2.5, rounded half up) after the second
    halfway = pruning.keep_highest(scores_1, MASKS, 0.5, "global")
    assert sum(int(m.sum()) for m in masks_2.values()) == 5
    assert all(np.array_equal(masks_2[k], halfway[k]) for k in MASKS)
    final = pruning.keep_highest(scores_2, masks_2, 0.25, "global")
    assert sum(int(m.sum()) for m in new.values()) == 3
    assert all(np.array_equal(new[k], final[k]) for k in MASKS)
    assert all(np.array_equal(first[k], scores_1[k]) for k in MASKS)
    assert not all(np.allclose(scores_1[k], scores_2[k]) for k in MASKS)  # so the two passes can be told apart
