"""What a ticket is: analyses of finished runs, and of what they train.

    python -m lth_tf.analyze SUBCOMMAND --output_dir=RUN[,RUN...] [--report_dir=FOLDER] [options]

Subcommands:
  overlap   does IMP find the same ticket each time? Jaccard overlap of the ticket masks of runs that differ only in
            their seed (or only in --data_order_seed: mask stability under SGD noise), per round and layer, against
            the exact chance level of random masks of the same sizes; random_prune's masks as the sanity line.
  layers    which layers get pruned hardest? Per-layer % remaining and share of the surviving weights per round,
            against depth; collapsed layers (no weight left) flagged.
  movement  do ticket weights move more? For weights kept vs pruned by the next round: |theta_final - theta_start|,
            |theta_start| and sign flips (Frankle & Carbin 2019, Appendix F.5). Options: --round, --bins.

Subcommands that train (one run each; TensorFlow loads; resumable: rerun the same command after an
interruption, Ctrl-C included, and finished parts are read back, not retrained):
  removal     how many winning tickets does a network hold? Round --target_round's ticket is ticket 1; its weights
              are removed for good and IMP searches the rest again, --tickets times in all, each search an ordinary
              run under FOLDER/removal_round_RR/; beside each ticket a random mask of its size among the same
              weights and the network with the earlier tickets removed; and the union of tickets 1..j from theta_0.
  instability linear mode connectivity (Frankle et al., ICML 2020): two copies from theta_k (--rewind_steps) under a
              round's mask (--rounds) trained with different data orders (--pairs pairs), the test error along the
              line between them (--alphas points) and its barrier; stable under 2%. --path=init: the error along
              each round's start -> trained weights instead.
  transfer    is a ticket good for another task? (Morcos et al., NeurIPS 2019.) Task B is --target_flags (a
              flagfile, or lth_tf.main flags in one string: e.g. --classes=5,6,7,8,9, or other --mnist1d_* settings);
              for each of --rounds (default: every pruned round), A's ticket trained on B (output layer drawn
              afresh), beside B's own IMP ticket at that density, A's mask reinitialised, a random mask of the
              same layer sizes and the dense network on B. Targets analysed into one folder share transfer.png.
  infoplane   tickets on the information plane (Shwartz-Ziv & Tishby 2017): each (round in --rounds, branch in
              --branches) trained again, every hidden layer's activations on --examples training examples saved
              at --snapshots log-spaced steps, and (I(X;T), I(T;Y)) per layer by --estimator=binning (--bins per
              unit) or kde (an upper bound, --kde_variance); one row of panels per layer in
              infoplane_ESTIMATOR.png. MLPs only.
  landscape   the loss around a round's trained network (--rounds) along filter-normalised random directions within
              its mask (Li et al., NeurIPS 2018): 1-D line and 2-D plane (--resolution, --span, --examples), train
              and test; the loss rise at span/2 and the top Hessian eigenvalue beside the picture.

Each writes SUBCOMMAND.csv and SUBCOMMAND.png and its own section of report.md
(replacing an earlier one): in the run, or in --report_dir for several runs.
A run that lacks what an analysis needs is refused with one line naming the
missing file. The analyses that only read runs use lth_tf.runs and load no
TensorFlow; those that train go through lth_tf's training loop (and removal
through the IMP driver, whose runs its searches are).
"""
import os
import sys
import time

from absl import flags

from lth_tf import console
from lth_tf import runs as runs_lib
from lth_tf.analyze import layers, movement, overlap

ANALYZE_FLAGS = flags.FlagValues()  # its own program: not the experiment's flags
flags.DEFINE_list("output_dir", [], "Run directories (more may follow as arguments).", flag_values=ANALYZE_FLAGS)
flags.DEFINE_string("report_dir", "", "Where the outputs of several runs go (one run: the run itself).",
                    flag_values=ANALYZE_FLAGS)
flags.DEFINE_integer("round", 0, "movement: the round whose histograms are drawn (the table has every round).",
                     lower_bound=0, flag_values=ANALYZE_FLAGS)
flags.DEFINE_integer("bins", None, "movement: histogram bins (default 40); infoplane: bins per unit of the binning "
                     "estimator (default 30).", lower_bound=2, flag_values=ANALYZE_FLAGS)

