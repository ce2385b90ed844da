"""Every flag, its help and its validation; flags -> frozen config dataclasses.

Library modules take the dataclasses and never read FLAGS. The defaults are
the quick experiment of configs/quick.flags (a test keeps the two equal).
Lengths in steps accept an epoch suffix at this boundary only: '500' or '2ep'.
No TensorFlow here or in what this imports: every flag, and the config they
make, is checked before TensorFlow loads.
"""
import copy
import dataclasses
import math
import os
import re

from absl import flags

from lth_tf import data, models, paths, rundir
from lth_tf.config import (CONTROL_NAMES, FLAG_NAMES, PRUNE_METHODS, ConfigError, DataConfig, ExperimentConfig,
                           LotteryConfig, ModelConfig, PruningConfig, TrainingConfig)

STEPS = re.compile(r"[0-9]+(ep)?")
# The flags are defined here, apart from absl's global FLAGS, and added to FLAGS below (all but names a
# program importing lth_tf defined itself): lth_tf.find_tickets parses its own copy of them, so lth_tf
# imported into another absl program neither clashes with that program's flags nor reads its values.
DEFINED = flags.FlagValues()

flags.DEFINE_string("model", "mlp_100_100", f"Model: {models.VALID}.", flag_values=DEFINED)
flags.DEFINE_integer("width", 0, "ResNet base width (0 = 16, the paper's).", lower_bound=0, flag_values=DEFINED)
flags.DEFINE_enum("init", "default", list(models.INITS),
                  "Initialisation: default (the papers': Glorot/He normal kernels, zero biases) or pytorch "
                  "(nn.Linear/nn.Conv2d defaults, kernels and biases uniform in +-1/sqrt(fan_in)); "
                  "pytorch for MLPs and Conv-2/4/6 only.", flag_values=DEFINED)
flags.DEFINE_enum("initializer", "", ["", *models.INITIALIZERS],
                  "Kernel initialiser of every prunable layer, for theta_0 and the reinit controls alike: "
                  f"{', '.join(models.INITIALIZERS)}; empty: the model's paper initialiser (as --init says). "
                  "Biases keep --init's.", flag_values=DEFINED)
flags.DEFINE_string("dataset", "mnist1d",
                    f"Dataset: {', '.join(data.DATASETS)} (synthetic is random data shaped like --synthetic_like, "
                    "for smoke tests only); npz:PATH, your arrays x_train, y_train, x_test, y_test (integer labels "
                    "0..K-1; normalised by the training split's per-channel mean and std); or "
                    "tfds:NAME[/CONFIG][:TRAIN_SPLIT,TEST_SPLIT], a tensorflow-datasets classification set.",
                    flag_values=DEFINED)
flags.DEFINE_string("data_dir", "",
                    "Directory of MNIST-format IDX files (mnist, fashion_mnist) or the tensorflow-datasets "
                    f"data_dir. fashion_mnist defaults to {data.FASHION_MNIST_DIR}.", flag_values=DEFINED)
flags.DEFINE_enum("synthetic_like", "mnist", list(data.SHAPES), "Shape of --dataset=synthetic.", flag_values=DEFINED)
flags.DEFINE_integer("validation_size", -1,
                     "Training examples held out for early stopping (-1: 500 for mnist1d, 5000 for the other "
                     "built-in sets, a tenth of the training set for npz: and tfds: sets).", lower_bound=-1,
                     flag_values=DEFINED)
flags.DEFINE_list("classes", [], "A subset of the dataset's classes (e.g. 0,1,2,3,4), relabelled 0..k-1 in the "
                  "order given, test set included; the output layer has k units. Empty: all.", flag_values=DEFINED)
