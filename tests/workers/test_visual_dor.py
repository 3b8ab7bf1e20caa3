"""Visual DOR: the image-outlier pool (shapes-outliers on the shipped micro-CLIP) and its draws."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from workers.datasets import DATASETS
from workers.datasets import shapes_world as world
from workers.datasets.shapes import demo_classes
from workers.datasets.transforms import load_rgb, test_transform
from workers.dor.images import CANDIDATES_PER_CLASS, ImageOutlierRegularizer, build_image_pool
from workers.errors import DorBenchError
from workers.models.clip import load_clip
from workers.paths import cache_dir
from workers.trial import run_trial

BASE = demo_classes()[:30]


@pytest.fixture(scope="module")
def clip():
    return load_clip("micro-clip", "shapes", device="cpu")


def pool(clip, strategy: str = "near", size: int = 200, exclude: list[str] = BASE):
    return build_image_pool(clip, "shapes-outliers", None, BASE, exclude, strategy, size, seed=1, progress=False)


def test_shapes_outliers_are_the_seen_combinations_with_their_own_pixels():
    outliers = DATASETS.get("shapes-outliers").read(None)
    assert outliers.classnames == world.seen_classes() and len(outliers.train) == 70 * 16
    assert not outliers.val and not outliers.test
    demo = DATASETS.get("shapes").read(None)
    name = f"{BASE[0].replace(' ', '_')}/train_0.png"  # a seen class in both: other pixels
    ours, theirs = (next(d.path for d in split.train if d.path.endswith(name)) for split in (outliers, demo))
    assert Path(ours).read_bytes() != Path(theirs).read_bytes()


def test_pool_leaves_out_classes_named_like_the_excluded(clip):
    near = pool(clip, size=5000)
    names = {d.classname for d in near.items}
    assert not names & set(BASE) and len(names) == 40  # neither base nor new: the other seen ones
    assert len(near) == 40 * CANDIDATES_PER_CLASS and "fewer than the 5000" in near.note
    other = next(c for c in world.seen_classes() if c not in BASE)
    fewer = pool(clip, size=5000, exclude=[*BASE, other.upper().replace(" ", "_")])
    assert len({d.classname for d in fewer.items}) == 39  # case and underscores ignored


def test_zero_shot_features_are_clips_and_the_strategies_order_by_similarity(clip):
    near, far, rand = pool(clip, "near"), pool(clip, "far"), pool(clip, "random")
    assert float(near.scores.min()) >= float(far.scores.max())
    assert {d.path for d in rand.items} != {d.path for d in near.items}
    with torch.no_grad():
        expected = F.normalize(clip.model.encode_image(near.pixels(range(5))).float(), dim=-1)
    assert torch.allclose(near.zero_shot[:5], expected, atol=1e-5)
    text = F.normalize(clip.model.encode_text(clip.tokenizer([f"a photo of a {n}." for n in BASE])).float(), dim=-1)
    assert torch.allclose(near.scores[:5], (expected @ text.T).mean(dim=1), atol=1e-5)


def test_pixels_are_the_test_transforms_tensors_decoded_once(clip):
    near = pool(clip)
    folder = cache_dir("decoded", "shapes-outliers", f"test{near.image_size}")
    shutil.rmtree(folder, ignore_errors=True)
    index = [3, 0, 3, 7]
    expected = torch.stack([test_transform(near.image_size)(load_rgb(near.items[i].path)) for i in index])
    assert torch.equal(near.pixels(index), expected)
    kept = sorted(folder.rglob("*.npy"))
    assert len(kept) == 3  # one file per image drawn
    stamps = [p.stat().st_mtime_ns for p in kept]
    assert torch.equal(near.pixels(index), expected)  # read back, not decoded again
    assert [p.stat().st_mtime_ns for p in sorted(folder.rglob("*.npy"))] == stamps


def test_draws_are_distinct_seeded_and_index_the_pool(clip):
    near = pool(clip)
    first = ImageOutlierRegularizer(near, lam=1.0, per_step=30, seed=3)
    again = ImageOutlierRegularizer(near, lam=1.0, per_step=30, seed=3)
    index, zero_shot = first.draw_index()
    assert len(set(index)) == 30 and index == again.draw_index()[0]
    assert torch.equal(zero_shot, near.zero_shot[index])
    assert first.draw_index()[0] != index  # a fresh draw each step


def test_a_source_on_disk_needs_the_data_root(clip):
    with pytest.raises(DorBenchError, match="'imagenet'.*data root") as err:
        build_image_pool(clip, "imagenet", None, BASE, BASE, progress=False)
    assert "dor.image_source" in err.value.fix


@pytest.mark.parametrize("method", ["vpt", "clip_adapter"])
def test_visual_dor_trains_and_lambda_zero_is_the_plain_method(method):
    spec = {
        "method": method,
        "model": "micro-clip",
        "pretrained": "shapes",
        "shots": 2,
        "test_per_class": 2,
        "method_options": {
            "epochs": 2,
            "batch_size": 8,
            "lr": 0.01,
            "n_ctx" if method == "vpt" else "ratio": 2 if method == "vpt" else 0.5,
        },
    }
    options = {"progress": False, "loader_workers": 0}
    plain = run_trial(spec, options)
    zero = run_trial({**spec, "dor": {"lam": 0}}, options)
    regularised = run_trial({**spec, "dor": {"lam": 5.0, "pool_size": 64, "outliers_per_step": 6}}, options)
    assert zero.metrics == plain.metrics and zero.history == plain.history  # bit for bit
    assert regularised.spec.dor.image_source == "shapes-outliers"
    assert regularised.info["dor"] == {
        "lambda": 5.0,
        "outliers": "image",
        "outliers_per_step": 6,
        "pool_size": 64,
        "pool_strategy": "near",
    }
    assert all(row["train/dor"] > 0 for row in regularised.history)
    assert regularised.metrics["new/ece"] != plain.metrics["new/ece"]
