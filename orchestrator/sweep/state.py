"""A sweep's saved Tune state, kept resumable when the driver dies while writing it.

Tune saves a sweep's state in a staging folder on the driver and copies it into the sweep's
folder, in place (Ray's ``sync_up``; ``sync_down_experiment_state`` reads back every top-level
``.json`` and ``.pkl``): the experiment state (``experiment_state-*.json``: the trials and their
status) and the search algorithm's (``basic-variant-state-*.json``, ``search_gen_state-*.json``,
``searcher-state-*.pkl``: pickles, whatever their suffix). A driver killed during a copy (kill -9,
its node lost) leaves an empty or cut-off file, and Tune, unable to read it, silently starts the
whole sweep again (both seen in CI). The files belong together: a searcher state from one step
beside an experiment state from another can name a running trial the experiment has finished,
and a searcher limited to one trial at a time then waits for it forever.

So at the end of each step, when Tune has just written all of them into its staging folder, the
sweep's callback keeps them as one set (``StateCopies``); a resume that finds a file cut short
puts the whole set back first (``repair``): at worst the sweep resumes from the state of a step
before, whose unfinished trials continue from their checkpoints.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pickletools
from pathlib import Path

from workers.errors import DorBenchError
from workers.paths import atomic_write_bytes

#: The files Tune reads back from a sweep's folder to resume it (each driver session writes its own).
PATTERNS = ("*.json", "*.pkl")
#: The last complete set, one file inside the sweep's folder (a name no Tune pattern matches).
COPIES = ".state-copies"
SET_FILE = "state-set.json"


def state_files(folder: Path) -> list[Path]:
    """Tune's state files of the sweep in ``folder``."""
    return sorted(path for pattern in PATTERNS for path in folder.glob(pattern) if path.is_file())


def complete(data: bytes) -> bool:
    """Whether ``data`` is a whole JSON document or a whole pickle (its opcodes read to the STOP
    that ends it, without loading any object)."""
    try:
        json.loads(data)
        return True
    except ValueError:
        pass
    try:
        ops = list(pickletools.genops(data))
    except Exception:  # a cut-off pickle raises whatever its last opcode's reader meets
        return False
    return bool(ops) and ops[-1][0].name == "STOP" and ops[-1][2] == len(data) - 1


class StateCopies:
    """The last complete set of a sweep's state files, taken from Tune's staging folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.last: dict[str, str] = {}  # file name -> digest of the set last kept

    def keep(self, staging: Path) -> None:
        """Keep the state files in ``staging`` as one set, unless Tune has not written them yet
        or they are the set kept last."""
        files: dict[str, bytes] = {}
        for path in state_files(staging):
            try:
                files[path.name] = path.read_bytes()
            except OSError:  # replaced while we looked: the next step sees it
                return
        digests = {name: hashlib.blake2b(data, digest_size=16).hexdigest() for name, data in files.items()}
        if not files or digests == self.last or not all(map(complete, files.values())):
            return
        text = json.dumps({name: base64.b64encode(data).decode() for name, data in files.items()})
        atomic_write_bytes(self.folder / COPIES / SET_FILE, text.encode())
        self.last = digests


def repair(folder: Path) -> list[str]:
    """When a state file in ``folder`` cannot be read, put back the whole last complete set (and
    remove a cut-short file the set does not have: a later session's, never saved whole); the
    names of the files that were cut short. Raises DorBenchError when there is no set to put back."""
    broken = [path for path in state_files(folder) if not complete(path.read_bytes())]
    if not broken:
        return []
    kept = folder / COPIES / SET_FILE
    if not kept.is_file():
        raise DorBenchError(
            f"The sweep's saved Tune state {broken[0]} cannot be read (the driver stopped while writing it), "
            "and no complete copy of it was kept.",
            "run the same command with --fresh to start the sweep over (its finished trials' runs stay in MLflow).",
        )
    files = {name: base64.b64decode(data) for name, data in json.loads(kept.read_bytes()).items()}
    for path in broken:
        if path.name not in files:
            path.unlink()
    for name, data in files.items():
        atomic_write_bytes(folder / name, data)
    return [path.name for path in broken]
