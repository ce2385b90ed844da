"""The IMP driver on a tiny MNIST-1D experiment: masks, densities, rewinding,
controls, determinism, resuming, strategies."""
import dataclasses
import os

import numpy as np
import pytest

from conftest import run_tiny, tiny_config
from lth_tf import lottery, pruning, rundir, tickets, training
from lth_tf import tfmot_adapter as adapter
from lth_tf.config import LotteryConfig, ModelConfig, PruningConfig


def load(experiment, *parts):
    return rundir.load_arrays(experiment.path(*parts))


def test_results_have_one_row_per_round_and_branch(tiny_run):
    experiment, rows = tiny_run
    assert [(int(r["round"]), r["branch"]) for r in rundir.read_results(experiment.output_dir)] == [
        (0, "ticket")] + [(r, b) for r in (1, 2, 3) for b in ("ticket", "reinit", "random_prune")]
    # mlp_32_16 on MNIST-1D: fc1 40x32, fc2 32x16, output 16x10 = 1952 weights. By hand, removing
    # round(rate x remaining), halves up: fc 20% 1280 -> 1024 -> 819 -> 655 and 512 -> 410 -> 328 -> 262,
    # output 10% 160 -> 144 -> 130 -> 117; so 1952 -> 1578 -> 1277 -> 1034 weights.
    expected = [100.0] + [round(100 * n / 1952, 4) for n in (1578, 1277, 1034) for _ in range(3)]
    assert [float(r["weights_remaining_pct"]) for r in rundir.read_results(experiment.output_dir)] == expected
    assert expected[1:4] == [80.8402] * 3 and expected[-1] == 52.9713


def test_every_round_and_branch_evaluates_at_the_same_steps(tiny_run):
    """eval_every=10 over 30 steps, rewinding to step 5: round 0 passes step 5
    on its way without an evaluation the other rounds cannot have."""
    experiment, rows = tiny_run
    for row in rows:
        metrics = rundir.read_json(experiment.path(f"round_{row['round']:02d}", row["branch"], "metrics.json"))
        assert [record["step"] for record in metrics["history"]] == [10, 20, 30], (row["round"], row["branch"])


def test_each_round_removes_the_rule_count_per_layer(tiny_run):
    experiment, _ = tiny_run
    rates = {"fc1": 0.2, "fc2": 0.2, "output": 0.1}
    previous = None
    for r in (1, 2, 3):
        masks = load(experiment, f"round_{r:02d}", "masks.npz")
        for name, mask in masks.items():
            before = previous[name].sum() if previous else mask.size
            assert mask.sum() == before - pruning.count_to_remove(rates[name], before)
            assert abs(mask.sum() - mask.size * (1 - rates[name]) ** r) <= r
            if previous:
                assert np.all(mask <= previous[name])
        previous = masks


def test_pruned_round_masks_come_from_the_previous_tickets_magnitudes(tiny_run):
    experiment, _ = tiny_run
    trained = load(experiment, "round_01", "ticket", "weights.npz")
    previous = load(experiment, "round_01", "masks.npz")
    masks = load(experiment, "round_02", "masks.npz")
    for name, mask in masks.items():
        magnitude = np.abs(trained[f"{name}/kernel"])
        survivors_before = previous[name] > 0
        assert magnitude[mask > 0].min() >= magnitude[survivors_before & (mask == 0)].max()


def test_saved_weights_are_exactly_zero_under_their_masks(tiny_run):
    experiment, _ = tiny_run
    for r in (1, 2, 3):
        for branch in ("ticket", "reinit", "random_prune"):
            folder = experiment.path(f"round_{r:02d}", branch)
            masks_file = "masks.npz" if branch == "random_prune" else os.path.join("..", "masks.npz")
            masks = rundir.load_arrays(os.path.join(folder, masks_file))
            weights = rundir.load_arrays(os.path.join(folder, "weights.npz"))
            for name, mask in masks.items():
                assert np.all(weights[f"{name}/kernel"][mask == 0] == 0)
                assert np.count_nonzero(weights[f"{name}/kernel"][mask > 0]) > 0.99 * mask.sum()


