"""Shared fixtures. TensorFlow is slow to start, so the CPU is split into two
logical devices once per session (for the mirrored-strategy tests) and the
tiny experiments the tests inspect are run once per session."""
import dataclasses

import pytest

import lth_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from lth_tf import data, lottery, models, pruning, training

training.split_cpu(2)


@pytest.fixture(scope="session")
def mnist1d():
    return data.load(data.DataConfig("mnist1d", validation_size=500))


def tiny_config(**lottery_changes) -> lottery.ExperimentConfig:
    """MLP on MNIST-1D, a few dozen steps a round: enough to move every weight."""
    return lottery.ExperimentConfig(
        data=data.DataConfig("mnist1d", validation_size=500),
        model=models.ModelConfig("mlp_32_16"),
        training=training.TrainingConfig(optimizer="sgd", learning_rate=0.05, momentum=0.9, weight_decay=1e-4,
                                         batch_size=50, train_steps=30, eval_every=10, log_every=10),
        pruning=pruning.PruningConfig(strategy="layerwise", rate_fc=0.2, rate_output=0.1),
        lottery=dataclasses.replace(lottery.LotteryConfig(rounds=3, rewind_step=5,
                                                          controls=("reinit", "random_prune")),
                                    **lottery_changes))


def run_tiny(splits, output_dir, strategy=None, **lottery_changes):
    experiment = lottery.prepare(tiny_config(**lottery_changes), splits,
                                 strategy or training.make_strategy("default"), str(output_dir))
    return experiment, lottery.run(experiment)


@pytest.fixture(scope="session")
def tiny_run(mnist1d, tmp_path_factory):
    """(experiment, results rows) of one finished tiny experiment."""
    return run_tiny(mnist1d, tmp_path_factory.mktemp("tiny_run"))
