"""Trials for tests: one killed after an epoch, then resumed from its checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from workers.spec import TrialResult
from workers.trial import run_trial


class Killed(Exception):
    """Raised from the epoch callback: the trial stops as a killed worker would."""


def killed_then_resumed(spec: Any, checkpoints: Path, after_epoch: int) -> tuple[TrialResult, list[int]]:
    """Run ``spec`` with a checkpoint per epoch, kill it once epoch ``after_epoch`` has ended,
    run it again; returns the resumed result and the epochs the second run trained."""

    def die(epoch: int, row: dict[str, float]) -> None:
        if epoch == after_epoch:
            raise Killed

    options = {"progress": False, "checkpoint_dir": str(checkpoints)}
    with pytest.raises(Killed):
        run_trial(spec, options, on_epoch=die)
    seen: list[int] = []
    resumed = run_trial(spec, options, on_epoch=lambda epoch, row: seen.append(epoch))
    return resumed, seen
