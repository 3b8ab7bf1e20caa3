"""Calibration metrics for top-1 predictions: accuracy, ECE, ACE, MCE, PIECE, NLL.

Everything is computed over the whole evaluated set at once (never averaged per batch). Accuracy,
ECE, ACE, MCE, PIECE and mean confidence are returned as percentages (x100); NLL is the plain mean
negative log-likelihood in nats.

Inputs may live on any device and have any float dtype. Metric arithmetic (softmax, bin means,
sums) is done on the CPU in float64, so a trial's numbers do not depend on the device it ran on.

Equal-width bins (ECE, MCE, reliability diagrams, the confidence axis of PIECE)
--------------------------------------------------------------------------------
With ``n`` bins, bin ``b`` (0-based) covers the half-open interval ``(b/n, (b+1)/n]``, except that
bin 0 also holds confidence exactly 0: bin 0 is ``[0, 1/n]``. Confidence exactly 1.0 therefore
lies in the top bin ``(1 - 1/n, 1]``, as SPEC section 5 requires, and a confidence exactly on an
inner edge goes to the bin below it. This is the convention of Guo et al. (2017) ("On
Calibration of Modern Neural Networks", ``bin_lower < conf <= bin_upper``), which the
calibration literature's ECE code follows. ``ece``, ``mce``, ``reliability_bins`` and the
confidence axis of ``piece`` all use it through one helper, so their bins always agree.

The edge ``b/n`` is compared in the confidences' own dtype (``b/n`` rounded to that dtype), so a
float32 confidence of ``0.3`` (which is ``0.30000001192...``) counts as sitting on the edge 0.3
and falls in the bin below, just as a float64 ``0.3`` does.

Why not torchmetrics: ``torchmetrics.functional.classification.calibration_error`` (checked in
1.9.0) bins with ``torch.bucketize(conf, linspace(0, 1, n + 1), right=True) - 1``, i.e.
``[lo, hi)`` bins, and sends confidence exactly 1.0 to a hidden ``(n + 1)``-th bin of its own
rather than to the top bin (Lightning-AI/torchmetrics issue #3510). Softmax saturates to exactly
1.0 easily (CLIP's logit scale is 100), so that would change ECE and MCE against the spec; hence
these metrics are written here by hand.

Equal-mass bins (ACE, the proximity axis of PIECE)
--------------------------------------------------
Values are sorted ascending (stable sort) and the sorted positions are cut into ``n`` consecutive
groups the way ``numpy.array_split`` cuts them: with ``N`` samples the first ``N mod n`` groups
get ``N // n + 1`` samples and the rest ``N // n``. Ties are never split across bins: a run of
equal values goes wholly to the group of its first (lowest) sorted position, so with ties some
bins hold more samples and later bins fewer or none. Empty bins (also when ``N < n``) are skipped.
Bin membership therefore depends only on the values, never on the input order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ace",
    "calibration_report",
    "ece",
    "equal_mass_bin_index",
    "equal_width_bin_index",
    "harmonic_mean",
    "mce",
    "mce_weighted",
    "per_class_stats",
    "piece",
    "proximity_scores",
    "reliability_bins",
    "top1",
]


# --------------------------------------------------------------------------- input checks


def _check_n_bins(n_bins: int, name: str = "n_bins") -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"{name} must be a positive integer, got {n_bins!r}")


def _prepare(confidences: Tensor, correct: Tensor) -> tuple[Tensor, Tensor]:
    """Validate and move to CPU: confidences keep their float dtype, correct becomes float64 0/1."""
    confidences = torch.as_tensor(confidences).detach().cpu()
    correct = torch.as_tensor(correct).detach().cpu()
    if confidences.ndim != 1 or correct.ndim != 1:
        raise ValueError(
            f"confidences and correct must be 1-D, got shapes {tuple(confidences.shape)} and {tuple(correct.shape)}"
        )
    if confidences.numel() != correct.numel():
        raise ValueError(f"confidences and correct differ in length: {confidences.numel()} vs {correct.numel()}")
    if confidences.numel() == 0:
        raise ValueError("calibration metrics need at least one sample, got none")
    if not confidences.is_floating_point():
        confidences = confidences.to(torch.float64)
    if torch.isnan(confidences).any() or (confidences < 0).any() or (confidences > 1).any():
        raise ValueError("confidences must lie in [0, 1] (and not be NaN)")
    correct = correct.to(torch.float64)
    if not ((correct == 0) | (correct == 1)).all():
        raise ValueError("correct must hold only booleans or 0/1 values")
    return confidences, correct


# --------------------------------------------------------------------------- binning


def equal_width_bin_index(confidences: Tensor, n_bins: int) -> Tensor:
    """Bin index in ``[0, n_bins)`` of each confidence: bin ``b`` is ``(b/n, (b+1)/n]``, 0 in bin 0.

    Edges are ``b/n`` rounded to the confidences' dtype (see the module docstring).
    """
    _check_n_bins(n_bins)
    inner = (torch.arange(1, n_bins, dtype=torch.float64) / n_bins).to(confidences.dtype)
    # right=False: returns i with inner[i-1] < x <= inner[i], i.e. (lo, hi] bins; x <= 1/n -> 0,
    # x > (n-1)/n -> n-1 (so 1.0 lands in the top bin).
    return torch.bucketize(confidences.contiguous(), inner.to(confidences.device), right=False)


def equal_mass_bin_index(values: Tensor, n_bins: int) -> Tensor:
    """Bin index in ``[0, n_bins)`` of each value for (nearly) equal-mass bins.

    Sorted positions are split like ``numpy.array_split`` (the first ``N mod n_bins`` bins get one
    extra sample); a run of tied values goes wholly to the bin of its first sorted position, so ties
    are never split and the result does not depend on input order. Some bins may be empty.
    """
    _check_n_bins(n_bins)
    values = torch.as_tensor(values).detach().cpu()
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {tuple(values.shape)}")
    n = values.numel()
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.argsort(values, stable=True)
    sorted_vals = values[order]
    # Group of each sorted position under array_split.
    base, extra = divmod(n, n_bins)
    sizes = torch.tensor([base + 1] * extra + [base] * (n_bins - extra), dtype=torch.long)
    pos_group = torch.repeat_interleave(torch.arange(n_bins), sizes)
    # Ties: every member of a run of equal values takes the group of the run's first position.
    _, run_of_pos, run_len = torch.unique_consecutive(sorted_vals, return_inverse=True, return_counts=True)
    run_first = torch.cumsum(run_len, 0) - run_len
    sorted_group = pos_group[run_first][run_of_pos]
    index = torch.empty(n, dtype=torch.long)
    index[order] = sorted_group
    return index


def _bin_stats(index: Tensor, confidences: Tensor, correct: Tensor, n_bins: int):
    """Per-bin (count, accuracy, mean confidence) as float64; empty bins get 0 accuracy/confidence."""
    conf64 = confidences.to(torch.float64)
    count = torch.bincount(index, minlength=n_bins).to(torch.float64)
    conf_sum = torch.bincount(index, weights=conf64, minlength=n_bins)
    acc_sum = torch.bincount(index, weights=correct, minlength=n_bins)
    safe = count.clamp(min=1)
    return count, acc_sum / safe, conf_sum / safe


def _weighted_gap(index: Tensor, confidences: Tensor, correct: Tensor, n_bins: int) -> float:
    """``sum_b |B_b|/N * |acc_b - conf_b|`` over non-empty bins, as a fraction (not x100)."""
    count, acc, conf = _bin_stats(index, confidences, correct, n_bins)
    return float(((count / count.sum()) * (acc - conf).abs()).sum())


# --------------------------------------------------------------------------- metrics


def ece(confidences: Tensor, correct: Tensor, n_bins: int = 10) -> float:
    """Expected calibration error x100 with ``n_bins`` equal-width bins.

    ``ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|``; bins as in the module docstring.
    """
    confidences, correct = _prepare(confidences, correct)
    index = equal_width_bin_index(confidences, n_bins)
    return 100.0 * _weighted_gap(index, confidences, correct, n_bins)


def ace(confidences: Tensor, correct: Tensor, n_bins: int = 10) -> float:
    """Adaptive calibration error x100: ECE's weighted gap over ``n_bins`` equal-mass bins.

    Confidences are sorted and cut into ``n_bins`` consecutive groups of (nearly) equal size like
    ``numpy.array_split`` (the first ``N mod n_bins`` groups get one sample more). A run of tied
    confidences is never split: it joins the group of its first sorted position, so later groups
    may shrink or be empty; empty groups are skipped. This is the top-label (max-probability) ACE.
    """
    confidences, correct = _prepare(confidences, correct)
    index = equal_mass_bin_index(confidences, n_bins)
    return 100.0 * _weighted_gap(index, confidences, correct, n_bins)


def mce(confidences: Tensor, correct: Tensor, n_bins: int = 10) -> float:
    """Maximum calibration error x100: the largest ``|acc_b - conf_b|`` over non-empty equal-width bins.

    Unweighted (Guo et al. 2017; Naeini et al. 2015), with the same bins as ``ece``.
    """
    confidences, correct = _prepare(confidences, correct)
    index = equal_width_bin_index(confidences, n_bins)
    count, acc, conf = _bin_stats(index, confidences, correct, n_bins)
    gaps = (acc - conf).abs()[count > 0]
    return 100.0 * float(gaps.max())


def mce_weighted(confidences: Tensor, correct: Tensor, n_bins: int = 10) -> float:
    """DAC's "MCE" x100: the largest *sample-weighted* gap ``|B_b|/N * |acc_b - conf_b|`` over the
    equal-width bins (``tools/metrics.py`` of ml-stat-Sustech/CLIP_Calibration). Not the textbook
    MCE (``mce``): reported under its own name so that the two are never compared."""
    confidences, correct = _prepare(confidences, correct)
    index = equal_width_bin_index(confidences, n_bins)
    count, acc, conf = _bin_stats(index, confidences, correct, n_bins)
    return 100.0 * float((count / count.sum() * (acc - conf).abs()).max())


def piece(
    confidences: Tensor,
    correct: Tensor,
    proximity: Tensor,
    n_conf_bins: int = 10,
    n_prox_bins: int = 10,
) -> float:
    """Proximity-informed expected calibration error x100 (Xiong et al., NeurIPS 2023).

    Samples are binned jointly by confidence (``n_conf_bins`` equal-width bins, as ``ece``) and by
    proximity (``n_prox_bins`` equal-mass bins over the whole set, as ``ace``); PIECE is
    ``sum |B_ij|/N * |acc(B_ij) - conf(B_ij)|`` over the non-empty joint bins. Each confidence bin
    is a union of joint bins, so PIECE >= ECE with the same confidence bins, and the two are equal
    when every proximity group within a confidence bin has the same gap sign.
    """
    confidences, correct = _prepare(confidences, correct)
    proximity = torch.as_tensor(proximity).detach().cpu()
    if proximity.ndim != 1 or proximity.numel() != confidences.numel():
        raise ValueError(
            f"proximity must be 1-D with one value per sample ({confidences.numel()}), "
            f"got shape {tuple(proximity.shape)}"
        )
    if torch.isnan(proximity.to(torch.float64)).any():
        raise ValueError("proximity must not contain NaN")
    _check_n_bins(n_prox_bins, "n_prox_bins")
    conf_index = equal_width_bin_index(confidences, n_conf_bins)
    prox_index = equal_mass_bin_index(proximity, n_prox_bins)
    joint = conf_index * n_prox_bins + prox_index
    return 100.0 * _weighted_gap(joint, confidences, correct, n_conf_bins * n_prox_bins)


def reliability_bins(confidences: Tensor, correct: Tensor, n_bins: int = 10) -> dict[str, list]:
    """Data of a reliability diagram (the fields of ``workers.spec.ReliabilityBins``).

    Returns ``edges`` (``n_bins + 1`` floats ``b/n_bins``), and per bin ``count`` (ints, summing to
    N), ``accuracy`` and ``confidence`` as fractions in [0, 1] (same scale as ``edges``, not x100).
    Empty bins get count 0 and accuracy/confidence 0.0. Bins are the ones ``ece`` uses.
    """
    confidences, correct = _prepare(confidences, correct)
    index = equal_width_bin_index(confidences, n_bins)
    count, acc, conf = _bin_stats(index, confidences, correct, n_bins)
    return {
        "edges": [b / n_bins for b in range(n_bins + 1)],
        "count": [int(c) for c in count.tolist()],
        "accuracy": [float(a) for a in acc.tolist()],
        "confidence": [float(c) for c in conf.tolist()],
    }


def _prepare_logits(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    logits = torch.as_tensor(logits).detach().cpu().to(torch.float64)
    labels = torch.as_tensor(labels).detach().cpu()
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, C], got shape {tuple(logits.shape)}")
    if labels.ndim != 1 or labels.numel() != logits.shape[0]:
        raise ValueError(
            f"labels must be 1-D with one label per row of logits ({logits.shape[0]}), got shape {tuple(labels.shape)}"
        )
    if logits.shape[0] == 0:
        raise ValueError("calibration metrics need at least one sample, got none")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.to(torch.long)
    if (labels < 0).any() or (labels >= logits.shape[1]).any():
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}) (the number of classes)")
    if not torch.isfinite(logits).all():
        raise ValueError("logits must be finite")
    return logits, labels


def top1(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Top-1 confidence (max softmax probability, float64, CPU) and correctness (bool) per sample.

    The same values ``calibration_report`` bins; pass them to ``reliability_bins`` to get a
    diagram whose bins agree exactly with the report's ECE. Ties in the argmax go to the lowest
    class index.
    """
    logits, labels = _prepare_logits(logits, labels)
    probs = logits.softmax(dim=1)
    pred = probs.argmax(dim=1)
    conf = probs.gather(1, pred[:, None]).squeeze(1)
    return conf, pred == labels