MNIST1D_HELP = {
    "num_samples": ("integer", "examples generated, training and test (package default 5000)"),
    "train_split": ("float", "fraction of them for training (0.8)"),
    "template_len": ("integer", "length the class templates are stretched to before padding (12)"),
    "padding": ("list", "low,high: the padding range around a template (36,60)"),
    "scale_coeff": ("float", "amplitude scaling range (0.4)"),
    "max_translation": ("integer", "largest shift of the pattern (48)"),
    "corr_noise_scale": ("float", "correlated background noise (0.25)"),
    "iid_noise_scale": ("float", "independent noise per point (0.02)"),
    "shear_scale": ("float", "shear range (0.75)"),
    "shuffle_seq": ("bool", "permute the points with one fixed permutation (false)"),
    "final_seq_length": ("integer", "points per example: the input size (40)"),
    "seed": ("integer", "the generator's seed (42)"),
}
assert tuple(MNIST1D_HELP) == data.MNIST1D_ARGS
for _arg, (_kind, _help) in MNIST1D_HELP.items():
    getattr(flags, f"DEFINE_{_kind}")(f"mnist1d_{_arg}", None, f"--dataset=mnist1d generator: {_help}; unset: "
                                      "the package default. Other values make another MNIST-1D task.",
                                      flag_values=DEFINED)
flags.DEFINE_bool("augment", True, "CIFAR-10: pad-4 random crop and horizontal flip of training images.",
                  flag_values=DEFINED)
flags.DEFINE_string("output_dir", "", "Run directory (default runs/<model>_<dataset>). Rerunning resumes.",
                    flag_values=DEFINED)

flags.DEFINE_integer("rounds", 8, "Pruning rounds after the dense round.", lower_bound=0, flag_values=DEFINED)
flags.DEFINE_string("rewind_step", "0", "Step (or '<n>ep') to rewind surviving weights to; 0 = initialisation.",
                    flag_values=DEFINED)
flags.DEFINE_list("controls", ["reinit"], "Controls run at every pruned round, any of: reinit (the ticket's "
                  "mask, fresh weights from the initialiser), random_prune (a random mask of the same per-layer "
                  "size, theta_k's weights), reinit_rescaled (reinit with every surviving weight times "
                  "1/sqrt(its layer's density)), reinit_signed (fresh magnitudes, theta_k's signs), "
                  "shuffle_layerwise (theta_k's surviving values and the mask permuted within each layer); "
                  "or none (also: empty).", flag_values=DEFINED)
flags.DEFINE_integer("seed", 0, "Seed of the initialisation, data order and controls.", lower_bound=0,
                     flag_values=DEFINED)
flags.DEFINE_integer("data_order_seed", -1, "Seed of the training data order alone (-1: --seed): runs of one "
                     "--seed and several of these differ only in SGD noise.", lower_bound=-1, flag_values=DEFINED)
flags.DEFINE_string("ticket", "", "A ticket file (tickets/round_NN/ticket.npz of an earlier run) to train under "
                    "these flags as a new run: round 0 starts from its masks and rewind weights.", flag_values=DEFINED)
flags.DEFINE_string("removed_weights", "", "A masks file (.npz keyed like round_NN/masks.npz, 1 = removed) of "
                    "weights taken out of this run for good: zero in every branch from round 0 on, never pruned "
                    "back in, and random controls place their weights among the others (analyze removal).",
                    flag_values=DEFINED)
flags.DEFINE_string("prune_floor", "", "A masks file (e.g. a round's masks.npz): no round prunes a layer below its "
                    "surviving weights there (layerwise; global: their total), so IMP stops at that ticket's size "
                    "(analyze removal).", flag_values=DEFINED)
flags.DEFINE_enum("export", "last", ["all", "last", "none"],
                  "Rounds exported as SavedModel + ticket file under tickets/: all, last (and the dense round), none.",
                  flag_values=DEFINED)
EXPORT_FORMATS = ("dense", "sparse", "tflite", "both")  # export.FORMATS' names
flags.DEFINE_string("export_format", "dense",
                    "Forms of an exported round, one or several comma-separated: dense (tickets/round_NN/saved_model/), "
                    "sparse (saved_model_sparse/: each Dense layer stored and computed as its surviving weights alone, "
                    "same signature), tflite (model.tflite: the same signature for TFLite, its sparse fully-connected "
                    "layers computed sparse); both = dense,sparse.", flag_values=DEFINED)
