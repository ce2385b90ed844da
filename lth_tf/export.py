"""SavedModel export of tickets: the files other programs read.

tickets/round_NN/saved_model/         the trained network of round NN, wrappers stripped,
                                      signature serving_default: raw inputs -> logits, probabilities
tickets/round_NN/saved_model_sparse/  the same network and signature, every Dense layer held and computed
                                      as its surviving weights alone (--export_format=sparse or both)
tickets/round_NN/model.tflite         the same network and signature as a TFLite flatbuffer, float32, its
                                      sparse fully-connected layers computed sparse (--export_format=tflite;
                                      lth_tf/tflite.py says what TFLite keeps sparse)
tickets/round_NN/ticket.npz           the ticket itself: masks and rewind weights theta_k (format: tickets.py)
tickets/sizes.csv                     bytes of each exported form and of its gzip-compressed tar; a form's
                                      columns once a round has it

The sparse form (SparseServing; plain TensorFlow loads it, nothing of lth_tf
needed) keeps a Dense layer's transposed kernel [out, in] as `indices` [nnz, 2]
in row-major order (int16 where both sizes fit, else int32) and `values` [nnz]
float32; the mask decides what is kept. Biases stay dense (masked entries
stored as zeros), and so do conv layers: TensorFlow has no sparse convolution
on the CPU. Batches of up to SMALL_BATCH examples take the COO product
(SparseTensorDenseMatMul), larger ones the CSR product, under one tf.cond
around the whole network. Why these choices, with the measurements behind
them and what was tried instead: docs/speed.md, "The sparse SavedModel".
"""
import io
import os
import shutil
import tarfile

import numpy as np
import tensorflow as tf

from lth_tf import builders, data, paths, pruning, rundir, tflite, tickets
from lth_tf.config import ModelConfig, from_dict
from lth_tf import tfmot_adapter as adapter

# --export_format: the forms (SavedModel folders, a TFLite file) a round's tickets/round_NN/ gets.
DENSE, SPARSE, TFLITE = "saved_model", "saved_model_sparse", "model.tflite"
FORMATS = {"dense": (DENSE,), "sparse": (SPARSE,), "tflite": (TFLITE,), "both": (DENSE, SPARSE)}

SMALL_BATCH = 16  # largest batch the COO product serves (see the table above)


def forms(export_format: str) -> tuple:
    """The forms of an --export_format: one of FORMATS' names, or several, comma-separated."""
    return tuple(dict.fromkeys(form for name in export_format.split(",") for form in FORMATS[name.strip()]))


def build_stripped(model_config: ModelConfig, input_shape, num_classes, state, masks) -> tf.keras.Model:
    """A plain Keras model holding `state` under `masks`: wrapped, masked, then
    stripped of its wrappers with tfmot's strip_pruning."""
    plain = builders.build(model_config, input_shape, num_classes)
    wrapped = adapter.wrap(plain, prune_biases=any(pruning.is_bias(name) for name in masks))
    adapter.assign_state(wrapped, state)
    adapter.set_masks(wrapped, masks)
    return adapter.strip(wrapped)


class Serving(tf.Module):
    """Raw examples in (pixels 0..255, or MNIST-1D as generated); logits and
    probabilities out. Normalisation is part of the graph (None: the model
    holds it already, see folded())."""

    def __init__(self, model, input_shape, normalisation):
        super().__init__()
        self.model = model
        self.normalisation = normalisation and tuple(tf.constant(v, tf.float32) for v in normalisation)
        self.serve = tf.function(self._serve, input_signature=[
            tf.TensorSpec([None, *input_shape], tf.float32, name="inputs")])

    def _serve(self, inputs):
        if self.normalisation:
            scale, mean, std = self.normalisation
            inputs = (inputs * scale - mean) / std
        logits = self.model(inputs, training=False)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}


