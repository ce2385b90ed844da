"""Tasks beside the default one (--classes, the MNIST-1D generator's settings)
and analyze transfer: A's tickets trained on task B."""
import os
import re

import numpy as np
import pytest

from conftest import tiny_config
from lth_tf import analyze, data, pruning, rundir, runs, training
from lth_tf.analyze import transfer
from lth_tf.config import DataConfig

# The tiny run's schedule (conftest.tiny_config) as flags: task B differs from it in its data alone.
TINY_FLAGS = ("--model=mlp_32_16 --optimizer=sgd --learning_rate=0.05 --momentum=0.9 --weight_decay=1e-4 "
              "--batch_size=50 --train_steps=30 --eval_every=10 --log_every=10 --rewind_step=5 --rounds=3 "
              "--prune_rate_output=0.1 --tensorboard=false --noxla")


def test_a_class_subset_is_those_classes_relabelled_in_order():
    full = data.load(DataConfig("fashion_mnist", validation_size=5000))
    subset = data.load(DataConfig("fashion_mnist", validation_size=3000, classes=(7, 2, 9)))
    assert subset.num_classes == 3
    labels = np.concatenate([subset.y_train, subset.y_val])
    assert np.bincount(labels).tolist() == [6000] * 3 and np.bincount(subset.y_test).tolist() == [1000] * 3
    assert (len(subset.x_train), len(subset.x_val)) == (15000, 3000)
    assert data.train_examples(DataConfig("fashion_mnist", classes=(7, 2, 9))) == 18000  # known before loading
    # Class 7 (sneaker) is label 0: the subset's test images are the full set's images of classes 7, 2, 9.
    for label, original in enumerate((7, 2, 9)):
        np.testing.assert_array_equal(subset.x_test[subset.y_test == label], full.x_test[full.y_test == original])


def test_mnist1d_generator_settings_make_another_task_and_a_class_subset_of_it():
    standard = data.load(DataConfig("mnist1d"))
    shifted_config = DataConfig("mnist1d", classes=(0, 1, 2, 3, 4), mnist1d={"max_translation": 20, "seed": 7})
    shifted = data.load(shifted_config)
    assert "max_translation=20, seed=7" in shifted.source
    assert shifted.num_classes == 5 and set(np.unique(shifted.y_test)) == {0, 1, 2, 3, 4}
    assert len(shifted.x_train) + len(shifted.x_val) == data.train_examples(shifted_config)
    assert shifted.x_train.shape[1:] == standard.x_train.shape[1:] == (40,)
    longer = DataConfig("mnist1d", mnist1d={"final_seq_length": 60, "num_samples": 1000})
    assert data.input_shape(longer) == (60,) and data.train_examples(longer) == 800
    assert data.load(longer).x_test.shape == (200, 60)


