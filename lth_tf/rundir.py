"""The run directory on disk: atomic writes, the config guard, results.csv."""
import contextlib
import csv
import io
import json
import os
import socket
import tempfile
import zipfile

import numpy as np

from lth_tf import paths
from lth_tf.config import upgrade


_UMASK = os.umask(0)
os.umask(_UMASK)


class RunDirError(Exception):
    """The output directory cannot be used for this run."""


def atomic_write(path: str, payload: bytes):
    """Writes to a temporary file beside `path`, then renames it into place."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path))
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are for sharing
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, obj):
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


class CorruptFile(RunDirError):
    """A file of the run exists but cannot be read back (truncated, damaged)."""


def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as error:
        raise CorruptFile(f"{path} is damaged ({error})") from error


def save_arrays(path: str, arrays: dict[str, np.ndarray]):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, buffer.getvalue())


def write_csv(path: str, rows: list[dict], columns=None, significant: int = 0) -> str:
    """rows as a CSV file (columns: the first row's keys unless given; floats to `significant` digits
    if given), written atomically; returns path."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, list(columns or rows[0]), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: f"{v:.{significant}g}" if significant and isinstance(v, float) else v for k, v in row.items()}
                     for row in rows)
    atomic_write(path, buffer.getvalue().encode())
    return path


def read_csv(path: str) -> list[dict]:
    """A CSV file's rows as dicts of strings; [] if there is no file."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_arrays(path: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz file; zip's CRC-32 of every array is checked on read."""
    try:
        with np.load(path) as f:
            return {key: f[key] for key in f.files}
    except (zipfile.BadZipFile, ValueError, EOFError, KeyError) as error:
        raise CorruptFile(f"{path} is damaged ({type(error).__name__}: {error})") from error


def check_claim(output_dir: str, config: dict) -> bool:
    """True if `output_dir` holds this experiment (a resume) or one it extends (extension()), False
    if it is new or empty; RunDirError if it holds anything else. Writes nothing."""
    path = paths.config(output_dir)
    config = json.loads(json.dumps(config))  # tuples -> lists, as read back
    if os.path.exists(path):
        try:
            previous = upgrade(read_json(path))
        except CorruptFile as error:
            raise RunDirError(f"{error}: it holds the run's settings, which lth_tf cannot guess; restore it (a run "
                              "of the same flags has the same config.json), or use a new --output_dir") from None
        if previous != config and not extension(previous, config):
            changed = sorted(_diff(previous, config))
            raise RunDirError(f"{output_dir} holds a run with another config (differs in "
                              f"{', '.join(changed[:5])}); use a new --output_dir")
        return True
    if os.path.isdir(output_dir) and set(os.listdir(output_dir)) - {LOCK}:
        raise RunDirError(f"{output_dir} is not empty and has no config.json; use a new --output_dir")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise RunDirError(f"{output_dir} is a file, not a directory; use a new --output_dir")
    return False


def extension(previous: dict, config: dict) -> str:
    """What `config` adds to the run of `previous` if it only extends it ('' if it does not): more
    rounds of iterative IMP, more controls. Finished rounds and branches are kept; only the new train."""
    old, new = previous["lottery"], config["lottery"]
    iterative = config["pruning"]["method"] == "imp" and not config["pruning"]["oneshot"]
    same_otherwise = {**previous, "lottery": {**old, "rounds": new["rounds"], "controls": new["controls"]}} == config
    if not same_otherwise or new["rounds"] < old["rounds"] or not set(old["controls"]) <= set(new["controls"]):
        return ""
    if new["rounds"] > old["rounds"] and not iterative:
        return ""
    added = [f"rounds {old['rounds']} -> {new['rounds']}"] if new["rounds"] > old["rounds"] else []
    added += [f"controls {', '.join(c for c in new['controls'] if c not in old['controls'])}"] if set(
        new["controls"]) > set(old["controls"]) else []
    return "; ".join(added)


def claim(output_dir: str, config: dict):
    """Makes `output_dir` this experiment's: a new or empty directory gets
    config.json; a directory of the same config is resumed, one that this config
    extends (extension()) gets the new config.json; anything else is refused."""
    if check_claim(output_dir, config):
        config = json.loads(json.dumps(config))
        if upgrade(read_json(paths.config(output_dir))) != config:
            write_json(paths.config(output_dir), config)  # an extension: from now on, this run's
        return
    try:
        write_json(paths.config(output_dir), json.loads(json.dumps(config)))
    except OSError as error:
        raise RunDirError(f"cannot write to {output_dir}: {error.strerror}") from error


