"""Entry point: python -m lth_tf.main [--flagfile=configs/X.flags] [--flag=value ...]

flags -> config -> (dataset, model) -> IMP driver -> results in --output_dir.

Flags, the config they make, the run directory and a --ticket are checked
before TensorFlow is imported, so bad input costs one line and well under a
second. The modules that need TensorFlow are imported inside run() for that reason.
"""
import dataclasses
import json
import os
import shlex
import signal
import sys
import traceback

from absl import app, flags, logging

from lth_tf import console as console_lib
from lth_tf import data, paths, rundir, tickets
from lth_tf import config as config_lib
from lth_tf import flags as lth_flags
from lth_tf.config import ConfigError

PREFLIGHT_ERRORS = (data.DataError, ConfigError, rundir.RunDirError)
flags.adopt_module_key_flags(lth_flags)  # --help lists lth_tf's flags, --helpfull absl's too
# Where a run's console says to look: TensorBoard's Custom Scalars page (lth_tf.summaries.LAYOUT) with smoothing
# off, which the page reads from its address (its default, 0.6, averages neighbouring rounds).
TENSORBOARD_PAGE = "http://localhost:6006/#custom_scalars&_smoothingWeight=0"


def parse_flags(argv):
    """absl's parser, with a bad flag reported as one line and exit status 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        fail(f"error: {str(error).replace('ERROR:: ', '')}", 2)


def fail(message: str, status: int, stream=None):
    (stream or sys.stderr).write(f"lth_tf: {message}\n")
    sys.exit(status)


def main(argv):
    if len(argv) > 1:
        fail(f"error: unexpected arguments {' '.join(argv[1:])!r} (flags start with --, also in a flagfile)", 2)
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # a tensorflow-datasets set's warnings are not one-line errors
    try:
        checked = preflight(lth_flags.FLAGS)
    except PREFLIGHT_ERRORS as error:
        fail(f"error: {error}", 1)
    finally:
        logging.set_verbosity(verbosity)
    with console_lib.Console.capture() as console:
        for warning in checked[1]:
            console.say(f"lth_tf: warning: {warning}")
        progress = console_lib.ExperimentProgress(console)
        previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        stop = console_lib.stop_on_signals(lambda name: console.say(
            f"lth_tf: {name}: stopping at the next step boundary after a checkpoint (again to stop at once)"))
        try:
            rows = run(lth_flags.FLAGS, stop.is_set, console, progress, checked)
            if rows is not None:
                print_outcome(lth_flags.FLAGS, rows, checked[2], console)
        except (Exception, KeyboardInterrupt) as error:
            progress.close()
            fail(*_failure(error, console), stream=console.stream)
        finally:  # in-process callers (tests) keep their Ctrl-C
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _failure(error: BaseException, console) -> tuple[str, int]:
    """(message, exit status) for whatever stopped a run; a traceback goes to the log."""
    from lth_tf import lottery, training
    if isinstance(error, PREFLIGHT_ERRORS + (lottery.Failed,)):
        return f"error: {error}", 1
    if isinstance(error, OSError):  # a full disk, a directory we may not write
        return (f"error: cannot write {error.filename or 'a file'}: {error.strerror or error}; "
                "finished rounds are kept"), 1
    if isinstance(error, training.Interrupted):
        return f"interrupted {error}; a checkpoint is saved: rerun the same command to resume", 130
    if isinstance(error, KeyboardInterrupt):
        return "stopped at once; rerun the same command to resume from the last checkpoint", 130
    traceback.print_exc()  # into the log
    where = console.log_path or "the output above"
    if not console.log_path:
        console.say(console.pending_log())
    return f"internal error ({type(error).__name__}: {error}); the traceback is in {where}", 1


def preflight(f) -> tuple:
    """(config, warnings, output_dir), every check that needs no TensorFlow
    passed: the flags make an experiment, the run directory holds none other,
    and --ticket fits the model and the data."""
    config, warnings = lth_flags.experiment_config(f)
    warnings = list(warnings)
    output_dir = lth_flags.output_dir(f)
    if rundir.check_claim(output_dir, dataclasses.asdict(config)):
        previous = config_lib.upgrade(rundir.read_json(paths.config(output_dir)))
        added = rundir.extension(previous, json.loads(json.dumps(dataclasses.asdict(config))))
        if added:
            warnings.append(f"extending the run in {output_dir} ({added}): only what is new trains")
    if config.lottery.ticket:
        tickets.check(config.lottery.ticket, config.model, data.input_shape(config.data), data.num_classes(config.data))
    return config, warnings, output_dir


def run(f, should_stop=lambda: False, console=None, progress=None, checked=None) -> list[dict] | None:
    """Runs (or resumes) the experiment of flags `f`; returns the rows of results.csv (None on a
    worker other than the chief). `checked`: preflight(f)'s result, if the caller already has it."""
    config, _, output_dir = checked or preflight(f)
    from lth_tf import lottery, training  # TensorFlow loads here
    from lth_tf import tfmot_adapter
    tfmot_adapter.check_keras()
    if f.cpu_devices:
        training.split_cpu(f.cpu_devices)
    if f.deterministic:
        training.make_deterministic()
    # MultiWorkerMirroredStrategy must exist before TensorFlow does any other work.
    strategy = training.make_strategy(f.strategy)
    splits = data.load(config.data)
    options = lottery.RunOptions(export=f.export, export_format=f.export_format, tensorboard=f.tensorboard,
                                 checkpoint_every=lth_flags.checkpoint_every(f), on_nan=f.on_nan,
                                 should_stop=should_stop, progress=progress)
    chief, role = training.worker_role(strategy)
    if f.strategy == "multi_worker":
        options = dataclasses.replace(options, epoch_checkpoint_seconds=0.0)
    if not chief:
        # Every worker runs the same driver, and the driver reads back what it
        # wrote; other workers keep that bookkeeping (and their checkpoints,
        # which TensorFlow wants from every worker) beside the chief's run.
        output_dir = f"{output_dir.rstrip('/')}.{role}"
        options = dataclasses.replace(options, export="none", tensorboard=False, progress=None)
    logging.info("%s: %d train / %d validation / %d test examples from %s; %d replica(s); writing to %s",
                 splits.name, len(splits.x_train), len(splits.x_val), len(splits.x_test), splits.source,
                 strategy.num_replicas_in_sync, output_dir)
    with rundir.locked(output_dir):
        experiment = lottery.prepare(config, splits, strategy, output_dir)  # the last checks, then the claim
        if console:
            console.attach(paths.log(output_dir))
        rows = lottery.run(experiment, options)
    return rows if chief else None