def test_rewinding_restores_surviving_weights_bit_for_bit(tiny_run):
    experiment, _ = tiny_run
    theta_k = load(experiment, "init", "theta_k.npz")
    theta_0 = load(experiment, "init", "theta_0.npz")
    assert any(not np.array_equal(theta_k[k], theta_0[k]) for k in theta_k), "rewind_step=5 moved the weights"
    masks = load(experiment, "round_03", "masks.npz")
    state, branch_masks, start = lottery.branch_start(experiment, 3, "ticket", masks)
    training.rewind(experiment.trainer, state, branch_masks, start)
    rewound = adapter.get_state(experiment.trainer.model)
    for key, value in theta_k.items():
        layer = key.split("/")[0]
        if key.endswith("/kernel"):
            keep = masks[layer] > 0
            assert np.array_equal(rewound[key][keep].view(np.uint32), value[keep].view(np.uint32))
            assert np.all(rewound[key][~keep] == 0)
        else:
            assert np.array_equal(rewound[key].view(np.uint32), value.view(np.uint32))
    assert training.global_step(experiment.trainer) == 5
    assert all(not np.any(v.numpy()) for v in experiment.trainer.optimizer.variables[1:])


def test_reinit_keeps_the_mask_and_draws_new_weights(tiny_run):
    experiment, _ = tiny_run
    masks = load(experiment, "round_02", "masks.npz")
    theta_k = load(experiment, "init", "theta_k.npz")
    state, reinit_masks, start = lottery.branch_start(experiment, 2, "reinit", masks)
    assert start == 5
    for name in masks:
        np.testing.assert_array_equal(reinit_masks[name], masks[name])
        alive = masks[name] > 0
        assert not np.allclose(state[f"{name}/kernel"][alive], theta_k[f"{name}/kernel"][alive])
        assert np.all(state[f"{name}/kernel"][~alive] == 0)
        # same initialiser: same scale
        assert np.std(state[f"{name}/kernel"][alive]) == pytest.approx(np.std(experiment.theta_0[f"{name}/kernel"]),
                                                                       rel=0.2)


def test_random_pruning_matches_per_layer_density_exactly(tiny_run):
    experiment, _ = tiny_run
    for r in (1, 2, 3):
        ticket = load(experiment, f"round_{r:02d}", "masks.npz")
        random = load(experiment, f"round_{r:02d}", "random_prune", "masks.npz")
        for name in ticket:
            assert random[name].sum() == ticket[name].sum()
            assert not np.array_equal(random[name], ticket[name])
    theta_k = load(experiment, "init", "theta_k.npz")
    state, masks, start = lottery.branch_start(experiment, 2, "random_prune", load(experiment, "round_02", "masks.npz"))
    assert start == 5 and state.keys() == theta_k.keys()  # random_prune starts from theta_k, the ticket's weights
    np.testing.assert_array_equal(masks["fc1"], load(experiment, "round_02", "random_prune", "masks.npz")["fc1"])
    for key, value in theta_k.items():
        mask = masks[key.split("/")[0]] if key.endswith("/kernel") else 1
        np.testing.assert_array_equal(state[key], value * mask)


def test_masks_are_never_recomputed_by_tfmot(tiny_run):
    experiment, _ = tiny_run
    masks = load(experiment, "round_03", "masks.npz")
    training.rewind(experiment.trainer, experiment.theta_0, masks, 5)
    training.train(experiment.trainer, experiment.splits, 5, 25)
    for name, mask in adapter.get_masks(experiment.trainer.model).items():
        np.testing.assert_array_equal(mask, masks[name])


def test_same_seed_and_flags_give_identical_masks(tiny_run, mnist1d, tmp_path):
    experiment, _ = tiny_run
    again, _ = run_tiny(mnist1d, tmp_path, rounds=2, controls=())
    for r in (1, 2):
        first, second = load(experiment, f"round_{r:02d}", "masks.npz"), load(again, f"round_{r:02d}", "masks.npz")
        for name in first:
            np.testing.assert_array_equal(first[name], second[name])


