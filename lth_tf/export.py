"""Tickets leave the run directory as files other programs read.

tickets/round_NN/saved_model/   the trained network of round NN, wrappers stripped,
                                signature serving_default: raw inputs -> logits, probabilities
tickets/round_NN/ticket.npz     the ticket itself: masks and rewind weights theta_k
tickets/sizes.csv               bytes of each SavedModel and of its gzip-compressed tar,
                                and the gzip size as a fraction of the dense round's

The ticket file's format is in tickets.py.
"""
import io
import os
import shutil
import tarfile

import tensorflow as tf

from lth_tf import networks, rundir
from lth_tf.config import ModelConfig
from lth_tf import tfmot_adapter as adapter


def build_stripped(model_config: ModelConfig, input_shape, num_classes, state, masks) -> tf.keras.Model:
    """A plain Keras model holding `state` under `masks`: wrapped, masked, then
    stripped of its wrappers with tfmot's strip_pruning."""
    plain = networks.build(model_config.name, input_shape, num_classes, model_config.width or None,
                           model_config.init, model_config.initializer)
    wrapped = adapter.wrap(plain, prune_biases=any(name.endswith("/bias") for name in masks))
    adapter.assign_state(wrapped, state)
    adapter.set_masks(wrapped, masks)
    return adapter.strip(wrapped)


class Serving(tf.Module):
    """Raw examples in (pixels 0..255, or MNIST-1D as generated); logits and
    probabilities out. Normalisation is part of the graph."""

    def __init__(self, model, input_shape, normalisation):
        super().__init__()
        self.model = model
        scale, mean, std = normalisation
        self.scale, self.mean, self.std = (tf.constant(v, tf.float32) for v in (scale, mean, std))
        self.serve = tf.function(self._serve, input_signature=[
            tf.TensorSpec([None, *input_shape], tf.float32, name="inputs")])

    def _serve(self, inputs):
        logits = self.model((inputs * self.scale - self.mean) / self.std, training=False)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}


def export_saved_model(model, input_shape, normalisation, path: str):
    """Writes the SavedModel to a temporary folder, then renames it into place."""
    module = Serving(model, tuple(input_shape), normalisation)
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def directory_sizes(path: str) -> tuple[int, int]:
    """(bytes of the files under path, bytes of a gzip-compressed tar of them)."""
    raw = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(path, arcname=os.path.basename(path))
    return raw, len(buffer.getvalue())


def record_size(output_dir: str, round_index: int, weights_remaining_pct: float, saved_model: str):
    """Measures a SavedModel and (re)writes its row of tickets/sizes.csv;
    returns (bytes, gzip bytes)."""
    size, gzipped = directory_sizes(saved_model)
    rows = {int(r["round"]): r for r in rundir.read_sizes(output_dir)}
    rows[round_index] = dict(round=round_index, weights_remaining_pct=round(weights_remaining_pct, 4),
                             saved_model_bytes=size, saved_model_gzip_bytes=gzipped)
    rundir.write_sizes(output_dir, [row for _, row in sorted(rows.items())])
    return size, gzipped
