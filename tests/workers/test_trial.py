"""The trial loop end to end on the built-in shapes data with a tiny random-init CLIP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from orchestrator.cli import main
from tests.helpers.trials import killed_then_resumed
from workers.errors import DorBenchError
from workers.trial import run_trial, warmup_cosine

WORDS = str(Path(__file__).parents[2] / "examples" / "words.txt")
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
    # what it ran on, as the run record shows it: this process's peak memory, in MB
    import resource

    assert second.info["device"] == "cpu" and second.info["device_name"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    assert 50 < second.info["peak_memory_mb"] <= peak + 0.1  # rounded to 0.1 MB


def test_warmup_then_cosine_schedule():
    f = warmup_cosine(epochs=10, warmup=1, warmup_factor=0.005)
    assert f(0) == 0.005
    assert f(1) == 1.0  # the first epoch after the warm-up runs at the full lr (Dassl, recount)
    assert f(2) == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi / 10)).item()))
    assert f(6) == pytest.approx(0.5)


class _RunsCode:
    """Unpickling this calls ``os.system``: what a hostile checkpoint on shared storage would hold."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    from workers.identity import normalise
    from workers.spec import TrialSpec

    spec = {**TINY, "method": "coop", "seed": 1, "method_options": {"epochs": 2, "batch_size": 16}}
    key = normalise(TrialSpec.model_validate(spec)).key()
    marker = tmp_path / "pwned"
    (tmp_path / "ckpt").mkdir()
    torch.save({"epoch": 1, "history": [], "payload": _RunsCode(str(marker))}, tmp_path / "ckpt" / f"{key}.pt")
    with pytest.raises(DorBenchError, match="not a dor-bench checkpoint of tensors and plain values"):
        run_trial(spec, {"progress": False, "checkpoint_dir": str(tmp_path / "ckpt")})
    assert not marker.exists()


def test_checkpoints_hold_only_tensors_and_plain_values(tmp_path):
    spec = {
        **TINY,
        "method": "coop",
        "seed": 2,
        "method_options": {"epochs": 1, "batch_size": 16},
        "dor": {"lam": 8.0, "outliers_per_step": 4, "vocabulary": WORDS},
    }
    run_trial(spec, {"progress": False, "checkpoint_dir": str(tmp_path)})
    (path,) = tmp_path.glob("*.pt")  # run_trial keeps it; the driver deletes it once recorded
    state = torch.load(path, weights_only=True)  # raises on anything but tensors and plain values
    assert state["epoch"] == 1 and state["regularizer"] is not None and len(state["rng"]["numpy"][1]) == 624


def test_training_time_counts_only_the_epochs_trained_in_this_run(tmp_path):
    """A trial resumed from its checkpoint records the epochs it trained itself, so that its
    seconds per epoch (the report's cost table) are not spread over epochs trained elsewhere."""
    spec = {**TINY, "method": "coop", "seed": 4, "shots": 1, "test_per_class": 2}
    spec["method_options"] = {"epochs": 2, "batch_size": 32}  # one step per epoch
    resumed, seen = killed_then_resumed(spec, tmp_path, after_epoch=1)
    assert seen == [2] and len(resumed.history) == 2  # the caller still sees each epoch it trained
    assert resumed.info["train_epochs_run"] == 1
    assert 0 < resumed.info["train_seconds"] <= resumed.info["seconds"]
    zero_shot = run_trial({**spec, "method": "zeroshot", "method_options": {}}, {"progress": False})
    assert "train_seconds" not in zero_shot.info and zero_shot.info["peak_memory_mb"] > 0
