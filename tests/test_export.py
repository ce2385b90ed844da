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

from conftest import resumed_copy, tiny_config
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
    for path in sys.argv[1:]:  # one accuracy line per SavedModel
        serve = tf.saved_model.load(path).signatures["serving_default"]
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


def test_saved_model_reproduces_the_test_accuracy_without_lth_tf(tiny_run):
    experiment, rows = tiny_run
    paths = [experiment.path("tickets", f"round_{r:02d}", "saved_model") for r in (0, 3)]
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run([sys.executable, "-c", PLAIN_TF_ACCURACY, *paths], capture_output=True, text=True,
                            env=env, timeout=300)  # one process for both rounds: one TensorFlow import
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout.split()[-2:]
    for round_index, accuracy in zip((0, 3), printed):
        expected = next(float(r["test_accuracy"]) for r in rows
                        if r["round"] == round_index and r["branch"] == "ticket")
        assert abs(float(accuracy) - expected) <= 1 / 1000  # within one of 1,000 test examples


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


# --export_format=sparse|both: tickets/round_NN/saved_model_sparse/ beside the dense SavedModel.

PLAIN_TF_SPARSE_EQUALS_DENSE = textwrap.dedent("""
    import sys
    sys.modules["lth_tf"] = sys.modules["tensorflow_model_optimization"] = None  # importing them fails
    import numpy as np
    import tensorflow as tf
    from mnist1d.data import get_dataset_args, make_dataset
    x = make_dataset(get_dataset_args())["x_test"].astype(np.float32)
    dense, sparse = (tf.saved_model.load(path).signatures["serving_default"] for path in sys.argv[1:3])
    for n in (1, 16, 17, len(x)):  # the sparse form's small-batch and large-batch products
        expected, got = dense(inputs=tf.constant(x[:n])), sparse(inputs=tf.constant(x[:n]))
        for key in ("logits", "probabilities"):
            np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), rtol=1e-5, atol=1e-5)
    print(n, "examples alike")
""")


@pytest.fixture(scope="module")
def sparse_resumed(tiny_run, tmp_path_factory):
    """The tiny run resumed with --export_format=both: its exported rounds get their sparse SavedModels."""
    return resumed_copy(tiny_run, tmp_path_factory.mktemp("sparse_resumed"), "both")


def files_under(folder):
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(folder) for f in files}


@pytest.mark.xdist_group("sparse_resumed")
def test_a_resume_asking_for_the_sparse_form_adds_it_to_rounds_exported_dense(tiny_run, sparse_resumed):
    experiment, _ = tiny_run
    assert rundir.read_results(sparse_resumed.output_dir) == rundir.read_results(experiment.output_dir)
    before = {int(r["round"]): r for r in rundir.read_sizes(experiment.output_dir)}
    after = {int(r["round"]): r for r in rundir.read_sizes(sparse_resumed.output_dir)}
    assert sorted(after) == [0, 3]
    for r in (0, 3):
        folder = sparse_resumed.path("tickets", f"round_{r:02d}")
        assert sorted(os.listdir(folder)) == ["saved_model", "saved_model_sparse", "ticket.npz"]
        assert files_under(os.path.join(folder, "saved_model")) == files_under(
            experiment.path("tickets", f"round_{r:02d}", "saved_model"))  # the dense export is kept as it was
        assert {k: v for k, v in after[r].items() if "sparse" not in k} == before[r]
        on_disk, gzipped = export.directory_sizes(os.path.join(folder, "saved_model_sparse"))
        assert int(after[r]["saved_model_sparse_bytes"]) == on_disk
        assert int(after[r]["saved_model_sparse_gzip_bytes"]) == gzipped < on_disk


