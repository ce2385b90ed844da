"""Entry point: python -m lth_tf.main [--flagfile=configs/X.flags] [--flag=value ...]

flags -> config -> (dataset, model) -> IMP driver -> results in --output_dir.
"""
import dataclasses
import logging as logging_lib
import os
import signal
import sys
import threading

from absl import app, flags, logging

from lth_tf import data, lottery, rundir, training
from lth_tf import flags as lth_flags

USER_ERRORS = (data.DataError, lottery.ConfigError, rundir.RunDirError, lottery.Failed)


def parse_flags(argv):
    """absl's parser, with a bad flag reported as one line and exit status 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        sys.stderr.write(f"lth_tf: error: {error}\n")
        sys.exit(2)


def fail(message: str, status: int):
    sys.stderr.write(f"lth_tf: {message}\n")
    sys.exit(status)


def main(argv):
    if len(argv) > 1:
        fail(f"error: unexpected arguments {' '.join(argv[1:])!r} (flags start with --, also in a flagfile)", 2)
    stop = install_stop_handlers()
    try:
        run(lth_flags.FLAGS, stop.is_set)
    except USER_ERRORS as error:
        fail(f"error: {error}", 1)
    except OSError as error:  # a full disk, a directory we may not write
        fail(f"error: cannot write {error.filename or 'a file'}: {error.strerror or error}; "
             "finished rounds are kept", 1)
    except training.Interrupted as where:
        fail(f"interrupted {where}; a checkpoint is saved: rerun the same command to resume", 130)


def install_stop_handlers() -> threading.Event:
    """The first Ctrl-C (or SIGTERM) asks for a stop at the next step boundary,
    after a checkpoint; a second one stops at once."""
    stop = threading.Event()

    def request_stop(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        logging.warning("%s: stopping at the next step boundary after a checkpoint (again to stop at once)",
                        signal.Signals(signum).name)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    return stop


def run(f, should_stop=lambda: False):
    logging_lib.getLogger("tensorflow").setLevel(logging_lib.WARNING)  # SavedModel export chatter
    if f.cpu_devices:
        training.split_cpu(f.cpu_devices)
    if f.deterministic:
        training.make_deterministic()
    # MultiWorkerMirroredStrategy must exist before TensorFlow does any other work.
    strategy = training.make_strategy(f.strategy)
    splits = data.load(lth_flags.data_config(f))
    config = lth_flags.experiment_config(splits, f)
    options = lth_flags.run_options(splits, f, should_stop)
    output_dir = lth_flags.output_dir(f)
    chief, role = training.worker_role(strategy)
    if f.strategy == "multi_worker":
        options = dataclasses.replace(options, epoch_checkpoint_seconds=0.0)
    if not chief:
        # Every worker runs the same driver, and the driver reads back what it
        # wrote; other workers keep that bookkeeping (and their checkpoints,
        # which TensorFlow wants from every worker) beside the chief's run.
        output_dir = f"{output_dir.rstrip('/')}.{role}"
        options = dataclasses.replace(options, export="none", tensorboard=False)
    logging.info("%s: %d train / %d validation / %d test examples from %s; %d replica(s); writing to %s",
                 splits.name, len(splits.x_train), len(splits.x_val), len(splits.x_test), splits.source,
                 strategy.num_replicas_in_sync, output_dir)
    with rundir.locked(output_dir):
        experiment = lottery.prepare(config, splits, strategy, output_dir)
        rows = lottery.run(experiment, options)
    if not chief:
        return
    print(summary_table(rows, config.lottery.controls))
    print(f"results: {os.path.join(output_dir, 'results.csv')}")
    if f.export != "none":
        print(f"tickets: {os.path.join(output_dir, 'tickets')}")
    if f.tensorboard:
        print(f"watch:   tensorboard --logdir {os.path.join(output_dir, 'tensorboard')}")
    print(f"report:  python -m lth_tf.report --output_dir={output_dir}")


def summary_table(rows: list[dict], controls) -> str:
    """round | % weights remaining | ticket accuracy | one column per control."""
    header = ["round", "% weights", "ticket acc"] + [f"{c} acc" for c in controls]
    by_round = {}
    for row in rows:
        by_round.setdefault(int(row["round"]), {})[row["branch"]] = row
    lines = ["  ".join(f"{h:>12}" for h in header)]
    for round_index, branches in sorted(by_round.items()):
        cells = [str(round_index), f"{float(branches['ticket']['weights_remaining_pct']):.2f}"]
        cells += [_accuracy_cell(branches.get(b)) for b in ["ticket", *controls]]
        lines.append("  ".join(f"{c:>12}" for c in cells))
    return "\n".join(lines)


def _accuracy_cell(row):
    if row is None:
        return "-"
    return f"{float(row['test_accuracy']):.4f}" if row["status"] == "ok" else "diverged"


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