LOCK = paths.LOCK


@contextlib.contextmanager
def locked(output_dir: str):
    """Holds output_dir/.lock (pid and host) while the block runs, so a second
    process on the same directory refuses; a dead process's lock is taken over.
    A directory it made is removed again if the block left nothing in it."""
    path = os.path.join(output_dir, LOCK)
    host = socket.gethostname()
    made = not os.path.exists(output_dir)
    try:
        os.makedirs(output_dir, exist_ok=True)
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                _check_stale_lock(path, output_dir, host)
    except OSError as error:
        raise RunDirError(f"cannot write to {output_dir}: {error.strerror}") from error
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()} {host}\n")
    try:
        yield
    finally:
        os.unlink(path)
        if made and not os.listdir(output_dir):
            os.rmdir(output_dir)


def _check_stale_lock(path, output_dir, host):
    try:
        owner_pid, owner_host = open(path).read().split()
    except (FileNotFoundError, ValueError):
        owner_pid, owner_host = "0", host  # half-written or just released: treat as stale
    if owner_host != host:
        raise RunDirError(f"{output_dir} is locked by process {owner_pid} on {owner_host}; "
                          f"if that process is gone, delete {path}")
    if _alive(int(owner_pid)):
        raise RunDirError(f"{output_dir} is in use by lth_tf process {owner_pid}; wait for it or stop it")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _alive(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():
        return pid == os.getpid()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _diff(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in set(a) | set(b):
            yield from _diff(a.get(key), b.get(key), f"{prefix}{key}.")
    elif a != b:
        yield prefix.rstrip(".")


RESULT_COLUMNS = ("round", "branch", "weights_remaining_pct", "test_accuracy", "early_stop_step",
                  "early_stop_test_accuracy", "early_stop_val_loss", "final_train_loss", "seconds", "status",
                  "method", "target_density", "training_steps_spent")


def write_results(output_dir: str, rows: list[dict]):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, RESULT_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = paths.results(output_dir)
    if os.path.exists(path) and open(path, "rb").read() == buffer.getvalue().encode():
        return  # finished results are not rewritten
    atomic_write(path, buffer.getvalue().encode())


def results_readable(output_dir: str) -> bool:
    """False if results.csv exists but is not a whole table of RESULT_COLUMNS (cut short, damaged)."""
    path = paths.results(output_dir)
    if not os.path.exists(path):
        return True
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns = tuple(reader.fieldnames or ())  # an earlier lth_tf's table has fewer columns
            return (columns[:2] == RESULT_COLUMNS[:2] and set(columns) <= set(RESULT_COLUMNS)
                    and all(None not in row.values() for row in reader))
    except (csv.Error, UnicodeDecodeError):
        return False


def read_results(output_dir: str) -> list[dict]:
    with open(paths.results(output_dir)) as f:
        return list(csv.DictReader(f))


SIZE_COLUMNS = ("round", "weights_remaining_pct", "saved_model_bytes", "saved_model_gzip_bytes",
                "gzip_vs_dense_gzip")
SPARSE_SIZE_COLUMNS = ("saved_model_sparse_bytes", "saved_model_sparse_gzip_bytes")  # once a round has one
TFLITE_SIZE_COLUMNS = ("tflite_bytes", "tflite_gzip_bytes")  # once a round has a TFLite file


def write_sizes(output_dir: str, rows: list[dict]):
    """tickets/sizes.csv, with each gzip size as a fraction of round 0's (of the dense SavedModels),
    and the sparse SavedModels' and TFLite files' sizes as columns once one was exported (empty for rounds
    without)."""
    dense = next((int(r["saved_model_gzip_bytes"]) for r in rows
                  if int(r["round"]) == 0 and r.get("saved_model_gzip_bytes")), None)
    columns = SIZE_COLUMNS + tuple(column for optional in (SPARSE_SIZE_COLUMNS, TFLITE_SIZE_COLUMNS)
                                   if any(r.get(optional[0]) for r in rows) for column in optional)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        gzipped = row.get("saved_model_gzip_bytes")
        writer.writerow({**row, "gzip_vs_dense_gzip": round(int(gzipped) / dense, 4) if dense and gzipped else ""})
    atomic_write(paths.sizes(output_dir), buffer.getvalue().encode())


def read_sizes(output_dir: str) -> list[dict]:
    path = paths.sizes(output_dir)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))
