"""Every method learns, with and without DOR, on the shipped micro-CLIP and the shapes data.

In the shapes world the zero-shot template is the pretraining caption template, so zero-shot
is already the best prompt of its family: tuning matches it on base classes but cannot beat it
(see README, "What the demo shows"). What must hold: the training loss falls and base accuracy
stays within a few points of zero-shot (a broken prompt encoder would fall to chance, 3.3%).
"""

from __future__ import annotations

import pytest

from workers.trial import run_trial

SETTINGS = {
    "coop": {"epochs": 15, "batch_size": 16, "augment_views": 2},
    "kgcoop": {"epochs": 15, "batch_size": 16, "augment_views": 2},
    "cocoop": {"epochs": 2, "batch_size": 1, "augment_views": 1, "lr": 0.01},
    "maple": {"epochs": 2, "batch_size": 8},
    "tcp": {"epochs": 6, "batch_size": 16, "augment_views": 2},
    "promptsrc": {"epochs": 2, "batch_size": 8},
}
BASE = {"dataset": "shapes", "model": "micro-clip", "pretrained": "shapes", "shots": 4, "seed": 1, "test_per_class": 10}


@pytest.fixture(scope="module")
def zero_shot_base_acc() -> float:
    return run_trial({**BASE, "method": "zeroshot"}, {"progress": False}).metrics["base/acc"]


@pytest.mark.parametrize("dor", [None, {"lam": 2.0, "pool_size": 300}], ids=["plain", "dor"])
@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_method_learns(method, dor, zero_shot_base_acc, dor_words):
    options = {**SETTINGS[method], "min_crop_scale": 1.0}
    spec = {**BASE, "method": method, "method_options": options}
    if dor:
        spec["dor"] = {**dor, "vocabulary": dor_words}
    result = run_trial(spec, {"progress": False})
    losses = [row["train/loss"] for row in result.history]
    assert losses[-1] < losses[0]
    assert result.metrics["base/acc"] > zero_shot_base_acc - 4
