"""What the driver prints: messages and progress lines (in place on a terminal, change-only in a log)."""

from __future__ import annotations

import sys
import time

from orchestrator.secrets import redact


def log(message: str) -> None:
    print(redact(message), file=sys.stderr, flush=True)


class ProgressLog:
    """Progress lines: rewritten in place on a terminal; in a log, only on change or every 30 s."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last, self.at = "", 0.0

    def __call__(self, line: str) -> None:
        if not line.startswith("[dor-bench] ") or " done, " not in line:
            self.end_line()
            log(line)
        elif self.tty:
            print(f"\r{redact(line)}   ", end="", file=sys.stderr, flush=True)
            self.last = line
        elif _counts(line) != _counts(self.last) or time.monotonic() - self.at > 30:
            log(line)
            self.last, self.at = line, time.monotonic()

    def end_line(self) -> None:
        if self.tty and self.last:
            print(file=sys.stderr, flush=True)
            self.last = ""


def _counts(line: str) -> str:
    """A progress line without its ETA, which changes every second."""
    return line.partition(", ETA")[0]
