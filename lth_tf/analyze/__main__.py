"""python -m lth_tf.analyze: see lth_tf/analyze/__init__.py."""
import sys

from lth_tf.analyze import cli

sys.exit(cli())
