"""The shipped micro-CLIP still gives the zero-shot numbers recorded when it was trained."""

from __future__ import annotations

import json

import pytest

from pretraining.micro_clip import zero_shot_report
from workers.models.clip import load_clip
from workers.models.names import SHIPPED_WEIGHTS, default_pretrained

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


def test_recipe_matches_the_demo_and_applies_only_to_shipped_weights():
    from pathlib import Path

    from orchestrator.benchmark.planning import validate_file
    from workers.methods import METHODS
    from workers.models.names import tuning_recipe

    recipe = tuning_recipe("micro-clip", "shapes", "coop")
    assert recipe["shots"] == 4
    assert recipe["options"] == {
        "augment_views": 8,
        "min_crop_scale": 1.0,
        "epochs": 200,
        "lr": 0.05,
        "n_ctx": 4,
        "ctx_init": "a photo of a",
    }
    _, trials, _ = validate_file(Path(__file__).parents[2] / "examples" / "demo.yaml")
    coop = next(t.spec for t in trials if t.spec.method == "coop")
    defaults = METHODS.get("coop").defaults
    assert coop.shots == recipe["shots"]
    assert {k: coop.method_options.get(k, defaults.get(k)) for k in recipe["options"]} == recipe["options"]
    assert tuning_recipe("micro-clip", "shapes", "kgcoop")["options"] == {"augment_views": 8, "min_crop_scale": 1.0}
    assert tuning_recipe("micro-clip", "/some/other.pt", "coop") == {}
    assert tuning_recipe("ViT-B-16", "openai", "coop") == {}


def test_trial_command_uses_the_recipe_and_flags_override_it(capsys):
    from orchestrator.cli import main

    code = main(
        [
            "trial",
            "--method",
            "coop",
            "--model",
            "micro-clip",
            "--dataset",
            "demo",
            "--epochs",
            "1",
            "--test-per-class",
            "2",
            "--quiet",
            "--json",
        ]
    )
    out = capsys.readouterr()
    spec = json.loads(out.out)["spec"]
    assert code == 0 and spec["shots"] == 4
    assert spec["method_options"]["epochs"] == 1 and spec["method_options"]["lr"] == 0.05
    assert spec["method_options"]["ctx_init"] == "a photo of a"
    assert "micro-clip/shapes recipe for coop" in out.err
    code = main(
        [
            "trial",
            "--method",
            "coop",
            "--model",
            "micro-clip",
            "--dataset",
            "demo",
            "--epochs",
            "1",
            "--shots",
            "1",
            "--test-per-class",
            "2",
            "--quiet",
            "--json",
            "--no-recipe",
        ]
    )
    out = capsys.readouterr()
    assert code == 0 and json.loads(out.out)["spec"]["method_options"] == {"epochs": 1}
    assert "recipe" not in out.err