flags.DEFINE_bool("tensorboard", True, "Write TensorBoard summaries under <output_dir>/tensorboard.",
                  flag_values=DEFINED)

flags.DEFINE_string("train_steps", "2000", "Training length per round: steps, or '<n>ep' epochs.", flag_values=DEFINED)
flags.DEFINE_integer("batch_size", 100, "Global batch size (split across replicas).", lower_bound=1,
                     flag_values=DEFINED)
flags.DEFINE_enum("optimizer", "adam", ["adam", "sgd"], "Optimizer.", flag_values=DEFINED)
flags.DEFINE_float("learning_rate", 1e-3, "Base learning rate.", lower_bound=0, flag_values=DEFINED)
flags.DEFINE_float("momentum", 0.9, "SGD momentum.", lower_bound=0, flag_values=DEFINED)
flags.DEFINE_float("weight_decay", 0.0, "L2 weight decay added to the gradients.", lower_bound=0, flag_values=DEFINED)
flags.DEFINE_list("milestones", [], "Steps (or '<n>ep') where the learning rate is multiplied by --lr_drop.",
                  flag_values=DEFINED)
flags.DEFINE_float("lr_drop", 0.1, "Learning-rate factor at each milestone.", lower_bound=0, flag_values=DEFINED)
flags.DEFINE_string("warmup_steps", "0", "Linear learning-rate warmup length: steps or '<n>ep'.", flag_values=DEFINED)
flags.DEFINE_string("eval_every", "100", "Evaluate validation and test sets every this many steps (or '<n>ep').",
                    flag_values=DEFINED)
flags.DEFINE_integer("log_every", 100, "Log training loss and accuracy every this many steps.", lower_bound=1,
                     flag_values=DEFINED)

flags.DEFINE_bool("xla", None, "Compile the training step with XLA (--xla) or not (--noxla); without either, "
                  "lth_tf picks: XLA for networks without convolutions on one replica, where benchmarks/throughput.py "
                  "measured it faster (a resumed run keeps the choice it was started with).", flag_values=DEFINED)
flags.DEFINE_bool("mixed_precision", False, "mixed_float16: float16 compute, float32 variables and masks, dynamic "
                  "loss scaling (for GPUs with tensor cores; slow on a CPU).", flag_values=DEFINED)
flags.DEFINE_enum("prune_strategy", "layerwise", ["layerwise", "global"],
                  "layerwise: per-kind rates per layer; global: one rate across the included layers.",
                  flag_values=DEFINED)
flags.DEFINE_float("prune_rate_fc", 0.2, "Layerwise: fraction of remaining fully connected weights pruned per round.",
                   flag_values=DEFINED)
flags.DEFINE_float("prune_rate_conv", 0.1, "Layerwise: fraction of remaining conv weights pruned per round.",
                   flag_values=DEFINED)
flags.DEFINE_float("prune_rate_output", 0.1, "Layerwise: fraction of remaining output-layer weights pruned per round.",
                   flag_values=DEFINED)
flags.DEFINE_float("prune_rate", 0.2, "Global: fraction of remaining weights pruned per round.", flag_values=DEFINED)
flags.DEFINE_list("prune_exclude", [], "Layer names never pruned, layerwise or global (e.g. output).",
                  flag_values=DEFINED)
flags.DEFINE_string("output_layer", "", "The layer pruned at --prune_rate_output (layerwise). Empty: the model's last "
                    "Dense layer (the built-in models' `output`).", flag_values=DEFINED)
flags.DEFINE_enum("prune_schedule", "geometric", ["geometric", "linear"],
                  "geometric: prune the --prune_rate* fraction of the surviving weights each round; linear: the "
                  "pruned fraction grows by --prune_step each round (round r keeps 1 - r x step of every layer, "
                  "or of all included layers under global), as in the MNIST-1D paper's lottery notebook.",
                  flag_values=DEFINED)