def folded(model, input_shape, normalisation):
    """(model, normalisation) for a TFLite file: where the inputs reach only a Flatten and it only a Dense
    layer with a bias, a copy of the model whose Dense layer takes the raw inputs, the normalisation folded
    into its kernel (x s/sd, row by row: its zeros stay zeros) and bias (- mean/sd . kernel), and None;
    else the two as they are. Exact up to float rounding, and three elementwise ops fewer per call."""
    sources = _sources(model)
    def only_consumer(name, kind):  # the one layer that takes `name`'s output, called once, if it is a `kind`
        found = [layer for layer, calls in sources.items() if any(name in call for call in calls)]
        if len(found) == 1 and len(sources[found[0]]) == 1 and type(model.get_layer(found[0])) is kind:
            return model.get_layer(found[0])
    flatten = len(model.inputs) == 1 and only_consumer(model.input_names[0], tf.keras.layers.Flatten)
    dense = flatten and flatten.data_format == "channels_last" and only_consumer(flatten.name, tf.keras.layers.Dense)
    if not dense or not dense.use_bias:
        return model, normalisation
    copy = tf.keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    layer = copy.get_layer(dense.name)
    scale, mean, std = (np.broadcast_to(np.asarray(v, np.float32), input_shape).reshape(-1) for v in normalisation)
    kernel = layer.kernel.numpy()
    layer.kernel.assign(kernel * (scale / std)[:, None])
    layer.bias.assign(layer.bias.numpy() - (mean / std) @ kernel)
    return copy, None


def _sources(model) -> dict:
    """Each layer's name -> the names of the layers whose outputs it takes, one list per call in `model`,
    read from the model's own config: a layer shared with another model (tfmot's strip_pruning keeps the
    unwrapped ones) has calls there too, which its .input would mix in."""
    layers = model.get_config()["layers"]
    if isinstance(model, tf.keras.Sequential):
        names = [layer["config"]["name"] for layer in layers if layer["class_name"] != "InputLayer"]
        return dict(zip(names, [[[model.input_names[0]]]] + [[[name]] for name in names]))
    return {layer["name"]: [_node_names(call) for call in layer["inbound_nodes"]] for layer in layers}


def _node_names(data) -> list:
    """The layer names in one call's serialised node data: its [layer, node, tensor, kwargs] entries, one
    or a list of them (a TF-op layer stores one bare), and the tensors passed in their kwargs."""
    if isinstance(data, dict):
        return [name for value in data.values() for name in _node_names(value)]
    if not isinstance(data, (list, tuple)):
        return []
    if len(data) >= 3 and isinstance(data[0], str) and isinstance(data[1], int) and isinstance(data[2], int):
        return [data[0], *_node_names(list(data[3:]))]
    return [name for item in data for name in _node_names(item)]


def export_saved_model(model, input_shape, normalisation, path: str):
    """Writes the SavedModel to a temporary folder, then renames it into place."""
    _save(Serving(model, tuple(input_shape), normalisation), path)


def _save(module, path: str):
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


class SparseKernel(tf.Module):
    """A Dense layer's kernel as its surviving entries (see the module docstring), and its bias."""

    def __init__(self, kernel: np.ndarray, mask: np.ndarray, bias, name: str):
        super().__init__(name=name)
        rows, cols = np.nonzero(mask.T)  # row-major over [out, in]: the order the CSR conversion needs
        index_type = np.int16 if max(mask.shape) <= np.iinfo(np.int16).max + 1 else np.int32
        self.indices = tf.Variable(np.stack([rows, cols], 1).astype(index_type), trainable=False, name="indices")
        self.values = tf.Variable(kernel.T[rows, cols], trainable=False, name="values")
        self.bias = None if bias is None else tf.Variable(bias, trainable=False, name="bias")
        self.shape = tf.constant(mask.T.shape, tf.int64)

    def few(self, x):
        """x @ kernel (+ bias) for x [batch, in], best for batches up to SMALL_BATCH: (kernel^T x^T)^T."""
        product = tf.raw_ops.SparseTensorDenseMatMul(a_indices=tf.cast(self.indices, tf.int32), a_values=self.values,
                                                     a_shape=self.shape, b=x, adjoint_b=True)
        return self._add_bias(tf.transpose(product))

    def many(self, x):
        """The same, best for larger batches."""
        csr = tf.raw_ops.SparseTensorToCSRSparseMatrix(indices=tf.cast(self.indices, tf.int64), values=self.values,
                                                       dense_shape=self.shape)
        product = tf.raw_ops.SparseMatrixMatMul(a=csr, b=x, adjoint_b=True, transpose_output=True)
        return self._add_bias(product)

    def _add_bias(self, y):
        return y if self.bias is None else tf.nn.bias_add(y, self.bias)


