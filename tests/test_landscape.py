"""analyze landscape: the grid's origin is the trained model, the directions are
masked and filter-normalised, the outputs are complete and a rerun reuses them."""
import csv
import os

import numpy as np
import pytest

from lth_tf import runs
from lth_tf.analyze import landscape

RESOLUTION, EXAMPLES = 5, 200


@pytest.fixture(scope="module")
def analysed(tiny_run, tmp_path_factory):
    """(run, folder, paths) of one landscape analysis of the tiny run's rounds 0 and 2."""
    experiment, _rows = tiny_run
    run = runs.load_run(experiment.output_dir)
    folder = str(tmp_path_factory.mktemp("landscape"))
    return run, folder, landscape.analyze(run, folder, [0, 2], resolution=RESOLUTION, examples=EXAMPLES)


def own_loss(run, round_index, x, y):
    """Mean cross-entropy and accuracy of the round's trained ticket, computed without landscape.py."""
    import tensorflow as tf
    from lth_tf import tfmot_adapter as adapter
    from lth_tf.analyze import retrain
    model = retrain.open_run(run).trainer.model
    adapter.assign_state(model, runs.final_weights(run, round_index))
    adapter.set_masks(model, runs.masks(run, round_index))
    logits = model(tf.constant(x), training=False)
    loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
    return float(loss), float(np.mean(np.argmax(logits.numpy(), -1) == y))


@pytest.mark.xdist_group("analysed")
def test_origin_is_the_trained_model(analysed):
    run, folder, _ = analysed
    from lth_tf.analyze import retrain
    splits = retrain.open_run(run).splits
    for r in (0, 2):
        saved = np.load(os.path.join(folder, "landscape", f"round_{r:02d}.npz"))
        middle = int(np.flatnonzero(saved["axis"] == 0.0)[0])
        for s, (x, y) in enumerate(((splits.x_train, splits.y_train), (splits.x_test, splits.y_test))):
            loss, accuracy = own_loss(run, r, x[:EXAMPLES], y[:EXAMPLES])
            for value in (saved["plane"][middle, middle], saved["line"][middle], saved["centre"]):
                np.testing.assert_allclose(value[2 * s], loss, rtol=1e-6)
                assert value[2 * s + 1] == pytest.approx(accuracy)
        # the ticket sits in a basin: the loss rises away from it, and the curvature is positive
        assert saved["rise"][0] > 0 and saved["hessian_top"] > 0


def test_direction_is_masked_and_filter_normalised():
    rng = np.random.default_rng(0)
    weights = {"conv/kernel": rng.standard_normal((3, 3, 2, 4)).astype(np.float32),
               "conv/bias": rng.standard_normal(4).astype(np.float32),
               "dense/kernel": rng.standard_normal((5, 3)).astype(np.float32),
               "dense/bias": rng.standard_normal(3).astype(np.float32),
               "bn/gamma": np.ones(4, np.float32)}
    masks = {"conv": (rng.random((3, 3, 2, 4)) < 0.5).astype(np.float32),
             "dense": (rng.random((5, 3)) < 0.5).astype(np.float32),
             "dense/bias": np.ones(3, np.float32)}
    masks["dense"][:, 1] = 0  # a neuron with nothing left: its direction is zero too
    direction = landscape.filter_normalised_direction(weights, masks, np.random.default_rng(1))
    assert set(direction) == set(weights)
    for key in ("conv/bias", "dense/bias", "bn/gamma"):
        assert not direction[key].any()
    for layer in ("conv", "dense"):
        d, theta = direction[f"{layer}/kernel"], weights[f"{layer}/kernel"] * masks[layer]
        assert d.shape == theta.shape and d.dtype == theta.dtype
        assert not d[masks[layer] == 0].any()
        axes = tuple(range(d.ndim - 1))
        np.testing.assert_allclose(np.linalg.norm(d.reshape(-1, d.shape[-1]), axis=0),
                                   np.linalg.norm(theta.reshape(-1, theta.shape[-1]), axis=0), rtol=1e-5)
        assert not np.allclose(np.abs(d), np.abs(theta))  # a random direction, only scaled like theta's filters
    assert not direction["dense/kernel"][:, 1].any()
    again = landscape.filter_normalised_direction(weights, masks, np.random.default_rng(1))
    assert all(np.array_equal(direction[k], again[k]) for k in direction)


@pytest.mark.xdist_group("analysed")
def test_outputs_and_rerun_reuses_saved_rounds(analysed, monkeypatch):
    run, folder, paths = analysed
    assert [os.path.basename(p) for p in paths] == ["landscape.csv", "landscape_summary.csv", "landscape.png"]
    assert all(os.path.getsize(p) for p in paths)
    with open(paths[0]) as f:
        rows = list(csv.DictReader(f))
    for r in ("0", "2"):
        for name in ("train", "test"):
            mine = [row for row in rows if row["round"] == r and row["set"] == name]
            assert sum(row["kind"] == "plane" for row in mine) == RESOLUTION ** 2
            assert sum(row["kind"] == "line" for row in mine) == RESOLUTION
    text = open(os.path.join(folder, "report.md")).read()
    assert "<!-- lth_tf.analyze landscape -->" in text and "landscape.png" in text
    assert "top Hessian eigenvalue" in text and "Round 2 (" in text
    before = open(paths[0], "rb").read()

    def refuse(*args, **kwargs):
        raise AssertionError("a finished round was computed again")
    monkeypatch.setattr(landscape, "evaluate_round", refuse)
    assert landscape.analyze(run, folder, [0, 2], resolution=RESOLUTION, examples=EXAMPLES) == paths
    assert open(paths[0], "rb").read() == before
    with pytest.raises(AssertionError, match="computed again"):  # other settings: computed afresh
        landscape.analyze(run, folder, [0, 2], resolution=RESOLUTION + 2, examples=EXAMPLES)


@pytest.mark.xdist_group("analysed")
def test_unknown_round_is_refused(analysed):
    run, folder, _ = analysed
    with pytest.raises(runs.RunError, match=r"round 7.*0, 1, 2, 3"):
        landscape.analyze(run, folder, [0, 7])


def test_even_resolution_still_has_the_origin():
    axis = landscape.grid_axis(4, 1.0)
    assert 0.0 in axis and len(axis) == 5 and axis[0] == -1.0 and axis[-1] == 1.0
    assert list(landscape.grid_axis(5, 2.0)) == [-2.0, -1.0, 0.0, 1.0, 2.0]
