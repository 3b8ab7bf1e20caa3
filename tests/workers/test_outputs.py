"""What a trial keeps: its outputs read back give the same metrics, whole or as a top-k."""

from __future__ import annotations

import pytest
import torch

from workers import outputs
from workers.evaluation import SplitScores
from workers.metrics import calibration_report


def splits(n: int, classes: int, seed: int = 0) -> list[SplitScores]:
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, classes, generator=g)
    labels = torch.randint(classes, (n,), generator=g)
    right = torch.rand(n, generator=g) < logits.softmax(1).amax(1)  # right as often as confident, roughly
    labels = torch.where(right, logits.argmax(1), labels)  # so some bins are over-, some underconfident
    proximity = torch.rand(n, generator=g)
    names = [f"class {i}" for i in range(classes)]
    return [SplitScores("base", logits, labels, names, proximity), SplitScores("val", logits[:5], labels[:5], names)]


def test_kept_outputs_rescore_exactly_whole_and_as_top_k(tmp_path, monkeypatch):
    state = {"ctx": torch.randn(4, 8)}
    for limit, whole in ((10**9, True), (100, False)):  # the second keeps each sample's top-10 only
        monkeypatch.setattr(outputs, "FULL_LOGITS_MAX", limit)
        kept = splits(300, 50)
        outputs.keep(tmp_path / str(whole), state, kept)
        base, val = outputs.read_outputs(tmp_path / str(whole) / outputs.OUTPUTS_FILE)
        assert (base.split, val.split, base.complete, val.complete) == ("base", "val", whole, whole)
        assert torch.equal(base.labels, kept[0].labels) and base.classnames == kept[0].classnames
        reports = {}
        for bins in (10, 15):
            got = calibration_report(base.logits, base.labels, bins, base.proximity)
            want = reports[bins] = calibration_report(kept[0].logits, kept[0].labels, bins, kept[0].proximity)
            assert got == pytest.approx(want, rel=1e-5, abs=1e-5)
        assert reports[10]["ece"] != pytest.approx(reports[15]["ece"]) and reports[10]["acc"] == reports[15]["acc"]
        if not whole:
            assert not torch.equal(base.logits, kept[0].logits)  # the tail is rebuilt, not kept
        loaded = torch.load(tmp_path / str(whole) / outputs.PROMPT_FILE, weights_only=True)
        assert torch.equal(loaded["ctx"], state["ctx"])
    assert (tmp_path / "False" / outputs.OUTPUTS_FILE).stat().st_size < (
        tmp_path / "True" / outputs.OUTPUTS_FILE
    ).stat().st_size


def test_a_file_that_is_no_outputs_file_is_named(tmp_path):
    bad = tmp_path / "outputs.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(Exception, match="is not a dor-bench outputs file"):
        outputs.read_outputs(bad)