@pytest.mark.xdist_group("sparse_resumed")
def test_sparse_saved_model_gives_the_dense_outputs_in_plain_tensorflow(sparse_resumed):
    folder = sparse_resumed.path("tickets", "round_03")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run([sys.executable, "-c", PLAIN_TF_SPARSE_EQUALS_DENSE, os.path.join(folder, "saved_model"),
                             os.path.join(folder, "saved_model_sparse")], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[0] == "1000"  # every MNIST-1D test example


@pytest.mark.xdist_group("sparse_resumed")
def test_sparse_saved_model_holds_exactly_the_surviving_weights(sparse_resumed):
    masks = rundir.load_arrays(sparse_resumed.path("round_03", "masks.npz"))
    trained = rundir.load_arrays(sparse_resumed.path("round_03", "ticket", "weights.npz"))
    path = sparse_resumed.path("tickets", "round_03", "saved_model_sparse")
    loaded = tf.saved_model.load(path)
    assert sorted(loaded.kernels) == sorted(masks) == ["fc1", "fc2", "output"]
    for name, mask in masks.items():
        kernel = loaded.kernels[name]
        indices, values = kernel.indices.numpy(), kernel.values.numpy()
        assert indices.dtype == np.int16 and values.shape == (int(mask.sum()),) and indices.shape == (mask.sum(), 2)
        rebuilt = np.zeros(mask.shape, np.float32)
        rebuilt[indices[:, 1], indices[:, 0]] = values  # (output unit, input unit)
        expected = trained[f"{name}/kernel"] * mask
        assert np.array_equal(rebuilt.view(np.uint32), expected.view(np.uint32)), name
        np.testing.assert_array_equal(kernel.bias.numpy(), trained[f"{name}/bias"])
    # and nothing else: no variable of the SavedModel has a kernel's shape
    shapes = tf.train.load_checkpoint(os.path.join(path, "variables", "variables")).get_variable_to_shape_map()
    assert not {tuple(s) for s in shapes.values()} & {m.shape for m in masks.values()}


@pytest.mark.xdist_group("sparse_resumed")
def test_a_sparse_form_is_made_from_the_run_files_as_the_run_makes_it(sparse_resumed, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(sparse_resumed.output_dir, copy)
    shutil.rmtree(copy / "tickets" / "round_03" / "saved_model_sparse")
    assert export.export_from_run(str(copy), 3, export.FORMATS["both"]) == ["saved_model_sparse"]
    assert export.export_from_run(str(copy), 3, export.FORMATS["both"]) == []
    variables = os.path.join("saved_model_sparse", "variables", "variables.data-00000-of-00001")
    made, original = (open(os.path.join(d, "tickets", "round_03", variables), "rb").read()
                      for d in (str(copy), sparse_resumed.output_dir))
    assert made == original
    row, = (r for r in rundir.read_sizes(str(copy)) if r["round"] == "3")
    assert int(row["saved_model_sparse_bytes"]) == export.directory_sizes(
        str(copy / "tickets" / "round_03" / "saved_model_sparse"))[0]  # the graph's names may differ by a digit


@pytest.mark.parametrize("name, density, prune_biases", [("lenet_300_100", 0.8 ** 14, False),
                                                          ("conv2", 0.3, True)])
def test_a_sparse_ticket_computes_as_the_dense_one_and_is_smaller(name, density, prune_biases, tmp_path):
    """LeNet-300-100 at 4.4% of its weights (the issue's target: 5x smaller on disk); Conv-2 with masked
    biases, its conv layers kept dense in the sparse form."""
    shape, normalisation = data.SHAPES["fashion_mnist"], data.raw_normalisation("fashion_mnist")
    tf.keras.utils.set_random_seed(0)
    plain = networks.build(name, shape, 10)
    rng = np.random.default_rng(0)
    masks = {key: (rng.random(mask.shape) < density).astype(np.float32)
             for key, mask in adapter.get_masks(adapter.wrap(plain, prune_biases=prune_biases)).items()}
    state = {key: rng.normal(0, 0.1, value.shape).astype(np.float32) if key.endswith("/bias") else value
             for key, value in adapter.get_state(plain).items()}  # biases start at 0: give them values to mask
    export.export_forms(ModelConfig(name), shape, 10, normalisation, state, masks, str(tmp_path),
                        export.FORMATS["both"])
    raw = rng.integers(0, 256, (40, *shape)).astype(np.float32)
    dense, sparse = (tf.saved_model.load(str(tmp_path / form)) for form in export.FORMATS["both"])
    for n in (1, 40):
        expected = dense.signatures["serving_default"](inputs=tf.constant(raw[:n]))
        got = sparse.signatures["serving_default"](inputs=tf.constant(raw[:n]))
        for key in ("logits", "probabilities"):
            np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), rtol=1e-4, atol=1e-5)
    dense_layers = [layer.name for layer in plain.layers if isinstance(layer, tf.keras.layers.Dense)]
    assert sorted(sparse.kernels) == sorted(dense_layers)
    for layer in dense_layers:
        assert sparse.kernels[layer].values.shape[0] == masks[layer].sum()
        if prune_biases:  # stored dense, zero where masked
            bias = sparse.kernels[layer].bias.numpy()
            assert np.all(bias[masks[f"{layer}/bias"] == 0] == 0) and np.any(bias != 0)
    held = {v.name: v.numpy() for v in sparse.dense_variables}
    conv_layers = [layer.name for layer in plain.layers if isinstance(layer, tf.keras.layers.Conv2D)]
    assert len(held) == 2 * len(conv_layers)  # their kernels and biases, nothing of the Dense layers
    for layer in conv_layers:  # dense, the mask's zeros stored
        kernel, = (v for key, v in held.items() if f"{layer}/kernel" in key)
        assert kernel.shape == masks[layer].shape and np.all(kernel[masks[layer] == 0] == 0) and np.any(kernel != 0)
    bytes_on_disk = {form: export.directory_sizes(str(tmp_path / form))[0] for form in export.FORMATS["both"]}
    if name == "lenet_300_100":
        assert bytes_on_disk[export.SPARSE] * 5 < bytes_on_disk[export.DENSE]


def test_sizes_csv_has_sparse_columns_only_once_a_sparse_form_was_exported(tmp_path):
    old = [dict(round=0, weights_remaining_pct=100.0, saved_model_bytes=900, saved_model_gzip_bytes=800),
           dict(round=3, weights_remaining_pct=51.2, saved_model_bytes=900, saved_model_gzip_bytes=400)]
    rundir.write_sizes(str(tmp_path), old)
    path = tmp_path / "tickets" / "sizes.csv"
    assert path.read_text().splitlines() == [",".join(rundir.SIZE_COLUMNS), "0,100.0,900,800,1.0", "3,51.2,900,400,0.5"]
    rows = rundir.read_sizes(str(tmp_path))
    rows.append(dict(round=5, weights_remaining_pct=32.8, saved_model_sparse_bytes=300,
                     saved_model_sparse_gzip_bytes=200))  # exported sparse only
    rundir.write_sizes(str(tmp_path), rows)
    assert path.read_text().splitlines() == [",".join(rundir.SIZE_COLUMNS + rundir.SPARSE_SIZE_COLUMNS),
                                             "0,100.0,900,800,1.0,,", "3,51.2,900,400,0.5,,", "5,32.8,,,,300,200"]


def test_a_bad_export_format_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lth_tf.main", "--export_format=csr",
                             f"--output_dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=300,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 2
    line, = result.stderr.splitlines()
    assert line.startswith("lth_tf: error: ") and "--export_format=csr" in line and "dense, sparse, tflite, both" in line
    assert not os.path.exists(tmp_path / "run")
