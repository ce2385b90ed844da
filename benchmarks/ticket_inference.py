"""Exported tickets on disk and at inference: the dense SavedModel, the sparse one and TFLite.

    python benchmarks/ticket_inference.py --output_dir=RUN [--batch_sizes=1,256] [--blocks=40] [--readme=docs/speed.md]

RUN is a finished lth_tf run whose rounds were exported (`--export=all
--export_format=dense,sparse,tflite`; a round lacking a form gets it made
here from the run's files). For every exported round it prints % weights
remaining, bytes on disk (the two SavedModels, model.tflite and the same
file with every weight dense: "the dense TFLite file"), and the median
latency of one call at each batch size of five forms: the two SavedModels
loaded with tf.saved_model.load; the dense TFLite file under LiteRT's
default XNNPACK delegate and under its builtin kernels; model.tflite under
the builtin kernels. Then from which density each sparse form wins. Then
where one batch-1 call's time goes in the densest round at or below
--profile_pct % weights: the SavedModels under TensorFlow's profiler
(--profile_calls calls; the profiler adds its own cost, so read the split,
not the totals), and each fully-connected layer of the TFLite files run
alone (LiteRT has no per-op profiler in Python), with the kernel that ran
it. --readme writes the tables (the --readme_rounds rows), the densities and
the splits into the file's <!-- ticket_inference --> block. `make
ticket-inference` makes RUN (LeNet-300-100 on Fashion-MNIST, 20 rounds) and
runs this.

Latency: warm-up calls first, then blocks of calls (about 10 ms each), the
forms alternating block by block so that a busy spell of the machine hits
all alike; the median block's mean call is reported, and a ratio of two
forms is the median of their blocks' ratios, block i of one against block i
of the other (with the quartiles). The inputs are the
run's own test examples (raw, as the signature takes them). LiteRT runs one
thread, as TensorFlow's calls on this 2-core machine mostly do, in a child
process that cannot import TensorFlow or lth_tf (benchmarks/litert_worker.py,
timing its own calls; the forms still alternate block by block).
"""
import collections
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags
from flatbuffers import Builder as flatbuffers_builder
from tensorflow.lite.python import schema_py_generated as schema

import lth_tf  # noqa: F401
from lth_tf import config as config_lib
from lth_tf import data, export, paths, rundir, tickets
from readme_block import provenance, write_block

flags.DEFINE_string("output_dir", None, "A run with exported rounds (tickets/round_NN/).")
flags.DEFINE_list("batch_sizes", ["1", "256"], "Batch sizes timed.")
flags.DEFINE_integer("blocks", 40, "Timed blocks per form and batch size, the forms alternating block by block.",
                     lower_bound=1)
flags.DEFINE_float("block_seconds", 0.01, "About this long per block of one form's calls (at least one call).",
                   lower_bound=0)
flags.DEFINE_integer("warmup", 20, "Untimed calls per form and batch size first.", lower_bound=1)
flags.DEFINE_float("profile_pct", 5.0, "Profile batch-1 calls in the densest round with at most this % weights "
                   "remaining (0: no profile).", lower_bound=0)
flags.DEFINE_integer("profile_calls", 200, "Calls per form under the profiler.", lower_bound=1)
flags.DEFINE_string("readme", "", "Also write the results into this file, between its <!-- ticket_inference --> "
                    "and <!-- /ticket_inference --> lines.")
flags.DEFINE_string("summary", "", "Also write the densities from which each form wins into this file, between "
                    "its <!-- ticket_inference_summary --> lines.")
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


FORMS = {"sm_dense": "dense SavedModel", "sm_sparse": "sparse SavedModel", "tfl_xnnpack": "dense TFLite, XNNPACK",
         "tfl_dense": "dense TFLite, builtin kernels", "tfl_sparse": "model.tflite, builtin kernels"}