flags.DEFINE_float("prune_step", 0.01, "Linear schedule: fraction of each layer's weights pruned per round.",
                   flag_values=DEFINED)
flags.DEFINE_bool("prune_biases", False, "Mask biases too, ranked with their layer's kernel by magnitude.",
                  flag_values=DEFINED)
flags.DEFINE_enum("prune_method", "imp", list(PRUNE_METHODS),
                  "How the sparse rounds' masks are found: imp (iterative magnitude pruning, --rounds rounds); "
                  "snip, grasp, synflow, magnitude_init, random (pruning at initialisation: theta_k scored and "
                  "pruned to each --target_density, trained once, with the reinit, random_prune, shuffle_layerwise "
                  "and inverted-mask sanity checks); early_bird (the magnitude mask drawn while the dense round trains, once it "
                  "stops changing, trained from theta_k).", flag_values=DEFINED)
flags.DEFINE_bool("oneshot", False, "imp: prune the dense round's trained weights straight to each --target_density "
                  "(one-shot pruning) instead of iteratively.", flag_values=DEFINED)
flags.DEFINE_list("target_density", [], "Fractions of the weights kept, one sparse round each (e.g. 0.5,0.2,0.1): "
                  "for every --prune_method but imp, and for --oneshot. Layerwise: each layer at the density IMP's "
                  "per-kind rates give it at that total; global: ranked across the layers.", flag_values=DEFINED)
flags.DEFINE_enum("retrain", "rewind", ["rewind", "lr_rewind", "finetune"],
                  "imp and --oneshot, after pruning: rewind the weights to theta_k (the lottery ticket), lr_rewind "
                  "(keep the trained weights, replay the learning-rate schedule from --rewind_step; Renda et al. "
                  "2020) or finetune (keep the trained weights, train as many steps at the final learning rate).",
                  flag_values=DEFINED)
flags.DEFINE_integer("score_batches", 1, "snip, grasp: training batches (the run's first) the scores use.",
                     lower_bound=1, flag_values=DEFINED)
flags.DEFINE_integer("synflow_iterations", 100, "synflow: scoring rounds of its exponential density schedule.",
                     lower_bound=1, flag_values=DEFINED)
flags.DEFINE_float("early_bird_epsilon", 0.1, "early_bird: the ticket is drawn once the fraction of the kept "
                   "weights that changed between consecutive epochs' masks stayed below this for 5 epochs.", lower_bound=0,
                   flag_values=DEFINED)
flags.DEFINE_string("prune_from_step", "end", "Prune each round from the ticket's weights at this step (or "
                    "'<n>ep') of its training instead of its final weights (end).", flag_values=DEFINED)

flags.DEFINE_enum("strategy", "default", ["default", "one_device", "mirrored", "multi_worker"],
                  "tf.distribute strategy: mirrored uses all GPUs (or all logical CPUs when there is none); "
                  "multi_worker reads TF_CONFIG.", flag_values=DEFINED)
flags.DEFINE_string("checkpoint_every", "1000", "Checkpoint a round every this many steps (or '<n>ep'); "
                    "also at epoch ends once the last checkpoint is 30 s old. A rerun resumes from the last one.",
                    flag_values=DEFINED)
flags.DEFINE_enum("on_nan", "stop", ["stop", "skip"],
                  "A NaN/Inf loss is recorded in results.csv, then: stop (exit non-zero) or skip to the next "
                  "branch (a diverged ticket always stops: later rounds need it).", flag_values=DEFINED)
flags.DEFINE_bool("deterministic", False, "TensorFlow op determinism: a rerun, interrupted or not, gives the "
                  "same masks and metrics, bit for bit (the default experiment: 18% slower on a 2-core CPU, "
                  "benchmarks/determinism.py).", flag_values=DEFINED)
flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into this many logical devices (to run mirrored on a CPU).",
                     lower_bound=0, flag_values=DEFINED)

