"""A benchmark's table written into the README, between two marker lines.

Each script that publishes figures owns one block, `<!-- NAME -->` ... `<!-- /NAME -->`,
and rewrites it whole: the figures in the README are the last run's, with the
date, commit, TensorFlow version and devices they came from.
"""
import datetime
import os
import re
import subprocess

import tensorflow as tf


def provenance() -> str:
    """'2026-11-23, commit abc1234, TensorFlow 2.21.0, 2 CPU cores, 0 GPU(s)': where the figures come from
    ('commit abc1234 with uncommitted changes' where the code differs from the commit)."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ":/lth_tf", ":/benchmarks", ":/configs"]).returncode
    commit = f"{commit} with uncommitted changes" if commit and changed else commit
    return (f"{datetime.date.today()}, commit {commit or 'unknown'}, TensorFlow {tf.__version__}, "
            f"{os.cpu_count()} CPU cores, {len(tf.config.list_physical_devices('GPU'))} GPU(s)")


def write_block(path: str, name: str, lines: list[str]):
    """Replaces what lies between the file's <!-- name --> and <!-- /name --> lines by `lines`."""
    with open(path) as f:
        text = f.read()
    block = re.compile(rf"(<!-- {re.escape(name)} -->\n).*?(<!-- /{re.escape(name)} -->)", re.S)
    if not block.search(text):
        raise SystemExit(f"{path} has no <!-- {name} --> ... <!-- /{name} --> lines")
    with open(path, "w") as f:
        f.write(block.sub(lambda m: m.group(1) + "\n".join(lines) + "\n" + m.group(2), text))
    print(f"written into {path} (<!-- {name} -->)")
