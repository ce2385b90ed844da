"""Shared fixtures. TensorFlow is slow to start, so the CPU is split into two
logical devices once per session (for the mirrored-strategy tests) and the
tiny experiments the tests inspect are run once per session. The tests that
share a module-scoped fixture carry one `pytest.mark.xdist_group`, so that
one pytest-xdist worker builds it, once (`make test` runs --dist=loadgroup)."""
import dataclasses
import gzip
import shutil
import os
import time

import numpy as np
import pytest

import lth_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from lth_tf import data, lottery, training
from lth_tf.config import DataConfig, ExperimentConfig, LotteryConfig, ModelConfig, PruningConfig, TrainingConfig

training.split_cpu(2)


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy on the two logical CPUs for the whole session: two in one
    process can hand out the same collective instance keys (a shape-mismatch abort)."""
    return training.make_strategy("mirrored")


@pytest.fixture(scope="session")
def mnist1d():
    return data.load(DataConfig("mnist1d", validation_size=500))


def tiny_config(**lottery_changes) -> ExperimentConfig:
    """MLP on MNIST-1D, a few dozen steps a round: enough to move every weight."""
    return ExperimentConfig(
        data=DataConfig("mnist1d", validation_size=500),
        model=ModelConfig("mlp_32_16"),
        training=TrainingConfig(optimizer="sgd", learning_rate=0.05, momentum=0.9, weight_decay=1e-4,
                                         batch_size=50, train_steps=30, eval_every=10, log_every=10),
        pruning=PruningConfig(strategy="layerwise", rate_fc=0.2, rate_output=0.1),
        lottery=dataclasses.replace(LotteryConfig(rounds=3, rewind_step=5,
                                                          controls=("reinit", "random_prune")),
                                    **lottery_changes))


def run_tiny(splits, output_dir, strategy=None, **lottery_changes):
    experiment = lottery.prepare(tiny_config(**lottery_changes), splits,
                                 strategy or training.make_strategy("default"), str(output_dir))
    return experiment, lottery.run(experiment)


def check_every_step(patch, checked: list):
    """Trainers made from now on run one step at a time; after each, no weight
    outside the model's current masks is non-zero (`patch`: a MonkeyPatch)."""
    from lth_tf import tfmot_adapter as adapter
    make_trainer = training.make_trainer

    def checked_trainer(model, config, strategy):
        trainer = make_trainer(model, config, strategy)
        steps = trainer.train_steps

        def one_step_at_a_time(iterator, n):
            for _ in range(int(n)):
                result = steps(iterator, 1)
                for key, weight, mask in adapter._masked(model):  # noqa: SLF001  the raw variable, after the update
                    assert not np.any(weight.numpy()[mask.numpy() == 0]), key
                checked.append(1)
            return result
        trainer.train_steps = one_step_at_a_time
        return trainer
    patch.setattr(training, "make_trainer", checked_trainer)


@pytest.fixture(scope="session")
def tiny_run(mnist1d, tmp_path_factory):
    """(experiment, results rows) of one finished tiny experiment."""
    return run_tiny(mnist1d, tmp_path_factory.mktemp("tiny_run"))


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_idx_dir(folder, n_train, n_test):
    """An MNIST-shaped set of random IDX files in `folder`; returns it."""
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)
    return folder


def read_log(output_dir) -> str:
    """<output_dir>/log.txt, where a command-line run logs everything but its console lines."""
    path = os.path.join(output_dir, "log.txt")
    return open(path).read() if os.path.exists(path) else ""


def wait_for_log(output_dir, marker, process, since=0, timeout=300):
    """Waits until the log past offset `since` holds `marker` (fails if `process` ends first)."""
    deadline = time.time() + timeout
    while marker not in read_log(output_dir)[since:]:
        if process.poll() is not None or time.time() > deadline:
            pytest.fail(f"never logged {marker!r}")
        time.sleep(0.02)


def resumed_copy(tiny_run, folder, export_format):
    """A copy of the tiny run (exported dense) in `folder`, resumed with --export_format=`export_format`:
    nothing trains, its exported rounds get the forms they lack."""
    experiment, _ = tiny_run
    copy = folder / "run"
    shutil.copytree(experiment.output_dir, copy)
    again = lottery.prepare(experiment.config, experiment.splits, experiment.trainer.strategy, str(copy))
    lottery.run(again, lottery.RunOptions(export_format=export_format, tensorboard=False))
    return again