class SparseDense(tf.keras.layers.Layer):
    """A Dense layer computing with a SparseKernel's few or many product."""

    def __init__(self, kernel: SparseKernel, activation, many: bool, name: str):
        super().__init__(name=name)
        self.product = kernel.many if many else kernel.few
        self.activation = tf.keras.activations.get(activation)

    def call(self, inputs):
        return self.activation(self.product(inputs))


class SparseServing(tf.Module):
    """Serving's signature over `model` with its Dense layers made SparseKernels.
    Two Keras clones (few and many products) are traced into the signature, one
    tf.cond on the batch size between them, but not saved themselves: the
    SavedModel holds the kernels, the other layers' variables and one graph."""

    def __init__(self, model, masks, input_shape, normalisation):
        super().__init__()
        self.kernels = {}

        def sparse_clone(many: bool):
            def sparse_layer(layer):
                if type(layer) is not tf.keras.layers.Dense or layer.name not in masks or len(layer.input_shape) != 2:
                    return layer  # shared with `model`: its weights (conv kernels, BatchNorm) are used as they are
                if layer.name not in self.kernels:
                    bias = layer.bias.numpy() if layer.use_bias else None
                    self.kernels[layer.name] = SparseKernel(layer.kernel.numpy(), masks[layer.name], bias, layer.name)
                return SparseDense(self.kernels[layer.name], layer.get_config()["activation"], many, layer.name)
            return tf.keras.models.clone_model(model, clone_function=sparse_layer)

        few, many = sparse_clone(False), sparse_clone(True)
        held = {v.ref() for kernel in self.kernels.values() for v in kernel.variables}
        self.dense_variables = [v for v in few.variables if v.ref() not in held]
        scale, mean, std = normalisation
        self.scale, self.mean, self.std = (tf.constant(v, tf.float32) for v in (scale, mean, std))

        def serve(inputs):
            x = (inputs * self.scale - self.mean) / self.std
            logits = tf.cond(tf.shape(x)[0] <= SMALL_BATCH, lambda: few(x, training=False),
                             lambda: many(x, training=False))
            return {"logits": logits, "probabilities": tf.nn.softmax(logits)}
        self.serve = tf.function(serve, input_signature=[
            tf.TensorSpec([None, *input_shape], tf.float32, name="inputs")])


def export_sparse_saved_model(model, masks, input_shape, normalisation, path: str):
    """The sparse form of the stripped `model` (masked as `masks` say), written like export_saved_model."""
    _save(SparseServing(model, masks, tuple(input_shape), normalisation), path)


def tflite_form(model, input_shape, normalisation, sparse: bool = True) -> bytes:
    """The TFLite flatbuffer of the stripped `model` (tflite.convert; sparse=False: every weight dense), the
    normalisation folded in where folded() can; tflite.ConversionError if a layer cannot be converted."""
    model, normalisation = folded(model, tuple(input_shape), normalisation)
    return tflite.convert(Serving(model, tuple(input_shape), normalisation), sparse)


def export_tflite(model, input_shape, normalisation, path: str):
    """tflite_form(), written to a temporary file, then renamed into place."""
    content = tflite_form(model, input_shape, normalisation)
    with open(path + ".tmp", "wb") as f:
        f.write(content)
    os.replace(path + ".tmp", path)


