"""Your own model and data: lth_tf.find_tickets on a researcher's CNN (BatchNorm,
a depthwise convolution, Keras's own layer names) and arrays, the command line
with --model=package.module:function and --dataset=npz:PATH, a sweep of a
user model, tensorflow-datasets sets on mock data, and every bad input."""
import os
import subprocess
import sys

import numpy as np
import pytest

import lth_tf
import user_models
from conftest import check_every_step
from lth_tf import analyze, data, lottery, pruning, report, rundir, training
from lth_tf import tfmot_adapter as adapter
from lth_tf.config import DataConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = dict(rounds=2, train_steps=12, eval_every=6, log_every=6, batch_size=20, rewind_step=3,
                controls=["reinit", "random_prune"], optimizer="sgd", learning_rate=0.05,
                prune_rate_conv=0.2, prune_rate_fc=0.2, prune_rate_output=0.1, validation_size=40, export="all")
# small_cnn on 8x8x1 images of 4 classes, by type: conv, depthwise conv (both at the conv rate), fc, output.
SIZES = {"conv2d": 3 * 3 * 1 * 6, "depthwise_conv2d/depthwise_kernel": 3 * 3 * 6, "dense": 96 * 16, "dense_1": 16 * 4}
RATES = {"conv2d": 0.2, "depthwise_conv2d/depthwise_kernel": 0.2, "dense": 0.2, "dense_1": 0.1}


def images(n, rng):
    """8x8 images whose class (0-3) brightens one quadrant: learnable, tiny."""
    y = rng.integers(0, 4, n)
    x = rng.integers(0, 120, (n, 8, 8, 1))
    for c in range(4):
        rows, cols = divmod(c, 2)
        x[y == c, 4 * rows:4 * rows + 4, 4 * cols:4 * cols + 4] += 100
    return x.astype(np.uint8), y


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    return (*images(240, rng), *images(60, rng))