def calibration_report(
    logits: Tensor,
    labels: Tensor,
    n_bins: int = 10,
    proximity: Tensor | None = None,
    *,
    n_prox_bins: int = 10,
) -> dict[str, float]:
    """All calibration metrics of one evaluated set, from logits (logit scale already applied).

    Keys: ``acc``, ``ece``, ``ace``, ``mce``, ``mce_weighted`` (DAC's), ``confidence`` (mean max-probability), all x100;
    ``nll`` (mean cross-entropy, nats); and ``piece`` (x100) when ``proximity`` is given. ECE and
    MCE use ``n_bins`` equal-width bins, ACE ``n_bins`` equal-mass bins, PIECE ``n_bins``
    confidence bins x ``n_prox_bins`` proximity bins (same confidence bins as ECE, so
    PIECE >= ECE).
    """
    _check_n_bins(n_bins)
    logits, labels = _prepare_logits(logits, labels)
    conf, correct = top1(logits, labels)
    report = {
        "acc": 100.0 * float(correct.to(torch.float64).mean()),
        "ece": ece(conf, correct, n_bins),
        "ace": ace(conf, correct, n_bins),
        "mce": mce(conf, correct, n_bins),
        "mce_weighted": mce_weighted(conf, correct, n_bins),
        "nll": float(F.cross_entropy(logits, labels)),
        "confidence": 100.0 * float(conf.mean()),
    }
    if proximity is not None:
        report["piece"] = piece(conf, correct, proximity, n_bins, n_prox_bins)
    return report


