"""Which experiments a sweep runs, with which flags: the grid, the seeds, each
run's directory, and the checks lth_tf.main would make before TensorFlow loads."""
import dataclasses
import json
import os

from absl import flags

from lth_tf import flags as lth_flags
from lth_tf import runs

OWNED = ("seed", "output_dir")  # set per experiment by the sweep


class SweepError(Exception):
    """A sweep that cannot start: bad sweep flags, a sweep_dir holding another sweep."""


def _name(token: str) -> str:
    return token.lstrip("-").split("=", 1)[0]


def split_argv(argv: list[str], own_flags: flags.FlagValues) -> tuple[list[str], list[str]]:
    """(sweep flags, experiment flags), --flagfile expanded so the experiment's
    flags stand alone (a Ray node has no access to this machine's flagfiles).
    A flagfile's --seed and --output_dir are dropped: the sweep sets them."""
    owned = [t for t in argv if t.startswith("-") and _name(t) in OWNED]
    if owned:
        raise SweepError(f"{owned[0]}: the sweep sets --seed (use --seeds) and --output_dir (per experiment)")
    try:
        argv = lth_flags.FLAGS.read_flags_from_files(argv, force_gnu=True)
    except flags.Error as error:
        raise SweepError(str(error)) from error
    ours, theirs, tokens = [], [], iter(argv)
    for token in tokens:
        if token.startswith("-") and _name(token) in own_flags:
            ours.append(token)
            if "=" not in token:
                ours.append(next(tokens, ""))
        elif not (token.startswith("-") and _name(token) in OWNED):
            theirs.append(token)
    return ours, theirs


def parse_grid(specs: list[str]) -> list[tuple[str, list[str]]]:
    grid = []
    for spec in specs:
        name, _, values = spec.partition("=")
        if not values:
            raise SweepError(f"--grid={spec}: expected NAME=V1,V2,...")
        if name not in lth_flags.FLAGS or name in OWNED or name == "flagfile":
            raise SweepError(f"--grid={spec}: {name!r} is not an experiment flag the grid can vary"
                             + (" (the sweep sets it)" if name in OWNED else ""))
        if name in (g[0] for g in grid):
            raise SweepError(f"--grid names {name} twice")
        grid.append((name, values.split(",")))
    return grid


def grid_points(grid) -> list[dict]:
    points = [{}]
    for name, values in grid:
        points = [{**point, name: value} for point in points for value in values]
    return points


def point_name(point: dict) -> str:
    return "__".join(f"{k}={v}".replace("/", "_") for k, v in point.items())


def experiments(sweep_dir, grid, seeds, base_argv) -> list[dict]:
    """One entry per (seed, grid point), seed-major: every point's first seed finishes first."""
    planned = []
    for seed in seeds:
        for point in grid_points(grid):
            folder = os.path.join(sweep_dir, point_name(point)) if point else sweep_dir
            name = f"{point_name(point) + '__' if point else ''}seed_{seed}"
            output_dir = os.path.join(folder, f"seed_{seed}")
            argv = base_argv + [f"--{k}={v}" for k, v in point.items()] + [f"--seed={seed}",
                                                                            f"--output_dir={output_dir}"]
            planned.append(dict(name=name, point=point, seed=seed, folder=folder, output_dir=output_dir,
                                argv=argv, console_log=os.path.join(sweep_dir, "logs", name + ".txt")))
    return planned


def preflight(argv: list[str]) -> tuple[str, dict]:
    """(reason, config): the one-line reason lth_tf.main would give before TensorFlow loads ('' if
    none), and the config its flags make, as config.json holds it ({} if they make none; also when
    only the run directory refuses it)."""
    from lth_tf import main
    lth_flags.FLAGS.unparse_flags()
    config = {}
    try:
        lth_flags.FLAGS(["lth_tf.main", *argv])
        config = json.loads(json.dumps(dataclasses.asdict(lth_flags.experiment_config(lth_flags.FLAGS)[0])))
        main.preflight(lth_flags.FLAGS)
    except flags.Error as error:
        return f"error: {str(error).replace('ERROR:: ', '')}", config
    except main.PREFLIGHT_ERRORS as error:
        return f"error: {error}", config
    finally:
        lth_flags.FLAGS.unparse_flags()
    return "", config


def settings(config: dict) -> dict:
    """A config.json without its seeds: what every seed of a grid point shares."""
    return {section: {key: value for key, value in values.items() if (section, key) not in runs.SEED_KEYS}
            for section, values in config.items()}
