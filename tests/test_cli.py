"""The command line: an end-to-end quick run, resuming, the console and the
log, and bad input (one line on stderr, before TensorFlow loads)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from conftest import write_idx_dir
from lth_tf import flags as lth_flags
from lth_tf import main, rundir, tickets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--flagfile=configs/quick.flags", "--train_steps=60", "--eval_every=20", "--log_every=20", "--rounds=2"]
# Runs lth_tf.main as `python -m` does, then says on stdout whether TensorFlow was imported.
WITNESS = ("import atexit, runpy, sys\n"
           "atexit.register(lambda: print('tensorflow imported:', 'tensorflow' in sys.modules))\n"
           "sys.argv[0] = 'lth_tf.main'\n"
           "runpy.run_module('lth_tf.main', run_name='__main__', alter_sys=True)\n")


def cli(*args, witness=False):
    command = [sys.executable, "-c", WITNESS] if witness else [sys.executable, "-m", "lth_tf.main"]
    return subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def snapshot(root):
    return {os.path.join(d, f): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(root) for f in files}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("quick") / "run dir"  # a space: the printed commands quote it
    return output_dir, cli(*FAST, f"--output_dir={output_dir}")


@pytest.mark.xdist_group("cli_quick_run")
def test_the_commands_a_run_prints_work_as_printed(quick_run, capsys, monkeypatch):
    output_dir, first = quick_run
    command, = [line.split("  ", 1)[1] for line in first.stdout.splitlines() if line.startswith("report:")]
    done = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"})
    assert done.returncode == 0 and os.path.exists(output_dir / "report.md"), (command, done.stderr)
    watch, = [line for line in first.stdout.splitlines() if line.startswith("watch:")]
    assert "-m tensorboard.main --logdir '" in watch  # quoted
    from lth_tf import report

    def read_only(path, payload):
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr(rundir, "atomic_write", read_only)
    assert report.cli(["report", f"--output_dir={output_dir}"]) == 1
    line, = capsys.readouterr().err.splitlines()
    assert line.startswith("lth_tf.report: error: cannot write ") and "Permission denied" in line


@pytest.mark.xdist_group("cli_quick_run")
def test_quick_run_writes_results_and_prints_the_table(quick_run):
    output_dir, first = quick_run
    assert first.returncode == 0, first.stderr[-2000:]
    rows = rundir.read_results(str(output_dir))
    assert [(r["round"], r["branch"]) for r in rows] == [
        ("0", "ticket"), ("1", "ticket"), ("1", "reinit"), ("2", "ticket"), ("2", "reinit")]
    assert [float(r["weights_remaining_pct"]) for r in rows] == [100.0, 80.6667, 80.6667, 65.1333, 65.1333]
    assert all(0.0 < float(r["test_accuracy"]) <= 1.0 for r in rows)
    assert "ticket acc" in first.stdout and str(output_dir) in first.stdout
    for r in (0, 1, 2):
        assert os.path.exists(output_dir / f"round_{r:02d}" / "ticket" / "metrics.json")


@pytest.mark.xdist_group("cli_quick_run")
def test_console_holds_lth_tf_lines_only_and_the_log_the_rest(quick_run):
    output_dir, first = quick_run
    lines = first.stderr.splitlines()
    # Off a terminal: one plain line per finished branch, no control characters, no TensorFlow records.
    assert [line[:20] for line in lines] == ["round  0 ticket     ", "round  1 ticket     ", "round  1 reinit     ",
                                            "round  2 ticket     ", "round  2 reinit     "]
    assert "[branch 3 of 5, about " in lines[2]
    assert lines[-1].endswith("[branch 5 of 5]")
    assert not any(c in first.stderr for c in "\r\x1b")
    log = open(output_dir / "log.txt").read()
    assert "round 2 reinit       step     60/60" in log        # every progress record
    assert "Writing fingerprint" in log                          # TensorFlow's own INFO records (SavedModel export)
    assert f"log:     {output_dir}/log.txt" in first.stdout


@pytest.mark.xdist_group("cli_quick_run")
def test_files_hold_the_digits_values_carry(quick_run):
    """0.8815, not 0.8815000057220459: each value is the shortest decimal of its float32."""
    output_dir, _ = quick_run
    for row in rundir.read_results(str(output_dir)):
        for column in ("test_accuracy", "early_stop_test_accuracy", "early_stop_val_loss", "final_train_loss"):
            assert row[column] == str(np.float32(row[column])), (column, row[column])
        assert len(row["test_accuracy"]) <= 6  # 1,000 test examples: at most 3 decimals


@pytest.mark.xdist_group("cli_quick_run")
def test_second_invocation_trains_nothing_and_says_nothing(quick_run):
    output_dir, first = quick_run
    before = snapshot(output_dir)
    second = cli(*FAST, f"--output_dir={output_dir}")
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stderr == ""
    after = snapshot(output_dir)
    log = str(output_dir / "log.txt")
    assert after[log].startswith(before.pop(log))             # the log is appended to, across invocations
    assert {k: v for k, v in after.items() if k != log} == before
    assert second.stdout == first.stdout


@pytest.mark.xdist_group("cli_quick_run")
def test_other_config_on_a_used_directory_is_refused_untouched_before_tensorflow(quick_run):
    output_dir, _ = quick_run
    before = snapshot(output_dir)
    refused = cli(*FAST, "--seed=1", f"--output_dir={output_dir}", witness=True)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"lth_tf: error: {output_dir} holds a run with another config (differs in data.seed, lottery.seed, "
        "training.seed); use a new --output_dir"]
    assert refused.stdout == "tensorflow imported: False\n"
    assert snapshot(output_dir) == before


def fake_ticket(path, model="mlp_32_16", input_shape=(40,)):
    tickets.write_ticket(str(path), {"fc1": np.ones((40, 32), np.float32)}, {"fc1/kernel": np.ones((40, 32))},
                         dict(model=model, width=0, input_shape=list(input_shape), num_classes=10,
                              dataset="mnist1d", round=1, density=1.0, rewind_step=0, source="test"))
    return path


@pytest.mark.parametrize("argv, status, names", [
    (["--model=lenet_5"], 2, "--model"),
    (["--dataset=imagenet"], 2, "--dataset"),
    (["--prune_rate_fc=1.5"], 2, "--prune_rate_fc"),
    (["--prune_rate=0"], 2, "--prune_rate"),
    (["--rounds=-1"], 2, "--rounds"),
    (["--controls=reinit,shuffle"], 2, "--controls"),
    (["--controls=none,reinit"], 2, "--controls"),
    (["--controls=reinit,reinit"], 2, "each once"),
    (["--eval_every=0"], 2, "--eval_every=0: must be a positive number"),
    (["--eval_every=0ep"], 2, "--eval_every=0ep: must be a positive number"),
    (["--seed=-1"], 2, "--seed"),
    (["--train_steps=ten"], 2, "--train_steps"),
    (["--train_steps=-5"], 2, "--train_steps"),
    (["--epochs=3"], 2, "epochs"),
    (["--strategy=tpu"], 2, "--strategy"),
    (["--flagfile=configs/missing.flags"], 2, "Unable to open flagfile"),
    (["--checkpoint_every=often"], 2, "--checkpoint_every"),
    (["--on_nan=retry"], 2, "--on_nan"),
    (["--batch_size=0"], 2, "--batch_size"),
    (["unexpected"], 2, "unexpected arguments 'unexpected'"),
    (["--train_steps=0"], 1, "--train_steps must be at least 1"),
    (["--validation_size=4000"], 1, "--validation_size=4000 must be in [0, 4000)"),
    (["--batch_size=5000"], 1, "--batch_size=5000 is larger than the 3500 training examples"),
    (["--model=conv4"], 1, "needs image inputs"),
    (["--ticket=missing.npz"], 1, "not a readable lth_tf ticket"),
    (["--ticket=TICKET"], 1, "is for --model=mlp_32_16 --width=0, not --model=mlp_100_100 --width=0"),
    (["--ticket=TICKET", "--model=mlp_32_16", "--dataset=synthetic"], 1, "was found on mnist1d"),
    (["--dataset=mnist", "--data_dir=DATA"], 1, "--validation_size=5000 must be in [0, 300)"),
    (["--output_dir=FILE"], 1, "is a file, not a directory"),
    (["--prune_schedule=linear", "--prune_step=0.2", "--rounds=5"], 1, "prunes every weight; at most 4 rounds"),
    (["--prune_from_step=0"], 1, "--prune_from_step=0 would prune by the initial weights"),
    (["--prune_from_step=soon"], 2, "--prune_from_step"),
    (["--init=he"], 2, "--init"),
    (["--removed_weights=missing.npz"], 1, "--removed_weights=missing.npz is not a readable masks file"),
    (["--prune_floor=missing.npz"], 1, "--prune_floor=missing.npz is not a readable masks file"),
    (["--removed_weights=TICKET", "--ticket=TICKET"], 1, "--removed_weights and --ticket cannot be combined"),
    (["--model=resnet20", "--dataset=synthetic", "--synthetic_like=cifar10", "--init=pytorch"], 1,
     "resnet20 has its paper's initialiser only"),
    (["--classes=0,x"], 1, "--classes=0,x: expected class numbers"),
    (["--classes=2,2"], 1, "--classes=2,2: at least two distinct classes of 0..9"),
    (["--dataset=fashion_mnist", "--mnist1d_seed=3"], 1, "--dataset=fashion_mnist is another set"),
    (["--mnist1d_shear_scale=much"], 2, "--mnist1d_shear_scale"),
    (["--prune_method=sniper"], 2, "--prune_method"),
    (["--prune_method=snip"], 1, "--prune_method=snip needs --target_density"),
    (["--target_density=0.5"], 1, "--target_density is for --oneshot and the other --prune_method values"),
    (["--oneshot", "--target_density=0.5,1.5"], 1, "--target_density values must be in (0, 1)"),
    (["--prune_method=grasp", "--target_density=0.5", "--retrain=finetune"], 1, "--retrain=finetune keeps trained"),
    (["--prune_method=synflow", "--target_density=0.5", "--oneshot"], 1, "--oneshot is one-shot magnitude pruning"),
])
def test_bad_input_is_one_line_before_tensorflow_loads(argv, status, names, tmp_path):
    replace = {"TICKET": str(fake_ticket(tmp_path / "ticket.npz")), "DATA": str(write_idx_dir(tmp_path, 300, 50)),
               "FILE": str(tmp_path / "ticket.npz")}
    for key, value in replace.items():
        argv = [a.replace(key, value) for a in argv]
    if not any(a.startswith("--output_dir=") for a in argv):
        argv.append(f"--output_dir={tmp_path / 'run'}")
    result = cli(*argv, witness=True)
    assert result.returncode == status
    line, = result.stderr.splitlines()
    assert line.startswith("lth_tf: error: ") and names in line and "ERROR:" not in line
    assert result.stdout == "tensorflow imported: False\n"
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("argv, message", [
    (["--prune_strategy=global", "--prune_exclude=fc9"], "--prune_exclude names no prunable layer: fc9"),
    (["--strategy=mirrored", "--cpu_devices=2", "--batch_size=33"], "not divisible by the 2 replicas"),
])
def test_errors_found_with_tensorflow_are_one_line_too_and_leave_no_trace(argv, message, tmp_path):
    common = ["--train_steps=10", "--eval_every=10", "--rounds=0", f"--output_dir={tmp_path / 'run'}"]
    result = cli(*common, *argv)
    assert result.returncode == 1
    line, = result.stderr.splitlines()  # TensorFlow's start-up lines went to no log: there is no run
    assert line.startswith("lth_tf: error: ") and message in line
    assert not os.path.exists(tmp_path / "run")
    corrected = cli(*common, *[a for a in argv if "batch_size" not in a and "exclude" not in a])
    assert corrected.returncode == 0, corrected.stderr  # not "holds a run with another config"


@pytest.mark.parametrize("argv", [["--help"], ["--helpfull"]])
def test_help_comes_without_tensorflow(argv):
    result = cli(*argv, witness=True)
    assert result.returncode == 1  # absl's exit status after help
    assert "--train_steps" in result.stdout and "tensorflow imported: False" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("value", ["none", ""])
def test_controls_none_and_empty_mean_no_controls(value):
    flags.FLAGS.unparse_flags()
    main.parse_flags(["lth_tf", f"--controls={value}"])
    config, _ = lth_flags.experiment_config(flags.FLAGS)
    flags.FLAGS.unparse_flags()
    assert config.lottery.controls == ()


def test_a_rewind_point_past_a_short_run_rewinds_to_initialisation_and_says_so():
    flags.FLAGS.unparse_flags()
    main.parse_flags(["lth_tf", "--rewind_step=2000", "--train_steps=30"])
    config, warnings = lth_flags.experiment_config(flags.FLAGS)
    flags.FLAGS.unparse_flags()
    assert config.lottery.rewind_step == 0 and config.training.train_steps == 30
    assert warnings == ["--rewind_step=2000 (2000 steps) is not below the training length (30 steps): "
                        "rewinding to initialisation (step 0) instead"]


def test_a_prune_step_past_a_short_run_prunes_from_the_final_weights_and_says_so():
    flags.FLAGS.unparse_flags()
    main.parse_flags(["lth_tf", "--prune_from_step=1000", "--train_steps=30"])
    config, warnings = lth_flags.experiment_config(flags.FLAGS)
    flags.FLAGS.unparse_flags()
    assert config.lottery.prune_from_step == 0
    assert warnings == ["--prune_from_step=1000 (1000 steps) is not below the training length (30 steps): "
                        "pruning from the final weights instead"]


@pytest.mark.parametrize("argv, saved, expected", [
    ([], None, "auto"), (["--xla"], None, True), (["--noxla"], None, False),
    ([], False, False), ([], True, True),      # a run made before "auto" keeps its choice
    (["--xla"], False, True)],                 # forced: the run directory then refuses the other config
    ids=["auto", "xla", "noxla", "resumed-off", "resumed-on", "forced"])
def test_xla_is_auto_unless_forced_or_resumed(tmp_path, argv, saved, expected):
    if saved is not None:
        rundir.write_json(str(tmp_path / "config.json"), {"training": {"xla": saved}})
    flags.FLAGS.unparse_flags()
    main.parse_flags(["lth_tf", f"--output_dir={tmp_path}", *argv])
    config, _ = lth_flags.experiment_config(flags.FLAGS)
    flags.FLAGS.unparse_flags()
    assert config.training.xla == expected


def test_a_malformed_flagfile_is_one_line(tmp_path):
    flagfile = tmp_path / "bad.flags"
    flagfile.write_text("--rounds=2\nlearning_rate 0.1\n")
    result = cli(f"--flagfile={flagfile}", witness=True)
    assert result.returncode == 2
    line, = result.stderr.splitlines()
    assert line.startswith("lth_tf: error: unexpected arguments 'learning_rate 0.1'")
    assert result.stdout == "tensorflow imported: False\n"
