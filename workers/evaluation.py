"""From test-split logits to the trial's metrics, per-class stats and reliability bins."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from workers.catalog import TEST_AVERAGED
from workers.metrics import calibration_report, harmonic_mean, per_class_stats, reliability_bins, top1
from workers.spec import ClassStat, ReliabilityBins

#: PIECE's neighbours and reference images per dataset, as DAC configures them (its
#: ``configs/datasets/imagenet.yaml`` sets ``IMAGE_K: 10``; its ImageNet has val = test, as CoOp's).
PIECE_SETUP = {"imagenet": (10, "test")}
PIECE_DEFAULT = (5, "val")


def piece_setup(dataset: str) -> tuple[int, str]:
    """``(k, reference)`` for PIECE's proximity: k nearest neighbours among the base-class
    ``val`` (few-shot validation) or ``test`` images."""
    return PIECE_SETUP.get(dataset, PIECE_DEFAULT)


@dataclass
class SplitScores:
    """Predictions on one test split (base, new or all)."""

    split: str
    logits: torch.Tensor
    labels: torch.Tensor
    classnames: list[str]
    proximity: torch.Tensor | None = None


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
