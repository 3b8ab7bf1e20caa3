"""Temperature scaling against its definition: the T of least validation NLL, found by brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.metrics import calibration_report
from workers.metrics.posthoc import fit_temperature, nll_at


def overconfident(n: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from ``softmax(logits)`` (calibrated at T = 1), shown as ``3 * logits``: a
    model three times too sure of itself."""
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(n, classes, generator=g)
    labels = torch.multinomial(logits.softmax(1), 1, generator=g).squeeze(1)
    return 3 * logits, labels


def test_the_fitted_temperature_is_the_one_of_least_nll():
    logits, labels = overconfident(400, 20, seed=0)
    fitted = fit_temperature(logits, labels)
    grid = np.exp(np.linspace(np.log(0.01), np.log(100), 20001))
    brute = grid[np.argmin([nll_at(logits, labels, t) for t in grid])]
    assert fitted == pytest.approx(brute, rel=1e-3)
    assert fitted > 2  # cooled down, close to the 3 it was heated by


def test_fitted_on_held_out_data_it_lowers_test_ece_and_keeps_accuracy():
    val, val_labels = overconfident(500, 20, seed=1)
    test, test_labels = overconfident(2000, 20, seed=2)
    t = fit_temperature(val, val_labels)
    before, after = calibration_report(test, test_labels), calibration_report(test / t, test_labels)
    assert after["acc"] == before["acc"] and after["ece"] < before["ece"] / 2


def test_nothing_to_fit_on_is_an_error():
    with pytest.raises(ValueError, match="at least one held-out sample"):
        fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
