"""``dor-bench rescore``: recompute the metrics of recorded trials from their kept per-sample
outputs (``outputs.npz``) with other settings (ECE bins), without training again. The new values
go into the same runs, labelled ``rescored/bins<N>/<metric>``; the originals are never touched."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from torch import Tensor

from orchestrator.console import log
from orchestrator.report.collect import open_experiment, search_child_runs
from orchestrator.tracking import RESCORED, TRIAL_NAME, quiet_mlflow
from workers.catalog import POSTHOC
from workers.evaluation import SplitScores, add_target_average, evaluate
from workers.metrics.posthoc import apply_dac, dac_scales, fit_temperature
from workers.outputs import OUTPUTS_FILE, read_outputs, read_text_features
from workers.spec import TrialSpec

#: Where temperature-scaled and DAC-scaled metrics go.
TEMPERATURE, DAC = POSTHOC["temperature"][0], POSTHOC["dac"][0]


def prefix(bins: int) -> str:
    """Where rescored metrics go: ``rescored/bins15/`` (a metric's name follows)."""
    return f"rescored/bins{bins}/"


def rescore(
    tracking_uri: str,
    experiment: str | None,
    bins: int,
    parent: str | None = None,
    temperature: bool = False,
    dac: bool = False,
) -> int:
    """Rescore every FINISHED trial of the experiment (of one parent run when given) that kept its
    outputs; returns how many were rescored. Runs recorded before outputs were kept are named.
    With ``temperature``, also temperature scaling fitted on each trial's base validation images
    (``posthoc/temperature/<metric>``, and the fitted ``posthoc/temperature/T``); with ``dac``,
    Distance-Aware Calibration from the trial's kept class text features (``posthoc/dac/<metric>``,
    base and new splits)."""
    quiet_mlflow()
    client, found = open_experiment(tracking_uri, experiment)
    runs = [r for r in search_child_runs(client, found.experiment_id, parent) if r.info.status == "FINISHED"]
    done = 0
    without: list[str] = []  # runs that kept no outputs
    unfit: list[str] = []  # runs a calibrator could not be applied to
    with tempfile.TemporaryDirectory(prefix="dor-bench-rescore-") as tmp:
        for run in runs:
            if OUTPUTS_FILE not in {a.path for a in client.list_artifacts(run.info.run_id)}:
                without.append(run.data.tags.get(TRIAL_NAME, run.info.run_id))
                continue
            path = Path(client.download_artifacts(run.info.run_id, OUTPUTS_FILE, tmp))
            spec = TrialSpec.model_validate_json(
                Path(client.download_artifacts(run.info.run_id, "trial_spec.json", tmp)).read_text()
            )
            splits = read_outputs(path)
            scored = [s for s in splits if s.split != "val"]
            metrics = {prefix(bins) + k: v for k, v in _metrics(scored, bins, spec).items()}
            if temperature:
                metrics.update(_temperature_scaled(splits, scored, bins, spec, unfit, run))
            if dac:
                metrics.update(_dac_scaled(scored, read_text_features(path), bins, spec, unfit, run))
            client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
            seen = run.data.tags.get(RESCORED, "")
            client.set_tag(run.info.run_id, RESCORED, ",".join(sorted({*seen.split(","), f"bins{bins}"} - {""})))
            done += 1
    log(f"[dor-bench] rescored {done} of {len(runs)} finished trials with {bins} ECE bins ({prefix(bins)}*)")
    if unfit:
        log(f"[dor-bench] not calibrated ({len(unfit)}; no complete logits or class features kept): {', '.join(unfit)}")
    if without:
        shown = ", ".join(without[:5]) + (f" and {len(without) - 5} more" if len(without) > 5 else "")
        log(f"[dor-bench] {len(without)} kept no outputs (recorded before dor-bench kept them): {shown}")
    return done


def _metrics(scored: list[SplitScores], bins: int, spec: TrialSpec) -> dict[str, float]:
    metrics = evaluate(scored, n_bins=bins).metrics
    add_target_average(metrics, spec.targets)
    return metrics


def _temperature_scaled(
    splits: list[SplitScores], scored: list[SplitScores], bins: int, spec: TrialSpec, unfit: list[str], run: Any
) -> dict[str, float]:
    """The trial's test metrics after temperature scaling fitted on its base validation logits
    (never on a test split); empty (and the run named in ``unfit``) without complete ones."""
    val = next((s for s in splits if s.split == "val"), None)
    if val is None or not val.complete or any(not s.complete for s in scored):
        unfit.append(run.data.tags.get(TRIAL_NAME, run.info.run_id))
        return {}
    t = fit_temperature(val.logits, val.labels)
    cooled = [replace(s, logits=s.logits / t) for s in scored]
    return {TEMPERATURE + "T": t, **{TEMPERATURE + k: v for k, v in _metrics(cooled, bins, spec).items()}}


def _dac_scaled(
    scored: list[SplitScores], text: dict[str, Tensor], bins: int, spec: TrialSpec, unfit: list[str], run: Any
) -> dict[str, float]:
    """The trial's base and new test metrics after DAC; empty (and the run named in ``unfit``)
    without kept class text features (an image-conditioned method keeps none)."""
    if "base/tuned" not in text or any(not s.complete for s in scored):
        unfit.append(run.data.tags.get(TRIAL_NAME, run.info.run_id))
        return {}
    scaled = []
    for s in scored:
        if f"{s.split}/tuned" in text:
            scales = dac_scales(
                text["base/zeroshot"], text[f"{s.split}/zeroshot"], text["base/tuned"], text[f"{s.split}/tuned"]
            )
            scaled.append(replace(s, logits=apply_dac(s.logits, scales)))
    metrics = evaluate(scaled, n_bins=bins).metrics
    return {DAC + k: v for k, v in metrics.items()}