for _name in ("prune_rate_fc", "prune_rate_conv", "prune_rate_output", "prune_rate", "prune_step"):
    flags.register_validator(_name, lambda rate: 0 < rate < 1, message="must be in (0, 1)", flag_values=DEFINED)
for _name in ("rewind_step", "train_steps", "warmup_steps"):
    flags.register_validator(_name, lambda text: STEPS.fullmatch(text) is not None,
                             message="must be a number of steps or '<n>ep'", flag_values=DEFINED)
for _name in ("eval_every", "checkpoint_every"):  # 0 would evaluate (checkpoint) at every step
    flags.register_validator(_name, lambda text: STEPS.fullmatch(text) is not None and int(text.rstrip("ep")) > 0,
                             message="must be a positive number of steps or '<n>ep'", flag_values=DEFINED)
flags.register_validator("prune_from_step", lambda text: text == "end" or STEPS.fullmatch(text) is not None,
                         message="must be end, a number of steps or '<n>ep'", flag_values=DEFINED)
flags.register_validator("milestones", lambda items: all(STEPS.fullmatch(i) for i in items),
                         message="must be steps or '<n>ep', comma-separated", flag_values=DEFINED)
flags.register_validator("export_format", lambda text: all(f.strip() in EXPORT_FORMATS for f in text.split(",")),
                         message=f"unknown form; valid: {', '.join(EXPORT_FORMATS)}, or several comma-separated",
                         flag_values=DEFINED)
flags.register_validator("model", models.is_known, message=f"unknown model; valid: {models.VALID}", flag_values=DEFINED)
flags.register_validator("dataset", data.is_known, message=f"unknown dataset; valid: {', '.join(data.DATASETS)}, "
                         "npz:PATH or tfds:NAME[/CONFIG][:TRAIN_SPLIT,TEST_SPLIT]", flag_values=DEFINED)
flags.register_validator("controls", lambda items: items == ["none"] or (
    set(items) <= set(CONTROL_NAMES) and len(set(items)) == len(items)),
                         message=f"must be none, or any of {', '.join(CONTROL_NAMES)}, each once", flag_values=DEFINED)

def register(flag_values: flags.FlagValues):
    """Adds lth_tf's flags to `flag_values` (absl's FLAGS: the command line's), skipping names it has."""
    for flag in DEFINED.get_flags_for_module(__name__):
        if flag.name not in flag_values:
            flag_values[flag.name] = flag
            flag_values.register_flag_by_module(__name__, flag)


def fresh_copy() -> flags.FlagValues:
    """Every lth_tf flag at its default, in a FlagValues of its own (lth_tf.find_tickets)."""
    copied = flags.FlagValues()
    for flag in DEFINED.get_flags_for_module(__name__):
        fresh = copy.deepcopy(flag)
        fresh.unparse()
        copied[flag.name] = fresh
    return copied


register(flags.FLAGS)
FLAGS = flags.FLAGS


def to_steps(text: str, steps_per_epoch: int) -> int:
    return int(text[:-2]) * steps_per_epoch if text.endswith("ep") else int(text)


def controls(f=FLAGS) -> tuple:
    return () if f.controls == ["none"] else tuple(f.controls)


def data_config(f=FLAGS) -> DataConfig:
    """The data flags as a DataConfig, completed with what config.json records of an npz or
    tensorflow-datasets set (data.complete: reads the file, or loads the set)."""
    try:
        classes = tuple(int(c) for c in f.classes)
    except ValueError:
        raise ConfigError(f"--classes={','.join(f.classes)}: expected class numbers like 0,1,2,3,4") from None
    generator = {arg: f[f"mnist1d_{arg}"].value for arg in data.MNIST1D_ARGS if f[f"mnist1d_{arg}"].value is not None}
    if "padding" in generator:
        try:
            generator["padding"] = [int(p) for p in generator["padding"]]
        except ValueError:
            raise ConfigError(f"--mnist1d_padding={','.join(generator['padding'])}: two integers low,high") from None
    config = DataConfig(f.dataset, f.data_dir, max(f.validation_size, 0), f.synthetic_like, f.augment, f.seed,
                        classes, generator)
    if f.validation_size < 0:
        config = dataclasses.replace(config, validation_size=data.default_validation_size(config))
    return data.complete(config)


