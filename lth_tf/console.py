"""What the person who started a run sees, and the log that keeps the rest.

The command line owns the terminal: `Console.capture()` moves file
descriptor 2 (where TensorFlow's native libraries, Python's logging and absl
write) into a log file, `<output_dir>/log.txt` once the run directory is
known, and keeps the real stderr for lth_tf's own lines. On a terminal a run
shows a progress bar per branch and one line per finished branch; off one (a
pipe, nohup, CI) it writes plain lines, a progress line at most every
`PLAIN_PERIOD` seconds, and no control characters. No TensorFlow here.
"""
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time

import tqdm

PLAIN_PERIOD = 30.0  # seconds between progress lines when stderr is not a terminal
BAR_PERIOD = 0.1     # seconds between redraws of the bar, at most


class Console:
    """lth_tf's lines on the real stderr; everything else on fd 2 goes to the log."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.log_path = ""
        self._pending = None  # the log before the run directory is known

    @property
    def interactive(self) -> bool:
        return self.stream.isatty()

    def say(self, line: str):
        self.stream.write(line + "\n")
        self.stream.flush()

    @classmethod
    @contextlib.contextmanager
    def capture(cls):
        """A Console on the real stderr, while fd 2 goes to a temporary log
        until attach() names the run's log file; fd 2 is put back at the end."""
        sys.stderr.flush()
        saved = os.dup(2)
        console = cls(os.fdopen(os.dup(2), "w", buffering=1))
        console._pending = tempfile.TemporaryFile()
        os.dup2(console._pending.fileno(), 2)
        try:
            yield console
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            console.stream.close()
            if console._pending is not None:
                console._pending.close()

    def attach(self, log_path: str):
        """From now on fd 2 appends to `log_path`, after what was logged so far."""
        if self._pending is None or self.log_path:
            return
        sys.stderr.flush()
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        self._pending.seek(0)
        os.write(fd, self._pending.read())
        os.dup2(fd, 2)
        os.close(fd)
        self._pending.close()
        self.log_path, self._pending = log_path, None

    def pending_log(self) -> str:
        """What was logged before attach() (for a crash before the run directory existed)."""
        if self._pending is None:
            return ""
        sys.stderr.flush()
        self._pending.seek(0)
        return self._pending.read().decode(errors="replace")


def duration(seconds: float) -> str:
    """'45 s', '3 min', '2 h 05 min'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class ExperimentProgress:
    """The lottery driver's progress on a Console: a bar (or plain lines) per
    branch, a line per finished branch with the experiment's position and
    time left. The driver calls start, branch_start, step, branch_done."""

    def __init__(self, console: Console):
        self.console = console
        self.total = self.done = 0
        self.seconds = []      # of every finished branch, earlier invocations' included
        self.bar = None
        self.label, self.density = "", 1.0
        self.last_line = 0.0

    def start(self, total_branches: int):
        self.total, self.done = total_branches, 0

    def branch_start(self, round_index: int, branch: str, density: float, step: int, end_step: int):
        self.label = f"round {round_index:2d} {branch:<12}"
        self.density = density
        self.last_line = time.time()
        if self.console.interactive:
            self.bar = tqdm.tqdm(total=end_step, initial=step, file=self.console.stream, leave=False,
                                 mininterval=BAR_PERIOD, dynamic_ncols=True, unit="step", desc=self._bar_text(""),
                                 bar_format="{desc} {bar:16} {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]")

    def _bar_text(self, stats: str) -> str:
        return f"{self.label} [{self._position(short=True)}] {stats}".rstrip()

    def step(self, progress):
        """progress: training.Progress, every --log_every steps."""
        stats = (f"loss {progress.train_loss:.4f}  acc {progress.train_accuracy:.4f}  "
                 f"density {100 * self.density:.2f}%  lr {progress.learning_rate:.3g}")
        if self.bar is not None:
            self.bar.set_description_str(self._bar_text(stats), refresh=False)
            self.bar.update(progress.step - self.bar.n)
        elif time.time() - self.last_line >= PLAIN_PERIOD:
            self.last_line = time.time()
            self.console.say(f"{self.label} step {progress.step}/{progress.end_step}  {stats}  "
                             f"{duration(progress.seconds)}, about {duration(progress.seconds_left)} left")

    def branch_done(self, row: dict, trained: bool):
        """row: the branch's results.csv row; trained: False when it was finished by an earlier run."""
        self.close()
        self.done += 1
        if row.get("seconds") not in (None, ""):
            self.seconds.append(float(row["seconds"]))
        if not trained:
            return
        if row["status"] == "ok":
            result = (f"test acc {float(row['test_accuracy']):.4f}, early stop {float(row['early_stop_test_accuracy']):.4f}"
                      f" at step {row['early_stop_step']}, {duration(float(row['seconds']))}")
        else:
            result = row["status"]
        self.console.say(f"round {int(row['round']):2d} {row['branch']:<12} {float(row['weights_remaining_pct']):6.2f}% "
                         f"weights  {result}  [{self._position(finished=True)}]")

    def note(self, line: str):
        """One line of lth_tf's on the console (above a bar that is showing)."""
        if self.bar is not None:
            self.bar.write(line, file=self.console.stream)
        else:
            self.console.say(line)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _position(self, finished=False, short=False) -> str:
        """'branch 3 of 7, about 24 s left' (the time the branches after this one
        take, at the mean of those done); short: '3/7, ~24 s left'."""
        number = self.done if finished else self.done + 1
        text = f"{number}/{self.total}" if short else f"branch {number} of {self.total}"
        left = self.total - self.done - (0 if finished else 1)
        if self.seconds and left > 0:
            text += f", {'~' if short else 'about '}{duration(left * sum(self.seconds) / len(self.seconds))} left"
        return text


def stop_on_signals(announce) -> threading.Event:
    """Ctrl-C and SIGTERM, the same for every command: the first sets the returned event (the caller
    stops at its next safe point, after a checkpoint) and calls announce(the signal's name); a second
    raises KeyboardInterrupt, to stop at once."""
    stop = threading.Event()

    def request(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        announce(signal.Signals(signum).name)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request)
    return stop
