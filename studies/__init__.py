"""The studies behind RESULTS.md: this repository's own research with lth_tf,
kept beside the library rather than in it (nothing in lth_tf imports this
package, and it is not installed with lth_tf; it runs from a checkout).

Each study is one or more replicate sweeps (lth_tf.sweep) under
--results_dir/<study>[/<variant>]; studies.results runs them and turns their
outputs into RESULTS.md (`make results`).
"""
import dataclasses
import os
import sys


@dataclasses.dataclass(frozen=True)
class Study:
    title: str
    argv: tuple        # lth_tf.sweep's flags, --sweep_dir and --parallel left out
    about: str         # what it reproduces and what was shortened, for RESULTS.md
    variants: tuple = (("", (), ""),)  # (name, flags added to argv, what they change): one sweep each


GEOMETRIC = ("--prune_schedule=geometric", "--prune_rate_fc=0.2", "--prune_rate_output=0.2", "--rounds=14")


STUDIES = {
    "quick": Study(
        "The quick default: MLP 100-100 on MNIST-1D",
        ("--flagfile=configs/quick.flags", "--rounds=15", "--controls=reinit,random_prune", "--seeds=0,1,2",
         "--export=none"),
        "configs/quick.flags (what `make run` runs) with 15 rounds instead of 8, down to about 5% of the "
        "weights, and both controls."),
    "mnist1d_paper": Study(
        "The MNIST-1D paper's lottery tickets",
        ("--flagfile=configs/mnist1d_paper.flags", "--seeds=0,1,2,3,4", "--xla", "--export=none"),
        "configs/mnist1d_paper.flags: the setup of the MNIST-1D paper's lottery-ticket notebook (Greydanus & "
        "Kobak), 97 rounds to 98% pruned, with XLA (faster for MLPs on a CPU). Then the same network and seeds "
        "with lth_tf's geometric schedule, and that run with one of the notebook's other choices undone at a "
        "time, to see which difference carries the effect.",
        variants=(
            ("paper", (), "the notebook's setup"),
            ("geometric", GEOMETRIC, "geometric schedule: 20% of every layer's surviving weights per round"),
            ("geometric_weights_only", GEOMETRIC + ("--noprune_biases",), "geometric, biases not pruned"),
            ("geometric_plain_mlp", GEOMETRIC + ("--model=mlp_500_500",), "geometric, no residual connection"),
            ("geometric_final_weights", GEOMETRIC + ("--prune_from_step=end",),
             "geometric, masks from the final weights (step 1501) instead of step 1000"),
            ("geometric_glorot", GEOMETRIC + ("--init=default",),
             "geometric, lth_tf's Glorot-normal kernels and zero biases instead of PyTorch's initialisation"),
            ("lth_tf_defaults", GEOMETRIC + ("--noprune_biases", "--model=mlp_500_500", "--prune_from_step=end",
                                             "--init=default"),
             "all of lth_tf's choices: plain MLP, Glorot init, weights only, final weights, geometric"),
        )),
    "lenet_fashion_mnist": Study(
        "LeNet-300-100 on Fashion-MNIST",
        ("--flagfile=configs/lenet_fashion_mnist.flags", "--seeds=0,1,2", "--export=none"),
        "configs/lenet_fashion_mnist.flags as it is: Frankle & Carbin's LeNet-300-100 protocol (Adam 1.2e-3, "
        "batch 60, 50,000 iterations a round with an evaluation every 100, fc 20% / output 10% per round, 20 "
        "rounds, rewind to initialisation, both controls) on Fashion-MNIST instead of MNIST."),
    "conv2_fashion_mnist": Study(
        "Conv-2 on Fashion-MNIST",
        ("--flagfile=configs/conv2.flags", "--dataset=fashion_mnist", "--validation_size=1000",
         "--train_steps=400", "--eval_every=200", "--rounds=8", "--controls=reinit", "--seeds=0,1,2",
         "--export=none"),
        "configs/conv2.flags (Frankle & Carbin's Conv-2: Adam 2e-4, batch 60, conv 10% / fc 20% / output 10% "
        "per round, rewind to initialisation) on Fashion-MNIST's 28x28 images instead of CIFAR-10, with the "
        "random-reinit control only, 8 rounds instead of 15, and each round cut from 20,000 to 400 iterations "
        "(24,000 examples, under half an epoch) with a 1,000-example validation set, aiming at "
        "about an hour on a 2-core CPU (one Conv-2 step took 0.14 s there, alone). Tickets are compared with "
        "reinit at a budget where neither has converged."),
}


def selected(names) -> list[str]:
    unknown = set(names) - set(STUDIES)
    if unknown:
        raise ValueError(f"unknown studies {', '.join(sorted(unknown))}; valid: {', '.join(STUDIES)}")
    return list(names) or list(STUDIES)


def sweep_dir(results_dir: str, name: str, variant: str = "") -> str:
    return os.path.join(results_dir, name, *([variant] if variant else []))


def run(names, results_dir, parallel=0) -> int:
    """Runs (or resumes) each study's sweeps; the worst exit status."""
    from lth_tf import sweep
    worst = 0
    for name in names:
        for variant, extra, _ in STUDIES[name].variants:
            print(f"studies.results: {name}{' ' + variant if variant else ''}: {STUDIES[name].title}", file=sys.stderr,
                  flush=True)
            argv = ["lth_tf.sweep", *STUDIES[name].argv, *extra,
                    f"--sweep_dir={sweep_dir(results_dir, name, variant)}"]
            status = sweep.cli(argv + ([f"--parallel={parallel}"] if parallel else []))
            worst = max(worst, status)
            if status == 130:
                return status
    return worst