flags.DEFINE_integer("target_round", 1, "removal: the round whose ticket is ticket 1.", lower_bound=1,
                     flag_values=ANALYZE_FLAGS)
flags.DEFINE_integer("tickets", 3, "removal: how many disjoint tickets to find (ticket 1 included).", lower_bound=1,
                     flag_values=ANALYZE_FLAGS)
flags.DEFINE_list("rounds", [], "instability, landscape, transfer: the rounds (0 = the dense network); default: "
                  "instability 0, landscape 0 and the last finished round, transfer every finished pruned round.", flag_values=ANALYZE_FLAGS)
flags.DEFINE_list("rewind_steps", ["0"], "instability: the steps k the two copies start from.",
                  flag_values=ANALYZE_FLAGS)
flags.DEFINE_integer("pairs", 1, "instability: pairs of copies per (round, k).", lower_bound=1,
                     flag_values=ANALYZE_FLAGS)
flags.DEFINE_integer("alphas", 30, "instability: points on each path, end points included.", lower_bound=2,
                     flag_values=ANALYZE_FLAGS)
flags.DEFINE_enum("path", "pairs", ["pairs", "init"], "instability: between two copies (pairs) or from a round's "
                  "starting to its trained weights (init).", flag_values=ANALYZE_FLAGS)
flags.DEFINE_integer("resolution", 25, "landscape: points per direction.", lower_bound=3, flag_values=ANALYZE_FLAGS)
flags.DEFINE_float("span", 1.0, "landscape: the directions' coefficients run over [-span, span].", lower_bound=0,
                   flag_values=ANALYZE_FLAGS)
flags.DEFINE_integer("examples", None, "landscape: training and test examples the loss is measured on (default "
                     "2000); infoplane: training examples the activations are recorded on (default 4000).",
                     lower_bound=1, flag_values=ANALYZE_FLAGS)
flags.DEFINE_string("target_flags", "", "transfer: task B, as a flagfile or as lth_tf.main flags in one string.",
                    flag_values=ANALYZE_FLAGS)
flags.DEFINE_list("branches", ["ticket", "reinit"], "infoplane: the branches of each round (round 0 has the "
                  "dense network, its ticket).", flag_values=ANALYZE_FLAGS)
flags.DEFINE_integer("snapshots", 30, "infoplane: log-spaced steps the activations are recorded at.", lower_bound=2,
                     flag_values=ANALYZE_FLAGS)
flags.DEFINE_enum("estimator", "binning", ["binning", "kde"], "infoplane: the mutual-information estimator.",
                  flag_values=ANALYZE_FLAGS)
flags.DEFINE_float("kde_variance", 0.1, "infoplane --estimator=kde: the variance of the Gaussian noise added to T.",
                   lower_bound=0, flag_values=ANALYZE_FLAGS)
flags.DEFINE_bool("deterministic", False, "Training analyses: TensorFlow op determinism (bit-identical reruns).",
                  flag_values=ANALYZE_FLAGS)


def _ints(values, flag) -> list[int]:
    try:
        return [int(v) for v in values]
    except ValueError:
        raise runs_lib.RunError(f"--{flag} must be integers, comma-separated: {','.join(values)}") from None


def _rounds(runs, f, default) -> list[int]:
    return _ints(f.rounds, "rounds") if f.rounds else default(runs[0])


def _removal(runs, folder, f, should_stop):
    from lth_tf.analyze import removal
    return removal.analyze(runs[0], folder, f.target_round, f.tickets, should_stop)


def _instability(runs, folder, f, should_stop):
    from lth_tf.analyze import instability
    return instability.analyze(runs[0], folder, _rounds(runs, f, lambda run: [0]),
                               _ints(f.rewind_steps, "rewind_steps"), f.pairs, f.alphas, f.path, should_stop)


def _landscape(runs, folder, f, should_stop):
    from lth_tf.analyze import landscape
    rounds = _rounds(runs, f, lambda run: sorted({0, runs_lib.ticket_rounds(run)[-1]}))
    return landscape.analyze(runs[0], folder, rounds, f.resolution, f.span, f.examples or 2000)


def _infoplane(runs, folder, f, should_stop):
    from lth_tf.analyze import infoplane
    rounds = _rounds(runs, f, lambda run: sorted({0, runs_lib.ticket_rounds(run)[-1]}))
    return infoplane.analyze(runs[0], folder, rounds, f.branches, f.snapshots, f.estimator, f.bins or 30,
                             f.examples or 4000, f.kde_variance, should_stop)


