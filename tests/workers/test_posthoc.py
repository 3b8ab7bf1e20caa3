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


def dac_by_definition(base_zs, cur_zs, base_ft, cur_ft, k=5):
    """DAC's class scales written out from its definition, one class at a time (numpy)."""
    scales = []
    for i in range(len(cur_zs)):
        zs = np.sort(np.linalg.norm(base_zs - cur_zs[i], axis=1))[:k]
        ft = np.sort(np.linalg.norm(base_ft - cur_ft[i], axis=1))[:k]
        scales.append(1.0 if ft[0] < 0.05 else np.exp(-ft.sum() / k) / np.exp(-zs.sum() / k))
    return np.array(scales)


def test_dac_matches_its_definition_on_a_tiny_clip():
    from workers.datasets import load_trial_data
    from workers.methods import METHODS
    from workers.metrics.posthoc import apply_dac, dac_scales
    from workers.models.clip import load_clip

    clip = load_clip("micro-clip", "shapes", device="cpu")
    data = load_trial_data("shapes", None, shots=1, seed=1)
    zeroshot = METHODS.get("zeroshot").method().build(clip, data.base_classnames, data.name, data.template, {})
    card = METHODS.get("coop")
    torch.manual_seed(0)
    tuned = card.method().build(clip, data.base_classnames, data.name, "", {**card.defaults, "n_ctx": 4})
    with torch.no_grad():
        feats = {
            (split, kind): torch.nn.functional.normalize(model.encode_names(names).float(), dim=-1)
            for split, names in (("base", data.base_classnames), ("new", data.new_classnames))
            for kind, model in (("zs", zeroshot), ("ft", tuned))
        }
    for split in ("base", "new"):
        args = (feats["base", "zs"], feats[split, "zs"], feats["base", "ft"], feats[split, "ft"])
        got = dac_scales(*args)
        want = dac_by_definition(*(a.numpy().astype(np.float64) for a in args))
        assert got.numpy() == pytest.approx(want, rel=1e-5)
        if split == "base":
            assert (got == 1).all()  # a base class is its own nearest base class: left as it is
        else:
            assert not torch.allclose(got, torch.ones_like(got))
    logits = torch.randn(6, len(data.new_classnames))
    scales = dac_scales(feats["base", "zs"], feats["new", "zs"], feats["base", "ft"], feats["new", "ft"])
    scaled = apply_dac(logits, scales)
    for row, out in zip(logits, scaled):
        assert torch.allclose(out, row * scales[row.argmax()])
