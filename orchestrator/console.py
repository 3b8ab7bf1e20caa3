"""What the driver prints: messages, and the terminal during a long run (the grid's line and one
line per running trial: in place on a terminal, change-only in a log file, or JSON events)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.secrets import redact

LogFormat = Literal["text", "json"]
#: In a log file, a running trial's line is repeated at most this often (seconds).
LOG_EVERY_S = 30.0
#: On a terminal, at most this many running trials get a line.
SHOWN = 8


def log(message: str) -> None:
    print(redact(message), file=sys.stderr, flush=True)


@dataclass
class Running:
    """A trial a worker holds: how far it is."""

    name: str
    epochs: int  # 0: nothing to train (zero-shot)
    started: float = field(default_factory=lambda: time.monotonic())
    epoch: int = 0
    loss: float | None = None
    logged: float = 0.0  # when its line last went to the log

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        if not self.epochs:
            return f"  {self.name}: scoring, {elapsed:.0f}s"
        eta = f", ETA {elapsed / self.epoch * (self.epochs - self.epoch):.0f}s" if self.epoch else ""
        loss = f", loss {self.loss:.4g}" if self.loss is not None else ""
        return f"  {self.name}: epoch {self.epoch}/{self.epochs}{loss}, {elapsed:.0f}s{eta}"


class GridDisplay:
    """The terminal during ``dor-bench run``. ``text``: on a terminal the grid's line and the
    running trials' lines are redrawn in place; in a log file (CI, SLURM) the grid's line is
    written when its counts change and a trial's line when it starts, ends, or at most every
    ``LOG_EVERY_S`` while it trains. ``json``: one JSON object per line on stdout for each trial
    started / epoch / finished / failed (messages stay on stderr)."""

    def __init__(self, fmt: LogFormat = "text") -> None:
        self.fmt = fmt
        self.out = sys.stdout  # JSON events go here even while other output is sent to stderr
        self.tty = fmt == "text" and sys.stderr.isatty()
        self.running: dict[str, Running] = {}
        self.grid_line, self.logged_grid, self.grid_at = "", "", 0.0
        self.drawn = 0  # lines of the in-place block on screen
        #: The MLflow store's trouble now, or None: the caller points it at ``LiveRuns.trouble``.
        self.store: Callable[[], str | None] = lambda: None
        self.troubled = False

    # ----------------------------------------------------------------------- events
    def started(self, name: str, epochs: int, attempt: int) -> None:
        self.running[name] = Running(name, epochs)
        if self.fmt == "json":
            self._event("trial_started", name, attempt=attempt, epochs=epochs)
        elif not self.tty:
            self.message(f"[dor-bench] started {name}" + (f" (attempt {attempt})" if attempt > 1 else ""))
        self._draw()

    def epoch(self, name: str, epoch: int, row: dict[str, float]) -> None:
        trial = self.running.get(name)
        if trial is None:
            return
        trial.epoch, trial.loss = epoch, row.get("train/loss", trial.loss)
        if self.fmt == "json":
            self._event("epoch", name, epoch=epoch, epochs=trial.epochs, metrics=row)
        elif not self.tty and (epoch == trial.epochs or time.monotonic() - trial.logged >= LOG_EVERY_S):
            trial.logged = time.monotonic()
            self.message(f"[dor-bench]{trial.line()[1:]}")
        self._draw()

    def ended(self, name: str, metrics: dict[str, float] | None, error: str | None) -> None:
        self.running.pop(name, None)
        if self.fmt == "json":
            if error is None:
                self._event("trial_finished", name, metrics=metrics or {})
            else:
                self._event("trial_failed", name, error=error.splitlines()[0] if error else "")
        if error is not None:
            self.message(f"[dor-bench] trial '{name}' FAILED: {(error.splitlines() or ['unknown error'])[0]}")
        elif not self.tty and self.fmt == "text":
            self.message(f"[dor-bench] finished {name}")
        self._draw()

    def grid(self, line: str) -> None:
        """The grid's progress line (counts and ETA), and the store's trouble while it has any
        (logged, and a JSON event, as soon as it starts and ends)."""
        trouble = self.store()
        turned = (trouble is not None) != self.troubled
        self.troubled = trouble is not None
        shown = trouble or ("reachable again" if turned else None)
        self.grid_line = line = f"{line}; store: {shown}" if shown else line
        if self.fmt == "json" and turned:
            self._event("store", status=shown)
        if self.tty:
            self._draw()
        elif turned or _counts(line) != _counts(self.logged_grid) or time.monotonic() - self.grid_at > LOG_EVERY_S:
            self.message(line)
            self.logged_grid, self.grid_at = line, time.monotonic()

    def finished(self, finished: int, planned: int) -> None:
        """The run is over: how many of the planned trials have a finished run."""
        if self.fmt == "json":
            self._event("grid_finished", finished=finished, planned=planned)

    def message(self, text: str) -> None:
        """A line above the live block (which is redrawn below it)."""
        self._clear()
        log(text)
        self._draw()

    def close(self) -> None:
        """Leave the last state on screen and move below it."""
        self.drawn = 0

    # ----------------------------------------------------------------------- drawing
    def _event(self, event: str, trial: str | None = None, **fields: Any) -> None:
        record = {"event": event, **({"trial": trial} if trial else {}), "time": round(time.time(), 3), **fields}
        print(redact(json.dumps(record)), file=self.out, flush=True)

    def _clear(self) -> None:
        if self.tty and self.drawn:
            sys.stderr.write(f"\x1b[{self.drawn}F\x1b[J")  # up to the block's first line, erase below
            self.drawn = 0

    def _draw(self) -> None:
        if not self.tty:
            return
        self._clear()
        trials = list(self.running.values())
        lines = [self.grid_line] if self.grid_line else []
        lines += [t.line() for t in trials[:SHOWN]]
        if len(trials) > SHOWN:
            lines.append(f"  ... and {len(trials) - SHOWN} more running")
        for line in lines:
            sys.stderr.write(redact(line) + "\n")
        sys.stderr.flush()
        self.drawn = len(lines)


def _counts(line: str) -> str:
    """A progress line without its ETA, which changes every second."""
    return line.partition(", ETA")[0]