def test_other_seed_gives_other_masks(tiny_run, mnist1d, tmp_path):
    experiment, _ = tiny_run
    other, _ = run_tiny(mnist1d, tmp_path, rounds=1, controls=(), seed=7)
    assert not np.array_equal(load(experiment, "round_01", "masks.npz")["fc1"],
                              load(other, "round_01", "masks.npz")["fc1"])


def test_mirrored_on_two_cpus_gives_the_default_strategys_masks(tiny_run, mnist1d, tmp_path, mirrored_strategy):
    experiment, _ = tiny_run
    strategy = mirrored_strategy
    assert strategy.num_replicas_in_sync == 2
    mirrored, _ = run_tiny(mnist1d, tmp_path, strategy=strategy, rounds=2, controls=())
    for r in (1, 2):
        default_masks = load(experiment, f"round_{r:02d}", "masks.npz")
        mirrored_masks = load(mirrored, f"round_{r:02d}", "masks.npz")
        for name in default_masks:
            np.testing.assert_array_equal(mirrored_masks[name], default_masks[name])
    final_default = load(experiment, "round_02", "ticket", "weights.npz")
    final_mirrored = load(mirrored, "round_02", "ticket", "weights.npz")
    for key in final_default:
        np.testing.assert_allclose(final_mirrored[key], final_default[key], atol=1e-4)


def test_rerun_on_a_finished_directory_trains_nothing(tiny_run, monkeypatch):
    experiment, rows = tiny_run
    stamps = {p: os.stat(p).st_mtime_ns for p in _files(experiment.output_dir) if p.endswith(".npz")}
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("retrained a finished branch"))
    again = lottery.prepare(experiment.config, experiment.splits, experiment.trainer.strategy,
                            experiment.output_dir)
    assert lottery.run(again) == rows
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps


def test_a_used_directory_refuses_another_config(tiny_run):
    experiment, _ = tiny_run
    before = {p: open(p, "rb").read() for p in _files(experiment.output_dir)}
    other = experiment.config.__class__(**{**experiment.config.__dict__,
                                           "lottery": LotteryConfig(rounds=3, seed=99)})
    with pytest.raises(rundir.RunDirError, match="another config"):
        lottery.prepare(other, experiment.splits, experiment.trainer.strategy, experiment.output_dir)
    assert {p: open(p, "rb").read() for p in _files(experiment.output_dir)} == before


def _files(root):
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]


def test_the_mnist1d_papers_options_prune_biases_linearly_from_the_chosen_step(mnist1d, tmp_path):
    config = dataclasses.replace(
        tiny_config(rounds=2, rewind_step=0, controls=("random_prune",), prune_from_step=20),
        model=ModelConfig("resmlp_32_32", init="pytorch"),
        pruning=PruningConfig(schedule="linear", step=0.25, biases=True))
    experiment = lottery.prepare(config, mnist1d, training.make_strategy("default"), str(tmp_path))
    rows = lottery.run(experiment, lottery.RunOptions(export="last", tensorboard=False))
    assert [float(r["weights_remaining_pct"]) for r in rows if r["branch"] == "ticket"] == pytest.approx([100, 75, 50], abs=0.05)
    dense = lottery.round_masks(experiment, 0)
    for r in (1, 2):
        masks = lottery.round_masks(experiment, r)
        for layer, keys in pruning.by_layer(masks).items():
            assert set(keys) == {layer, f"{layer}/bias"}
            size = sum(masks[k].size for k in keys)
            assert sum(masks[k].sum() for k in keys) == np.floor((1 - 0.25 * r) * size + 0.5)
        weights = rundir.load_arrays(tmp_path / f"round_{r:02d}" / "ticket" / "weights.npz")
        for key, mask in masks.items():
            assert np.all(weights[pruning.variable_of(key)][mask == 0] == 0), key
        random = rundir.load_arrays(tmp_path / f"round_{r:02d}" / "random_prune" / "masks.npz")
        assert {k: m.sum() for k, m in random.items()} == {k: m.sum() for k, m in masks.items()}
    # round 1 prunes the ticket's weights at step 20, not its final ones (step 30)
    kinds = {"fc1": "fc", "fc2": "fc", "output": "output"}
    at_20 = rundir.load_arrays(tmp_path / "round_00" / "ticket" / "prune_from.npz")
    final = rundir.load_arrays(tmp_path / "round_00" / "ticket" / "weights.npz")
    expected = pruning.prune(config.pruning, {k: at_20[pruning.variable_of(k)] for k in dense}, dense, kinds, 1)
    from_final = pruning.prune(config.pruning, {k: final[pruning.variable_of(k)] for k in dense}, dense, kinds, 1)
    round_1 = lottery.round_masks(experiment, 1)
    assert all(np.array_equal(round_1[k], expected[k]) for k in dense)
    assert not all(np.array_equal(round_1[k], from_final[k]) for k in dense)
    _, ticket_masks, ticket_weights = tickets.read_ticket(str(tmp_path / "tickets" / "round_02" / "ticket.npz"))
    assert set(ticket_masks) == set(dense) and np.all(ticket_weights["fc1/bias"][ticket_masks["fc1/bias"] == 0] == 0)