def per_class_stats(logits: Tensor, labels: Tensor, classnames: Sequence[str]) -> list[dict]:
    """One row per class (label order, every class of ``classnames``) for ``workers.spec.ClassStat``.

    Row keys: ``label``, ``classname``, ``n`` (test samples whose true label is this class), ``acc``
    (share of them predicted correctly, x100) and ``confidence`` (their mean max-probability,
    x100). A class without samples gets n=0, acc=0.0, confidence=0.0.
    """
    logits, labels = _prepare_logits(logits, labels)
    n_classes = logits.shape[1]
    if len(classnames) != n_classes:
        raise ValueError(f"classnames has {len(classnames)} names but logits have {n_classes} classes")
    conf, correct = top1(logits, labels)
    n = torch.bincount(labels, minlength=n_classes)
    hits = torch.bincount(labels, weights=correct.to(torch.float64), minlength=n_classes)
    conf_sum = torch.bincount(labels, weights=conf, minlength=n_classes)
    safe = n.clamp(min=1).to(torch.float64)
    acc = 100.0 * hits / safe
    mean_conf = 100.0 * conf_sum / safe
    return [
        {
            "label": c,
            "classname": str(classnames[c]),
            "n": int(n[c]),
            "acc": float(acc[c]),
            "confidence": float(mean_conf[c]),
        }
        for c in range(n_classes)
    ]


