"""The command line: an end-to-end quick run, resuming, and bad input."""
import os
import subprocess
import sys

import pytest
from absl import flags

from lth_tf import main, rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--flagfile=configs/quick.flags", "--train_steps=60", "--eval_every=20", "--log_every=20", "--rounds=2"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "lth_tf.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def snapshot(root):
    return {os.path.join(d, f): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(root) for f in files}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("quick") / "run"
    return output_dir, cli(*FAST, f"--output_dir={output_dir}")


def test_quick_run_writes_results_and_prints_the_table(quick_run):
    output_dir, first = quick_run
    assert first.returncode == 0, first.stderr[-2000:]
    rows = rundir.read_results(str(output_dir))
    assert [(r["round"], r["branch"]) for r in rows] == [
        ("0", "ticket"), ("1", "ticket"), ("1", "reinit"), ("2", "ticket"), ("2", "reinit")]
    assert [float(r["weights_remaining_pct"]) for r in rows] == [100.0, 80.6667, 80.6667, 65.1333, 65.1333]
    assert all(0.0 < float(r["test_accuracy"]) <= 1.0 for r in rows)
    assert "step     60/60" in first.stderr  # progress lines
    assert "ticket acc" in first.stdout and str(output_dir) in first.stdout
    for r in (0, 1, 2):
        assert os.path.exists(output_dir / f"round_{r:02d}" / "ticket" / "metrics.json")


def test_second_invocation_trains_nothing(quick_run):
    output_dir, first = quick_run
    before = snapshot(output_dir)
    second = cli(*FAST, f"--output_dir={output_dir}")
    assert second.returncode == 0, second.stderr[-2000:]
    assert " step " not in second.stderr
    assert snapshot(output_dir) == before
    assert second.stdout == first.stdout


def test_other_config_on_a_used_directory_is_refused_untouched(quick_run):
    output_dir, _ = quick_run
    before = snapshot(output_dir)
    refused = cli(*FAST, "--seed=1", f"--output_dir={output_dir}")
    assert refused.returncode == 1
    # TensorFlow's native libraries log a few lines at import; ours is the last and only one.
    assert "Traceback" not in refused.stderr
    assert [line for line in refused.stderr.splitlines() if line.startswith("lth_tf")] == [
        refused.stderr.strip().splitlines()[-1]] == [
        f"lth_tf: error: {output_dir} holds a run with another config (differs in data.seed, lottery.seed, "
        "training.seed); use a new --output_dir"]
    assert snapshot(output_dir) == before


@pytest.mark.parametrize("argv, names", [
    (["--model=lenet_5"], "--model"),
    (["--dataset=imagenet"], "--dataset"),
    (["--prune_rate_fc=1.5"], "--prune_rate_fc"),
    (["--prune_rate=0"], "--prune_rate"),
    (["--rounds=-1"], "--rounds"),
    (["--controls=reinit,shuffle"], "--controls"),
    (["--train_steps=ten"], "--train_steps"),
    (["--strategy=tpu"], "--strategy"),
    (["--flagfile=configs/missing.flags"], "missing.flags"),
    (["--train_steps=-5"], "--train_steps"),
    (["--checkpoint_every=often"], "--checkpoint_every"),
    (["--on_nan=retry"], "--on_nan"),
    (["--batch_size=0"], "--batch_size"),
])
def test_bad_flags_exit_2_with_one_line(argv, names, capsys):
    flags.FLAGS.unparse_flags()
    with pytest.raises(SystemExit) as exit_info:
        main.parse_flags(["lth_tf", *argv])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lth_tf: error:") and names in lines[0]


@pytest.mark.parametrize("argv, message", [
    (["--rewind_step=2000", "--train_steps=2000"], "--rewind_step=2000"),
    (["--validation_size=4000"], "--validation_size=4000"),
    (["--batch_size=5000"], "--batch_size=5000"),
    (["--prune_strategy=global", "--prune_exclude=fc9"], "--prune_exclude"),
    (["--model=conv4"], "needs image inputs"),
    (["--strategy=mirrored", "--batch_size=33"], "not divisible by the 2 replicas"),
])
def test_inconsistent_flags_exit_1_with_one_line(argv, message, tmp_path, capsys):
    flags.FLAGS.unparse_flags()
    main.parse_flags(["lth_tf", "--train_steps=10", f"--output_dir={tmp_path / 'run'}", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main.main(["lth_tf"])
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lth_tf: error:") and message in lines[0]
    flags.FLAGS.unparse_flags()


def test_a_malformed_flagfile_is_one_line(tmp_path, capsys):
    flagfile = tmp_path / "bad.flags"
    flagfile.write_text("--rounds=2\nlearning_rate 0.1\n")
    flags.FLAGS.unparse_flags()
    argv = main.parse_flags(["lth_tf", f"--flagfile={flagfile}"])
    with pytest.raises(SystemExit) as exit_info:
        main.main(argv)
    flags.FLAGS.unparse_flags()
    assert exit_info.value.code == 2
    line, = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("lth_tf: error: unexpected arguments 'learning_rate 0.1'")
