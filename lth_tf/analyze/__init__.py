"""What a ticket is: analyses that read finished runs (no training).

    python -m lth_tf.analyze SUBCOMMAND --output_dir=RUN[,RUN...] [--report_dir=FOLDER] [options]

Subcommands:
  overlap   does IMP find the same ticket each time? Jaccard overlap of the ticket masks of runs that differ only in
            their seed (or only in --data_order_seed: mask stability under SGD noise), per round and layer, against
            the exact chance level of random masks of the same sizes; random_prune's masks as the sanity line.
  layers    which layers get pruned hardest? Per-layer % remaining and share of the surviving weights per round,
            against depth; collapsed layers (no weight left) flagged.
  movement  do ticket weights move more? For weights kept vs pruned by the next round: |theta_final - theta_start|,
            |theta_start| and sign flips (Frankle & Carbin 2019, Appendix F.5). Options: --round, --bins.

Each writes SUBCOMMAND.csv and SUBCOMMAND.png and its own section of report.md
(replacing an earlier one): in the run, or in --report_dir for several runs.
A run that lacks what an analysis needs is refused with one line naming the
missing file. Analyses read run directories (lth_tf.runs) and never the IMP
driver; no TensorFlow is imported.
"""
import os
import sys
import time

from absl import flags

from lth_tf import runs as runs_lib
from lth_tf.analyze import layers, movement, overlap

ANALYZE_FLAGS = flags.FlagValues()  # its own program: not the experiment's flags
flags.DEFINE_list("output_dir", [], "Run directories (more may follow as arguments).", flag_values=ANALYZE_FLAGS)
flags.DEFINE_string("report_dir", "", "Where the outputs of several runs go (one run: the run itself).",
                    flag_values=ANALYZE_FLAGS)
flags.DEFINE_integer("round", 0, "movement: the round whose histograms are drawn (the table has every round).",
                     lower_bound=0, flag_values=ANALYZE_FLAGS)
flags.DEFINE_integer("bins", 40, "movement: histogram bins.", lower_bound=2, flag_values=ANALYZE_FLAGS)

SUBCOMMANDS = {
    "overlap": lambda runs, folder, f: overlap.analyze(runs, folder),
    "layers": lambda runs, folder, f: layers.analyze(runs, folder),
    "movement": lambda runs, folder, f: movement.analyze(runs, folder, f.round, f.bins),
}


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
        started = time.time()
        runs = [runs_lib.load_run(d) for d in dirs]
        folder = ANALYZE_FLAGS.report_dir or dirs[0]
        os.makedirs(folder, exist_ok=True)
        written = SUBCOMMANDS[name](runs, folder, ANALYZE_FLAGS)
    except (flags.Error, runs_lib.RunError) as error:
        sys.stderr.write(f"lth_tf.analyze: error: {str(error).replace('ERROR:: ', '')}\n")
        return 2 if isinstance(error, flags.Error) else 1
    print(f"lth_tf.analyze {name}: {len(runs)} run(s) in {time.time() - started:.1f}s: "
          f"{', '.join(written)} and the '{name}' section of {os.path.join(folder, 'report.md')}")
    return 0
