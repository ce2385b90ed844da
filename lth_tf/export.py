"""Tickets leave the run directory as files other programs read.

tickets/round_NN/saved_model/   the trained network of round NN, wrappers stripped,
                                signature serving_default: raw inputs -> logits, probabilities
tickets/round_NN/ticket.npz     the ticket itself: masks and rewind weights theta_k
tickets/sizes.csv               bytes of each SavedModel and of its gzip-compressed tar,
                                and the gzip size as a fraction of the dense round's

ticket.npz (numpy .npz, format 1):
  meta                  JSON string: format, model, width, input_shape, num_classes,
                        dataset, round, density, rewind_step, source
  mask/<layer>          float32 0/1, one per prunable layer
  weights/<layer>/<w>   float32 rewind weights theta_k (kernels already times the mask),
                        every trainable weight and BatchNorm statistic
"""
import io
import json
import os
import shutil
import tarfile

import numpy as np
import tensorflow as tf

from lth_tf import models, rundir
from lth_tf import tfmot_adapter as adapter

TICKET_FORMAT = 1


def build_stripped(model_config: models.ModelConfig, input_shape, num_classes, state, masks) -> tf.keras.Model:
    """A plain Keras model holding `state` under `masks`: wrapped, masked, then
    stripped of its wrappers with tfmot's strip_pruning."""
    plain = models.build(model_config.name, input_shape, num_classes, model_config.width or None)
    wrapped = adapter.wrap(plain)
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


def write_ticket(path: str, masks, theta_k, meta: dict):
    arrays = {f"mask/{name}": m.astype(np.float32) for name, m in masks.items()}
    for key, value in theta_k.items():
        layer = key.split("/")[0]
        is_masked_kernel = key.endswith("/kernel") and layer in masks
        arrays[f"weights/{key}"] = value * masks[layer] if is_masked_kernel else value
    arrays["meta"] = np.array(json.dumps({"format": TICKET_FORMAT, **meta}, sort_keys=True))
    rundir.save_arrays(path, arrays)


def read_ticket(path: str) -> tuple[dict, dict, dict]:
    """(meta, masks, weights) of a ticket file; ValueError if it is not one."""
    try:
        arrays = rundir.load_arrays(path)
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError, rundir.CorruptFile) as error:
        raise ValueError(f"{path} is not a readable lth_tf ticket file ({error})") from error
    if meta.get("format") != TICKET_FORMAT:
        raise ValueError(f"{path} has ticket format {meta.get('format')}, this lth_tf reads {TICKET_FORMAT}")
    masks = {k[len("mask/"):]: v for k, v in arrays.items() if k.startswith("mask/")}
    weights = {k[len("weights/"):]: v for k, v in arrays.items() if k.startswith("weights/")}
    return meta, masks, weights


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
