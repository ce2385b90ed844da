"""TFLite tickets: model.tflite beside the SavedModel, predicting as it does
through LiteRT in a process without lth_tf or TensorFlow, its sparse
fully-connected layers computed sparse, and a layer TFLite cannot convert
said in one line with the other exports kept."""
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from tensorflow.lite.python import schema_py_generated as schema

import lth_tf
from conftest import resumed_copy
import user_models
from lth_tf import export, rundir, tflite
from lth_tf import tfmot_adapter as adapter

# LiteRT alone: lth_tf and TensorFlow cannot be imported. Runs the file on the inputs of an .npy file, at
# batch 1 for the first examples, then all at once, and saves the logits and probabilities beside them.
LITERT_ONLY = textwrap.dedent("""
    import sys
    sys.modules["lth_tf"] = sys.modules["tensorflow"] = None  # importing them fails
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    interpreter = Interpreter(model_path=sys.argv[1], num_threads=1,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    serve = interpreter.get_signature_runner("serving_default")
    x = np.load(sys.argv[2])
    one = np.concatenate([serve(inputs=x[i:i + 1])["logits"] for i in range(5)])
    out = serve(inputs=x)
    assert np.allclose(one, out["logits"][:5], atol=1e-5)  # batch 1 and the whole batch alike
    np.savez(sys.argv[3], **out)
""")


