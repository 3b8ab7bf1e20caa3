"""The Ray Tune trainable of a sweep: one Tune trial = one configuration, trained for each seed.

It runs in a Tune actor. It builds ordinary ``TrialSpec``s in tuning mode, calls the worker's
``run_trial`` and turns every epoch into one ``tune.report`` (``training_iteration`` = epochs
so far, over the seeds in order) with the objective and a checkpoint. The checkpoint folder holds
the worker's own per-epoch checkpoint (``<run_key>.pt``) and ``sweep_state.json`` (the reports
so far and each finished seed's final metrics), so a trial paused or interrupted anywhere resumes
where it stopped. Kept free of MLflow and plotting: only the driver records.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from orchestrator.translate.sweeps import plain_value, spec_from_tune
from workers.spec import RunOptions

STATE = "sweep_state.json"
#: Added to (min) or taken from (max) the objective of a trial that misses the floor, so it ranks
#: after every trial that meets it (and, among the misses, by its metric). A finite number keeps
#: ASHA's quantiles well defined.
FLOOR_PENALTY = 1e6


def plain_config(config: dict[str, Any]) -> dict[str, Any]:
    """A Tune config with plain Python values (JSON-ready)."""
    return {k: plain_value(v) for k, v in config.items()}


def score(metrics: dict[str, float], objective: dict[str, Any]) -> tuple[float, bool]:
    """``(objective value, floor met)``; a missed floor moves the value by FLOOR_PENALTY."""
    value = float(metrics[objective["metric"]])
    floor = objective.get("floor")
    met = True
    if floor:
        v = float(metrics[floor["metric"]])
        met = (floor.get("min") is None or v >= floor["min"]) and (floor.get("max") is None or v <= floor["max"])
    if met:
        return value, True
    return value + (FLOOR_PENALTY if objective["mode"] == "min" else -FLOOR_PENALTY), False


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over rows (the keys all rows share)."""
    keys = set(rows[0]).intersection(*rows[1:])
    return {k: statistics.fmean(r[k] for r in rows) for k in sorted(keys)}


def sweep_trial(
    config: dict[str, Any],
    *,
    base: dict[str, Any],
    seeds: list[int],
    objective: dict[str, Any],
    gpu_share: float | None = None,
) -> None:
    """Tune function trainable. Reports per epoch: the current seed's metrics (val/*, train/*,
    lr), ``seed``, ``epoch``, and ``objective`` / ``floor_met`` of the running mean over the seeds
    trained so far (the finished seeds' final metrics and the current seed's latest). ``gpu_share``:
    ``RunOptions.gpu_share`` (the trial shares its GPU with other trials)."""
    from workers.trial import run_trial

    work = Path(tempfile.mkdtemp(prefix="dor-bench-sweep-"))
    try:
        state: dict[str, Any] = {"config": config, "reports": [], "finals": [], "summary": {}}
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                shutil.copytree(folder, work, dirs_exist_ok=True)
            state = json.loads((work / STATE).read_text())
        options = RunOptions(checkpoint_dir=str(work), progress=False, device="auto", gpu_share=gpu_share)
        for seed in seeds[len(state["finals"]) :]:
            spec = spec_from_tune(base, config, seed)

            def on_epoch(epoch: int, row: dict[str, float], seed: int = seed) -> None:
                combined = mean_metrics([*state["finals"], row])
                value, met = score(combined, objective)
                report = {**row, "seed": float(seed), "objective": value, "floor_met": float(met)}
                state["reports"].append(report)
                state["summary"] = {**combined, "objective": value, "floor_met": float(met)}
                (work / STATE).write_text(json.dumps(state))
                tune.report(report, checkpoint=tune.Checkpoint.from_directory(str(work)))

            result = run_trial(spec, options, on_epoch=on_epoch)
            state["finals"].append(dict(result.metrics))
            (work / f"{spec.key()}.pt").unlink(missing_ok=True)
            (work / STATE).write_text(json.dumps(state))
    finally:
        shutil.rmtree(work, ignore_errors=True)
