"""What --parallel buys a sweep on this machine: the same sweep of short
quick-config experiments (4 seeds, 2 rounds, 1,000 steps) on the local pool
with 1 experiment at a time and with one per core, each from scratch; prints
the wall times and their ratio.

    .venv/bin/python benchmarks/sweep_parallel.py [--seeds=4] [--train_steps=1000]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time


def sweep_seconds(parallel: int, seeds: int, train_steps: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        started = time.time()
        subprocess.run([sys.executable, "-m", "lth_tf.sweep", "--flagfile=configs/quick.flags",
                        f"--seeds={','.join(map(str, range(seeds)))}", f"--sweep_dir={folder}/sweep",
                        f"--parallel={parallel}", "--rounds=2", f"--train_steps={train_steps}", "--export=none",
                        "--notensorboard"], check=True, capture_output=True)
        return time.time() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--train_steps", type=int, default=1000)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"{args.seeds} experiments of configs/quick.flags --rounds=2 --train_steps={args.train_steps}, "
          f"{cores} cores")
    times = {p: sweep_seconds(p, args.seeds, args.train_steps) for p in sorted({1, max(1, cores // 2), cores})}
    for parallel, seconds in times.items():
        print(f"--parallel={parallel}: {seconds:6.1f} s wall  ({times[1] / seconds:.2f}x --parallel=1; "
              f"{max(1, cores // parallel)} TensorFlow threads each)")


if __name__ == "__main__":
    main()
