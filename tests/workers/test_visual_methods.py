"""CLIP-Adapter and VPT inside the trial loop, on the shapes data with a tiny random-init CLIP."""

from __future__ import annotations

import pytest
import torch

from orchestrator.settings.benchmark import BenchmarkError, parse_benchmark
from workers.errors import DorBenchError
from workers.methods import METHODS
from workers.models.clip import fingerprint
from workers.trial import run_trial

QUICK = {"dataset": "shapes", "model": "tiny-clip", "pretrained": None, "shots": 1, "seed": 2, "test_per_class": 2}


def trial(method: str, **options) -> dict:
    return {**QUICK, "method": method, "method_options": {"epochs": 2, "batch_size": 8, **options}}


@pytest.fixture
def built(monkeypatch) -> dict:
    """The model each trial builds, with its learnable state and CLIP's fingerprint at build."""
    seen: dict = {}
    for name in ("clip_adapter", "vpt"):
        cls = type(METHODS.get(name).method())
        original = cls.build

        def capture(self, clip, *args, _original=original, **kwargs):
            model = _original(self, clip, *args, **kwargs)
            seen.update(model=model, start={k: v.clone() for k, v in model.state_dict().items()})
            seen["clip"] = fingerprint(clip.model)
            return model

        monkeypatch.setattr(cls, "build", capture)
    return seen


@pytest.mark.parametrize("method", ["clip_adapter", "vpt"])
def test_trains_its_own_parameters_with_visual_dor_and_leaves_clip_alone(method, built):
    spec = {**trial(method), "dor": {"outliers_per_step": 4, "pool_size": 50}}
    result = run_trial(spec, {"progress": False})
    model = built["model"]
    assert len(result.history) == 2 and 0 <= result.metrics["new/acc"] <= 100
    learned = model.state_dict()
    assert learned.keys() == built["start"].keys()
    assert all(not torch.equal(learned[k], built["start"][k]) for k in learned)
    assert fingerprint(model.clip.model) == built["clip"]
    # DOR on outlier images, at the card's weight
    assert result.info["dor"]["outliers"] == "image" and result.info["dor"]["lambda"] == 1.0
    assert result.history[-1]["train/dor"] > 0
    # CLIP-Adapter's image encoder is frozen: its test features come from the cache
    assert ("test-base" in result.info["feature_cache_hits"]) == (method == "clip_adapter")


@pytest.mark.parametrize(
    "method,options,message",
    [
        ("clip_adapter", {"template": "a photo"}, "template must be one of dataset, photo"),
        ("clip_adapter", {"reduction": 0}, "reduction must be >= 1"),
        ("clip_adapter", {"reduction": 128}, "no hidden units"),
        ("clip_adapter", {"ratio": -0.5}, "ratio must be >= 0"),
        ("vpt", {"prompt_depth": 0}, "prompt_depth must be >= 1"),
        ("vpt", {"n_ctx": 1.5}, "n_ctx must be an integer"),
        ("vpt", {"ctx_init": "a photo of a"}, "Unknown option"),
    ],
)
def test_options_are_checked(method, options, message):
    with pytest.raises(DorBenchError, match=message):
        run_trial(trial(method, **options), {"progress": False})


def test_benchmark_files_check_their_options():
    data = {
        "name": "x",
        "datasets": ["shapes"],
        "methods": [
            {"name": "vpt", "options": {"prompt_depth": [1, 12], "template": "photo"}},
            {"name": "clip_adapter", "options": {"ratio": 1, "template": "prompt"}},
        ],
    }
    with pytest.raises(BenchmarkError) as info:
        parse_benchmark(data)
    assert info.value.problems == ["methods[1].options.template: must be one of dataset, photo, not 'prompt'"]
    data["methods"][1]["options"]["template"] = "dataset"
    bench = parse_benchmark(data)
    assert bench.methods[1].options["ratio"] == 1.0  # the type of the default
