"""lth_tf: lottery-ticket experiments on TensorFlow 2 / Keras.

tfmot's pruning wrappers are Keras 2 layers, so `tf.keras` must resolve to
tf_keras. The switch only works if it is set before TensorFlow is imported,
which is why it sits here, ahead of every other module of the package.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
