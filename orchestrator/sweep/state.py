"""A sweep's saved Tune state, kept resumable when the driver dies while writing it.

Tune rewrites a sweep's experiment state (``experiment_state-*.json``: its trials and their
status) in place, truncating it first (the searcher's state it writes atomically). A driver
killed meanwhile (kill -9, its node lost) leaves an empty or cut-off file, and Tune, unable to
read it, silently starts the whole sweep again. So the sweep's callback keeps the last complete
copy (``StateCopies``), and a resume puts it back first (``repair``): at worst the sweep resumes
from the state of a step before, whose unfinished trials continue from their checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

from workers.errors import DorBenchError
from workers.paths import atomic_write_bytes

#: Tune's experiment state files in a sweep's folder (one per driver session).
PATTERN = "experiment_state-*.json"
#: Where the complete copies live, inside the sweep's folder (a name no Tune pattern matches).
COPIES = ".state-copies"
SUFFIX = ".complete"


def state_files(folder: Path) -> list[Path]:
    """Tune's experiment state files of the sweep in ``folder``."""
    return sorted(path for path in folder.glob(PATTERN) if path.is_file())


def complete(data: bytes) -> bool:
    """Whether ``data`` is a whole JSON document (what Tune reads back)."""
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


class StateCopies:
    """The last complete copy of each of a sweep's state files, refreshed when a file changes."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.seen: dict[str, tuple[int, int]] = {}  # file name -> (mtime ns, size) last looked at

    def keep(self) -> None:
        for path in state_files(self.folder):
            try:
                stat = path.stat()
                if self.seen.get(path.name) == (stat.st_mtime_ns, stat.st_size):
                    continue
                data = path.read_bytes()
            except OSError:  # replaced while we looked: the next step sees it
                continue
            self.seen[path.name] = (stat.st_mtime_ns, stat.st_size)
            if complete(data):  # a file Tune is still writing waits for the next step
                atomic_write_bytes(self.folder / COPIES / (path.name + SUFFIX), data)


def repair(folder: Path) -> list[str]:
    """Put back the last complete copy of each state file in ``folder`` that Tune could not read;
    the names of those put back. Raises DorBenchError for an unreadable file without a copy."""
    repaired = []
    for path in state_files(folder):
        if complete(path.read_bytes()):
            continue
        copy = folder / COPIES / (path.name + SUFFIX)
        if not copy.is_file():
            raise DorBenchError(
                f"The sweep's saved Tune state {path} cannot be read (the driver stopped while writing it), "
                "and no complete copy of it was kept.",
                "run the same command with --fresh to start the sweep over (its finished trials' runs stay in MLflow).",
            )
        atomic_write_bytes(path, copy.read_bytes())
        repaired.append(path.name)
    return repaired
