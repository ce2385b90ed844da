"""lth_tf: lottery-ticket experiments on TensorFlow 2 / Keras.

The Python API (lth_tf.api; docs/own_model.md):

    find_tickets(model, data, output_dir=..., **settings) -> Run   the command line's experiment
    Run                                                             a run directory: results, masks, weights
    Error                                                           why find_tickets stopped, in one line

tfmot's pruning wrappers are Keras 2 layers, so `tf.keras` must resolve to
tf_keras. The switch only works if it is set before TensorFlow is imported,
which is why it sits here, ahead of every other module of the package.
Importing lth_tf loads no TensorFlow: the API's names load on first use.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["find_tickets", "Run", "Error"]


def __getattr__(name):
    if name in __all__:
        from lth_tf import api
        return getattr(api, name)
    raise AttributeError(f"module 'lth_tf' has no attribute {name!r}")
