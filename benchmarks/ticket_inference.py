"""Exported tickets on disk and at inference: the dense SavedModel against the sparse one.

    python benchmarks/ticket_inference.py --output_dir=RUN [--batch_sizes=1,256] [--blocks=40]

RUN is a finished lth_tf run whose rounds were exported (`--export=all
--export_format=both`; a round exported dense only gets its sparse form made
here from the run's files). For every exported round it prints % weights
remaining, bytes on disk of both SavedModels (raw and gzip, and dense/sparse),
and the median latency of one serving_default call at each batch size, dense
against sparse, each loaded with tf.saved_model.load. Then the density from
which the sparse export is faster at each batch size and from which it is
smaller. `make ticket-inference` makes RUN (LeNet-300-100 on Fashion-MNIST,
14 rounds) and runs this.

Latency: warm-up calls first, then blocks of calls (about 10 ms each), the
two forms alternating block by block so that a busy spell of the machine hits
both alike; the median block's mean call is reported. The inputs are the run's
own test examples (raw, as the signature takes them).
"""
import os
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

import lth_tf  # noqa: F401
from lth_tf import config as config_lib
from lth_tf import data, export, rundir

flags.DEFINE_string("output_dir", None, "A run with exported rounds (tickets/round_NN/).")
flags.DEFINE_list("batch_sizes", ["1", "256"], "Batch sizes timed.")
flags.DEFINE_integer("blocks", 40, "Timed blocks per form and batch size, the forms alternating block by block.",
                     lower_bound=1)
flags.DEFINE_float("block_seconds", 0.01, "About this long per block (20 calls at batch 1 here, at least one).",
                   lower_bound=0)
flags.DEFINE_integer("warmup", 20, "Untimed calls per form and batch size first.", lower_bound=1)
flags.mark_flag_as_required("output_dir")
FLAGS = flags.FLAGS


def exported_rounds(output_dir: str) -> list[int]:
    folder = os.path.join(output_dir, "tickets")
    return sorted(int(name[len("round_"):]) for name in os.listdir(folder)
                  if name.startswith("round_") and os.path.exists(os.path.join(folder, name, "ticket.npz")))


def raw_test_examples(output_dir: str, count: int) -> np.ndarray:
    """The run's first `count` test examples as the signature takes them (before normalisation)."""
    config = config_lib.from_dict(rundir.read_json(os.path.join(output_dir, "config.json")))
    splits = data.load(config.data)
    scale, mean, std = splits.normalisation
    x = np.resize(splits.x_test, (count, *splits.input_shape))  # repeats the test set if it is smaller
    return ((x * std + mean) / scale).astype(np.float32)


def median_latencies(serves: dict, x: tf.Tensor, blocks: int, warmup: int) -> dict:
    """Median seconds of one call of each signature on `x`: the mean call of each timed block of calls,
    the forms alternating block by block (a block of calls is steadier than one call on a busy machine)."""
    for serve in serves.values():
        for _ in range(warmup):
            serve(inputs=x)
    start = time.perf_counter()
    for serve in serves.values():
        serve(inputs=x)["logits"].numpy()
    calls = max(1, round(FLAGS.block_seconds / ((time.perf_counter() - start) / len(serves))))
    seconds = {form: [] for form in serves}
    for _ in range(blocks):
        for form, serve in serves.items():
            start = time.perf_counter()
            for _ in range(calls):
                serve(inputs=x)["logits"].numpy()
            seconds[form].append((time.perf_counter() - start) / calls)
    return {form: float(np.median(s)) for form, s in seconds.items()}


def measure_round(output_dir: str, round_index: int, x_all: np.ndarray, batch_sizes) -> dict:
    folder = os.path.join(output_dir, "tickets", f"round_{round_index:02d}")
    serves = {form: tf.saved_model.load(os.path.join(folder, form)).signatures["serving_default"]
              for form in (export.DENSE, export.SPARSE)}
    differences = []
    for x in (x_all[:1], x_all):  # the sparse form's small-batch and large-batch products
        dense, sparse = (serve(inputs=tf.constant(x))["logits"].numpy() for serve in serves.values())
        differences.append(np.max(np.abs(dense - sparse)))
    result = dict(max_logit_difference=float(max(differences)))
    for batch in batch_sizes:
        medians = median_latencies(serves, tf.constant(x_all[:batch]), FLAGS.blocks, FLAGS.warmup)
        result[batch] = (medians[export.DENSE], medians[export.SPARSE])
    return result


def density_from(rows, wins) -> str:
    """The highest % weights remaining from which the sparse form wins in that round and every sparser one."""
    from_pct = None
    for row in sorted(rows, key=lambda r: -r["pct"]):
        if wins(row):
            from_pct = row["pct"] if from_pct is None else from_pct
        else:
            from_pct = None
    return "in no exported round" if from_pct is None else f"at {from_pct:.2f}% weights remaining and below"


def main(argv):
    output_dir = FLAGS.output_dir
    batch_sizes = [int(b) for b in FLAGS.batch_sizes]
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU core(s); {output_dir}")
    rounds = exported_rounds(output_dir)
    for round_index in rounds:
        made = export.export_from_run(output_dir, round_index, export.FORMATS["both"])
        if made:
            print(f"round {round_index}: made {', '.join(made)} from the run's files")
    sizes = {int(r["round"]): r for r in rundir.read_sizes(output_dir)}
    x_all = raw_test_examples(output_dir, max(batch_sizes))
    header = (f"{'round':>5} {'% weights':>9} {'dense B':>9} {'sparse B':>9} {'ratio':>6} {'dense gz':>9} "
              f"{'sparse gz':>9} {'ratio':>6}" + "".join(f" {f'b{b} dense ms':>12} {f'b{b} sparse ms':>13} {'speedup':>7}"
                                                          for b in batch_sizes))
    print(header)
    rows = []
    for round_index in rounds:
        size = sizes[round_index]
        dense, sparse = int(size["saved_model_bytes"]), int(size["saved_model_sparse_bytes"])
        dense_gz, sparse_gz = int(size["saved_model_gzip_bytes"]), int(size["saved_model_sparse_gzip_bytes"])
        timing = measure_round(output_dir, round_index, x_all, batch_sizes)
        row = dict(round=round_index, pct=float(size["weights_remaining_pct"]), dense=dense, sparse=sparse)
        row.update(timing)
        rows.append(row)
        line = (f"{round_index:>5} {row['pct']:>9.2f} {dense:>9} {sparse:>9} {dense / sparse:>6.2f} {dense_gz:>9} "
                f"{sparse_gz:>9} {dense_gz / sparse_gz:>6.2f}")
        for b in batch_sizes:
            d, s = timing[b]
            line += f" {d * 1e3:>12.3f} {s * 1e3:>13.3f} {d / s:>7.2f}"
        print(line + f"   (max |logit difference| {timing['max_logit_difference']:.1e})", flush=True)
    print(f"sparse export smaller on disk: {density_from(rows, lambda r: r['sparse'] < r['dense'])}")
    for b in batch_sizes:
        print(f"sparse export faster at batch {b}: {density_from(rows, lambda r, b=b: r[b][1] < r[b][0])}")


if __name__ == "__main__":
    app.run(main)
