"""The ticket file: a ticket's masks and rewind weights, for other runs and
programs (numpy only, so a ticket is checked before TensorFlow loads).

ticket.npz (numpy .npz, format 1):
  meta                  JSON string: format, model, width, input_shape, num_classes,
                        dataset, round, density, rewind_step, source
  mask/<layer>          float32 0/1, one per prunable layer (its kernel)
  mask/<layer>/bias     float32 0/1, where biases are pruned too (--prune_biases)
  weights/<layer>/<w>   float32 rewind weights theta_k (masked weights already times the mask),
                        every trainable weight and BatchNorm statistic
"""
import json

import numpy as np

from lth_tf import pruning, rundir
from lth_tf.config import ConfigError, ModelConfig

TICKET_FORMAT = 1


def write_ticket(path: str, masks, theta_k, meta: dict):
    arrays = {f"mask/{name}": m.astype(np.float32) for name, m in masks.items()}
    masked = {pruning.variable_of(name): mask for name, mask in masks.items()}
    for key, value in theta_k.items():
        arrays[f"weights/{key}"] = value * masked[key] if key in masked else value
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


def check(path: str, model: ModelConfig, input_shape, num_classes: int):
    """ConfigError unless `path` is a ticket of this model for examples of this shape."""
    try:
        meta, _, _ = read_ticket(path)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    check_model(meta, path, model)
    if (tuple(meta["input_shape"]), meta["num_classes"]) != (tuple(input_shape), num_classes):
        raise ConfigError(f"ticket {path} was found on {meta['dataset']} ({meta['num_classes']} classes of shape "
                          f"{tuple(meta['input_shape'])}), not on {num_classes} classes of shape {tuple(input_shape)}")


def check_model(meta: dict, path: str, model: ModelConfig):
    if (meta["model"], meta["width"]) != (model.name, model.width):
        raise ConfigError(f"ticket {path} is for --model={meta['model']} --width={meta['width']}, "
                          f"not --model={model.name} --width={model.width}")
