"""latent_ndm.progress: timed lines with done/total and the time left where no terminal is attached (a fake clock,
no sleeping), a tqdm bar where one is."""

from __future__ import annotations

import io
import time

from tqdm import tqdm

from latent_ndm import progress as progress_module
from latent_ndm.progress import duration, progress


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_a_terminal_lines_say_how_far_and_the_time_left_at_most_once_per_interval() -> None:
    clock, out = Clock(), io.StringIO()
    for _ in progress(range(20), "NELBO", unit="img", stream=out, clock=clock, interval=10):
        clock.t += 3  # each item takes 3 s
    lines = out.getvalue().splitlines()
    assert lines == [
        "NELBO: 4/20 img (20%), 12 s elapsed, about 48 s left",
        "NELBO: 8/20 img (40%), 24 s elapsed, about 36 s left",
        "NELBO: 12/20 img (60%), 36 s elapsed, about 24 s left",
        "NELBO: 16/20 img (80%), 48 s elapsed, about 12 s left",
        "NELBO: 20/20 img (100%), done in 1 min 00 s",
    ]


def test_short_work_prints_nothing_and_disabled_work_nothing_at_all() -> None:
    clock, out = Clock(), io.StringIO()
    for _ in progress(range(5), "quick", stream=out, clock=clock, interval=10):
        clock.t += 1
    assert out.getvalue() == ""
    with progress(total=3, desc="off", stream=out, clock=clock, interval=10, enabled=False) as bar:
        clock.t += 100
        bar.update(1)
        bar.beat()
    assert out.getvalue() == ""


def test_a_beat_while_waiting_prints_the_elapsed_time_the_note_and_the_estimate_at_the_pace_so_far() -> None:
    clock, out = Clock(), io.StringIO()
    with progress(total=4, desc="rehearsal", unit="stages", stream=out, clock=clock, interval=10) as bar:
        clock.t += 20
        bar.update(1)  # 20 s per stage so far: 60 s left
        bar.note("stage 2 of 4 (vae), last output: step 1")
        for wait in (5, 5, 45):  # 5 s after the last line: none; then one 10 s and one 45 s after it
            clock.t += wait
            bar.beat()
    assert out.getvalue().splitlines() == [
        "rehearsal: 1/4 stages (25%), 20 s elapsed, about 1 min 00 s left",
        "rehearsal: 1/4 stages (25%), 30 s elapsed, about 1 min 30 s left; stage 2 of 4 (vae), last output: step 1",
        "rehearsal: 1/4 stages (25%), 1 min 15 s elapsed, about 3 min 45 s left; stage 2 of 4 (vae), last output: "
        "step 1",
        "rehearsal: 1/4 stages (25%), stopped after 1 min 15 s",
    ]


def test_work_weighed_in_percent_reads_as_a_percentage() -> None:
    clock, out = Clock(), io.StringIO()
    with progress(total=100, desc="rehearsal", unit="%", stream=out, clock=clock, interval=10) as bar:
        clock.t += 20
        bar.update(40)  # the first stages, 40% of the usual time, took 20 s: 30 s left
        clock.t += 25
        bar.update(60)
    assert out.getvalue().splitlines() == ["rehearsal: 40% done, 20 s elapsed, about 30 s left",
                                           "rehearsal: done in 45 s"]


def test_with_a_terminal_it_is_a_tqdm_bar() -> None:
    out = Terminal()
    bar = progress(range(3), "FID samples", unit="img", stream=out)
    assert isinstance(bar.bar, tqdm)
    assert list(bar) == [0, 1, 2]
    text = out.getvalue()
    assert "FID samples" in text and "3/3" in text and "\r" in text and "elapsed" not in text


def test_durations_read_as_a_person_would_say_them() -> None:
    assert [duration(s) for s in (0.4, 59, 59.7, 65, 3600 + 4 * 60 + 5)] == [
        "0 s", "59 s", "1 min 00 s", "1 min 05 s", "1 h 04 min"]


def test_one_long_unit_still_prints_lines_while_it_runs(monkeypatch) -> None:
    """With the real clock a heartbeat thread prints between units: an evaluation whose one batch takes minutes (an
    ODE solve) is not silent; the thread ends with the work."""
    monkeypatch.setattr(progress_module, "HEARTBEAT_S", 0.02)
    stream = io.StringIO()
    bar = progress(total=2, desc="NLL (ODE)", unit="img", stream=stream, interval=0.05)
    deadline = time.monotonic() + 5
    while "elapsed" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.02)  # the unit being worked on: no update() while it runs
    bar.update(2)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("NLL (ODE): 0/2 img (0%), ") and "elapsed" in lines[0]
    assert lines[-1].startswith("NLL (ODE): 2/2 img (100%), done in ")
    assert bar.stopped.is_set()