@pytest.mark.parametrize("config, message", [
    (DataConfig("mnist1d", classes=(3,)), "at least two distinct classes"),
    (DataConfig("mnist1d", classes=(3, 3)), "at least two distinct classes"),
    (DataConfig("mnist1d", classes=(3, 10)), "at least two distinct classes"),
    (DataConfig("fashion_mnist", mnist1d={"seed": 1}), "--dataset=fashion_mnist is another set"),
    (DataConfig("mnist1d", mnist1d={"train_split": 1.5}), "must be in (0, 1)"),
    (DataConfig("mnist1d", mnist1d={"padding": [9, 3]}), "low <= high"),
])
def test_bad_task_settings_are_refused(config, message):
    with pytest.raises(data.DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        data.check(config)


@pytest.fixture(scope="module")
def transferred(tiny_run, tmp_path_factory):
    """The tiny run's rounds 1 and 3 trained on a 3-class subset (interrupted once) and on a shifted MNIST-1D."""
    folder = str(tmp_path_factory.mktemp("transfer"))
    run = runs.load_run(tiny_run[0].output_dir)
    split = f"{TINY_FLAGS} --classes=5,6,7"
    calls = [0]
    def stop_soon():
        calls[0] += 1
        return calls[0] >= 40
    with pytest.raises(training.Interrupted):
        transfer.analyze(run, folder, split, [1, 3], stop_soon)
    transfer.analyze(run, folder, split, [1, 3])
    transfer.analyze(run, folder, f"{TINY_FLAGS} --mnist1d_max_translation=20 --mnist1d_shear_scale=1.5", [1, 3])
    targets = {}
    for name in os.listdir(os.path.join(folder, "transfer")):
        target = rundir.read_json(os.path.join(folder, "transfer", name, "target.json"))
        targets[target["label"]] = os.path.join(folder, "transfer", name)
    return run, folder, targets


def piece(target_dir, round_index, branch):
    return rundir.load_arrays(os.path.join(target_dir, f"round_{round_index:02d}", branch, "weights.npz"))


@pytest.mark.xdist_group("transferred")
def test_a_transferred_ticket_keeps_the_source_masks_exactly(transferred):
    run, _, targets = transferred
    assert set(targets) == {"--classes=5,6,7", "--mnist1d_max_translation=20 --mnist1d_shear_scale=1.5"}
    for label, target_dir in targets.items():
        for round_index in (1, 3):
            masks_a, theta_a = runs.masks(run, round_index), runs.start_weights(run, round_index)
            trained = piece(target_dir, round_index, "ticket")
            for key, mask in masks_a.items():
                weight = trained[pruning.variable_of(key)]
                if weight.shape == mask.shape:  # every layer, and the output layer of a 10-class B
                    assert not weight[mask == 0].any(), (label, key)      # pruned: exactly zero after training
                    assert np.all(weight[mask == 1] != 0), (label, key)   # kept: trained from A's values
                else:  # B's 3 classes: an output layer of another shape, dense
                    assert key == "output" and label.startswith("--classes") and weight.shape == (16, 3)
                    assert np.all(weight != 0)
            # The starting point: A's masks and theta_k, the output layer drawn afresh.
            weights, masks = transfer.piece_start("ticket", theta_a, masks_a, lambda seed: _fresh(run, label, seed),
                                                  _dense(label), transfer.branch_seeds(0, round_index))
            for key in ("fc1", "fc2"):
                np.testing.assert_array_equal(masks[key], masks_a[key])
                np.testing.assert_array_equal(weights[f"{key}/kernel"], theta_a[f"{key}/kernel"] * masks_a[key])
            if masks["output"].shape == masks_a["output"].shape:
                np.testing.assert_array_equal(masks["output"], masks_a["output"])
                assert not np.allclose(weights["output/kernel"], theta_a["output/kernel"] * masks_a["output"])


def _dense(label):
    classes = 3 if label.startswith("--classes") else 10
    return {"fc1": np.ones((40, 32), np.float32), "fc2": np.ones((32, 16), np.float32),
            "output": np.ones((16, classes), np.float32)}


def _fresh(run, label, seed):
    rng = np.random.default_rng(seed)
    shapes = {k: v.shape for k, v in runs.start_weights(run, 1).items()}
    if label.startswith("--classes"):
        shapes.update({"output/kernel": (16, 3), "output/bias": (3,)})
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


@pytest.mark.xdist_group("transferred")
def test_the_random_control_keeps_each_layers_count_and_reinit_the_mask(transferred):
    run, _, targets = transferred
    target_dir = targets["--classes=5,6,7"]
    masks_a = runs.masks(run, 3)
    random_weights, reinit_weights = piece(target_dir, 3, "random"), piece(target_dir, 3, "reinit")
    for key in ("fc1", "fc2"):
        assert np.count_nonzero(random_weights[f"{key}/kernel"]) == masks_a[key].sum()
        assert not np.array_equal(random_weights[f"{key}/kernel"] != 0, masks_a[key] == 1)
        assert not reinit_weights[f"{key}/kernel"][masks_a[key] == 0].any()


@pytest.mark.xdist_group("transferred")
def test_the_report_has_every_branch_of_both_targets_and_imp_on_b_at_the_same_density(transferred):
    run, folder, targets = transferred
    with open(os.path.join(folder, "transfer.csv")) as f:
        import csv
        rows = list(csv.DictReader(f))
    for label, target_dir in targets.items():
        mine = [r for r in rows if r["target"] == label]
        assert sorted((r["branch"], r["round"]) for r in mine) == sorted(
            [("dense", "0")] + [(b, str(r)) for r in (1, 3) for b in ("ticket", "reinit", "random", "imp")])
        imp_run = runs.load_run(os.path.join(target_dir, "imp_run"))
        assert runs.ticket_rounds(imp_run) == [0, 1, 2, 3] and imp_run["config"]["lottery"]["controls"] == []
        for row in mine:
            if row["branch"] == "imp":  # B's own round r: the same rates give (nearly) the same density
                assert row["imp_round"] == row["round"]
                ticket = next(r for r in mine if r["branch"] == "ticket" and r["round"] == row["round"])
                assert abs(float(row["weights_remaining_pct"]) - float(ticket["weights_remaining_pct"])) < 1
    report_text = open(os.path.join(folder, "report.md")).read()
    assert "### B: --classes=5,6,7" in report_text and "### B: --mnist1d_max_translation=20" in report_text
    assert os.path.getsize(os.path.join(folder, "transfer.png")) > 10_000


@pytest.mark.xdist_group("transferred")
def test_transfer_resumes_and_reads_back_what_it_trained(transferred, capsys):
    run, folder, targets = transferred
    before = {name: os.path.getmtime(os.path.join(targets["--classes=5,6,7"], "round_03", "ticket", name))
              for name in ("weights.npz", "metrics.json")}
    transfer.analyze(run, folder, f"{TINY_FLAGS} --classes=5,6,7", [1, 3])
    out = capsys.readouterr().out
    assert out.count("(done before)") == 6 + 4 and not re.search(r"\(\d+\.\ds\)", out)  # nothing trained
    assert before == {name: os.path.getmtime(os.path.join(targets["--classes=5,6,7"], "round_03", "ticket", name))
                      for name in before}


@pytest.mark.parametrize("target, message", [
    ("--model=mlp_32_16 --mnist1d_final_seq_length=60", "task B's examples have shape (60,), the source run's (40,)"),
    ("--model=mlp_100_100", "task B's --model=mlp_100_100 --width=0 is not the source run's --model=mlp_32_16"),
    ("--model=mlp_32_16 --prune_method=snip --target_density=0.5", "found by iterative IMP"),
    ("--model=mlp_32_16 --classes=4", "at least two distinct classes"),
    ("--model=mlp_32_16 --rounds=-1", "--rounds"),
])
def test_a_target_that_cannot_take_the_tickets_is_refused_with_one_line(tiny_run, target, message, capsys, tmp_path):
    status = analyze.cli(["analyze", "transfer", f"--output_dir={tiny_run[0].output_dir}",
                          f"--report_dir={tmp_path}", f"--target_flags={target}"])
    line, = capsys.readouterr().err.splitlines()
    assert status == 1 and line.startswith("lth_tf.analyze: error: ") and message in line
    assert not os.path.exists(tmp_path / "transfer")


def test_the_tiny_configs_flags_are_the_tiny_config():
    """TINY_FLAGS must say what conftest.tiny_config is, or the transfer targets differ from it in more than data."""
    target = transfer.target_config(TINY_FLAGS)
    tiny = tiny_config()
    assert (target.model, target.training, target.pruning) == (tiny.model, tiny.training, tiny.pruning)
    assert target.lottery.rewind_step == tiny.lottery.rewind_step and target.data == tiny.data
