"""The console: a progress bar on a terminal, plain lines off one, and the log
that takes file descriptor 2."""
import io
import os

from lth_tf import console
from lth_tf.training import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def row(round_index, branch, seconds=10.0):
    return dict(round=round_index, branch=branch, status="ok", weights_remaining_pct=80.6667, test_accuracy=0.593,
                early_stop_test_accuracy=0.6, early_stop_step=900, seconds=seconds)


def drive(stream, steps=(100, 200)):
    """One experiment of three branches: one finished earlier, two trained now."""
    progress = console.ExperimentProgress(console.Console(stream))
    progress.start(3)
    progress.branch_done(row(0, "ticket", 20.0), trained=False)
    for branch in ("ticket", "reinit"):
        progress.branch_start(1, branch, 0.806667, 0, 200)
        for step in steps:
            progress.step(Progress(step, 0, 200, 0.51234, 0.84, 0.001, step / 100))
        progress.branch_done(row(1, branch), trained=True)
    return stream.getvalue()


def test_off_a_terminal_plain_lines_one_per_trained_branch(monkeypatch):
    monkeypatch.setattr(console, "PLAIN_PERIOD", 0.0)  # a progress line at every log step
    text = drive(io.StringIO())
    assert not any(c in text for c in "\r\x1b")
    assert text.splitlines() == [
        "round  1 ticket       step 100/200  loss 0.5123  acc 0.8400  density 80.67%  lr 0.001  1 s, about 1 s left",
        "round  1 ticket       step 200/200  loss 0.5123  acc 0.8400  density 80.67%  lr 0.001  2 s, about 0 s left",
        "round  1 ticket        80.67% weights  test acc 0.5930, early stop 0.6000 at step 900, 10 s  "
        "[branch 2 of 3, about 15 s left]",
        "round  1 reinit       step 100/200  loss 0.5123  acc 0.8400  density 80.67%  lr 0.001  1 s, about 1 s left",
        "round  1 reinit       step 200/200  loss 0.5123  acc 0.8400  density 80.67%  lr 0.001  2 s, about 0 s left",
        "round  1 reinit        80.67% weights  test acc 0.5930, early stop 0.6000 at step 900, 10 s  "
        "[branch 3 of 3]"]


def test_off_a_terminal_progress_lines_are_rate_limited():
    text = drive(io.StringIO())  # PLAIN_PERIOD (30 s) never passes here
    assert [line[:22] for line in text.splitlines()] == ["round  1 ticket       ", "round  1 reinit       "]


def test_on_a_terminal_a_bar_per_branch_with_position_and_stats(monkeypatch):
    monkeypatch.setattr(console, "BAR_PERIOD", 0.0)  # redraw at every log step
    text = drive(Terminal())
    assert "\r" in text
    bar = text.split("\r")
    assert any("round  1 reinit       [3/3] loss 0.5123  acc 0.8400  density 80.67%  lr 0.001" in s and "200/200" in s
               for s in bar)
    assert any("round  1 ticket       [2/3, ~20 s left]" in s for s in bar)  # 1 branch after it x the mean so far
    assert "[branch 3 of 3]" in text


def test_duration():
    assert [console.duration(s) for s in (0.4, 45, 89, 90, 3599, 5400, 7300)] == [
        "0 s", "45 s", "89 s", "2 min", "60 min", "1 h 30 min", "2 h 01 min"]


def test_capture_sends_fd_2_to_the_log_and_puts_it_back(tmp_path, capfd):
    with console.Console.capture() as screen:
        os.write(2, b"native library chatter\n")  # and Python's logging: sys.stderr is fd 2 outside pytest
        screen.say("lth_tf: for the person")
        screen.attach(str(tmp_path / "log.txt"))
        os.write(2, b"after attach\n")
    os.write(2, b"fd 2 is back\n")
    assert capfd.readouterr().err == "lth_tf: for the person\nfd 2 is back\n"
    assert (tmp_path / "log.txt").read_text() == "native library chatter\nafter attach\n"