def export_forms(model_config: ModelConfig, input_shape, num_classes, normalisation, state, masks, folder: str,
                 forms):
    """Writes the forms `forms` (DENSE, SPARSE, TFLITE) of the network holding `state` under `masks` into
    `folder`, the TFLite file last: a network TFLite cannot convert (tflite.ConversionError) keeps the others."""
    model = build_stripped(model_config, input_shape, num_classes, state, masks)
    for form in sorted(forms, key=lambda form: form == TFLITE):
        path = os.path.join(folder, form)
        if form == DENSE:
            export_saved_model(model, input_shape, normalisation, path)
        elif form == SPARSE:
            export_sparse_saved_model(model, masks, input_shape, normalisation, path)
        else:
            os.makedirs(folder, exist_ok=True)
            export_tflite(model, input_shape, normalisation, path)


def export_from_run(output_dir: str, round_index: int, forms) -> list[str]:
    """Makes the forms `forms` that tickets/round_NN/ lacks from the run's files (its config,
    the round's ticket file and trained weights), without loading the data; returns those made."""
    folder = paths.ticket_export(output_dir, round_index)
    missing = [form for form in forms if not os.path.exists(os.path.join(folder, form))]
    if missing:
        config = from_dict(rundir.read_json(paths.config(output_dir)))
        _, masks, _ = tickets.read_ticket(paths.ticket_file(output_dir, round_index))
        trained = rundir.load_arrays(paths.weights(output_dir, round_index, "ticket"))
        export_forms(config.model, data.input_shape(config.data), data.num_classes(config.data),
                     data.normalisation_of(config.data), trained, masks, folder, missing)
        record_size(output_dir, round_index, 100 * pruning.density(masks), folder)
    return missing


def stripped_from_run(output_dir: str, round_index: int):
    """(stripped model, input shape, normalisation) of a round's exported ticket, from the run's files."""
    config = from_dict(rundir.read_json(paths.config(output_dir)))
    _, masks, _ = tickets.read_ticket(paths.ticket_file(output_dir, round_index))
    trained = rundir.load_arrays(paths.weights(output_dir, round_index, "ticket"))
    input_shape = data.input_shape(config.data)
    return (build_stripped(config.model, input_shape, data.num_classes(config.data), trained, masks), input_shape,
            data.normalisation_of(config.data))


def directory_sizes(path: str) -> tuple[int, int]:
    """(bytes of the files under path, a folder or a file; bytes of a gzip-compressed tar of them)."""
    raw = (os.path.getsize(path) if os.path.isfile(path)
           else sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(path, arcname=os.path.basename(path))
    return raw, len(buffer.getvalue())


SIZE_KEYS = {DENSE: ("saved_model_bytes", "saved_model_gzip_bytes"),
             SPARSE: ("saved_model_sparse_bytes", "saved_model_sparse_gzip_bytes"),
             TFLITE: ("tflite_bytes", "tflite_gzip_bytes")}


def size_recorded(output_dir: str, round_index: int, folder: str) -> bool:
    """Whether tickets/sizes.csv has the round's row with the sizes of every exported form in `folder`."""
    row = next((r for r in rundir.read_sizes(output_dir) if int(r["round"]) == round_index), None)
    return row is not None and all(row.get(SIZE_KEYS[form][0]) for form in SIZE_KEYS
                                   if os.path.exists(os.path.join(folder, form)))


def record_size(output_dir: str, round_index: int, weights_remaining_pct: float, folder: str) -> dict:
    """Measures the exported forms in a round's `folder` and (re)writes its row of tickets/sizes.csv;
    returns that row."""
    row = dict(round=round_index, weights_remaining_pct=round(weights_remaining_pct, 4))
    for form, keys in SIZE_KEYS.items():
        if os.path.exists(os.path.join(folder, form)):
            row.update(zip(keys, directory_sizes(os.path.join(folder, form))))
    rows = {int(r["round"]): r for r in rundir.read_sizes(output_dir)}
    rows[round_index] = row
    rundir.write_sizes(output_dir, [row for _, row in sorted(rows.items())])
    return row