def steps_per_epoch(f=FLAGS) -> int:
    """Steps per epoch of the training set (validation split held out), known without loading it."""
    config = data_config(f)
    data.check(config)
    return (data.train_examples(config) - config.validation_size) // f.batch_size


def experiment_config(f=FLAGS) -> tuple[ExperimentConfig, list[str]]:
    """The whole experiment, and warnings for the console; ConfigError (or
    data.DataError) for flags that do not make one. Needs no TensorFlow."""
    data_cfg = data_config(f)
    epoch = steps_per_epoch(f)
    if epoch == 0:
        raise ConfigError(f"--batch_size={f.batch_size} is larger than the "
                          f"{data.train_examples(data_cfg) - data_cfg.validation_size} training examples")
    models.check_input(f.model, data.input_shape(data_cfg))
    models.check_init(f.model, f.init, f.initializer)
    if models.is_user_model(f.model):
        models.check_importable(f.model)
    train_steps, rewind = to_steps(f.train_steps, epoch), to_steps(f.rewind_step, epoch)
    if train_steps < 1:
        raise ConfigError("--train_steps must be at least 1")
    warnings = []
    if rewind >= train_steps:
        # A config's rewind point can lie past a short smoke run (--train_steps=3):
        # such a run rewinds to initialisation, as Frankle & Carbin (2019) did, and says so.
        warnings.append(f"--rewind_step={f.rewind_step} ({rewind} steps) is not below the training length "
                        f"({train_steps} steps): rewinding to initialisation (step 0) instead")
        rewind = 0
    training_config = TrainingConfig(
        f.optimizer, f.learning_rate, f.momentum, f.weight_decay, f.batch_size, train_steps,
        tuple(to_steps(m, epoch) for m in f.milestones), f.lr_drop, to_steps(f.warmup_steps, epoch),
        max(1, to_steps(f.eval_every, epoch)), f.log_every, f.seed if f.data_order_seed < 0 else f.data_order_seed,
        xla_setting(f), f.mixed_precision)
    pruning_config = PruningConfig(f.prune_strategy, f.prune_rate_fc, f.prune_rate_conv, f.prune_rate_output,
                                   f.prune_rate, tuple(f.prune_exclude), f.prune_schedule, f.prune_step,
                                   f.prune_biases, check_masks_file(f.prune_floor, "prune_floor"))
    if f.prune_schedule == "linear" and f.rounds * f.prune_step >= 1:
        raise ConfigError(f"--rounds={f.rounds} x --prune_step={f.prune_step} prunes every weight; "
                          f"at most {math.ceil(1 / f.prune_step) - 1} rounds")
    prune_from = 0 if f.prune_from_step == "end" else to_steps(f.prune_from_step, epoch)
    if f.prune_from_step != "end" and prune_from == 0:
        raise ConfigError(f"--prune_from_step={f.prune_from_step} would prune by the initial weights; "
                          "give a step inside the training, or end")
    if prune_from >= train_steps:  # as for --rewind_step: a config's step past a short smoke run
        warnings.append(f"--prune_from_step={f.prune_from_step} ({prune_from} steps) is not below the training "
                        f"length ({train_steps} steps): pruning from the final weights instead")
        prune_from = 0
    pruning_config, rounds = method_config(f, pruning_config, warnings)
    if f.removed_weights and f.ticket:
        raise ConfigError("--removed_weights and --ticket cannot be combined: a ticket run starts from its masks")
    lottery_config = LotteryConfig(rounds, rewind, method_controls(f), f.seed, f.ticket, prune_from,
                                   check_masks_file(f.removed_weights, "removed_weights"), f.retrain)
    model_config = ModelConfig(**{key: f[flag].value for key, flag in FLAG_NAMES["model"].items()})
    return ExperimentConfig(data_cfg, model_config, training_config, pruning_config, lottery_config), warnings


