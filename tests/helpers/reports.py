"""Trials with known metrics, logged into a real MLflow store the way `dor-bench run` logs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from orchestrator.tracking import Tracker
from workers.metrics.calibration import harmonic_mean
from workers.spec import DorSpec, ReliabilityBins, TrialResult, TrialSpec


def store(folder: Path, experiment: str) -> tuple[str, Tracker]:
    """A sqlite store in ``folder`` whose experiment keeps its artifacts there too."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment, artifact_location=(folder / "artifacts").as_uri())
    return uri, Tracker(uri, experiment)


def spec(method: str, dataset: str, seed: int, lam: float | None = None, **fields) -> TrialSpec:
    return TrialSpec(
        method=method,
        dataset=dataset,
        seed=seed,
        model="ViT-B-16",
        pretrained="openai",
        dor=DorSpec(lam=lam) if lam is not None else None,
        **fields,
    )


def b2n_metrics(base_acc: float, new_acc: float, base_ece: float, new_ece: float) -> dict[str, float]:
    """The final metrics a base-to-new trial reports (evaluation.evaluate's keys)."""
    return {
        "base/acc": base_acc,
        "new/acc": new_acc,
        "hm": harmonic_mean(base_acc, new_acc),
        "base/ece": base_ece,
        "new/ece": new_ece,
        "avg/ece": (base_ece + new_ece) / 2,
        "base/ace": base_ece + 1,
        "new/ace": new_ece + 1,
        "avg/ace": (base_ece + new_ece) / 2 + 1,
        "avg/acc": (base_acc + new_acc) / 2,
    }


def bins(counts: list[int], acc: list[float], conf: list[float]) -> ReliabilityBins:
    k = len(counts)
    return ReliabilityBins(edges=[i / k for i in range(k + 1)], count=counts, accuracy=acc, confidence=conf)


def log_trial(
    tracker: Tracker,
    parent: str,
    trial_spec: TrialSpec,
    metrics: dict[str, float] | None,
    error: str | None = None,
    reliability: dict[str, ReliabilityBins] | None = None,
    info: dict[str, Any] | None = None,
) -> str:
    """One child run: FINISHED with ``metrics`` (and run ``info``, e.g. its cost), or FAILED with
    ``error`` when metrics is None."""
    name = f"{trial_spec.method}{'+dor' if trial_spec.dor else ''}/{trial_spec.dataset}/seed{trial_spec.seed}"
    result = (
        None
        if metrics is None
        else TrialResult(
            spec=trial_spec,
            metrics=metrics,
            reliability=reliability or {},
            history=[{"epoch": 1, "train/loss": 1.0}],
            info=info or {},
        )
    )
    return tracker.record(parent, name, trial_spec, result, error)
