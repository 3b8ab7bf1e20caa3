"""Post-hoc calibrators, the baselines a calibration method is compared with: fitted on held-out
logits (never the test split), then applied to the test logits.

Temperature scaling (Guo et al., ICML 2017): one temperature T > 0 for every class, the T that
minimises the negative log-likelihood of ``softmax(logits / T)`` on the fitting set. NLL is convex
in 1/T, so a bounded search over log T finds its minimum; golden-section search needs no
gradients and no learning rate, and gives the same T on every machine.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Temperatures searched: log T in [log 0.01, log 100] (CLIP's logits are already scaled by ~100).
LOG_T_RANGE = (math.log(0.01), math.log(100.0))


def nll_at(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean cross-entropy of ``softmax(logits / temperature)`` (float64)."""
    return float(F.cross_entropy(logits.double() / temperature, labels.long()))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, tolerance: float = 1e-6) -> float:
    """The temperature minimising ``nll_at`` on ``(logits, labels)`` (golden-section search on log T).

    Raises:
        ValueError: no samples to fit on.
    """
    if len(labels) == 0:
        raise ValueError("temperature scaling needs at least one held-out sample to fit on")
    ratio = (math.sqrt(5) - 1) / 2
    low, high = LOG_T_RANGE
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll_at(logits, labels, math.exp(a)), nll_at(logits, labels, math.exp(b))
    while high - low > tolerance:
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll_at(logits, labels, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll_at(logits, labels, math.exp(b))
    return math.exp((low + high) / 2)


#: DAC's neighbours: the ``k`` base classes nearest a class's text feature (its ``CALIBRATION.DAC.K``).
DAC_K = 5
#: A class whose tuned text feature lies this close to a base class's is that base class: unscaled.
DAC_SAME_CLASS = 0.05


def dac_scales(
    base_zeroshot: torch.Tensor,
    classes_zeroshot: torch.Tensor,
    base_tuned: torch.Tensor,
    classes_tuned: torch.Tensor,
    k: int = DAC_K,
) -> torch.Tensor:
    """Distance-Aware Calibration (Wang et al., ICML 2024): one logit scale per scored class, the
    ratio of its closeness to the base classes after tuning to its closeness before, closeness
    being ``exp(-mean distance to its k nearest base classes)`` between normalised text features;
    1 for a class that is a base class (its tuned feature within ``DAC_SAME_CLASS`` of one)."""

    def closeness(base: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        distances = torch.cdist(classes.double(), base.double()).topk(min(k, len(base)), largest=False).values
        return (-distances.mean(dim=1)).exp(), distances[:, 0]

    zeroshot, _ = closeness(base_zeroshot, classes_zeroshot)
    tuned, nearest = closeness(base_tuned, classes_tuned)
    return torch.where(nearest < DAC_SAME_CLASS, torch.ones_like(tuned), tuned / zeroshot).float()


def apply_dac(logits: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Each sample's logits times the scale of the class it predicts."""
    return logits * scales[logits.argmax(dim=1)][:, None]
