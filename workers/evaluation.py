"""From test-split logits to the trial's metrics, per-class stats and reliability bins."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from workers.catalog import TARGET_AVERAGED, TEST_AVERAGED
from workers.datasets.sampling import SplitNeeds
from workers.methods import METHODS
from workers.metrics import calibration_report, harmonic_mean, per_class_stats, reliability_bins, top1
from workers.spec import ClassStat, ReliabilityBins, TrialSpec

#: PIECE's neighbours and reference images per dataset, as DAC configures them (its
#: ``configs/datasets/imagenet.yaml`` sets ``IMAGE_K: 10``; its ImageNet has val = test, as CoOp's).
PIECE_SETUP = {"imagenet": (10, "test")}
PIECE_DEFAULT = (5, "val")


def piece_setup(dataset: str) -> tuple[int, str]:
    """``(k, reference)`` for PIECE's proximity: k nearest neighbours among the base-class
    ``val`` (few-shot validation) or ``test`` images."""
    return PIECE_SETUP.get(dataset, PIECE_DEFAULT)


def split_needs(spec: TrialSpec) -> SplitNeeds:
    """What ``spec``'s trial reads besides the test split: train images when its method trains;
    validation images of every trained class in tuning mode (each is scored), of some where
    PIECE's reference is the val images, else none."""
    tuning = spec.validation is not None
    reference = piece_setup(spec.dataset)[1]
    return SplitNeeds(
        train=METHODS.get(spec.method).trains,
        validation="each" if tuning else "some" if reference == "val" else "none",
    )


@dataclass
class SplitScores:
    """Predictions on one split: ``base``, ``new``, ``target/<dataset>`` (scored) or ``val``."""

    split: str
    logits: torch.Tensor
    labels: torch.Tensor
    classnames: list[str]
    proximity: torch.Tensor | None = None
    complete: bool = True  # False: logits rebuilt from a kept top-k (workers/outputs.py)


@dataclass
class Evaluation:
    metrics: dict[str, float] = field(default_factory=dict)
    per_class: list[ClassStat] = field(default_factory=list)
    reliability: dict[str, ReliabilityBins] = field(default_factory=dict)


def evaluate(splits: list[SplitScores], n_bins: int = 10) -> Evaluation:
    """Metrics keyed ``<split>/<metric>`` plus ``hm`` and ``avg/*`` when base and new are both there."""
    out = Evaluation()
    for s in splits:
        report = calibration_report(s.logits, s.labels, n_bins=n_bins, proximity=s.proximity)
        out.metrics.update({f"{s.split}/{k}": float(v) for k, v in report.items()})
        out.metrics[f"{s.split}/n"] = float(len(s.labels))
        out.per_class += [ClassStat(split=s.split, **row) for row in per_class_stats(s.logits, s.labels, s.classnames)]
        conf, correct = top1(s.logits, s.labels)
        out.reliability[s.split] = ReliabilityBins(**reliability_bins(conf, correct, n_bins=n_bins))
    m = out.metrics
    if "base/acc" in m and "new/acc" in m:
        m["hm"] = harmonic_mean(m["base/acc"], m["new/acc"])
        for name in TEST_AVERAGED:
            if f"base/{name}" in m and f"new/{name}" in m:
                m[f"avg/{name}"] = (m[f"base/{name}"] + m[f"new/{name}"]) / 2
    return out


def add_target_average(metrics: dict[str, float], targets: list[str]) -> None:
    """``target/avg/<m>``: the mean over the domain-shift targets (the paper's target average)."""
    for name in TARGET_AVERAGED:
        values = [metrics[f"target/{t}/{name}"] for t in targets if f"target/{t}/{name}" in metrics]
        if values:
            metrics[f"target/avg/{name}"] = sum(values) / len(values)
