"""Domain shift: a trial trained on ImageNet (all classes) also scores each target's test split."""

from __future__ import annotations

from tests.helpers.fake_data import make_imagenet, make_imagenetv2, make_wnid_variant
from workers.trial import run_trial


def test_targets_are_scored_with_their_own_classes(tmp_path):
    make_imagenet(tmp_path, num_classes=4)
    make_imagenetv2(tmp_path, num_classes=4, per_class=3)
    make_wnid_variant(tmp_path, "imagenet_r", num_classes=4, present=[1, 3], per_class=2)
    spec = {
        "method": "coop",
        "dataset": "imagenet",
        "root": str(tmp_path),
        "subsample": "all",
        "model": "tiny-clip",
        "pretrained": None,
        "shots": 2,
        "targets": ["imagenetv2", "imagenet_r"],
        "method_options": {"epochs": 1, "batch_size": 4},
    }
    result = run_trial(spec, {"progress": False})
    m = result.metrics
    assert m["target/imagenetv2/n"] == 12 and m["target/imagenet_r/n"] == 4
    assert m["target/avg/ece"] == (m["target/imagenetv2/ece"] + m["target/imagenet_r/ece"]) / 2
    assert "new/acc" not in m and m["base/n"] == 8  # subsample "all": every class is a base class
    r_classes = {c.classname for c in result.per_class if c.split == "target/imagenet_r"}
    assert len(r_classes) == 2  # ImageNet-R's own (subset) classes
