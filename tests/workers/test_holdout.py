"""Tuning mode: pseudo-new classes held out of the base classes, scored on validation data only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.fake_data import make_split_json_dataset
from workers.datasets import load_trial_data
from workers.errors import DorBenchError
from workers.holdout import hold_out
from workers.spec import DorSpec, TrialSpec, ValidationSpec
from workers.trial import run_trial

WORDS = str(Path(__file__).parents[2] / "examples" / "words.txt")


def test_specs_without_validation_keep_their_recorded_keys():
    # keys of protocol 4 (each protocol changes every key on purpose: protocol 1 recorded
    # faae985dccdfbd80 and 175cd80affb542e0 for these two, protocol 2 1c62cce2fd4584a7 and
    # 8938c1395c0ec09c, protocol 3 ab1166ee0affd799 and 0af78ced81fabaec); validation, added
    # later, stays out
    spec = TrialSpec(
        method="coop",
        dataset="shapes",
        model="tiny-clip",
        pretrained=None,
        shots=4,
        method_options={"epochs": 2},
        dor=DorSpec(lam=8, outliers_per_step=4),
    )
    assert spec.key() == "c0858a743943b7f3"
    assert TrialSpec().key() == "ca1b41b151fe4fbf"
    assert "validation" not in json.loads(spec.canonical_json())
    tuned = spec.model_copy(update={"validation": ValidationSpec()})
    assert tuned.key() != spec.key()
    assert tuned.model_copy(update={"validation": ValidationSpec(leaky=True)}).key() != tuned.key()


def test_hold_out_is_seeded_and_keeps_pseudo_new_classes_out_of_training():
    data = load_trial_data("shapes", None, shots=2, seed=1)
    first = hold_out(data, ValidationSpec(pseudo_new=0.2, holdout_seed=3))
    assert len(first.pseudo_new_classnames) == 6 and len(first.training.base_classnames) == 24
    assert set(first.pseudo_new_classnames).isdisjoint(first.training.base_classnames)
    assert {d.classname for d in first.training.train} == set(first.training.base_classnames)
    assert {d.classname for d in first.val_new} == set(first.pseudo_new_classnames)
    assert sorted({d.label for d in first.val_new}) == list(range(6))
    assert first.training.test_base == [] and first.training.test_new == []
    again = hold_out(data, ValidationSpec(pseudo_new=6, holdout_seed=3))
    assert again.pseudo_new_classnames == first.pseudo_new_classnames
    other = hold_out(data, ValidationSpec(pseudo_new=6, holdout_seed=4))
    assert other.pseudo_new_classnames != first.pseudo_new_classnames
    with pytest.raises(DorBenchError, match="holds out 30 of 30"):
        hold_out(data, ValidationSpec(pseudo_new=30))


@pytest.fixture()
def garbage_tests(tmp_path) -> tuple[Path, list[Path]]:
    """A fake oxford_pets (8 classes) whose every test image is garbage bytes."""
    base = make_split_json_dataset(tmp_path, "oxford_pets", 8, train=3, val=3, test=2)
    tests = sorted((base / "images").glob("c*/test_*.jpg"))
    assert len(tests) == 16
    for path in tests:
        path.write_bytes(b"not an image, and never read in tuning mode")
    return tmp_path, tests


def tuning_spec(root: Path, **validation) -> dict:
    return {
        "method": "coop",
        "dataset": "oxford_pets",
        "root": str(root),
        "model": "tiny-clip",
        "pretrained": None,
        "shots": 2,
        "method_options": {"epochs": 2, "batch_size": 4, "n_ctx": 2},
        "dor": {"lam": 8, "outliers_per_step": 3, "vocabulary": WORDS},
        "validation": {"pseudo_new": 2, **validation},
    }


def test_tuning_mode_never_reads_test_images_and_leaky_mode_does(garbage_tests):
    root, tests = garbage_tests
    rows = []
    result = run_trial(tuning_spec(root), {"progress": False}, on_epoch=lambda e, row: rows.append(row))
    assert [r["epoch"] for r in rows] == [1.0, 2.0]
    for row in rows:  # every epoch is scored on validation images of both class sets
        # 2 classes each side x min(shots, 4) = 2 validation images per class
        assert row["val/pseudo_base/n"] == 4 and row["val/pseudo_new/n"] == 4
        assert 0 <= row["val/pseudo_new/ece"] <= 100
    assert not any(k.startswith(("base/", "new/", "hm")) for k in result.metrics)
    assert result.metrics["val/pseudo_new/ece"] == rows[-1]["val/pseudo_new/ece"]
    assert len(result.info["pseudo_new_classes"]) == 2

    with pytest.raises(DorBenchError, match="Cannot read image") as err:
        run_trial(tuning_spec(root, leaky=True), {"progress": False, "feature_cache": False})
    assert "test_" in str(err.value)  # the leaky run really opens the test images