@pytest.fixture(scope="module")
def npz_file(arrays, tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "mine.npz"
    np.savez(path, **dict(zip(data.NPZ_KEYS, arrays)))
    return str(path)


@pytest.fixture(scope="module")
def own_run(arrays, tmp_path_factory):
    """(Run, [(step, masks, state right after the rewind)] of each branch), trained one step at a
    time with every weight under a mask checked to be exactly 0 after each."""
    output_dir = str(tmp_path_factory.mktemp("own") / "run")
    rewinds, checked = [], []
    real_rewind = training.rewind

    def recorded_rewind(trainer, state, masks, step, hold_lr_at=-1):
        real_rewind(trainer, state, masks, step, hold_lr_at)
        rewinds.append((step, masks, adapter.get_state(trainer.model)))
    with pytest.MonkeyPatch.context() as patch:
        check_every_step(patch, checked)
        patch.setattr(training, "rewind", recorded_rewind)
        run = lth_tf.find_tickets(user_models.small_cnn, data=arrays, output_dir=output_dir, **SETTINGS)
    assert len(checked) == 7 * 12 - 3 * 6  # round 0's 12 steps, then six branches from step 3
    return run, rewinds


@pytest.mark.xdist_group("own_run")
def test_the_api_writes_the_run_directory_of_the_command_line(own_run, arrays):
    run, _ = own_run
    assert [(r["round"], r["branch"]) for r in run.results] == [
        (0, "ticket")] + [(r, b) for r in (1, 2) for b in ("ticket", "reinit", "random_prune")]
    config = run.config
    assert config["model"]["name"] == "user_models:small_cnn"
    assert config["data"]["dataset"] == "npz:" + os.path.abspath(os.path.join(run.output_dir, "data.npz"))
    kept = rundir.load_arrays(os.path.join(run.output_dir, "data.npz"))
    for key, array in zip(data.NPZ_KEYS, arrays):
        np.testing.assert_array_equal(kept[key], array)
    # normalised by the training split's own statistics, recorded
    assert config["data"]["normalisation"]["mean"] == [pytest.approx(float(arrays[0].mean()))]
    assert len(config["data"]["fingerprint"]) == 64
    for folder in ("tensorboard", "tickets/round_02/saved_model", "init/theta_k.npz"):
        assert os.path.exists(os.path.join(run.output_dir, folder)), folder


@pytest.mark.xdist_group("own_run")
def test_layers_are_pruned_by_type_and_place_at_their_rates(own_run):
    run, _ = own_run
    previous = {key: size for key, size in SIZES.items()}
    for r in (1, 2):
        masks = run.masks(r)
        assert set(masks) == set(SIZES)  # BatchNorm, pooling and the rest carried along unmasked
        for key, mask in masks.items():
            expected = previous[key] - pruning.count_to_remove(RATES[key], previous[key])
            assert mask.sum() == expected, (r, key)
            previous[key] = expected
        for control in ("random_prune",):
            assert {k: m.sum() for k, m in run.masks(r, control).items()} == {k: m.sum() for k, m in masks.items()}
        weights = run.weights(r)
        for key, mask in masks.items():
            assert np.all(weights[pruning.variable_of(key)][mask == 0] == 0)


@pytest.mark.xdist_group("own_run")
def test_every_branch_starts_from_theta_k_under_its_masks_bit_for_bit(own_run):
    run, rewinds = own_run
    folder = run.output_dir
    theta_0 = rundir.load_arrays(os.path.join(folder, "init", "theta_0.npz"))
    theta_k = rundir.load_arrays(os.path.join(folder, "init", "theta_k.npz"))
    assert not np.array_equal(theta_k["batch_normalization/moving_mean"], theta_0["batch_normalization/moving_mean"])
    assert [step for step, _, _ in rewinds] == [0] + [3] * 6
    branches = [(1, "ticket"), (2, "ticket")]
    starts = [rewinds[0]] + [rewinds[1], rewinds[4]]
    for (step, masks, state), expected, masks_file in zip(starts, (theta_0, theta_k, theta_k),
                                                        [None] + [run.masks(r, b) for r, b in branches]):
        masks_file = masks_file or masks
        for key, value in expected.items():
            mask = next((m for k, m in masks_file.items() if pruning.variable_of(k) == key), None)
            want = value if mask is None else value * mask
            assert np.array_equal(state[key].view(np.uint32), want.astype(np.float32).view(np.uint32)), key


@pytest.mark.xdist_group("own_run")
def test_calling_again_resumes_and_trains_nothing(own_run, arrays, monkeypatch):
    run, _ = own_run
    before = open(os.path.join(run.output_dir, "results.csv")).read()
    monkeypatch.setattr(lottery.branch, "run_branch", lambda *a, **k: pytest.fail("a finished branch was trained again"))
    again = lth_tf.find_tickets(user_models.small_cnn, data=arrays, output_dir=run.output_dir, **SETTINGS)
    assert open(os.path.join(again.output_dir, "results.csv")).read() == before
    with pytest.raises(lth_tf.Error, match="another config .*fingerprint"):
        other = (arrays[0][::-1].copy(), *arrays[1:])
        lth_tf.find_tickets(user_models.small_cnn, data=other, output_dir=run.output_dir, **SETTINGS)


@pytest.mark.xdist_group("own_run")
def test_report_analyze_and_the_exported_ticket_read_the_run(own_run, arrays, tmp_path):
    import tensorflow as tf
    from lth_tf import builders
    from lth_tf.config import from_dict
    run, _ = own_run
    other_seed = lth_tf.find_tickets(user_models.small_cnn, data=arrays, output_dir=str(tmp_path / "seed_1"),
                                     **{**SETTINGS, "seed": 1, "export": "none"})
    assert report.cli(["report", f"--output_dir={run.output_dir}"]) == 0
    assert "| 2 |" in open(os.path.join(run.output_dir, "report.md")).read()
    assert analyze.cli(["analyze", "overlap", f"--output_dir={run.output_dir},{other_seed.output_dir}",
                        f"--report_dir={tmp_path}"]) == 0
    layers = {row["layer"] for row in rundir.read_csv(str(tmp_path / "overlap.csv"))}
    assert layers == set(SIZES)
    # The SavedModel takes raw pixels and gives the trained ticket's logits.
    loaded = tf.saved_model.load(os.path.join(run.output_dir, "tickets", "round_02", "saved_model"))
    logits = loaded.signatures["serving_default"](inputs=tf.constant(arrays[2][:16], tf.float32))["logits"].numpy()
    config = from_dict(run.config)
    model = builders.build(config.model, (8, 8, 1), 4)
    adapter.assign_state(model, run.weights(2))  # a plain model has the same state keys
    scale, mean, std = data.normalisation_of(config.data)
    np.testing.assert_allclose(logits, model((arrays[2][:16] * scale - mean) / std, training=False), atol=1e-5)


def cli(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_the_command_line_and_the_api_give_the_same_tickets(npz_file, arrays, tmp_path):
    from examples import own_cnn
    vectors = tuple(a.reshape(len(a), -1)[:, :16].astype(np.float32) if i % 2 == 0 else a
                    for i, a in enumerate(arrays))  # 16-point signals for the example's 1-D CNN
    np.savez(tmp_path / "vectors.npz", **dict(zip(data.NPZ_KEYS, vectors)))
    settings = {**SETTINGS, "export": "none", "rounds": 1}
    api = lth_tf.find_tickets(own_cnn.build, data=vectors, output_dir=str(tmp_path / "api"), **settings)
    flags = [f"--{k}={','.join(v) if isinstance(v, list) else v}" for k, v in settings.items()]
    done = cli("lth_tf.main", "--model=examples.own_cnn:build", f"--dataset=npz:{tmp_path / 'vectors.npz'}",
               f"--output_dir={tmp_path / 'cli'}", *flags)
    assert done.returncode == 0, done.stderr[-2000:]
    cli_rows = rundir.read_results(str(tmp_path / "cli"))
    api_rows = rundir.read_results(api.output_dir)
    assert [dict(r, seconds="") for r in cli_rows] == [dict(r, seconds="") for r in api_rows]
    for branch in ("ticket", "random_prune"):
        for key, mask in api.masks(1, branch).items():
            np.testing.assert_array_equal(mask, lth_tf.Run(str(tmp_path / "cli")).masks(1, branch)[key])


def test_a_sweep_runs_a_user_model_over_two_seeds(npz_file, tmp_path):
    done = cli("lth_tf.sweep", "--model=tests.user_models:sequential_mlp", f"--dataset=npz:{npz_file}",
               "--seeds=0,1", "--parallel=2", f"--sweep_dir={tmp_path}", "--rounds=1", "--train_steps=10",
               "--eval_every=5", "--batch_size=20", "--validation_size=40", "--controls=reinit", "--export=none")
    assert done.returncode == 0, done.stderr[-2000:]
    for seed in (0, 1):
        rows = rundir.read_results(str(tmp_path / f"seed_{seed}"))
        assert [(r["round"], r["branch"]) for r in rows] == [("0", "ticket"), ("1", "ticket"), ("1", "reinit")]
    assert rundir.read_csv(str(tmp_path / "sweep.csv"))


def test_the_example_script_finds_tickets_with_both_controls(tmp_path):
    done = subprocess.run([sys.executable, "-m", "examples.own_cnn", f"--output_dir={tmp_path}", "--rounds=1",
                           "--train_steps=20"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = rundir.read_results(str(tmp_path))
    assert [(r["round"], r["branch"]) for r in rows] == [("0", "ticket"), ("1", "ticket"), ("1", "reinit"),
                                                         ("1", "random_prune")]
    assert "ticket acc" in done.stdout and os.path.exists(tmp_path / "tickets" / "round_01" / "saved_model")
    assert lth_tf.Run(str(tmp_path)).config["model"]["name"] == "examples.own_cnn:build"  # importable elsewhere


# --- tensorflow-datasets sets, offline on tfds's mock data through the real loader

@pytest.fixture
def server_answers(monkeypatch):
    """The download servers answer (the mock makes no download; this is the check before one)."""
    import requests
    monkeypatch.setattr(requests, "head", lambda *args, **kwargs: None)
    caches = (data.tfds_sets.tfds_arrays, data.tfds_sets.tfds_facts, data._statistics)
    for cache in caches:  # the mock's sets are not the real ones
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


@pytest.mark.parametrize("name, shape, stats", [("tfds:cifar10", (32, 32, 3), "known"),
                                                ("tfds:smallnorb:train,test", (96, 96, 1), "computed")])
def test_tensorflow_datasets_sets_load_through_the_real_loader(name, shape, stats, server_answers):
    import tensorflow_datasets as tfds
    from lth_tf import flags as lth_flags
    with tfds.testing.mock_data(num_examples=30):
        config = data.complete(DataConfig(name, validation_size=10))
        splits = data.load(config)
        from lth_tf import api  # a submodule is an attribute of lth_tf only once something imported it
        values = api._flag_values({"dataset": name, "model": "user_models:small_cnn"})
        assert lth_flags.data_config(values).validation_size == 3  # a tenth of the training set
    assert splits.input_shape == shape and splits.num_classes in (10, 5)
    assert len(splits.x_train) == 20 and len(splits.x_val) == 10 and len(splits.x_test) == 30
    assert set(np.unique(splits.y_train)) <= set(range(splits.num_classes))
    assert bool(config.normalisation) == (stats == "computed")
    assert splits.augment == (name == "tfds:cifar10")


def test_a_tensorflow_datasets_set_trains_end_to_end(server_answers, tmp_path, capsys):
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=40):
        run = lth_tf.find_tickets("mlp_16", data="tfds:mnist", output_dir=str(tmp_path), rounds=1, train_steps=4,
                                  eval_every=2, batch_size=10, controls=["reinit"], export="none")
    assert [(r["round"], r["branch"]) for r in run.results] == [(0, "ticket"), (1, "ticket"), (1, "reinit")]
    assert run.config["data"]["dataset"] == "tfds:mnist" and run.config["data"]["validation_size"] == 4
    lines = capsys.readouterr().err.splitlines()  # progress: one line per branch, as the command line shows
    assert [line[:20] for line in lines] == ["round  0 ticket     ", "round  1 ticket     ", "round  1 reinit     "]


# --- bad input: one line, nothing written

def bad_api(tmp_path, model="user_models:small_cnn", data_=None, **settings):
    output_dir = tmp_path / "run"
    with pytest.raises(lth_tf.Error) as error:
        lth_tf.find_tickets(model, data=data_ if data_ is not None else BAD_ARRAYS, output_dir=str(output_dir),
                            **{"train_steps": 2, "batch_size": 10, "validation_size": 10, **settings})
    assert "\n" not in str(error.value) and not output_dir.exists()
    return str(error.value)


BAD_ARRAYS = (np.zeros((60, 8, 8, 1), np.uint8), np.arange(60) % 4, np.zeros((10, 8, 8, 1), np.uint8),
              np.arange(10) % 4)


@pytest.mark.parametrize("model, message", [
    ("nosuch.module:build", "no module nosuch.module can be imported"),
    ("user_models:absent", "user_models has no absent"),
    ("user_models:NOT_A_FUNCTION", "is a int, not a function"),
    (user_models.returns_nothing, "returned a NoneType, not a tf.keras model"),
    (user_models.subclassed, "Subclassed is a subclassed model"),
    (user_models.keras3, "is a Keras 3 model (import keras)"),
    (user_models.no_prunable_layer, "no layer lth_tf can prune"),
    (user_models.three_outputs, "output has shape (None, 3); the data have 4 classes"),
    (user_models.softmax_output, "the model ends in a softmax (dense)"),
    (user_models.needs_width, "parameters width get no value"),
    (user_models.nested, "is a model inside the model"),
    (user_models.softmax_layer, "the model ends in a softmax (activation)"),
    (user_models.slash_in_a_name, "layer block/fc has a / in its name"),
    (lambda: None, "not a function defined at the top level"),
])
def test_a_bad_model_is_refused_in_one_line(model, message, tmp_path):
    assert message in bad_api(tmp_path, model)


def test_a_sequential_without_input_is_built_for_the_data(tmp_path):
    run = lth_tf.find_tickets(user_models.sequential_mlp, data=BAD_ARRAYS, output_dir=str(tmp_path / "seq"),
                              rounds=1, train_steps=4, eval_every=2, batch_size=10, validation_size=10,
                              controls=[], export="none", tensorboard=False)
    assert set(run.masks(1)) == {"dense", "dense_1"} and run.results[-1]["weights_remaining_pct"] < 100


def test_tf_data_datasets_are_read_into_the_run_directory(tmp_path):
    import tensorflow as tf
    train = tf.data.Dataset.from_tensor_slices(BAD_ARRAYS[:2]).batch(7)  # batched: a last batch of 4
    test = tf.data.Dataset.from_tensor_slices(BAD_ARRAYS[2:])             # not batched
    run = lth_tf.find_tickets(user_models.sequential_mlp, data=(train, test), output_dir=str(tmp_path), rounds=0,
                              train_steps=2, batch_size=10, validation_size=10, export="none", progress=False)
    kept = rundir.load_arrays(os.path.join(run.output_dir, "data.npz"))
    for key, array in zip(data.NPZ_KEYS, BAD_ARRAYS):
        np.testing.assert_array_equal(kept[key], array)
    assert run.results[0]["round"] == 0


def test_a_custom_prunable_layer_is_pruned_and_excluded_layers_are_not(tmp_path):
    run = lth_tf.find_tickets(user_models.with_a_prunable_custom_layer, data=BAD_ARRAYS, output_dir=str(tmp_path),
                              rounds=2, train_steps=2, batch_size=10, validation_size=10, controls=[],
                              export="none", progress=False, prune_rate_fc=0.5, prune_rate_output=0.25,
                              prune_exclude=["hidden"])
    masks = run.masks(2)
    assert set(masks) == {"scale/w", "hidden", "logits"}
    assert masks["scale/w"].sum() == 64 - 32 - 16  # its own weight, at the fc rate
    assert masks["hidden"].all()                  # excluded (layerwise)
    assert masks["logits"].sum() == 40 - 10 - 8   # the last Dense layer, at the output rate, whatever its name


def npz_with(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **{**dict(zip(data.NPZ_KEYS, BAD_ARRAYS)), **arrays})
    return f"npz:{path}"


@pytest.mark.parametrize("change, message", [
    (dict(y_test=None), "has no y_test"),
    (dict(y_train=np.arange(59) % 4), "y_train has shape (59,), x_train (60, 8, 8, 1)"),
    (dict(y_train=np.linspace(0, 3, 60)), "y_train holds float64 values; labels must be integers"),
    (dict(x_train=np.array([object()] * 60)), "holds pickled Python objects, which lth_tf never loads"),
    (dict(x_test=np.zeros((10, 7, 8, 1))), "x_train's examples have shape (8, 8, 1), x_test's (7, 8, 1)"),
])
def test_a_bad_npz_file_is_refused_in_one_line(change, message, tmp_path):
    arrays = {k: v for k, v in change.items() if v is not None}
    path = npz_with(tmp_path, **arrays)
    if change.get("y_test", 0) is None:
        kept = dict(np.load(path[4:]))
        del kept["y_test"]
        np.savez(path[4:], **kept)
    assert message in bad_api(tmp_path, data_=path)


def test_bad_in_memory_arrays_and_settings_are_refused_in_one_line(tmp_path):
    assert "y_train has a negative label" in bad_api(tmp_path, data_=(BAD_ARRAYS[0], -BAD_ARRAYS[1],
                                                                      *BAD_ARRAYS[2:]))
    assert "unknown setting prune_rates (did you mean prune_rate?)" in bad_api(tmp_path, prune_rates=0.2)
    assert "--prune_rate_fc=1.5: must be in (0, 1)" in bad_api(tmp_path, prune_rate_fc=1.5)
    assert "--output_layer=conv9 is not a prunable layer" in bad_api(tmp_path, output_layer="conv9")
    assert "--init and --initializer are for the built-in models" in bad_api(tmp_path, init="pytorch")


@pytest.mark.parametrize("name, message", [
    ("tfds:no_such_set_xyz", "tensorflow-datasets has no set no_such_set_xyz (DatasetNotFoundError"),
    ("tfds:celeb_a", "celeb_a has no class-label feature"),
])
def test_a_bad_tensorflow_datasets_name_is_refused_in_one_line(name, message, tmp_path):
    assert message in bad_api(tmp_path, data_=name)


def test_the_command_line_refuses_bad_input_in_one_line_and_writes_nothing(npz_file, tmp_path):
    for args, message in [
        (["--model=nosuch.module:build"], "no module nosuch.module can be imported"),
        (["--model=tests.user_models:subclassed"], "Subclassed is a subclassed model"),
        ([f"--dataset=npz:{tmp_path / 'absent.npz'}"], "cannot read it (No such file or directory)"),
        (["--dataset=tfds:cifar10", f"--data_dir={tmp_path / 'tfds'}"], "does not answer"),
    ]:
        output_dir = tmp_path / "run"
        model = [] if any(a.startswith("--model") for a in args) else ["--model=tests.user_models:small_cnn"]
        dataset = [] if any(a.startswith("--dataset") for a in args) else [f"--dataset=npz:{npz_file}"]
        env = dict(os.environ, HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="")
        done = subprocess.run([sys.executable, "-m", "lth_tf.main", *model, *dataset, *args,
                               f"--output_dir={output_dir}"], cwd=ROOT, capture_output=True, text=True,
                              timeout=600, env=env)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and message in lines[0], (args, done.stderr[-1500:])
        assert not output_dir.exists()


def test_find_tickets_in_an_absl_program_with_flags_of_the_same_names(tmp_path):
    code = ("from absl import flags\n"
            "flags.DEFINE_string('output_dir', 'theirs', '')\n"
            "flags.DEFINE_integer('rounds', 7, '')\n"
            "import sys, lth_tf\n"
            "flags.FLAGS(['program'])\n"
            f"run = lth_tf.find_tickets('mlp_8', output_dir={str(tmp_path)!r}, rounds=1, train_steps=2, "
            "controls=[], export='none', tensorboard=False, progress=False)\n"
            "print(flags.FLAGS.output_dir, flags.FLAGS.rounds, [r['round'] for r in run.results])\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["theirs", "7", "[0,", "1]"], done.stderr[-2000:]


def test_importing_lth_tf_and_its_api_names_loads_no_tensorflow():
    code = ("import sys, lth_tf; lth_tf.find_tickets, lth_tf.Run, lth_tf.Error; "
            "print('tensorflow' in sys.modules, 'tensorflow_model_optimization' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False"], done.stderr[-1000:]
