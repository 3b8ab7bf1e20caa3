"""Progress lines for long steps: counts, rate and ETA on stderr, at most about once a second."""

from __future__ import annotations

import sys
import time


class Progress:
    """Call ``update(n)`` as work is done; prints ``desc: done/total (rate/s, ETA ...)``."""

    def __init__(self, total: int, desc: str, enabled: bool = True, interval: float = 1.0):
        self.total, self.desc, self.enabled, self.interval = total, desc, enabled, interval
        self.done = 0
        self.start = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last >= self.interval or self.done >= self.total):
            self._last = now
            self._print(now)

    def _print(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        end = "\n" if self.done >= self.total else ""
        print(
            f"\r{self.desc}: {self.done}/{self.total} ({rate:.0f}/s, ETA {eta:.0f}s)   ",
            end=end, file=sys.stderr, flush=True,
        )
