"""What an experiment is: one frozen dataclass per concern, and the whole.

Nothing here imports TensorFlow: flags.py builds these, and the run directory
is checked against them, before TensorFlow loads (a bad flag is a one-line
error in well under a second). Lengths are integer steps; '<n>ep' strings
exist only at the flag boundary. config.json is `dataclasses.asdict` of an
ExperimentConfig.
"""
import dataclasses
import json

# Control names (lth_tf.controls.CONTROLS holds their functions), in the order that seeds them
# (lottery.control_seed): append only,
# or runs made before would resume with other control weights.
CONTROL_NAMES = ("reinit", "random_prune", "reinit_rescaled", "reinit_signed", "shuffle_layerwise")


@dataclasses.dataclass(frozen=True)
class PruneMethod:
    """A way of finding masks (--prune_method), as the flags see it before TensorFlow loads."""
    finder: str                   # "module:Class": its MaskFinder (lth_tf.lottery.masks), loaded when a run starts
    targets: bool = True          # one sparse round per --target_density (False: iterative, over --rounds)
    sanity_checks: bool = False   # its rounds also train the sanity-check controls and the inverted mask


# Every way of finding masks, by --prune_method name: adding one is its MaskFinder and a line here.
PRUNE_METHODS = {
    "imp": PruneMethod("lth_tf.lottery.masks:MaskFinder", targets=False),  # --oneshot: lth_tf.lottery.masks.OneShot
    "early_bird": PruneMethod("lth_tf.lottery.masks:EarlyBird"),
    "snip": PruneMethod("lth_tf.lottery.masks:AtInit", sanity_checks=True),
    "grasp": PruneMethod("lth_tf.lottery.masks:AtInit", sanity_checks=True),
    "synflow": PruneMethod("lth_tf.lottery.masks:AtInit", sanity_checks=True),
    "magnitude_init": PruneMethod("lth_tf.lottery.masks:AtInit", sanity_checks=True),
    "random": PruneMethod("lth_tf.lottery.masks:AtInit"),  # its sanity checks would be random masks again
}