def block_latencies(timers: dict, blocks: int, warmup: int) -> dict:
    """Each form's seconds per call in each of `blocks` timed blocks of calls (an array per form), the forms
    alternating block by block (a block of calls is steadier than one call on a busy machine; block i of
    every form ran at about the same time, so their ratio is paired). `timers` map a form to a function
    that makes N calls back to back and returns their seconds. Each form's block lasts about
    --block_seconds (its own number of calls), so that a form 20x faster than another is not timed in
    blocks 20x shorter, cold from the other's."""
    for timer in timers.values():
        timer(warmup)
    per_block = {form: max(1, round(FLAGS.block_seconds / (timer(10) / 10))) for form, timer in timers.items()}
    seconds = {form: [] for form in timers}
    for _ in range(blocks):
        for form, timer in timers.items():
            seconds[form].append(timer(per_block[form]) / per_block[form])
    return {form: np.array(s) for form, s in seconds.items()}


def timed(call):
    """A timer (see block_latencies) of a zero-argument call made in this process."""
    def timer(calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            call()
        return time.perf_counter() - start
    return timer


class LiteRT:
    """benchmarks/litert_worker.py in a child process: TFLite files loaded and timed there, by LiteRT in a
    process without TensorFlow or lth_tf, the way a user runs them; the pipe's own time is not timed."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="ticket_litert_")
        self.process = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "litert_worker.py")],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the LiteRT worker stopped at {command} (its error is above)")
        return json.loads(answer)

    def load(self, name: str, content: bytes, builtin: bool = True):
        path = os.path.join(self.folder, f"{name}.tflite")
        with open(path, "wb") as f:
            f.write(content)
        self.ask(load=name, path=path, builtin=builtin)

    def feed(self, names, x: np.ndarray):
        path = os.path.join(self.folder, "inputs.npy")
        np.save(path, x)
        self.ask(input=path, names=list(names))

    def output(self, name: str) -> np.ndarray:
        return np.array(self.ask(output=name)["output"], np.float32)

    def timer(self, name: str):
        return lambda calls: self.ask(time=name, calls=calls)["seconds"]

    def __enter__(self):
        return self

    def __exit__(self, *error):
        self.process.stdin.close()  # the worker ends at the end of its input
        self.process.wait()
        shutil.rmtree(self.folder)


def dense_tflite(output_dir: str, round_index: int) -> bytes:
    """model.tflite with every weight stored and computed dense (export.tflite_form's sparse=False): the same
    network and graph, the normalisation folded alike, so that the two differ in their sparsity alone."""
    return export.tflite_form(*export.stripped_from_run(output_dir, round_index), sparse=False)


def measure_round(output_dir: str, round_index: int, x_all: np.ndarray, batch_sizes) -> dict:
    folder = paths.ticket_export(output_dir, round_index)
    saved = {form: tf.saved_model.load(os.path.join(folder, name)).signatures["serving_default"]
             for form, name in (("sm_dense", export.DENSE), ("sm_sparse", export.SPARSE))}
    dense_file = dense_tflite(output_dir, round_index)
    with open(os.path.join(folder, export.TFLITE), "rb") as f:
        sparse_file = f.read()
    with LiteRT() as litert:
        files = dict(tfl_xnnpack=(dense_file, False), tfl_dense=(dense_file, True), tfl_sparse=(sparse_file, True))
        for form, (content, builtin) in files.items():
            litert.load(form, content, builtin)
        differences = []
        for x in (x_all[:1], x_all):  # the sparse SavedModel's small-batch and large-batch products
            reference = {form: serve(inputs=tf.constant(x))["logits"].numpy() for form, serve in saved.items()}
            litert.feed(files, x)
            differences += [np.max(np.abs(litert.output(form) - reference["sm_dense"])) for form in files]
            differences.append(np.max(np.abs(reference["sm_sparse"] - reference["sm_dense"])))
        result = dict(max_logit_difference=float(max(differences)), tflite_dense_bytes=len(dense_file),
                      tflite_bytes=len(sparse_file))
        for batch in batch_sizes:
            x = x_all[:batch]
            litert.feed(files, x)
            prepared = {"sm_dense": tf.constant(x), "sm_sparse": tf.constant(x)}
            timers = {form: timed(lambda s=saved[form], t=prepared[form]: s(inputs=t)["logits"].numpy())
                      for form in saved}
            timers.update({form: litert.timer(form) for form in files})
            result["blocks", batch] = block_latencies(timers, FLAGS.blocks, FLAGS.warmup)
            result[batch] = {form: float(np.median(s)) for form, s in result["blocks", batch].items()}
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


def layers_alone(content: bytes) -> list[dict]:
    """Each fully-connected layer of a TFLite flatbuffer as a flatbuffer of that op alone (with the DENSIFY
    op that expands its weight, if any): its name, the kernel LiteRT's builtin resolver runs it with, and
    the fraction of its weight's entries the file stores."""
    def code(model, op):
        return max(model.operatorCodes[op.opcodeIndex].builtinCode,
                   model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)
    found = []
    count = sum(code(m, op) == schema.BuiltinOperator.FULLY_CONNECTED
                for m in [schema.ModelT.InitFromPackedBuf(bytearray(content), 0)] for op in m.subgraphs[0].operators)
    for index in range(count):
        model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
        graph = model.subgraphs[0]
        op = [op for op in graph.operators if code(model, op) == schema.BuiltinOperator.FULLY_CONNECTED][index]
        densify = next((o for o in graph.operators if code(model, o) == schema.BuiltinOperator.DENSIFY
                        and o.outputs[0] == op.inputs[1]), None)
        weight = graph.tensors[densify.inputs[0] if densify else op.inputs[1]]
        stored = len(model.buffers[weight.buffer].data) // 4 / np.prod(weight.shape)
        if weight.sparsity is None:
            kernel = "dense"
        elif densify:
            kernel = "dense (weight stored as CSR, expanded at load)"
        else:
            blocks = len(weight.sparsity.traversalOrder) > 2
            kernel = f"sparse weight, {'1x4 blocks' if blocks else 'random CSR'}"
        graph.operators = [o for o in (densify, op) if o is not None]
        graph.inputs, graph.outputs, model.signatureDefs = [op.inputs[0]], [op.outputs[0]], []
        builder = flatbuffers_builder(len(content))
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        name = graph.tensors[op.outputs[0]].name.decode().split(";")[0]
        found.append(dict(name=name, kernel=kernel, stored=stored, content=bytes(builder.Output()),
                          shape=[int(d) for d in weight.shape]))
    return found


def tflite_layer_lines(output_dir: str, round_index: int, pct: float, x: np.ndarray) -> list[str]:
    """Each fully-connected layer of the round's TFLite files run alone at batch 1, dense file against
    model.tflite, then the whole call and what it spends outside those layers, as markdown lines."""
    folder = paths.ticket_export(output_dir, round_index)
    with open(os.path.join(folder, export.TFLITE), "rb") as f:
        sparse_file = f.read()
    dense_file = dense_tflite(output_dir, round_index)
    sparse, dense = layers_alone(sparse_file), layers_alone(dense_file)
    with LiteRT() as litert:
        for i, (d, s) in enumerate(zip(dense, sparse)):
            litert.load(f"dense_{i}", d["content"])
            litert.load(f"sparse_{i}", s["content"])
        litert.load("dense_call", dense_file)
        litert.load("sparse_call", sparse_file)
        litert.feed(["dense_call", "sparse_call"], x[:1])
        timers = {(form, i): litert.timer(f"{form}_{i}") for form in ("dense", "sparse")
                  for i in [*range(len(sparse)), "call"]}
        seconds = {call: float(np.median(s)) * 1e6 for call, s in
                   block_latencies(timers, FLAGS.blocks, FLAGS.warmup).items()}
    lines = [f"Each fully-connected layer of round {round_index} ({pct:.2f}% weights) run alone at batch 1 "
             "(LiteRT, builtin kernels, one thread; µs per call, each layer a file of its own), then the "
             "whole call, and the rest of it:", "",
             "| layer [out, in] | entries stored | kernel in model.tflite | dense file | model.tflite |",
             "| --- | --- | --- | --- | --- |"]
    for i, s in enumerate(sparse):
        lines.append(f"| {s['name']} {s['shape']} | {100 * s['stored']:.2f}% | {s['kernel']} | "
                     f"{seconds[('dense', i)]:.1f} | {seconds[('sparse', i)]:.1f} |")
    rest = {form: seconds[form, "call"] - sum(seconds[form, i] for i in range(len(sparse)))
            for form in ("dense", "sparse")}
    lines += [f"| the whole call (set the input, invoke, read the logits) | | | {seconds['dense', 'call']:.1f} | "
              f"{seconds['sparse', 'call']:.1f} |",
              "| the rest: whole call − the layers alone (a lower bound: each layer alone pays its own invoke) "
              f"| | | {rest['dense']:.1f} | {rest['sparse']:.1f} |"]
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
        made = export.export_from_run(output_dir, round_index, export.forms("dense,sparse,tflite"))
        if made:
            print(f"round {round_index}: made {', '.join(made)} from the run's files")
    sizes = {int(r["round"]): r for r in rundir.read_sizes(output_dir)}
    x_all = raw_test_examples(output_dir, max(batch_sizes))
    print(f"{'round':>5} {'% weights':>9} {'SM dense B':>10} {'SM sparse B':>11} {'TFL dense B':>11} "
          f"{'TFL B':>9}" + "".join(f"  batch {b} µs: " + " / ".join(FORMS) for b in batch_sizes))
    rows = []
    for round_index in rounds:
        size = sizes[round_index]
        timing = measure_round(output_dir, round_index, x_all, batch_sizes)
        row = dict(round=round_index, pct=float(size["weights_remaining_pct"]), sm_dense=int(size["saved_model_bytes"]),
                   sm_sparse=int(size["saved_model_sparse_bytes"]), tfl_dense=timing["tflite_dense_bytes"],
                   tfl_sparse=timing["tflite_bytes"])
        row.update(timing)
        rows.append(row)
        line = (f"{round_index:>5} {row['pct']:>9.2f} {row['sm_dense']:>10} {row['sm_sparse']:>11} "
                f"{row['tfl_dense']:>11} {row['tfl_sparse']:>9}")
        for b in batch_sizes:
            line += "  " + " / ".join(f"{timing[b][form] * 1e6:.1f}" for form in FORMS)
        print(line + f"   (max |logit difference| {timing['max_logit_difference']:.1e})", flush=True)
    findings = findings_of(rows, batch_sizes)
    print("\n".join(findings))
    profiled = [r for r in rows if r["pct"] <= FLAGS.profile_pct]
    split = []
    if FLAGS.profile_pct and profiled:
        split = (profile_lines(output_dir, profiled[0]["round"], profiled[0]["pct"], x_all) + [""]
                 + tflite_layer_lines(output_dir, profiled[0]["round"], profiled[0]["pct"], x_all))
    print("\n" + "\n".join(split))
    if FLAGS.readme:
        shown = [row for row in rows if str(row["round"]) in FLAGS.readme_rounds]
        table = ["| % weights | bytes: " + " / ".join(("SavedModel dense", "sparse", "TFLite dense", "model.tflite"))
                 + " | " + " | ".join(f"batch {b}, µs: SavedModel dense / sparse / TFLite dense (XNNPACK) / "
                                     "dense (builtin) / model.tflite" for b in batch_sizes) + " |",
                 "| --- " * (2 + len(batch_sizes)) + "|"]
        for row in shown:
            table.append(f"| {row['pct']:.2f} | " + " / ".join(f"{row[k]:,}" for k in ("sm_dense", "sm_sparse",
                                                                                       "tfl_dense", "tfl_sparse"))
                         + " | " + " | ".join(" / ".join(f"{row[b][form] * 1e6:.1f}" for form in FORMS)
                                              for b in batch_sizes) + " |")
        write_block(FLAGS.readme, "ticket_inference", [
            f"{provenance()}; {output_dir}, median latency of one call over {FLAGS.blocks} blocks per form, the "
            "forms alternating:", "", *table, "", *findings, "", *split])
    if FLAGS.summary:
        write_block(FLAGS.summary, "ticket_inference_summary", [
            f"{provenance()}; LeNet-300-100 on Fashion-MNIST, {output_dir}, `make ticket-inference`:", "", *findings])


def findings_of(rows, batch_sizes) -> list[str]:
    """From which density each sparse form wins, and the ratios at 5% of the weights (the densest round
    at or below it)."""
    lines = [f"- The sparse SavedModel is smaller than the dense one "
             f"{density_from(rows, lambda r: r['sm_sparse'] < r['sm_dense'])}; model.tflite is smaller than the "
             f"dense TFLite file {density_from(rows, lambda r: r['tfl_sparse'] < r['tfl_dense'])}."]
    for b in batch_sizes:
        lines.append(f"- At batch {b} the sparse SavedModel is faster than the dense one "
                     f"{density_from(rows, lambda r, b=b: faster(r, b, 'sm_dense', 'sm_sparse'))}; model.tflite is "
                     "faster than the dense TFLite file (the faster of XNNPACK and builtin kernels) "
                     f"{density_from(rows, lambda r, b=b: faster(r, b, fastest_dense_form(r, b), 'tfl_sparse'))} "
                     "(faster: in at least three of four blocks timed side by side).")
    at_5 = [r for r in rows if r["pct"] <= 5.0]
    if at_5 and 1 in batch_sizes:
        r = at_5[0]
        lines.append(f"- At {r['pct']:.2f}% of the weights model.tflite is {r['sm_dense'] / r['tfl_sparse']:.1f}× "
                     "smaller than the dense SavedModel; at batch 1 it is "
                     f"{paired_ratio(r, 'sm_dense', 'tfl_sparse')} faster than the dense SavedModel and "
                     f"{paired_ratio(r, fastest_dense_form(r, 1), 'tfl_sparse')} faster than the dense TFLite "
                     "file (the median of the ratios of blocks timed side by side, and the middle half of them). "
                     "model.tflite is at least twice as fast as the dense TFLite file at batch 1 (by the median "
                     "ratio) "
                     f"{density_from(rows, lambda r: ratio(r, 1, fastest_dense_form(r, 1), 'tfl_sparse') >= 2)}.")
    return lines


def ratio(row, batch, slower: str, form: str, percentile=50) -> float:
    """How many times faster `form` is than `slower`: a percentile of their paired blocks' ratios."""
    return float(np.percentile(row["blocks", batch][slower] / row["blocks", batch][form], percentile))


def faster(row, batch, slower: str, form: str) -> bool:
    """Whether `form` beat `slower` in at least three of four of their paired blocks at `batch`, so that two
    forms computing alike do not 'win' by noise."""
    return np.mean(row["blocks", batch][slower] > row["blocks", batch][form]) >= 0.75


def fastest_dense_form(row, batch) -> str:
    return min(("tfl_xnnpack", "tfl_dense"), key=lambda form: row[batch][form])


def paired_ratio(row, slower: str, form: str) -> str:
    """How many times faster `form` is than `slower` at batch 1: the median over blocks of the ratio of
    their block i (timed side by side), with the quartiles, e.g. '23.0× (21.5–24.8×)'."""
    low, middle, high = (f"{v:.1f}" if v >= 10 else f"{v:.2f}" for v in (ratio(row, 1, slower, form, q)
                                                                         for q in (25, 50, 75)))
    return f"{middle}× ({low}–{high}×)"


if __name__ == "__main__":
    app.run(main)
