"""Progress lines for long steps: counts, rate and ETA on stderr.

On a terminal the line is rewritten in place about once a second; in a log file (not a
terminal) a new line is written every ten seconds, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``update(n)`` adds done work, ``set(done)`` states it; ``close()`` ends the line."""

    def __init__(
        self,
        total: int,
        desc: str,
        enabled: bool = True,
        stream: TextIO | None = None,
        unit: str = "",
        delay: float = 0.0,
        interval: float | None = None,
    ):
        """``delay``: say nothing unless the work takes longer than this many seconds."""
        self.total, self.desc, self.unit, self.delay = total, desc, unit, delay
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.interval = interval if interval is not None else (1.0 if self.tty else 10.0)
        self.done = 0
        self.start = self._last = time.monotonic()
        self.shown = False

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def update(self, n: int = 1, note: str = "") -> None:
        self.set(self.done + n, note)

    def set(self, done: int, note: str = "") -> None:
        self.done = done
        now = time.monotonic()
        due = now - self._last >= self.interval or (self.done >= self.total and self.shown)
        if not self.enabled or now - self.start < self.delay or not due:
            return
        self._last, self.shown = now, True
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        speed = f"{rate:.0f}/s" if rate >= 1 else f"{1 / rate:.1f}s each" if rate > 0 else "-"
        unit = f" {self.unit}" if self.unit else ""
        extra = f", {note}" if note else ""
        line = f"{self.desc}: {self.done}/{self.total}{unit} ({speed}{extra}, ETA {eta:.0f}s)"
        if self.tty:
            print(f"\r{line}   ", end="", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)
        if self.done >= self.total:
            self.close()

    def close(self, summary: str | None = None) -> None:
        """End an in-place line; print ``summary`` when the work was long enough to report."""
        if not self.enabled:
            return
        if self.tty and self.shown:
            print(file=self.stream, flush=True)
            self.shown = False
        if summary and self.elapsed > self.delay:
            print(summary, file=self.stream, flush=True)
