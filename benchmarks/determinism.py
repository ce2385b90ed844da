"""What TensorFlow op determinism costs on the default path, and whether the
quick start's table repeats without it.

    python benchmarks/determinism.py [--repeats=3] [--rounds=8]

Runs the default experiment (configs/quick.flags) `repeats` times with and
without --deterministic, alternating, each in a fresh process and a fresh
output directory, and prints the wall time of each run, the median ratio
deterministic / default, and how many distinct summary tables each mode
printed (1 = the table repeats digit for digit).
"""
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

flags.DEFINE_integer("repeats", 3, "Runs per mode.")
flags.DEFINE_integer("rounds", 8, "Pruning rounds of each run (the default experiment has 8).")
FLAGS = flags.FLAGS


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
    for mode in modes:
        print(f"\n{mode} table(s):")
        for table in sorted(tables[mode]):
            print(table)


if __name__ == "__main__":
    app.run(main)
