"""Exported tickets on disk and at inference: the dense SavedModel against the sparse one.

    python benchmarks/ticket_inference.py --output_dir=RUN [--batch_sizes=1,256] [--blocks=40] [--readme=docs/speed.md]

RUN is a finished lth_tf run whose rounds were exported (`--export=all
--export_format=both`; a round exported dense only gets its sparse form made
here from the run's files). For every exported round it prints % weights
remaining, bytes on disk of both SavedModels (raw and gzip, and dense/sparse),
and the median latency of one serving_default call at each batch size, dense
against sparse, each loaded with tf.saved_model.load. Then the density from
which the sparse export is faster at each batch size and from which it is
smaller. Then where one batch-1 call's time goes, dense against sparse, in the
densest round at or below --profile_pct % weights (TensorFlow's profiler over
--profile_calls calls; the profiler adds its own cost, so read the split, not
the totals). --readme writes the table (the --readme_rounds rows), the
densities and the split into the file's <!-- ticket_inference --> block.
`make ticket-inference` makes RUN (LeNet-300-100 on Fashion-MNIST, 20
rounds) and runs this.

Latency: warm-up calls first, then blocks of calls (about 10 ms each), the
two forms alternating block by block so that a busy spell of the machine hits
both alike; the median block's mean call is reported. The inputs are the run's
own test examples (raw, as the signature takes them).
"""
import collections
import glob
import os
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

import lth_tf  # noqa: F401
from lth_tf import config as config_lib
from lth_tf import data, export, paths, rundir, tickets
from readme_block import provenance, write_block

flags.DEFINE_string("output_dir", None, "A run with exported rounds (tickets/round_NN/).")
flags.DEFINE_list("batch_sizes", ["1", "256"], "Batch sizes timed.")
flags.DEFINE_integer("blocks", 40, "Timed blocks per form and batch size, the forms alternating block by block.",
                     lower_bound=1)
flags.DEFINE_float("block_seconds", 0.01, "About this long per block (20 calls at batch 1 here, at least one).",
                   lower_bound=0)
flags.DEFINE_integer("warmup", 20, "Untimed calls per form and batch size first.", lower_bound=1)
flags.DEFINE_float("profile_pct", 5.0, "Profile batch-1 calls in the densest round with at most this % weights "
                   "remaining (0: no profile).", lower_bound=0)
flags.DEFINE_integer("profile_calls", 200, "Calls per form under the profiler.", lower_bound=1)
flags.DEFINE_string("readme", "", "Also write the results into this file, between its <!-- ticket_inference --> "
                    "and <!-- /ticket_inference --> lines.")
flags.DEFINE_list("readme_rounds", ["0", "4", "10", "12", "14", "17", "20"], "The rounds in --readme's table.")
flags.mark_flag_as_required("output_dir")
FLAGS = flags.FLAGS


def exported_rounds(output_dir: str) -> list[int]:
    return [r for r in paths.rounds_in(paths.tickets(output_dir))
            if os.path.exists(paths.ticket_file(output_dir, r))]


def raw_test_examples(output_dir: str, count: int) -> np.ndarray:
    """The run's first `count` test examples as the signature takes them (before normalisation)."""
    config = config_lib.from_dict(rundir.read_json(paths.config(output_dir)))
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
    folder = paths.ticket_export(output_dir, round_index)
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


def op_profile(serve, x: tf.Tensor, calls: int, layers) -> dict:
    """Microseconds per call of `serve` on x under TensorFlow's profiler: the whole call ("call"), running its
    graph ("graph"), the ops of each of `layers` (by their op names' layer part), the other ops ("other ops"),
    and how many ops ran ("ops run")."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # the profiler's own trace format

    for _ in range(20):
        serve(inputs=x)
    folder = tempfile.mkdtemp(prefix="ticket_profile_")
    tf.profiler.experimental.start(folder)
    for _ in range(calls):
        serve(inputs=x)["logits"].numpy()
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
        space.ParseFromString(f.read())
    shutil.rmtree(folder)
    totals = collections.Counter()
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name, micros = names.get(event.metadata_id, ""), event.duration_ps / 1e6
                if name.startswith("signature_wrapper"):
                    totals["call"] += micros
                elif name == "KernelAndDeviceFunc::Run":
                    totals["graph"] += micros
                elif ":" in name and "::" not in name and " " not in name:  # an op: "scope/layer/op:OpType"
                    scopes = name.split(":")[0].split("/")
                    totals[next((layer for layer in layers if layer in scopes), "other ops")] += micros
                    totals["ops run"] += 1
    return {key: value / calls for key, value in totals.items()}


def profile_lines(output_dir: str, round_index: int, pct: float, x: np.ndarray) -> list[str]:
    """The split of one batch-1 call, dense against sparse, as markdown lines."""
    folder = paths.ticket_export(output_dir, round_index)
    _, masks, _ = tickets.read_ticket(paths.ticket_file(output_dir, round_index))
    layers = [name for name in masks if not name.endswith("/bias")]
    split = {form: op_profile(tf.saved_model.load(os.path.join(folder, form)).signatures["serving_default"],
                              tf.constant(x[:1]), FLAGS.profile_calls, layers)
             for form in (export.DENSE, export.SPARSE)}
    lines = [f"One batch-1 call of round {round_index} ({pct:.2f}% weights), TensorFlow's profiler over "
             f"{FLAGS.profile_calls} calls of each form (µs per call; the profiler adds its own cost):", "",
             "| | dense | sparse |", "| --- | --- | --- |"]
    rows = [("the whole call", "call"), ("running its graph", "graph")]
    rows += [(f"{layer}'s ops", layer) for layer in layers] + [("the other ops", "other ops")]
    for label, key in rows:
        lines.append(f"| {label} | {split[export.DENSE].get(key, 0):.1f} | {split[export.SPARSE].get(key, 0):.1f} |")
    lines.append(f"| ops run | {split[export.DENSE].get('ops run', 0):.0f} | "
                 f"{split[export.SPARSE].get('ops run', 0):.0f} |")
    return lines


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
    findings = [f"The sparse export is smaller on disk {density_from(rows, lambda r: r['sparse'] < r['dense'])}."]
    for b in batch_sizes:
        findings.append(f"It is faster at batch {b} {density_from(rows, lambda r, b=b: r[b][1] < r[b][0])}.")
    print("\n".join(findings))
    profiled = [r for r in rows if r["pct"] <= FLAGS.profile_pct]
    split = (profile_lines(output_dir, profiled[0]["round"], profiled[0]["pct"], x_all)
             if FLAGS.profile_pct and profiled else [])
    print("\n" + "\n".join(split))
    if FLAGS.readme:
        table = ["| % weights | dense bytes | sparse bytes | smaller by | "
                 + " | ".join(f"batch {b}: dense / sparse ms" for b in batch_sizes) + " |",
                 "| --- " * (4 + len(batch_sizes)) + "|"]
        for row in rows:
            if str(row["round"]) in FLAGS.readme_rounds:
                table.append(f"| {row['pct']:.2f} | {row['dense']:,} | {row['sparse']:,} | "
                             f"{row['dense'] / row['sparse']:.2f}× | "
                             + " | ".join(f"{row[b][0] * 1e3:.3f} / {row[b][1] * 1e3:.3f}" for b in batch_sizes)
                             + " |")
        write_block(FLAGS.readme, "ticket_inference", [
            f"{provenance()}; {output_dir}, median latency of the loaded signature over {FLAGS.blocks} "
            f"blocks per form, the forms alternating:", "", *table, "", " ".join(findings), "", *split])


if __name__ == "__main__":
    app.run(main)