def litert(content: bytes):
    interpreter = Interpreter(model_content=content, num_threads=1,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return interpreter.get_signature_runner("serving_default")


@pytest.fixture(scope="module")
def tflite_resumed(tiny_run, tmp_path_factory):
    """The tiny run resumed with --export_format=dense,tflite: its exported rounds get their TFLite files."""
    return resumed_copy(tiny_run, tmp_path_factory.mktemp("tflite_resumed"), "dense,tflite")


@pytest.mark.xdist_group("tflite_resumed")
def test_a_resume_asking_for_tflite_adds_the_file_to_rounds_exported_before(tiny_run, tflite_resumed):
    experiment, _ = tiny_run
    assert rundir.read_results(tflite_resumed.output_dir) == rundir.read_results(experiment.output_dir)
    before = {int(r["round"]): r for r in rundir.read_sizes(experiment.output_dir)}
    after = {int(r["round"]): r for r in rundir.read_sizes(tflite_resumed.output_dir)}
    for r in (0, 3):
        folder = tflite_resumed.path("tickets", f"round_{r:02d}")
        assert sorted(os.listdir(folder)) == ["model.tflite", "saved_model", "ticket.npz"]
        assert {k: v for k, v in after[r].items() if "tflite" not in k} == before[r]
        on_disk, gzipped = export.directory_sizes(os.path.join(folder, "model.tflite"))
        assert int(after[r]["tflite_bytes"]) == on_disk == os.path.getsize(os.path.join(folder, "model.tflite"))
        assert int(after[r]["tflite_gzip_bytes"]) == gzipped


@pytest.mark.xdist_group("tflite_resumed")
@pytest.mark.parametrize("round_index", [0, 3])
def test_the_tflite_ticket_predicts_as_the_saved_model_through_litert_alone(tiny_run, tflite_resumed, round_index,
                                                                             tmp_path):
    _, rows = tiny_run
    splits = tflite_resumed.splits
    scale, mean, std = splits.normalisation
    raw = ((splits.x_test * std + mean) / scale).astype(np.float32)  # as the signature takes them
    np.save(tmp_path / "x.npy", raw)
    folder = tflite_resumed.path("tickets", f"round_{round_index:02d}")
    result = subprocess.run([sys.executable, "-c", LITERT_ONLY, os.path.join(folder, "model.tflite"),
                             str(tmp_path / "x.npy"), str(tmp_path / "out.npz")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    tflite_out = np.load(tmp_path / "out.npz")
    saved = tf.saved_model.load(os.path.join(folder, "saved_model")).signatures["serving_default"](inputs=raw)
    np.testing.assert_allclose(tflite_out["logits"], saved["logits"].numpy(), atol=1e-4)
    np.testing.assert_allclose(tflite_out["probabilities"], saved["probabilities"].numpy(), atol=1e-5)
    predictions = np.argmax(tflite_out["logits"], -1)
    assert np.array_equal(predictions, np.argmax(saved["logits"].numpy(), -1))
    expected = next(float(r["test_accuracy"]) for r in rows if r["round"] == round_index and r["branch"] == "ticket")
    assert abs(np.mean(predictions == splits.y_test) - expected) <= 1 / len(splits.y_test)


def lenet(widths, keep, blocks=()):
    """A Dense network of `widths` with each kernel's largest-magnitude `keep[i]` of weights kept (in whole
    1x4 blocks along the inputs for the layers numbered in `blocks`), scaled to outputs of about unit size."""
    rng = np.random.default_rng(0)
    inputs = tf.keras.Input((widths[0],))
    x = inputs
    for i, width in enumerate(widths[1:]):
        x = tf.keras.layers.Dense(width, "relu" if i < len(widths) - 2 else None, name=f"fc{i}")(x)
    model = tf.keras.Model(inputs, x)
    for i, (layer, fraction) in enumerate(zip(model.layers[1:], keep)):
        kernel = (rng.standard_normal(layer.kernel.shape) / np.sqrt(fraction * layer.kernel.shape[0])).astype(np.float32)
        size = np.abs(kernel) if i not in blocks else np.repeat(np.abs(kernel[::4]), 4, axis=0)
        threshold = np.sort(size.ravel())[::-1][int(fraction * kernel.size) - 1]
        layer.kernel.assign(np.where(size >= threshold, kernel, 0))
        layer.bias.assign(rng.standard_normal(layer.bias.shape).astype(np.float32) * 0.1)
    return model


def converted(model, width):
    return tflite.convert(export.Serving(model, (width,), (1.0, 0.0, 1.0)))


def fully_connected(content: bytes) -> list[dict]:
    """Each fully-connected op of the flatbuffer: whether a DENSIFY op expands its weight first, its weight's
    storage (dense, random CSR or 1x4 blocks), and whether the op reads a sparse weight (version 8)."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    graph = model.subgraphs[0]
    code = {i: (max(c.builtinCode, c.deprecatedBuiltinCode), c.version) for i, c in enumerate(model.operatorCodes)}
    densify = {op.outputs[0]: op.inputs[0] for op in graph.operators
               if code[op.opcodeIndex][0] == schema.BuiltinOperator.DENSIFY}
    found = []
    for op in graph.operators:
        if code[op.opcodeIndex][0] == schema.BuiltinOperator.FULLY_CONNECTED:
            weight = graph.tensors[densify.get(op.inputs[1], op.inputs[1])]
            storage = ("dense" if weight.sparsity is None else
                       "blocks" if len(weight.sparsity.traversalOrder) > 2 else "random CSR")
            found.append(dict(densified=op.inputs[1] in densify, storage=storage,
                              sparse_op=code[op.opcodeIndex][1] >= 8 and op.inputs[1] not in densify))
    return found


def test_layers_kept_sparse_enough_compute_sparse_and_the_others_dense():
    # fc0 5% (random CSR, computed sparse), fc1 8% in whole 1x4 blocks (blocks, sparse), fc2 50% (compressed,
    # expanded at load)
    model = lenet((784, 300, 100, 10), (0.05, 0.08, 0.5), blocks=(1,))
    content = converted(model, 784)
    assert fully_connected(content) == [dict(densified=False, storage="random CSR", sparse_op=True),
                                        dict(densified=False, storage="blocks", sparse_op=True),
                                        dict(densified=True, storage="random CSR", sparse_op=False)]
    x = np.random.default_rng(1).standard_normal((16, 784)).astype(np.float32)
    np.testing.assert_allclose(litert(content)(inputs=x)["logits"], model(x).numpy(), rtol=1e-5, atol=1e-5)
    assert len(content) * 8 < 4 * sum(w.size for w in model.get_weights())  # under an eighth of the float32s


def test_a_sparse_layer_whose_width_is_not_a_multiple_of_four_gives_the_keras_outputs():
    # TFLite's converter puts this layer in 1x4 blocks and drops its last two columns' weights (logits 0.05 off)
    model = lenet((302, 100, 10), (0.02, 1.0))
    content = converted(model, 302)
    assert fully_connected(content)[0] == dict(densified=False, storage="random CSR", sparse_op=True)
    x = np.random.default_rng(1).standard_normal((16, 302)).astype(np.float32)
    np.testing.assert_allclose(litert(content)(inputs=x)["logits"], model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_a_conv_net_with_batchnorm_exports_to_tflite_and_predicts_as_its_saved_model(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 8, 8, 1)).astype(np.uint8)
    y = rng.integers(0, 4, 40)
    run = lth_tf.find_tickets(user_models.small_cnn, data=(x, y, x[:20], y[:20]), output_dir=str(tmp_path / "cnn"),
                              rounds=1, train_steps=4, eval_every=2, batch_size=10, validation_size=10,
                              controls=["none"], export="all", export_format="dense,tflite", tensorboard=False)
    folder = os.path.join(run.output_dir, "tickets", "round_01")
    saved = tf.saved_model.load(os.path.join(folder, "saved_model")).signatures["serving_default"]
    raw = x[:20].astype(np.float32)
    with open(os.path.join(folder, "model.tflite"), "rb") as f:
        out = litert(f.read())(inputs=raw)
    np.testing.assert_allclose(out["logits"], saved(inputs=raw)["logits"].numpy(), atol=1e-4)


def test_a_layer_tflite_cannot_convert_is_one_line_naming_it_and_the_other_exports_are_kept(tmp_path, caplog):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 8)).astype(np.float32)
    y = rng.integers(0, 2, 40)
    with caplog.at_level(logging.WARNING):
        run = lth_tf.find_tickets(user_models.svd_mlp, data=(x, y, x[:20], y[:20]),
                                  output_dir=str(tmp_path / "svd"), rounds=1, train_steps=4, eval_every=2,
                                  batch_size=10, validation_size=10, controls=["none"], export="all",
                                  export_format="dense,tflite", tensorboard=False)
    said = [r.getMessage() for r in caplog.records if "TFLite" in r.getMessage()]
    assert said == [f"round {r}: no TFLite file: layer svd: op Svd is not supported by TFLite" for r in (0, 1)]
    for r in (0, 1):
        folder = os.path.join(run.output_dir, "tickets", f"round_{r:02d}")
        assert sorted(os.listdir(folder)) == ["saved_model", "ticket.npz"]
    assert [row["branch"] for row in run.results] == ["ticket", "ticket"]
    assert all(row["saved_model_bytes"] and not row.get("tflite_bytes") for row in rundir.read_sizes(run.output_dir))


@pytest.mark.parametrize("made", ["built", "stripped"])
def test_the_normalisation_is_folded_into_a_first_dense_layer_and_keeps_its_zeros(made):
    inputs = tf.keras.Input((4, 4, 1))
    hidden = tf.keras.layers.Dense(8, "relu", name="fc1")(tf.keras.layers.Flatten()(inputs))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, name="output")(hidden))
    if made == "stripped":  # as an export makes it: its Flatten is shared with the wrapped model
        model = adapter.strip(adapter.wrap(model, prune_biases=False))
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((16, 8)).astype(np.float32)
    kernel[rng.random((16, 8)) < 0.9] = 0
    model.get_layer("fc1").kernel.assign(kernel)
    model.get_layer("fc1").bias.assign(rng.standard_normal(8).astype(np.float32))
    normalisation = (1 / 255, 0.286, 0.353)
    copy, none = export.folded(model, (4, 4, 1), normalisation)
    assert none is None and np.array_equal(copy.get_layer("fc1").kernel.numpy() != 0, kernel != 0)
    content = export.tflite_form(model, (4, 4, 1), normalisation)
    ops = {op["op_name"] for op in Interpreter(model_content=content)._get_ops_details()}
    assert not ops & {"MUL", "SUB", "DIV"}
    raw = rng.uniform(0, 255, (5, 4, 4, 1)).astype(np.float32)
    expected = model((raw / 255 - 0.286) / 0.353).numpy()
    np.testing.assert_allclose(litert(content)(inputs=raw)["logits"], expected, rtol=1e-5, atol=1e-5)
    conv = user_models.small_cnn((8, 8, 1), 4)  # its inputs reach a convolution: nothing folded
    assert export.folded(conv, (8, 8, 1), normalisation) == (conv, normalisation)


def test_the_normalisation_is_folded_only_where_the_inputs_reach_one_flatten_and_it_one_dense_layer():
    normalisation = (1 / 255, 0.286, 0.353)
    flatten, dense = tf.keras.layers.Flatten, tf.keras.layers.Dense

    def functional(body):
        inputs = tf.keras.Input((4, 4, 1))
        return tf.keras.Model(inputs, body(inputs))

    def two_consumers(x):
        flat = flatten()(x)
        return dense(3)(tf.keras.layers.Add()([dense(16)(flat), flat]))
    not_folded = {
        "a TF op before the Flatten": functional(lambda x: dense(3)(flatten()(x / 255.0))),
        "the Flatten feeding two layers": functional(two_consumers),
        "a Dense without a bias": functional(lambda x: dense(3, use_bias=False)(flatten()(x))),
        "a channels-first Flatten": functional(lambda x: dense(3)(flatten(data_format="channels_first")(x))),
    }
    for what, model in not_folded.items():
        assert export.folded(model, (4, 4, 1), normalisation) == (model, normalisation), what
    sequential = tf.keras.Sequential([tf.keras.Input((4, 4, 1)), flatten(), dense(3)])
    assert export.folded(sequential, (4, 4, 1), normalisation)[1] is None