def print_outcome(f, rows: list[dict], output_dir: str, console=None):
    """The results table and where everything is."""
    print(summary_table(rows))
    print(f"results: {os.path.join(output_dir, 'results.csv')}")
    if f.export != "none":
        print(f"tickets: {os.path.join(output_dir, 'tickets')}")
    # Commands that work as printed: this Python (the venv's, activated or not), paths quoted for a shell.
    relative = os.path.relpath(sys.executable)
    python = shlex.quote(sys.executable if relative.startswith("..") else relative)
    if f.tensorboard:
        print(f"watch:   {python} -m tensorboard.main --logdir {shlex.quote(os.path.join(output_dir, 'tensorboard'))}"
              f"  (then {TENSORBOARD_PAGE})")
    print(f"report:  {python} -m lth_tf.report --output_dir={shlex.quote(output_dir)}")
    if console and console.log_path:
        print(f"log:     {console.log_path}")


def summary_table(rows: list[dict]) -> str:
    """round | % weights | ticket accuracy | one column per other branch (controls, inverted)."""
    others = [b for b in dict.fromkeys(row["branch"] for row in rows) if b != "ticket"]
    header = ["round", "% weights", "ticket acc"] + [f"{c} acc" for c in others]
    by_round = {}
    for row in rows:
        by_round.setdefault(int(row["round"]), {})[row["branch"]] = row
    lines = ["  ".join(f"{h:>12}" for h in header)]
    for round_index, branches in sorted(by_round.items()):
        cells = [str(round_index), f"{float(branches['ticket']['weights_remaining_pct']):.2f}"]
        cells += [_accuracy_cell(branches.get(b)) for b in ["ticket", *others]]
        lines.append("  ".join(f"{c:>12}" for c in cells))
    return "\n".join(lines)


def _accuracy_cell(row):
    if row is None:
        return "-"
    return f"{float(row['test_accuracy']):.4f}" if row["status"] == "ok" else "diverged"


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
