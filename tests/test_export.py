"""Exported tickets: SavedModels that reproduce the run's accuracy without
lth_tf, ticket files that lth_tf trains again, and their sizes."""
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from conftest import tiny_config
from lth_tf import data, export, lottery, main, networks, pruning, rundir, tickets, training
from lth_tf import tfmot_adapter as adapter
from lth_tf.config import ConfigError, DataConfig, LotteryConfig, ModelConfig

PLAIN_TF_ACCURACY = textwrap.dedent("""
    import sys
    sys.modules["lth_tf"] = sys.modules["tensorflow_model_optimization"] = None  # importing them fails
    import numpy as np
    import tensorflow as tf
    from mnist1d.data import get_dataset_args, make_dataset
    data = make_dataset(get_dataset_args())
    serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    out = serve(inputs=tf.constant(data["x_test"], tf.float32))
    probabilities = out["probabilities"].numpy()
    assert np.allclose(probabilities.sum(-1), 1, atol=1e-5)
    assert np.array_equal(np.argmax(probabilities, -1), np.argmax(out["logits"].numpy(), -1))
    print(np.mean(np.argmax(out["logits"].numpy(), -1) == data["y_test"]))
""")


def test_exports_the_dense_and_last_rounds(tiny_run):
    experiment, _ = tiny_run
    assert sorted(os.listdir(experiment.path("tickets"))) == ["round_00", "round_03", "sizes.csv"]
    for r in ("round_00", "round_03"):
        assert sorted(os.listdir(experiment.path("tickets", r))) == ["saved_model", "ticket.npz"]


@pytest.mark.parametrize("round_index", [0, 3])
def test_saved_model_reproduces_the_test_accuracy_without_lth_tf(tiny_run, round_index):
    experiment, rows = tiny_run
    path = experiment.path("tickets", f"round_{round_index:02d}", "saved_model")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run([sys.executable, "-c", PLAIN_TF_ACCURACY, path], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = next(float(r["test_accuracy"]) for r in rows if r["round"] == round_index and r["branch"] == "ticket")
    assert abs(float(result.stdout.split()[-1]) - expected) <= 1 / 1000  # within one of 1,000 test examples


def test_saved_model_weights_are_exactly_zero_under_the_mask(tiny_run):
    experiment, _ = tiny_run
    masks = rundir.load_arrays(experiment.path("round_03", "masks.npz"))
    reader = tf.train.load_checkpoint(experiment.path("tickets", "round_03", "saved_model", "variables", "variables"))
    kernels = {}
    for name, shape in reader.get_variable_to_shape_map().items():
        if "kernel" in name and "OPTIMIZER" not in name:
            kernels[tuple(shape)] = reader.get_tensor(name)
    assert len(kernels) == len(masks)  # mlp_32_16: every kernel shape is distinct
    trained = rundir.load_arrays(experiment.path("round_03", "ticket", "weights.npz"))
    for name, mask in masks.items():
        kernel = kernels[mask.shape]
        assert np.all(kernel[mask == 0] == 0)
        np.testing.assert_array_equal(kernel, trained[f"{name}/kernel"])


def test_ticket_file_holds_the_mask_and_the_rewind_weights(tiny_run):
    experiment, _ = tiny_run
    meta, masks, weights = tickets.read_ticket(experiment.path("tickets", "round_03", "ticket.npz"))
    assert meta["model"] == "mlp_32_16" and meta["round"] == 3 and meta["rewind_step"] == 5
    round_masks = rundir.load_arrays(experiment.path("round_03", "masks.npz"))
    theta_k = rundir.load_arrays(experiment.path("init", "theta_k.npz"))
    assert meta["density"] == pytest.approx(pruning.density(round_masks))
    for name, mask in round_masks.items():
        np.testing.assert_array_equal(masks[name], mask)
    for key, value in theta_k.items():
        layer = key.split("/")[0]
        expected = value * round_masks[layer] if key.endswith("/kernel") else value
        assert np.array_equal(weights[key].view(np.uint32), expected.view(np.uint32)), key


def test_a_ticket_trains_again_as_a_new_run(tiny_run, tmp_path, capsys):
    experiment, _ = tiny_run
    ticket = experiment.path("tickets", "round_03", "ticket.npz")
    _, ticket_masks, ticket_weights = tickets.read_ticket(ticket)
    flags.FLAGS.unparse_flags()
    main.parse_flags(["lth_tf", f"--ticket={ticket}", "--model=mlp_32_16", "--seed=4", "--learning_rate=0.01",
                      "--train_steps=20", "--eval_every=10", "--rounds=1", "--controls=reinit,random_prune",
                      f"--output_dir={tmp_path}"])
    main.run(flags.FLAGS)
    flags.FLAGS.unparse_flags()
    rows = rundir.read_results(str(tmp_path))
    assert [(r["round"], r["branch"]) for r in rows] == [
        ("0", b) for b in ("ticket", "reinit", "random_prune")] + [("1", b) for b in ("ticket", "reinit", "random_prune")]
    density = 100 * pruning.density(ticket_masks)
    assert float(rows[0]["weights_remaining_pct"]) == pytest.approx(density, abs=1e-4)
    theta_0 = rundir.load_arrays(str(tmp_path / "init" / "theta_0.npz"))
    for key, value in ticket_weights.items():
        np.testing.assert_array_equal(theta_0[key], value)
    final = rundir.load_arrays(str(tmp_path / "round_00" / "ticket" / "weights.npz"))
    for name, mask in ticket_masks.items():
        assert np.all(final[f"{name}/kernel"][mask == 0] == 0)
    # random_prune keeps weights outside the ticket: they start from the initialiser, not from 0
    again = lottery.prepare(experiment.config.__class__(**{**experiment.config.__dict__,
                                                           "lottery": LotteryConfig(ticket=ticket, seed=4)}),
                            experiment.splits, training.make_strategy("default"), str(tmp_path / "probe"))
    state, random_masks, _ = lottery.branch_start(again, 0, "random_prune", ticket_masks)
    fresh = lottery.initial_state(again.config, again.splits, lottery.control_seed(4, 0, "random_prune"))
    for name, mask in ticket_masks.items():
        kernel, kept = state[f"{name}/kernel"], random_masks[name] > 0
        np.testing.assert_array_equal(kernel[kept & (mask > 0)], ticket_weights[f"{name}/kernel"][kept & (mask > 0)])
        np.testing.assert_array_equal(kernel[kept & (mask == 0)], fresh[f"{name}/kernel"][kept & (mask == 0)])
        assert np.all(kernel[kept] != 0) and np.all(kernel[~kept] == 0)
    round_1 = rundir.load_arrays(str(tmp_path / "round_01" / "masks.npz"))
    for name, mask in round_1.items():
        before = int(ticket_masks[name].sum())
        rate = 0.1 if name == "output" else 0.2
        assert mask.sum() == before - pruning.count_to_remove(rate, before)


def test_a_ticket_for_another_model_is_refused(tiny_run, tmp_path):
    experiment, _ = tiny_run
    ticket = experiment.path("tickets", "round_03", "ticket.npz")
    config = tiny_config(ticket=ticket)
    config = config.__class__(**{**config.__dict__, "model": config.model.__class__("mlp_32_32")})
    with pytest.raises(ConfigError, match="is for --model=mlp_32_16"):
        lottery.prepare(config, experiment.splits, training.make_strategy("default"), str(tmp_path))
    synthetic = data.load(DataConfig("synthetic", synthetic_like="mnist", validation_size=100))
    with pytest.raises(ConfigError, match="does not fit mlp_32_16 on this dataset: weight fc1/kernel has "
                                                  r"shape \(40, 32\), expected \(784, 32\)"):
        lottery.prepare(tiny_config(ticket=ticket), synthetic, training.make_strategy("default"),
                        str(tmp_path / "wrong_shape"))
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a ticket")
    with pytest.raises(ConfigError, match="not a readable lth_tf ticket"):
        lottery.prepare(tiny_config(ticket=str(broken)), experiment.splits, training.make_strategy("default"),
                        str(tmp_path / "other"))


def test_size_table_compares_tickets_with_the_dense_round(tiny_run):
    experiment, _ = tiny_run
    sizes = rundir.read_sizes(experiment.output_dir)
    assert [int(r["round"]) for r in sizes] == [0, 3]
    for row in sizes:
        folder = experiment.path("tickets", f"round_{int(row['round']):02d}", "saved_model")
        on_disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)
        assert int(row["saved_model_bytes"]) == on_disk
        assert 0 < int(row["saved_model_gzip_bytes"]) < on_disk
    assert float(sizes[0]["gzip_vs_dense_gzip"]) == 1.0
    assert float(sizes[1]["gzip_vs_dense_gzip"]) < 1.0  # zeros compress


