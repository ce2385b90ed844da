"""Every preset parses and runs a couple of steps on synthetic data; every config field has its flag."""
import dataclasses
import glob
import os

import pytest
from absl import flags

from lth_tf import flags as lth_flags
from lth_tf import main, rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.flags")))


def test_every_config_opens_with_a_comment_and_the_command():
    assert len(CONFIGS) == 10
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


SMOKE = ["--dataset=synthetic", "--train_steps=3", "--rounds=1"]


def parse(*argv):
    flags.FLAGS.unparse_flags()
    main.parse_flags(["lth_tf", *argv])
    return flags.FLAGS


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_takes_the_smoke_flags_last_flag_wins(path):
    """Only --dataset=synthetic --train_steps=3 --rounds=1 added: the synthetic
    set holds the config's validation split, and 3 steps is the length."""
    config, _ = lth_flags.experiment_config(parse(f"--flagfile={path}", *SMOKE))
    assert config.training.train_steps == 3 and config.lottery.rounds == 1
    assert config.data.dataset == "synthetic"
    assert parse(f"--flagfile={path}").validation_size in (-1, config.data.validation_size)  # -1: the default
    flags.FLAGS.unparse_flags()


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_trains_three_steps_on_synthetic_data(path, tmp_path):
    dataset = parse(f"--flagfile={path}").dataset
    # A smaller validation split and batch, no export and no TensorBoard (its weight histograms of VGG-19's
    # 20M weights cost a quarter of the run), only to keep the suite quick; the test above checks that the
    # config as it is takes the smoke flags, and test_summaries what TensorBoard gets.
    f = parse(f"--flagfile={path}", *SMOKE, f"--synthetic_like={dataset}", "--validation_size=50", "--batch_size=16",
              "--export=none", "--notensorboard", f"--output_dir={tmp_path}")
    main.run(f)
    rows = rundir.read_results(str(tmp_path))
    assert [r["branch"] for r in rows] == ["ticket", "ticket", *lth_flags.controls(f)]
    assert float(rows[1]["weights_remaining_pct"]) < 100.0
    for row in rows:
        metrics = rundir.read_json(str(tmp_path / f"round_{int(row['round']):02d}" / row["branch"] / "metrics.json"))
        assert metrics["history"][-1]["step"] == 3
    flags.FLAGS.unparse_flags()


def test_every_config_field_names_a_flag_that_exists():
    """config.FLAG_NAMES is what a refused rerun or mixed sweep prints (runs.differences): each of its flags
    must be one a user can type, and every field of config.json must have one."""
    from lth_tf import config, runs
    for section in dataclasses.fields(config.ExperimentConfig):
        for field in dataclasses.fields(section.type if not isinstance(section.type, str) else
                                        getattr(config, section.type)):
            flag = config.flag_of(section.name, field.name)
            assert field.name in config.FLAG_NAMES[section.name], (section.name, field.name)
            assert flag.rstrip("*") in lth_flags.DEFINED or any(
                name.startswith(flag.rstrip("*")) for name in lth_flags.DEFINED), (section.name, field.name, flag)
    # the seven the old naming rule got wrong
    a = {"data": {"mnist1d": {}}, "lottery": {"removed": ""},
         "pruning": {"oneshot": False, "target_density": [0.5], "score_batches": 1, "synflow_iterations": 100,
                     "early_bird_epsilon": 0.1}}
    b = {"data": {"mnist1d": {"seed": 1}}, "lottery": {"removed": "m.npz"},
         "pruning": {"oneshot": True, "target_density": [0.2], "score_batches": 2, "synflow_iterations": 10,
                     "early_bird_epsilon": 0.2}}
    assert [d.split(" ")[0] for d in runs.differences(a, b)] == [
        "--mnist1d_*", "--removed_weights", "--oneshot", "--target_density", "--score_batches",
        "--synflow_iterations", "--early_bird_epsilon"]
