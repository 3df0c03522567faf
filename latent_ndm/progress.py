"""Progress of long work: a tqdm bar where a terminal is attached, a plain line every `interval` seconds where not.

    for x in progress(loader, "NELBO", total=128, unit="img"): ...      # an iterable, counted item by item
    with progress(total=6, desc="rehearsal", unit="stage") as bar:      # counted by hand
        bar.update(1); bar.note("stage 2 of 6: shard"); bar.beat()      # beat: a line while waiting, if one is due

Where the stream (stderr unless given) is not a terminal (a log, a pipe, CI), nothing is printed during the first
`interval` seconds (short work stays quiet); after that a line such as
`NELBO: 64/128 img (50%), 1 min 02 s elapsed, about 1 min 02 s left` at most once per `interval`, and one line
when the work ends. The time left is at the pace so far (elapsed / done x left, as tqdm's). One unit may itself take
minutes (an ODE solve of one batch): with the real clock a daemon thread beats every `HEARTBEAT_S` while the work is
open, so the lines keep coming (elapsed time, and the estimate growing) between two units. The clock is injectable
(tests; an injected clock gets no thread). Only the standard library and tqdm are imported.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")
INTERVAL_S = 10.0  # seconds between two lines where no terminal is attached
HEARTBEAT_S = 1.0  # how often the heartbeat thread checks whether a line (or the bar's clock) is due


def duration(seconds: float) -> str:
    """`12 s`, `3 min 05 s` or `2 h 04 min`."""
    s = round(max(0.0, seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def is_terminal(stream: TextIO) -> bool:
    """Whether `stream` is attached to a terminal (False for files, pipes and closed streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress(Generic[T]):
    """How far some work is: iterate it (with `items`) or call `update`; `note` adds what it is doing now, `beat`
    prints a line while waiting (if one is due), `close` ends it. A context manager. Thread-safe."""

    def __init__(self, items: Iterable[T] | None, desc: str, total: float | None, unit: str, stream: TextIO,
                 clock: Callable[[], float], interval: float, enabled: bool) -> None:
        self.items, self.desc, self.total, self.unit = items, desc, total, unit
        self.stream, self.clock, self.interval, self.enabled = stream, clock, interval, enabled
        self.done, self.text, self.closed = 0.0, "", False
        self.start = clock()
        self.last_line: float | None = None  # when the last line was printed (None: none yet)
        self.lock = threading.Lock()
        self.bar = (tqdm(total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True)
                    if enabled and is_terminal(stream) else None)
        self.stopped = threading.Event()
        if enabled and clock is time.monotonic:  # the real clock: beat between units (see the module doc)
            threading.Thread(target=self._heartbeat, name=f"progress {desc}", daemon=True).start()

    def _heartbeat(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):  # never faster, whatever the interval (a test may set it to 0)
            self.beat()

    def __iter__(self) -> Iterator[T]:
        if self.items is None:
            raise TypeError(f"progress {self.desc!r} was given a total, not items: call update() instead")
        try:
            for item in self.items:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> Progress[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """`n` more units are done."""
        with self.lock:
            self.done += n
            if self.bar is not None:
                self.bar.update(n)
            elif not self.total or self.done < self.total:  # the last unit: close() says it ended
                self._line_if_due()

    def note(self, text: str) -> None:
        """What is being done now, shown after the counts (replaces the previous note)."""
        with self.lock:
            self.text = text
            if self.bar is not None:
                self.bar.set_postfix_str(text, refresh=False)

    def beat(self) -> None:
        """While waiting for the next unit: the bar's clock refreshed, or a line if one is due."""
        with self.lock:
            if self.bar is not None:
                self.bar.refresh()
            else:
                self._line_if_due()

    def close(self) -> None:
        """The work has ended (or stopped): the bar closes; a last line if any line was printed before."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.stopped.set()
            if self.bar is not None:
                self.bar.close()
            elif self.enabled and self.last_line is not None:
                took = duration(self.clock() - self.start)
                if self.total and self.done < self.total:
                    self._print(f"{self.desc}: {self._count()}, stopped after {took}")
                else:
                    self._print(f"{self.desc}: {'' if self.unit == '%' else self._count() + ', '}done in {took}")

    def remaining(self, now: float) -> float | None:
        """Seconds left at the pace so far: (time since the start / units done) x units left (a wait for the next
        unit counts, so the estimate grows while nothing ends); None when unknown."""
        if not self.total or self.done <= 0:
            return None
        return max(0.0, (now - self.start) / self.done * (self.total - self.done))

    def status(self, now: float) -> str:
        """`desc: done/total unit (pct%), elapsed, time left[; note]`."""
        parts = [f"{self.desc}: {self._count()}", f"{duration(now - self.start)} elapsed"]
        left = self.remaining(now)
        if left is not None:
            parts.append(f"about {duration(left)} left")
        return ", ".join(parts) + (f"; {self.text}" if self.text else "")

    def _count(self) -> str:
        if self.unit == "%" and self.total == 100:  # work weighed in percent (e.g. stages of unequal length)
            return f"{self.done:.0f}% done"
        done = f"{self.done:g}"
        if not self.total:
            return f"{done} {self.unit}"
        return f"{done}/{self.total:g} {self.unit} ({100 * self.done / self.total:.0f}%)"

    def _line_if_due(self) -> None:
        now = self.clock()
        since = now - (self.start if self.last_line is None else self.last_line)
        if not self.enabled or self.closed or since < self.interval:
            return
        self._print(self.status(now))
        self.last_line = now

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


def progress(items: Iterable[T] | None = None, desc: str = "", *, total: float | None = None, unit: str = "it",
             enabled: bool = True, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
             interval: float | None = None) -> Progress[T]:
    """The progress of `items` (iterate the result) or of `total` units (call `update`), labelled `desc`: a tqdm bar
    when `stream` (default: sys.stderr at the time of the call) is a terminal, else a line at most every `interval`
    seconds (default INTERVAL_S). `total` defaults to len(items) where it has one; `enabled=False` prints nothing;
    `unit="%"` with `total=100` counts work weighed in percent (`40% done`)."""
    if total is None and items is not None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    return Progress(items, desc, total, unit, sys.stderr if stream is None else stream, clock,
                    INTERVAL_S if interval is None else interval, enabled)
