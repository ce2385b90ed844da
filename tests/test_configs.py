"""Every preset parses and runs a couple of steps on synthetic data."""
import glob
import os

import pytest
from absl import flags

from lth_tf import main, rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.flags")))


def test_every_config_opens_with_a_comment_and_the_command():
    assert len(CONFIGS) == 8
    for path in CONFIGS:
        text = open(path).read()
        assert text.startswith("# ") and "python -m lth_tf.main" in text, path


def test_quick_config_equals_the_flag_defaults():
    flags.FLAGS.unparse_flags()
    main.parse_flags(["lth_tf", f"--flagfile={ROOT}/configs/quick.flags"])
    for line in open(f"{ROOT}/configs/quick.flags"):
        if line.startswith("--"):
            name = line[2:].split("=")[0]
            assert flags.FLAGS[name].value == flags.FLAGS[name].default, name
    flags.FLAGS.unparse_flags()


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_runs_two_steps_on_synthetic_data(path, tmp_path, capsys):
    flags.FLAGS.unparse_flags()
    main.parse_flags(["lth_tf", f"--flagfile={path}"])
    dataset = flags.FLAGS.dataset
    main.parse_flags(["lth_tf", f"--flagfile={path}", "--dataset=synthetic", f"--synthetic_like={dataset}",
                      "--validation_size=50", "--batch_size=16", "--epochs=0", "--train_steps=2", "--rewind_step=1",
                      "--eval_every=2", "--log_every=1", "--rounds=1", "--milestones=", "--warmup_steps=0",
                      f"--output_dir={tmp_path}"])
    main.run(flags.FLAGS)
    rows = rundir.read_results(str(tmp_path))
    assert [r["branch"] for r in rows] == ["ticket"] + ["ticket"] + list(flags.FLAGS.controls)
    assert float(rows[1]["weights_remaining_pct"]) < 100.0
    flags.FLAGS.unparse_flags()