# Frankle et al. (2021)'s shuffled mask is random_prune (the mask permuted within each layer, theta_k in place);
# shuffle_layerwise also moves the surviving values with it.
SANITY_CONTROLS = ("reinit", "random_prune", "shuffle_layerwise")


def method_controls(f=FLAGS) -> tuple:
    """--controls, and for an at-init method (but random) the sanity checks' controls."""
    chosen = controls(f)
    if PRUNE_METHODS[f.prune_method].sanity_checks:
        chosen += tuple(c for c in SANITY_CONTROLS if c not in chosen)
    return chosen


def method_config(f, pruning_config: PruningConfig, warnings: list) -> tuple[PruningConfig, int]:
    """(the pruning config with the method's fields, the number of pruned rounds)."""
    iterative = not PRUNE_METHODS[f.prune_method].targets and not f.oneshot
    try:
        targets = sorted({float(t) for t in f.target_density}, reverse=True)
    except ValueError:
        raise ConfigError(f"--target_density={','.join(f.target_density)}: expected fractions like 0.5,0.2,0.1") from None
    if iterative and targets:
        raise ConfigError("--target_density is for --oneshot and the other --prune_method values; iterative imp "
                          "prunes by its rates over --rounds")
    if not iterative and not targets:
        raise ConfigError(f"--prune_method={f.prune_method}{' --oneshot' if f.oneshot else ''} needs "
                          "--target_density (e.g. 0.5,0.2,0.1)")
    if any(not 0 < t < 1 for t in targets):
        raise ConfigError(f"--target_density values must be in (0, 1), not {','.join(f.target_density)}")
    if f.oneshot and f.prune_method != "imp":
        raise ConfigError(f"--oneshot is one-shot magnitude pruning (imp); --prune_method={f.prune_method} is another")
    if f.retrain != "rewind" and f.prune_method != "imp":
        raise ConfigError(f"--retrain={f.retrain} keeps trained weights; --prune_method={f.prune_method} trains from "
                          "theta_k (use --retrain=rewind)")
    if not iterative and (f.prune_floor or f.ticket or f.prune_schedule == "linear"):
        used = "--prune_floor" if f.prune_floor else "--ticket" if f.ticket else "--prune_schedule=linear"
        raise ConfigError(f"{used} is for iterative imp, not --prune_method={f.prune_method}"
                          f"{' --oneshot' if f.oneshot else ''}")
    if not iterative and f["rounds"].present:
        warnings.append(f"--rounds does not apply to --prune_method={f.prune_method}"
                        f"{' --oneshot' if f.oneshot else ''}: one round per --target_density ({len(targets)})")
    config = dataclasses.replace(pruning_config, method=f.prune_method, oneshot=f.oneshot, target_density=tuple(targets),
                                 score_batches=f.score_batches, synflow_iterations=f.synflow_iterations,
                                 early_bird_epsilon=f.early_bird_epsilon)
    return config, f.rounds if iterative else len(targets)


def check_masks_file(path: str, flag: str) -> str:
    """`path` if it is empty or a readable masks file; ConfigError otherwise (before TensorFlow loads)."""
    if path:
        try:
            rundir.load_arrays(path)
        except (OSError, ValueError, rundir.CorruptFile) as error:
            raise ConfigError(f"--{flag}={path} is not a readable masks file ({error})") from error
    return path


def xla_setting(f=FLAGS) -> bool | str:
    """--xla or --noxla; without either, the choice of the run being resumed, or "auto" (training.use_xla)."""
    if f.xla is not None:
        return f.xla
    saved = paths.config(output_dir(f))
    return rundir.read_json(saved)["training"].get("xla", False) if os.path.exists(saved) else "auto"


def checkpoint_every(f=FLAGS) -> int:
    return to_steps(f.checkpoint_every, steps_per_epoch(f))


def output_dir(f=FLAGS) -> str:
    return f.output_dir or "runs/" + re.sub(r"[^\w.-]+", "_", f"{f.model}_{f.dataset}")