def _transfer(runs, folder, f, should_stop):
    from lth_tf.analyze import transfer
    rounds = _rounds(runs, f, lambda run: [r for r in runs_lib.ticket_rounds(run) if r > 0])
    return transfer.analyze(runs[0], folder, f.target_flags, rounds, should_stop)


SUBCOMMANDS = {
    "overlap": lambda runs, folder, f, stop: overlap.analyze(runs, folder),
    "layers": lambda runs, folder, f, stop: layers.analyze(runs, folder),
    "movement": lambda runs, folder, f, stop: movement.analyze(runs, folder, f.round, f.bins or 40),
    "removal": _removal,
    "instability": _instability,
    "landscape": _landscape,
    "transfer": _transfer,
    "infoplane": _infoplane,
}
TRAINING = ("removal", "instability", "landscape", "transfer", "infoplane")


def cli(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    ANALYZE_FLAGS.unparse_flags()
    if len(argv) < 2 or argv[1] in ("--help", "-h", "--helpfull", "help"):
        print(__doc__ + "\nFlags:\n" + ANALYZE_FLAGS.get_help())
        return 0 if len(argv) >= 2 else 2
    name = argv[1]
    try:
        if name not in SUBCOMMANDS:
            raise runs_lib.RunError(f"unknown subcommand {name!r}; valid: {', '.join(SUBCOMMANDS)}")
        if {"--help", "-h"} & set(argv[2:]):
            print(__doc__ + "\nFlags:\n" + ANALYZE_FLAGS.get_help())
            return 0
        dirs = ANALYZE_FLAGS(["lth_tf.analyze", *argv[2:]])[1:]
        dirs = ANALYZE_FLAGS.output_dir + dirs
        if not dirs:
            raise runs_lib.RunError("give the run directories with --output_dir=RUN[,RUN...]")
        if len(dirs) > 1 and not ANALYZE_FLAGS.report_dir:
            raise runs_lib.RunError("several runs need --report_dir for their joint outputs")
        if len(dirs) > 1 and name in TRAINING:
            raise runs_lib.RunError(f"{name} analyses one run at a time")
        started = time.time()
        runs = [runs_lib.load_run(d) for d in dirs]
        folder = ANALYZE_FLAGS.report_dir or dirs[0]
        os.makedirs(folder, exist_ok=True)
        should_stop = lambda: False  # noqa: E731
        if name in TRAINING:
            if ANALYZE_FLAGS.deterministic:
                from lth_tf import training
                training.make_deterministic()
            should_stop = console.stop_on_signals(lambda name: sys.stderr.write(
                f"lth_tf.analyze: {name}: stopping at the next step boundary after a checkpoint (again to stop "
                "at once)\n")).is_set
        written = SUBCOMMANDS[name](runs, folder, ANALYZE_FLAGS, should_stop)
    except (flags.Error, runs_lib.RunError) as error:
        sys.stderr.write(f"lth_tf.analyze: error: {str(error).replace('ERROR:: ', '')}\n")
        return 2 if isinstance(error, flags.Error) else 1
    except KeyboardInterrupt:  # the second Ctrl-C: at once, without a traceback
        sys.stderr.write("lth_tf.analyze: stopped at once; rerun the same command to resume from the last "
                         "checkpoint\n")
        return 130
    except Exception as error:  # noqa: BLE001  the engine's own one-line errors and a stop on request
        status = _training_failure(error)
        if status is None:
            raise
        return status
    print(f"lth_tf.analyze {name}: {len(runs)} run(s) in {time.time() - started:.1f}s: "
          f"{', '.join(written)} and its section of {os.path.join(folder, 'report.md')}")
    return 0


def _training_failure(error) -> int | None:
    """The exit status (after one line) for what stops a training analysis; None: a bug, raised."""
    from lth_tf import data, lottery, rundir, training
    from lth_tf.config import ConfigError
    if isinstance(error, training.Interrupted):
        sys.stderr.write(f"lth_tf.analyze: interrupted {error}; rerun the same command to resume\n")
        return 130
    if isinstance(error, (ConfigError, data.DataError, rundir.RunDirError, lottery.Failed)):
        sys.stderr.write(f"lth_tf.analyze: error: {error}\n")
        return 1
    return None