def proximity_scores(
    test_features: Tensor,
    reference_features: Tensor,
    k: int = 5,
    *,
    chunk_size: int = 4096,
) -> Tensor:
    """Proximity of each test sample: ``exp(-mean L2 distance to its k nearest reference features)``.

    Features are used as given (normalise them first if that is wanted). Distances are computed
    on the test features' device in float32 (float64 if the features are float64), ``chunk_size``
    test rows at a time; the result has shape [N] and lives on that device. A reference row identical to a test
    row counts as a neighbour at distance 0, so pass reference features disjoint from the test set.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if test_features.ndim != 2 or reference_features.ndim != 2:
        raise ValueError(
            f"features must be [N, D] and [M, D], got {tuple(test_features.shape)} "
            f"and {tuple(reference_features.shape)}"
        )
    if test_features.shape[1] != reference_features.shape[1]:
        raise ValueError(f"feature dimensions differ: {test_features.shape[1]} vs {reference_features.shape[1]}")
    if reference_features.shape[0] < k:
        raise ValueError(
            f"k={k} nearest neighbours requested but there are only {reference_features.shape[0]} reference features"
        )
    dtype = torch.promote_types(test_features.dtype, torch.float32)
    device = test_features.device
    ref = reference_features.detach().to(device=device, dtype=dtype)
    out = []
    with torch.no_grad():
        for start in range(0, test_features.shape[0], chunk_size):
            x = test_features[start : start + chunk_size].detach().to(dtype)
            dist = torch.cdist(x, ref)
            nearest = dist.topk(k, dim=1, largest=False).values
            out.append(torch.exp(-nearest.mean(dim=1)))
    if not out:
        return torch.zeros(0, dtype=dtype, device=device)
    return torch.cat(out)


def harmonic_mean(a: float, b: float) -> float:
    """``2ab / (a + b)``; 0.0 when ``a + b == 0``."""
    a, b = float(a), float(b)
    return 0.0 if a + b == 0 else 2.0 * a * b / (a + b)
