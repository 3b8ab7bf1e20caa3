"""The synthetic coloured-shapes world and the built-in "shapes" demo dataset."""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from workers.datasets import shapes
from workers.datasets import shapes_world as world
from workers.datasets.base import read_split_json
from workers.datasets.registry import DATASETS
from workers.errors import NotFoundError


def _counts(classes):
    return Counter(c.split()[0] for c in classes), Counter(c.split()[1] for c in classes)


# --- the world -------------------------------------------------------------------------------


def test_class_sets():
    names = world.class_names()
    assert len(world.COLOURS) == len(world.SHAPES) == 10
    assert len(names) == len(set(names)) == 100
    held, seen = world.held_out_classes(), world.seen_classes()
    assert len(held) == 30 and len(seen) == 70
    assert set(held) | set(seen) == set(names) and not set(held) & set(seen)
    colours, shape_counts = _counts(held)
    assert colours == {c: 3 for c in world.COLOURS}
    assert shape_counts == {s: 3 for s in world.SHAPES}
    assert all(world.is_held_out(c) for c in held)


def test_unknown_class_is_a_clear_error():
    with pytest.raises(NotFoundError, match="Did you mean 'red circle'"):
        world.render("red circel", np.random.default_rng(0))


def _as_bytes(items):
    return [(np.asarray(img).tobytes(), cap, name) for img, cap, name in items]


def test_sample_is_deterministic_in_seed():
    a = _as_bytes(world.sample(40, seed=3))
    b = _as_bytes(world.sample(40, seed=3))
    c = _as_bytes(world.sample(40, seed=4))
    assert a == b
    assert [x[0] for x in a] != [x[0] for x in c]
    assert [x[1] for x in a] != [x[1] for x in c]


def test_sample_defaults_to_seen_classes_and_honours_classes():
    assert {name for _, _, name in world.sample(300, seed=0)} <= set(world.seen_classes())
    held = world.held_out_classes()[:2]
    assert {name for _, _, name in world.sample(20, seed=0, classes=held)} <= set(held)


def test_images_and_captions():
    lengths = []
    for img, cap, name in world.sample(400, seed=1, classes=world.class_names()):
        assert img.size == (32, 32) and img.mode == "RGB"
        assert name in cap
        lengths.append(len(cap.split()))
    assert max(lengths) <= 34  # fits a 32-token-ish context
    assert max(lengths) >= 16  # filler words reach the later positions
    assert min(lengths) == 2  # the bare "{}" template


def test_caption_uses_attributes():
    rng = np.random.default_rng(0)
    _, attrs = world.render("blue star", rng)
    assert attrs["size"] in world.SIZES and attrs["background"] in world.BACKGROUNDS
    assert attrs["position"] in world.POSITION_PHRASES
    caps = [world.caption("blue star", attrs, rng) for _ in range(300)]
    assert any(f"{attrs['size']} blue star" in c for c in caps)
    assert any(world.POSITION_PHRASES[attrs["position"]] in c for c in caps)
    assert any(f"on a {attrs['background']} background" in c for c in caps)
    assert "a photo of a blue star." in caps


def test_colours_differ_in_the_shape_region():
    means = {}
    for colour in world.COLOURS:
        pixels = []
        for k in range(6):
            img, attrs = world.render(f"{colour} circle", np.random.default_rng(k))
            pixels.append(np.asarray(img, dtype=float)[attrs["alpha"] > 0.95])
        means[colour] = np.concatenate(pixels).mean(axis=0)
    for a, b in itertools.combinations(world.COLOURS, 2):
        assert np.linalg.norm(means[a] - means[b]) > 35, (a, b, means[a], means[b])


def test_shapes_differ():
    for k in range(5):
        masks = {s: world.render(f"white {s}", np.random.default_rng(k))[1]["alpha"] > 0.5 for s in world.SHAPES}
        for a, b in itertools.combinations(world.SHAPES, 2):
            iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
            assert iou < 0.9, (k, a, b, iou)
        # the shape is really drawn in its colour on the image
        img, attrs = world.render("white star", np.random.default_rng(k))
        inside = np.asarray(img, dtype=float)[attrs["alpha"] > 0.95].mean()
        outside = np.asarray(img, dtype=float)[attrs["alpha"] < 0.05].mean()
        assert inside > outside + 80


