"""The trial loop end to end on the built-in shapes data with a tiny random-init CLIP."""

from __future__ import annotations

import json

import pytest
import torch

from orchestrator.cli import main
from workers.trial import run_trial, warmup_cosine

TINY = {"dataset": "shapes", "model": "tiny-clip", "pretrained": None, "shots": 4}


def test_zero_shot_cli_prints_json_metrics(capsys):
    assert (
        main(
            [
                "trial",
                "--method",
                "zeroshot",
                "--dataset",
                "shapes",
                "--model",
                "tiny-clip",
                "--pretrained",
                "none",
                "--shots",
                "4",
                "--json",
                "--quiet",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    metrics = result["metrics"]
    for key in (
        "base/acc",
        "base/ece",
        "base/ace",
        "base/mce",
        "base/piece",
        "base/nll",
        "new/acc",
        "new/ece",
        "hm",
        "avg/ece",
    ):
        assert key in metrics
    # 30 base and 30 new classes, 50 test images each
    assert metrics["base/n"] == 1500 and metrics["new/n"] == 1500
    assert metrics["avg/ece"] == pytest.approx((metrics["base/ece"] + metrics["new/ece"]) / 2)
    assert {row["split"] for row in result["per_class"]} == {"base", "new"}
    assert len(result["per_class"]) == 60
    assert sum(result["reliability"]["base"]["count"]) == 1500


def test_second_trial_reads_image_features_from_cache():
    first = run_trial({**TINY, "seed": 1}, {"progress": False})
    second = run_trial({**TINY, "seed": 1}, {"progress": False})
    assert second.info["feature_cache_hits"]["test-base"] is True
    assert second.metrics == first.metrics


def test_warmup_then_cosine_schedule():
    f = warmup_cosine(epochs=10, warmup=1, warmup_factor=0.005)
    assert f(0) == 0.005
    assert f(1) == 1.0  # the first epoch after the warm-up runs at the full lr (Dassl, recount)
    assert f(2) == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi / 10)).item()))
    assert f(6) == pytest.approx(0.5)
