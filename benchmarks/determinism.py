"""What TensorFlow op determinism costs on the default path, and whether the
quick start's table repeats without it.

    python benchmarks/determinism.py [--repeats=3] [--rounds=8] [--readme=README.md]

Runs the default experiment (configs/quick.flags) `repeats` times with and
without --deterministic, alternating, each in a fresh process and a fresh
output directory, and prints the wall time of each run, the median ratio
deterministic / default, how many distinct summary tables each mode printed
(1 = the table repeats digit for digit), and the CPU's model and the
instruction-set features TensorFlow's kernels choose by: the digits repeat on
the same CPU kind, thread count and TensorFlow build, and can differ in the
last places on another. --readme writes the default mode's table, with where
it came from, between the file's <!-- determinism --> lines; --cost_doc the
times and their ratio between <!-- determinism_cost --> lines.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags
from readme_block import provenance, write_block

flags.DEFINE_integer("repeats", 3, "Runs per mode.")
flags.DEFINE_integer("rounds", 8, "Pruning rounds of each run (the default experiment has 8).")
flags.DEFINE_string("readme", "", "Also write the default mode's table into this file, between its "
                    "<!-- determinism --> and <!-- /determinism --> lines.")
flags.DEFINE_string("cost_doc", "", "Also write the wall times and their ratio into this file, between its "
                    "<!-- determinism_cost --> and <!-- /determinism_cost --> lines.")
FLAGS = flags.FLAGS
# The x86 features oneDNN and XLA pick kernels by (a float sum in another order can change a last digit).
FEATURES = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
            "amx_tile", "amx_bf16", "amx_int8")


def cpu() -> str:
    """'Intel(R) Xeon(R) Processor; avx avx2 fma avx512f ...' from /proc/cpuinfo (the platform elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        import platform
        return platform.processor() or platform.machine()
    info = {key.strip(): value.strip() for key, value in info.items()}
    present = set(info.get("flags", "").split())
    return f"{info.get('model name', 'unknown CPU')}; {' '.join(f for f in FEATURES if f in present) or 'no listed feature'}"


def _span(values) -> str:
    return f"{min(values):.1f}–{max(values):.1f} s"


def run_once(extra, folder):
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "lth_tf.main", f"--rounds={FLAGS.rounds}",
                             f"--output_dir={folder}", *extra], capture_output=True, text=True, check=True)
    table = result.stdout.split("results:")[0]
    return time.time() - started, table


def main(argv):
    modes = {"default": [], "--deterministic": ["--deterministic"]}
    seconds = {mode: [] for mode in modes}
    tables = {mode: set() for mode in modes}
    with tempfile.TemporaryDirectory() as root:
        for repeat in range(FLAGS.repeats):
            for mode, extra in modes.items():
                elapsed, table = run_once(extra, f"{root}/{mode.strip('-')}{repeat}")
                seconds[mode].append(elapsed)
                tables[mode].add(table)
                print(f"{mode:16s} run {repeat + 1}: {elapsed:6.1f} s", flush=True)
    for mode in modes:
        print(f"{mode:16s} median {statistics.median(seconds[mode]):6.1f} s, "
              f"{len(tables[mode])} distinct table(s) in {FLAGS.repeats} runs")
    ratio = statistics.median(d / s for d, s in zip(seconds["--deterministic"], seconds["default"]))
    print(f"deterministic / default wall time (median of paired runs): {ratio:.3f}")
    if FLAGS.cost_doc:
        write_block(FLAGS.cost_doc, "determinism_cost", [
            f"`python benchmarks/determinism.py` ({provenance()}; CPU: {cpu()}), {FLAGS.repeats} paired runs of "
            f"the default experiment: {_span(seconds['default'])} without `--deterministic`, "
            f"{_span(seconds['--deterministic'])} with it; median ratio {ratio:.3f}. Distinct tables: "
            f"{len(tables['default'])} without, {len(tables['--deterministic'])} with."])
    print(f"CPU: {cpu()}; {os.cpu_count()} cores")
    for mode in modes:
        print(f"\n{mode} table(s):")
        for table in sorted(tables[mode]):
            print(table)
    if FLAGS.readme:
        if len(tables["default"]) != 1:
            raise SystemExit(f"the default mode printed {len(tables['default'])} different tables; "
                             f"nothing written into {FLAGS.readme}")
        table = next(iter(tables["default"]))
        write_block(FLAGS.readme, "determinism", [
            f"`python benchmarks/determinism.py --readme=README.md` ({provenance()}; CPU: {cpu()}): "
            f"{FLAGS.repeats} runs of `make run` in fresh processes and directories printed this table "
            f"{FLAGS.repeats} times, digit for digit:", "", *("    " + line for line in table.rstrip().splitlines())])


if __name__ == "__main__":
    app.run(main)
