"""The shipped micro-CLIP still gives the zero-shot numbers recorded when it was trained."""

from __future__ import annotations

import json

import pytest

from workers.models.clip import SHIPPED_WEIGHTS, default_pretrained, load_clip
from workers.models.pretrain import zero_shot_report

WEIGHTS = SHIPPED_WEIGHTS["micro-clip"]["shapes"]


def test_shipped_weights_are_small_half_precision_and_recorded():
    record = json.loads(WEIGHTS.with_suffix(".json").read_text())
    assert WEIGHTS.stat().st_size < 20 * 2**20
    assert record["weights"]["dtype"] == "float16"
    assert record["config"]["seed"] == 0 and record["config"]["init_logit_scale"] == 50.0
    assert default_pretrained("micro-clip") == "shapes"


def test_shipped_weights_reproduce_recorded_zero_shot_numbers():
    record = json.loads(WEIGHTS.with_suffix(".json").read_text())["zero_shot"]
    clip = load_clip("micro-clip", "shapes")
    assert clip.logit_scale == pytest.approx(49.59, abs=0.05)  # log-scale stored in fp16
    report = zero_shot_report(clip)
    for key in ("held_out_30way", "all_100way_on_held_out", "seen_30way"):
        assert report[key]["accuracy"] == pytest.approx(record[key]["accuracy"], abs=0.2)
        assert report[key]["ece"] == pytest.approx(record[key]["ece"], abs=0.2)
    # real zero-shot transfer to combinations never seen in pretraining
    assert report["held_out_30way"]["accuracy"] > 80