# --- the demo dataset ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("cache")
        mp.setenv("DOR_BENCH_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def demo(cache):
    return shapes.SHAPES.read(None)


def test_registered():
    reader = DATASETS.get("shapes")
    assert reader is shapes.SHAPES
    assert (reader.name, reader.folder, reader.template, reader.builtin) == (
        "shapes",
        "shapes",
        "a photo of a {}.",
        True,
    )


def test_demo_classes(demo):
    assert demo.name == "shapes" and demo.template == "a photo of a {}."
    assert len(demo.classnames) == 60 and len(set(demo.classnames)) == 60
    assert demo.classnames == shapes.demo_classes()
    n_base = math.ceil(len(demo.classnames) / 2)
    base, new = demo.classnames[:n_base], demo.classnames[n_base:]
    assert set(base) <= set(world.seen_classes())
    assert set(new) == set(world.held_out_classes())
    colours, shape_counts = _counts(base)
    assert set(colours.values()) == {3} and set(shape_counts.values()) == {3}


def test_demo_counts(demo):
    for split, per_class in (("train", 24), ("val", 8), ("test", 50)):
        items = getattr(demo, split)
        assert Counter(d.label for d in items) == {label: per_class for label in range(60)}
        assert all(demo.classnames[d.label] == d.classname for d in items)


def test_demo_layout_is_coop(demo, cache):
    root = cache / "data" / shapes.FOLDER
    assert sorted(p.name for p in root.iterdir()) == ["images", "split_zhou_Shapes.json"]
    raw = json.loads((root / "split_zhou_Shapes.json").read_text())
    assert set(raw) == {"train", "val", "test"}
    for split, items in raw.items():
        for relpath, label, classname in items:
            folder, file = relpath.split("/")
            assert folder == classname.replace(" ", "_") and file.startswith(f"{split}_") and file.endswith(".png")
            assert isinstance(label, int)
    names, splits = read_split_json(root / "split_zhou_Shapes.json", root / "images", "shapes")
    assert names == demo.classnames and splits["test"] == demo.test
    n_files = sum(1 for _ in (root / "images").rglob("*.png"))
    assert n_files == 60 * (24 + 8 + 50)
    for datum in demo.test[::500]:
        with Image.open(datum.path) as img:
            assert img.size == (32, 32) and img.mode == "RGB"
    # no temporary folders left behind
    assert not [p for p in (cache / "data").iterdir() if p.name.startswith(f".{shapes.FOLDER}.tmp")]


def test_second_read_does_not_regenerate(demo, cache, monkeypatch):
    root = cache / "data" / shapes.FOLDER
    files = [root / "split_zhou_Shapes.json", *sorted((root / "images").rglob("*.png"))[:50]]
    before = [f.stat().st_mtime_ns for f in files]

    def fail(*args, **kwargs):
        raise AssertionError("regenerated")

    monkeypatch.setattr(shapes, "_generate", fail)
    again = shapes.SHAPES.read(None)
    assert [f.stat().st_mtime_ns for f in files] == before
    assert again.classnames == demo.classnames and again.train == demo.train


def test_generation_is_deterministic_and_recovers(demo, tmp_path, monkeypatch):
    """A small regeneration elsewhere: same pixels, stale left-overs cleaned, races tolerated."""
    monkeypatch.setenv("DOR_BENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(shapes, "PER_CLASS", {"train": 2, "val": 1, "test": 1})
    data = tmp_path / "data"
    stale = data / f".{shapes.FOLDER}.tmp-1-dead"
    (stale / "images").mkdir(parents=True)
    os.utime(stale, (0, 0))
    dead = data / f".{shapes.FOLDER}.tmp-{socket.gethostname()}-4194305-dead"  # above any Linux pid
    (dead / "images").mkdir(parents=True)
    half = data / shapes.FOLDER / "images" / "red_star"  # a half dataset without a split file
    half.mkdir(parents=True)
    small = shapes.SHAPES.read(None)
    assert not stale.exists() and not dead.exists()
    assert small.classnames == demo.classnames and len(small.train) == 120
    first = {(d.label, os.path.basename(d.path)): d.path for d in demo.train}
    for d in small.train:
        with Image.open(d.path) as a, Image.open(first[(d.label, os.path.basename(d.path))]) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))
    # another process finished first: our rename fails, theirs is kept, ours is dropped
    tmp = data / f".{shapes.FOLDER}.tmp-2-late"
    (tmp / "images").mkdir(parents=True)
    shapes._publish(tmp, data / shapes.FOLDER)
    assert shapes.SHAPES.read(None).train == small.train


def test_other_splits_change_only_the_base_classes():
    """shapes-split1/2: other balanced base classes, the same held-out new classes, own folders."""
    bases = []
    for split in (0, 1, 2):
        classes = shapes.demo_classes(split)
        base, new = classes[:30], classes[30:]
        assert new == world.held_out_classes()
        assert set(base) <= set(world.seen_classes())
        colours, shape_counts = _counts(base)
        assert set(colours.values()) == {3} and set(shape_counts.values()) == {3}
        bases.append(set(base))
    assert len(bases[0] & bases[1]) < 20 and len(bases[0] & bases[2]) < 20 and len(bases[1] & bases[2]) < 20
    reader = DATASETS.get("shapes-split2")
    assert (reader.name, reader.split, reader.builtin) == ("shapes-split2", 2, True)
    assert shapes.dataset_path(2).name == f"{shapes.FOLDER}-split2" != shapes.dataset_path(0).name
