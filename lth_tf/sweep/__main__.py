"""python -m lth_tf.sweep: see lth_tf/sweep/__init__.py."""
import sys

from lth_tf.sweep import cli

sys.exit(cli())
