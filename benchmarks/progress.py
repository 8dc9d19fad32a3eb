"""A one-line progress display for long benchmarks.

On a terminal the line is rewritten in place (``\\r``) a few times a second; otherwise (a CI log,
a pipe) a plain line is printed every ``interval`` seconds, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import anyio

from .measure import Tally


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Shows ``[run k/n] what is running: settled/total prompts, elapsed`` on one line."""

    def __init__(self, total_runs: int, *, stream: TextIO | None = None,
                 interval: float | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval if interval is not None else (0.25 if self.tty else 15.0)
        self.total_runs = total_runs
        self.run = 0
        self.label = ""
        self.tally: Tally | None = None
        self.started = time.monotonic()
        self._last_plain = 0.0
        self._width = 0

    def begin(self, label: str) -> None:
        """A new run starts (counted toward ``total_runs``)."""
        self.run += 1
        self.label = label
        self.tally = None
        self.show(force=True)

    def attach(self, tally: Tally) -> None:
        """Follow a run's settled prompts (passed as ``measure(on_start=...)``)."""
        self.tally = tally

    def line(self) -> str:
        done = ""
        if self.tally is not None:
            t = self.tally
            done = f": {t.settled:,}/{t.total:,} prompts, {time.perf_counter() - t.start:.1f} s"
        return (f"[run {self.run}/{self.total_runs}, {_clock(time.monotonic() - self.started)}] "
                f"{self.label}{done}")

    def show(self, *, force: bool = False) -> None:
        text = self.line()
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
            self.stream.flush()
        elif force or time.monotonic() - self._last_plain >= self.interval:
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last_plain = time.monotonic()

    def message(self, text: str) -> None:
        """Print a line of output above the progress line."""
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
            self.stream.flush()
        print(text, flush=True)

    def close(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    async def ticker(self) -> None:
        """Refresh the line until cancelled (run it beside the measured call)."""
        while True:
            await anyio.sleep(self.interval if not self.tty else 0.25)
            self.show()
