"""Calibration metrics against hand-computed answers and known properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from workers.metrics import (
    ace,
    calibration_report,
    ece,
    equal_mass_bin_index,
    equal_width_bin_index,
    harmonic_mean,
    mce,
    per_class_stats,
    piece,
    proximity_scores,
    reliability_bins,
    top1,
)
from workers.spec import ClassStat, ReliabilityBins

F64 = torch.float64

# A small example worked by hand (10 equal-width bins, (lo, hi]).
#   conf     0.95 0.93 1.00 0.85 0.82 0.65 0.62 0.35
#   correct  1    1    0    1    0    1    1    0
# Bin 9 (0.9, 1.0]: 0.95 0.93 1.00 -> acc 2/3, conf 2.88/3 = 0.96, gap 0.29333, weight 3/8 -> 0.11
# Bin 8 (0.8, 0.9]: 0.85 0.82      -> acc 1/2, conf 0.835,        gap 0.335,   weight 2/8 -> 0.08375
# Bin 6 (0.6, 0.7]: 0.65 0.62      -> acc 1,   conf 0.635,        gap 0.365,   weight 2/8 -> 0.09125
# Bin 3 (0.3, 0.4]: 0.35           -> acc 0,   conf 0.35,         gap 0.35,    weight 1/8 -> 0.04375
# ECE = 0.32875 -> 32.875 ; MCE = max gap = 0.365 -> 36.5
# (Were 1.0 put in a bin of its own, as torchmetrics 1.9 does, bin 9 would give
#  2/8*|1-0.94| + 1/8*|0-1| = 0.14 instead of 0.11 and ECE would be 35.875.)
# ACE with 4 equal-mass bins of 2 (sorted):
#   [0.35 x, 0.62 v] acc .5 conf .485 gap .015 ; [0.65 v, 0.82 x] acc .5 conf .735 gap .235
#   [0.85 v, 0.93 v] acc 1  conf .89  gap .11  ; [0.95 v, 1.00 x] acc .5 conf .975 gap .475
#   ACE = (.015 + .235 + .11 + .475) / 4 = 0.20875 -> 20.875
CONF = torch.tensor([0.95, 0.93, 1.0, 0.85, 0.82, 0.65, 0.62, 0.35], dtype=F64)
CORRECT = torch.tensor([1, 1, 0, 1, 0, 1, 1, 0])


def test_hand_example_ece_mce_ace():
    assert ece(CONF, CORRECT, n_bins=10) == pytest.approx(32.875, abs=1e-9)
    assert mce(CONF, CORRECT, n_bins=10) == pytest.approx(36.5, abs=1e-9)
    assert ace(CONF, CORRECT, n_bins=4) == pytest.approx(20.875, abs=1e-9)


def test_hand_example_reliability_bins():
    rb = reliability_bins(CONF, CORRECT, n_bins=10)
    ReliabilityBins(**rb)  # fits the spec model
    assert rb["edges"] == pytest.approx([b / 10 for b in range(11)])
    assert rb["count"] == [0, 0, 0, 1, 0, 0, 2, 0, 2, 3]
    assert rb["accuracy"] == pytest.approx([0, 0, 0, 0, 0, 0, 1, 0, 0.5, 2 / 3])
    assert rb["confidence"] == pytest.approx([0, 0, 0, 0.35, 0, 0, 0.635, 0, 0.835, 0.96])


def test_input_order_does_not_matter():
    perm = torch.tensor([3, 7, 0, 5, 1, 6, 2, 4])
    assert ece(CONF[perm], CORRECT[perm]) == pytest.approx(32.875, abs=1e-9)
    assert ace(CONF[perm], CORRECT[perm], n_bins=4) == pytest.approx(20.875, abs=1e-9)


def test_confidence_one_is_in_top_bin():
    # 1.0 (wrong) and 0.95 (right) share the top bin: acc 0.5, conf 0.975 -> ECE = MCE = 47.5.
    # A separate bin for 1.0 would give 0.5*1 + 0.5*0.05 = 52.5 (ECE) and 100 (MCE).
    conf = torch.tensor([1.0, 0.95])
    correct = torch.tensor([False, True])
    assert ece(conf, correct) == pytest.approx(47.5, abs=1e-5)
    assert mce(conf, correct) == pytest.approx(47.5, abs=1e-5)
    rb = reliability_bins(conf, correct)
    assert rb["count"] == [0] * 9 + [2]
    assert equal_width_bin_index(torch.tensor([1.0]), 15).item() == 14


def test_bin_edges_are_lower_open_upper_closed():
    # n_bins=4: edges 0, .25, .5, .75, 1 are exact in binary; an edge value goes to the bin below.
    for dtype in (torch.float32, F64):
        conf = torch.tensor([0.0, 0.25, 0.2500001, 0.5, 0.75, 0.76, 1.0], dtype=dtype)
        assert equal_width_bin_index(conf, 4).tolist() == [0, 0, 1, 1, 2, 3, 3]
    # 0.3 and 0.7 in either precision sit on their (rounded) edge and go below.
    for dtype in (torch.float32, F64):
        conf = torch.tensor([0.3, 0.7, 0.30001, 0.05], dtype=dtype)
        assert equal_width_bin_index(conf, 10).tolist() == [2, 6, 3, 0]


def test_ece_mce_reliability_use_the_same_bins():
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(5000, generator=g, dtype=F64) * 0.9 + 0.1
    correct = torch.rand(5000, generator=g, dtype=F64) < conf**2
    rb = reliability_bins(conf, correct, n_bins=15)
    n = sum(rb["count"])
    assert n == 5000
    ece_from_bins = sum(c / n * abs(a - p) for c, a, p in zip(rb["count"], rb["accuracy"], rb["confidence"]))
    mce_from_bins = max(abs(a - p) for c, a, p in zip(rb["count"], rb["accuracy"], rb["confidence"]) if c > 0)
    assert ece(conf, correct, n_bins=15) == pytest.approx(100 * ece_from_bins, rel=1e-9)
    assert mce(conf, correct, n_bins=15) == pytest.approx(100 * mce_from_bins, rel=1e-9)
    # The data is overconfident (acc ~ conf^2), so the ECE is far from 0.
    assert ece(conf, correct, n_bins=15) > 10


def test_reliability_counts_sum_to_n_and_empty_bins_are_zero():
    conf = torch.tensor([0.91, 0.92, 0.55, 0.05, 1.0])
    correct = torch.tensor([1, 0, 1, 1, 1])
    rb = reliability_bins(conf, correct, n_bins=5)
    assert sum(rb["count"]) == 5
    assert rb["count"] == [1, 0, 1, 0, 3]
    assert rb["accuracy"][1] == 0.0 and rb["confidence"][1] == 0.0
    assert rb["accuracy"][4] == pytest.approx(2 / 3)
    assert rb["confidence"][4] == pytest.approx((0.91 + 0.92 + 1.0) / 3)


def test_agrees_with_torchmetrics_when_no_confidence_is_one():
    # Away from 1.0 and the bin edges the two binnings coincide, so the l1 ECE must agree.
    from torchmetrics.functional.classification.calibration_error import _ce_compute

    g = torch.Generator().manual_seed(1)
    conf = torch.rand(2000, generator=g, dtype=F64) * 0.98 + 0.01
    correct = (torch.rand(2000, generator=g, dtype=F64) < conf).to(F64)
    assert ece(conf, correct, 10) == pytest.approx(100 * float(_ce_compute(conf, correct, 10)), rel=1e-9)
    assert mce(conf, correct, 10) == pytest.approx(100 * float(_ce_compute(conf, correct, 10, norm="max")), rel=1e-9)


def test_equal_mass_bins_with_leftovers():
    # 7 samples, 3 bins -> sizes 3, 2, 2 (array_split: the first N mod 3 = 1 bin gets one extra).
    #   [.1 v, .2 x, .3 x] acc 1/3 conf .2  gap .13333 * 3 = .4
    #   [.4 v, .5 v]       acc 1   conf .45 gap .55    * 2 = 1.1
    #   [.6 x, .7 v]       acc .5  conf .65 gap .15    * 2 = .3
    #   ACE = 1.8 / 7 = 0.257142857 -> 25.7142857
    # (sizes 2, 2, 3 would give 1.2 / 7 = 17.14.)  Fed in shuffled order.
    conf = torch.tensor([0.5, 0.7, 0.1, 0.4, 0.3, 0.6, 0.2], dtype=F64)
    correct = torch.tensor([1, 1, 1, 1, 0, 0, 0])
    assert equal_mass_bin_index(conf, 3).tolist() == [1, 2, 0, 1, 0, 2, 0]
    assert ace(conf, correct, n_bins=3) == pytest.approx(100 * 1.8 / 7, abs=1e-9)


def test_equal_mass_bins_keep_ties_together():
    # Four equal confidences: one bin (acc .5, conf .5) -> ACE 0, whatever the input order.
    # Splitting the tie by input order would give bins [v v] and [x x]: ACE 50.
    conf = torch.full((4,), 0.5, dtype=F64)
    assert ace(conf, torch.tensor([1, 1, 0, 0]), n_bins=2) == pytest.approx(0.0, abs=1e-12)
    assert ace(conf, torch.tensor([0, 1, 0, 1]), n_bins=2) == pytest.approx(0.0, abs=1e-12)
    # A tie run straddling a cut goes to the bin of its first position:
    # sorted [.1, .2, .2, .2, .9, .9] with 3 bins -> positions 0-1 | 2-3 | 4-5 ->
    # .1 -> 0, all .2 -> 0 (first .2 is at position 1), both .9 -> 2 (bin 1 stays empty).
    vals = torch.tensor([0.2, 0.9, 0.1, 0.2, 0.9, 0.2])
    assert equal_mass_bin_index(vals, 3).tolist() == [0, 2, 0, 0, 2, 0]


def test_fewer_samples_than_bins():
    # Two samples, ten equal-mass bins: bins 0 and 1 hold one each, the rest are empty and skipped.
    conf = torch.tensor([0.6, 0.8], dtype=F64)
    correct = torch.tensor([1, 0])
    # |1 - .6| / 2 + |0 - .8| / 2 = 0.6 -> 60
    assert ace(conf, correct, n_bins=10) == pytest.approx(60.0, abs=1e-9)


def test_perfectly_calibrated_data_has_ece_near_zero():
    g = torch.Generator().manual_seed(2)
    n = 400_000
    conf = torch.rand(n, generator=g, dtype=F64) * 0.9 + 0.1
    correct = torch.rand(n, generator=g, dtype=F64) < conf
    assert ece(conf, correct) < 0.6
    assert ace(conf, correct) < 0.6
    # The same confidences with 10 points less accuracy: ECE ~ 10.
    overconfident = torch.rand(n, generator=g, dtype=F64) < conf - 0.1
    assert ece(conf, overconfident) == pytest.approx(10.0, abs=0.6)


def test_always_correct_with_confidence_one():
    conf = torch.ones(50)
    correct = torch.ones(50, dtype=torch.bool)
    assert ece(conf, correct) == 0.0
    assert ace(conf, correct) == 0.0
    assert mce(conf, correct) == 0.0
    # The same through logits: a margin of 100 saturates float64 softmax to exactly 1.
    logits = torch.zeros(50, 3)
    labels = torch.arange(50) % 3
    logits[torch.arange(50), labels] = 100.0
    report = calibration_report(logits, labels)
    assert report["acc"] == 100.0
    assert report["confidence"] == 100.0
    assert report["ece"] == 0.0 and report["ace"] == 0.0 and report["mce"] == 0.0


def test_mce_at_least_ece():
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        conf = torch.rand(300, generator=g, dtype=F64)
        correct = torch.rand(300, generator=g) < 0.6
        e, m = ece(conf, correct), mce(conf, correct)
        assert m >= e - 1e-9
    assert mce(CONF, CORRECT) > ece(CONF, CORRECT)


def test_piece_hand_example():
    # All four in one confidence bin (0.7, 0.8]: acc .5, conf .75 -> ECE 25.
    # Proximity splits them into low {x, x} and high {v, v} with 2 proximity bins:
    #   low: |0 - .75| * 2/4 = .375 ; high: |1 - .75| * 2/4 = .125 -> PIECE 50.
    conf = torch.full((4,), 0.75, dtype=F64)
    correct = torch.tensor([0, 1, 0, 1])
    prox = torch.tensor([0.1, 0.8, 0.2, 0.9])
    assert ece(conf, correct) == pytest.approx(25.0, abs=1e-9)
    assert piece(conf, correct, prox, n_conf_bins=10, n_prox_bins=2) == pytest.approx(50.0, abs=1e-9)
    # Proximity bins are equal-mass, whatever the scale: values 1, 2 | 3, 95 -> the same two groups
    # as above (50). Equal-width bins over [1, 95] would group {1, 2, 3} | {95} instead:
    # |1/3 - .75| * 3/4 + |1 - .75| * 1/4 = 0.375 -> 37.5.
    correct2 = torch.tensor([0, 0, 1, 1])
    prox2 = torch.tensor([1.0, 2.0, 3.0, 95.0])
    assert piece(conf, correct2, prox2, n_prox_bins=2) == pytest.approx(50.0, abs=1e-9)
    # Constant proximity is one proximity bin, so PIECE falls back to ECE.
    assert piece(conf, correct, torch.ones(4), n_prox_bins=2) == pytest.approx(25.0, abs=1e-9)


def test_piece_at_least_ece():
    g = torch.Generator().manual_seed(4)
    n = 3000
    prox = torch.rand(n, generator=g, dtype=F64)
    conf = torch.rand(n, generator=g, dtype=F64) * 0.8 + 0.2
    # Accuracy depends on proximity, not only on confidence: far samples are overconfident,
    # near ones underconfident, which the confidence bins alone average away.
    correct = torch.rand(n, generator=g, dtype=F64) < (conf + 0.4 * (prox - 0.5)).clamp(0, 1)
    e = ece(conf, correct)
    p = piece(conf, correct, prox)
    assert p > e + 5
    report = calibration_report(
        torch.randn(n, 5, generator=g, dtype=F64) * 3, torch.randint(0, 5, (n,), generator=g), proximity=prox
    )
    assert report["piece"] >= report["ece"] - 1e-9


def test_nll_equals_cross_entropy_and_report_fields():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(200, 7, generator=g) * 4
    labels = torch.randint(0, 7, (200,), generator=g)
    report = calibration_report(logits, labels, n_bins=15)
    assert set(report) == {"acc", "ece", "ace", "mce", "mce_weighted", "nll", "confidence"}
    assert report["nll"] == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-5)
    probs = logits.softmax(-1)
    assert report["acc"] == pytest.approx(100 * float((probs.argmax(-1) == labels).float().mean()))
    assert report["confidence"] == pytest.approx(100 * float(probs.max(-1).values.mean()), rel=1e-5)
    conf, correct = top1(logits, labels)
    assert report["ece"] == pytest.approx(ece(conf, correct, 15))
    assert report["ace"] == pytest.approx(ace(conf, correct, 15))
    assert report["mce"] == pytest.approx(mce(conf, correct, 15))
    with_prox = calibration_report(logits, labels, proximity=torch.rand(200, generator=g))
    assert "piece" in with_prox


def test_per_class_stats():
    # 3 classes; class 2 has no samples.
    logits = torch.tensor(
        [
            [2.0, 0.0, 0.0],  # label 0, predicted 0 (right)
            [0.0, 2.0, 0.0],  # label 0, predicted 1 (wrong)
            [0.0, 3.0, 0.0],  # label 1, predicted 1 (right)
            [0.0, 1.0, 0.0],  # label 1, predicted 1 (right)
            [5.0, 0.0, 0.0],  # label 1, predicted 0 (wrong)
        ]
    )
    labels = torch.tensor([0, 0, 1, 1, 1])
    rows = per_class_stats(logits, labels, ["cat", "dog", "owl"])
    p2 = math.exp(2) / (math.exp(2) + 2)
    p3 = math.exp(3) / (math.exp(3) + 2)
    p1 = math.exp(1) / (math.exp(1) + 2)
    p5 = math.exp(5) / (math.exp(5) + 2)
    assert [r["label"] for r in rows] == [0, 1, 2]
    assert [r["classname"] for r in rows] == ["cat", "dog", "owl"]
    assert [r["n"] for r in rows] == [2, 3, 0]
    assert [r["acc"] for r in rows] == pytest.approx([50.0, 200 / 3, 0.0])
    assert rows[0]["confidence"] == pytest.approx(100 * p2)
    assert rows[1]["confidence"] == pytest.approx(100 * (p3 + p1 + p5) / 3)
    assert rows[2]["confidence"] == 0.0
    ClassStat(split="base", **rows[0])  # fits the spec model
    with pytest.raises(ValueError):
        per_class_stats(logits, labels, ["cat", "dog"])


def test_harmonic_mean():
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(50.0, 50.0) == pytest.approx(50.0)
    assert harmonic_mean(100.0, 0.0) == 0.0
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_proximity_scores():
    ref = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.0, 2.0], [10.0, 0.0]])
    test = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    # Row 0: distances 5, 1, 2, 10 -> two nearest 1, 2 -> exp(-1.5).
    # Row 1: distances sqrt(65), sqrt(101), sqrt(104), 0 -> two nearest 0, sqrt(65).
    got = proximity_scores(test, ref, k=2)
    assert got.shape == (2,)
    assert got.tolist() == pytest.approx([math.exp(-1.5), math.exp(-math.sqrt(65) / 2)], rel=1e-5)
    # k=3 for row 0: (1 + 2 + 5) / 3.
    assert proximity_scores(test, ref, k=3)[0].item() == pytest.approx(math.exp(-8 / 3), rel=1e-5)
    # Chunking does not change the result.
    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(37, 8, generator=g), torch.randn(20, 8, generator=g)
    torch.testing.assert_close(proximity_scores(a, b, k=5, chunk_size=4), proximity_scores(a, b, k=5))
    with pytest.raises(ValueError):
        proximity_scores(test, ref, k=5)


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError):
        ece(torch.tensor([0.5, 1.2]), torch.tensor([1, 0]))
    with pytest.raises(ValueError):
        ece(torch.tensor([0.5]), torch.tensor([1, 0]))
    with pytest.raises(ValueError):
        ece(torch.tensor([]), torch.tensor([]))
    with pytest.raises(ValueError):
        ece(torch.tensor([0.5]), torch.tensor([2]))
    with pytest.raises(ValueError):
        ece(torch.tensor([0.5]), torch.tensor([1]), n_bins=0)
    with pytest.raises(ValueError):
        calibration_report(torch.zeros(2, 3), torch.tensor([0, 3]))


def test_the_catalog_lists_exactly_the_metrics_a_split_reports():
    """workers/catalog.py is every metric's one home: what calibration_report returns, no more."""
    from workers.catalog import NAMES, TEST_AVERAGED
    from workers.evaluation import SplitScores, evaluate

    g = torch.Generator().manual_seed(2)
    logits, labels = torch.randn(40, 5, generator=g) * 3, torch.randint(0, 5, (40,), generator=g)
    report = calibration_report(logits, labels, proximity=torch.rand(40, generator=g))
    assert set(report) == set(NAMES)
    names = [str(i) for i in range(5)]
    metrics = evaluate(
        [SplitScores(s, logits, labels, names, torch.rand(40, generator=g)) for s in ("base", "new")]
    ).metrics
    assert {k.removeprefix("avg/") for k in metrics if k.startswith("avg/")} == set(TEST_AVERAGED)