def test_a_resume_completes_an_export_killed_before_its_size_row(tiny_run, tmp_path):
    experiment, rows = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(experiment.output_dir, copy)
    sizes = rundir.read_sizes(str(copy))
    rundir.write_sizes(str(copy), [row for row in sizes if row["round"] != "3"])  # killed after the SavedModel
    again = lottery.prepare(experiment.config, experiment.splits, experiment.trainer.strategy, str(copy))
    lottery.run(again)
    assert rundir.read_sizes(str(copy)) == sizes


def test_an_image_saved_model_normalises_raw_pixels_in_its_graph(tmp_path):
    """Fashion-MNIST-shaped data: the signature takes pixels 0..255 and applies the
    dataset's mean and std itself (MNIST-1D's normalisation is the identity)."""
    splits = data.load(DataConfig("synthetic", synthetic_like="fashion_mnist", validation_size=100))
    scale, mean, std = splits.normalisation
    assert scale != 1 and mean[0] != 0
    tf.keras.utils.set_random_seed(0)
    model = networks.build("conv2", splits.input_shape, 10)
    masks = {name: np.ones(m.shape, np.float32) for name, m in adapter.get_masks(adapter.wrap(model)).items()}
    stripped = export.build_stripped(ModelConfig("conv2"), splits.input_shape, 10, adapter.get_state(model), masks)
    export.export_saved_model(stripped, splits.input_shape, splits.normalisation, str(tmp_path / "saved_model"))
    raw = np.random.default_rng(1).integers(0, 256, (8, 28, 28, 1)).astype(np.float32)
    serve = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"]
    logits = serve(inputs=tf.constant(raw))["logits"].numpy()
    np.testing.assert_allclose(logits, model((raw * scale - mean) / std, training=False).numpy(), rtol=1e-4,
                               atol=1e-4)
    assert not np.allclose(logits, model(raw, training=False).numpy(), atol=1e-2)