def test_a_run_of_an_earlier_lth_tf_resumes_when_the_new_fields_are_at_their_defaults(tiny_run, tmp_path):
    experiment, _ = tiny_run
    saved = rundir.read_json(experiment.path("config.json"))
    for section, field in (("pruning", "schedule"), ("pruning", "biases"), ("model", "init"),
                           ("model", "initializer"), ("lottery", "prune_from_step")):
        del saved[section][field]  # as lth_tf wrote it before these options existed
    rundir.write_json(str(tmp_path / "config.json"), saved)
    config = dataclasses.asdict(experiment.config)
    assert rundir.check_claim(str(tmp_path), config)
    changed = dataclasses.replace(experiment.config,
                                  pruning=dataclasses.replace(experiment.config.pruning, biases=True))
    with pytest.raises(rundir.RunDirError, match="pruning.biases"):
        rundir.check_claim(str(tmp_path), dataclasses.asdict(changed))


def test_a_finished_run_extended_by_rounds_and_a_control_trains_only_what_is_new(mnist1d, tmp_path, monkeypatch):
    run_tiny(mnist1d, tmp_path, rounds=2, controls=("reinit",))
    before = {path: open(path, "rb").read() for path in (tmp_path / "round_01" / "reinit" / "weights.npz",
                                                         tmp_path / "round_02" / "masks.npz")}
    trained, real = [], lottery.run_branch

    def recorded(experiment, round_index, branch, masks, options):
        trained.append((round_index, branch))
        return real(experiment, round_index, branch, masks, options)
    monkeypatch.setattr(lottery.branch, "run_branch", recorded)
    _, rows = run_tiny(mnist1d, tmp_path, rounds=3, controls=("reinit", "random_prune"))
    assert trained == [(1, "random_prune"), (2, "random_prune"), (3, "ticket"), (3, "reinit"), (3, "random_prune")]
    assert [(r["round"], r["branch"]) for r in rows] == [(0, "ticket")] + [
        (r, b) for r in (1, 2, 3) for b in ("ticket", "reinit", "random_prune")]
    assert all(open(path, "rb").read() == content for path, content in before.items())
    saved = rundir.read_json(str(tmp_path / "config.json"))["lottery"]
    assert (saved["rounds"], saved["controls"]) == (3, ["reinit", "random_prune"])
    for shrink in (dict(rounds=2, controls=("reinit", "random_prune")), dict(rounds=3, controls=("reinit",)),
                   dict(rounds=4, controls=("reinit", "random_prune"), rewind_step=6)):
        with pytest.raises(rundir.RunDirError, match="holds a run with another config"):
            run_tiny(mnist1d, tmp_path, **shrink)