class ConfigError(Exception):
    """A configuration that does not make a consistent experiment."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist1d"
    data_dir: str = ""
    validation_size: int = 500
    synthetic_like: str = "mnist"  # shape of the synthetic set
    augment: bool = True           # pad-crop-flip, for CIFAR-shaped data only
    seed: int = 0
    classes: tuple = ()            # a subset of the classes, relabelled 0..k-1 in this order; () = all
    mnist1d: dict = dataclasses.field(default_factory=dict)  # mnist1d generator arguments other than its defaults
    fingerprint: str = ""          # npz: SHA-256 of its arrays (a rerun on other arrays is refused)
    normalisation: dict = dataclasses.field(default_factory=dict)  # {"mean", "std"} per channel; {}: known constants


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp_100_100"  # a registry name (models.py) or package.module:function, a user's builder
    width: int = 0  # ResNet base width; 0 = the paper's 16
    init: str = "default"  # the papers' initialisers, or "pytorch" (nn.Linear/Conv2d defaults)
    initializer: str = ""  # kernels of every prunable layer from this family instead ("" = as --init says)
    output_layer: str = ""  # the layer pruned at the output rate; "": the last Dense layer


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    optimizer: str = "adam"          # adam | sgd
    learning_rate: float = 1e-3
    momentum: float = 0.9            # sgd only
    weight_decay: float = 0.0        # L2, added to the gradient as in PyTorch's SGD
    batch_size: int = 100
    train_steps: int = 2000
    milestones: tuple = ()           # steps where the learning rate drops
    lr_drop: float = 0.1             # factor applied at each milestone
    warmup_steps: int = 0            # linear warmup from 0
    eval_every: int = 100
    log_every: int = 100
    seed: int = 0                    # data order (--data_order_seed, default --seed)
    xla: bool | str = False          # compile the step with XLA: True, False, or "auto" (training.use_xla)
    mixed_precision: bool = False    # mixed_float16: float16 compute, float32 variables, dynamic loss scaling


@dataclasses.dataclass(frozen=True)
class PruningConfig:
    strategy: str = "layerwise"  # layerwise | global
    rate_fc: float = 0.2         # layerwise: fraction of remaining weights removed per round
    rate_conv: float = 0.1
    rate_output: float = 0.1
    rate: float = 0.2            # global
    exclude: tuple = ()          # layer names never pruned
    schedule: str = "geometric"  # geometric (the rates above, per round) | linear (cumulative, step per round)
    step: float = 0.01           # linear: pruned fraction added per round
    biases: bool = False         # mask biases too, ranked with their layer's kernel
    floor: str = ""              # a masks file: no round prunes below its surviving counts (analyze removal)
    method: str = "imp"          # imp (iterative magnitude pruning) | early_bird | an at-init method (methods.py)
    oneshot: bool = False        # imp: prune the dense round's trained weights straight to each target density
    target_density: tuple = ()   # all but iterative imp: one sparse round per value
    score_batches: int = 1       # snip, grasp: training batches the scores are summed over
    synflow_iterations: int = 100
    early_bird_epsilon: float = 0.1  # early_bird: drawn when under this fraction of kept weights changes


@dataclasses.dataclass(frozen=True)
class LotteryConfig:
    rounds: int = 4
    rewind_step: int = 0          # 0 = rewind to initialisation
    controls: tuple = ("reinit",)
    seed: int = 0
    ticket: str = ""              # a ticket file to start from instead of a dense theta_0
    prune_from_step: int = 0      # the ticket's weights at this step are pruned; 0 = at the end of training
    removed: str = ""             # a masks file (1 = removed): weights out of this run for good (analyze removal)
    retrain: str = "rewind"       # after pruning: rewind (weights to theta_k) | lr_rewind | finetune


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig
    model: ModelConfig
    training: TrainingConfig
    pruning: PruningConfig
    lottery: LotteryConfig


# config.json's section.field -> the flag that sets it (lth_tf.flags defines every one; a field set by a flag
# family names its prefix, mnist1d_*). What prints a config back as flags reads this table.
FLAG_NAMES = {
    "data": {"dataset": "dataset", "data_dir": "data_dir", "validation_size": "validation_size",
             "synthetic_like": "synthetic_like", "augment": "augment", "seed": "seed", "classes": "classes",
             "mnist1d": "mnist1d_*", "fingerprint": "dataset", "normalisation": "dataset"},  # an npz file's arrays
    "model": {"name": "model", "width": "width", "init": "init", "initializer": "initializer",
              "output_layer": "output_layer"},
    "training": {"optimizer": "optimizer", "learning_rate": "learning_rate", "momentum": "momentum",
                 "weight_decay": "weight_decay", "batch_size": "batch_size", "train_steps": "train_steps",
                 "milestones": "milestones", "lr_drop": "lr_drop", "warmup_steps": "warmup_steps",
                 "eval_every": "eval_every", "log_every": "log_every", "seed": "data_order_seed", "xla": "xla",
                 "mixed_precision": "mixed_precision"},
    "pruning": {"strategy": "prune_strategy", "rate_fc": "prune_rate_fc", "rate_conv": "prune_rate_conv",
                "rate_output": "prune_rate_output", "rate": "prune_rate", "exclude": "prune_exclude",
                "schedule": "prune_schedule", "step": "prune_step", "biases": "prune_biases", "floor": "prune_floor",
                "method": "prune_method", "oneshot": "oneshot", "target_density": "target_density",
                "score_batches": "score_batches", "synflow_iterations": "synflow_iterations",
                "early_bird_epsilon": "early_bird_epsilon"},
    "lottery": {"rounds": "rounds", "rewind_step": "rewind_step", "controls": "controls", "seed": "seed",
                "ticket": "ticket", "prune_from_step": "prune_from_step", "removed": "removed_weights",
                "retrain": "retrain"},
}


def flag_of(section: str, key: str) -> str:
    """The command-line flag that sets config.json's section.key (a field of a later lth_tf: its own name)."""
    return FLAG_NAMES.get(section, {}).get(key, key)


def upgrade(saved: dict) -> dict:
    """A config.json written by an earlier lth_tf, with the fields added since
    at their defaults (which reproduce what that version did)."""
    defaults = json.loads(json.dumps(dataclasses.asdict(ExperimentConfig(
        DataConfig(), ModelConfig(), TrainingConfig(), PruningConfig(), LotteryConfig()))))
    return {section: {**defaults.get(section, {}), **values} if isinstance(values, dict) else values
            for section, values in saved.items()}


def from_dict(saved: dict) -> ExperimentConfig:
    """The ExperimentConfig of a config.json (as read back: lists where tuples were)."""
    saved = upgrade(saved)
    sections = {field.name: field.type for field in dataclasses.fields(ExperimentConfig)}
    def section(cls, values):
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    return ExperimentConfig(**{name: section(globals()[cls] if isinstance(cls, str) else cls, saved[name])
                               for name, cls in sections.items()})
