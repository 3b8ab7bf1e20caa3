"""The dataset readers, few-shot sampling, base/new split, transforms and their errors.

Every reader is exercised on a tiny fake tree in its exact CoOp on-disk layout (fake_data.py).
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.helpers.fake_data import (
    SPLIT_JSON,
    TEMPLATES,
    WNID_VARIANTS,
    classname,
    make_fgvc_aircraft,
    make_imagenet,
    make_imagenetv2,
    make_split_json_dataset,
    make_wnid_variant,
    truncate,
    write_image,
)
from workers.datasets import DATASETS, Datum, load_trial_data, sampling, transforms
from workers.datasets.base import DatasetSplits
from workers.errors import DorBenchError, NotFoundError

ALL_DATASETS = [
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
    "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
    "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r",
]  # fmt: skip


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A private dor-bench cache for each test."""
    path = tmp_path / "cache"
    monkeypatch.setenv("DOR_BENCH_CACHE", str(path))
    return path


@pytest.fixture
def root(tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def per_label(items: list[Datum]) -> Counter:
    return Counter(d.label for d in items)


# --- registry --------------------------------------------------------------------------------


def test_every_dataset_is_registered_with_its_template():
    for name in ALL_DATASETS:
        reader = DATASETS.get(name)
        assert reader.name == name
        assert reader.builtin is False
        assert reader.template == TEMPLATES.get(name, "a photo of a {}.")
        assert callable(reader.read)


def test_unknown_dataset_suggests_the_closest_name(root):
    with pytest.raises(NotFoundError, match=r"'oxford_pet'.*Did you mean 'oxford_pets'\?"):
        load_trial_data("oxford_pet", root, shots=1, seed=1)


# --- readers, one per on-disk layout ---------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPLIT_JSON))
def test_split_json_readers(root, name):
    make_split_json_dataset(root, name, num_classes=5, train=3, val=2, test=4)
    splits = DATASETS.get(name).read(root)
    assert splits.name == name
    assert splits.classnames == [classname(name, i) for i in range(5)]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (15, 10, 20)
    assert splits.template == TEMPLATES.get(name, "a photo of a {}.")
    for item in splits.train + splits.val + splits.test:
        assert Path(item.path).is_absolute() and Path(item.path).is_file()
        assert item.classname == splits.classnames[item.label]


def test_stanford_cars_paths_start_in_the_dataset_folder(root):
    make_split_json_dataset(root, "stanford_cars", num_classes=2)
    splits = DATASETS.get("stanford_cars").read(root)
    assert Path(splits.test[0].path).parent == root / "stanford_cars" / "cars_test"
    assert Path(splits.train[0].path).parent == root / "stanford_cars" / "cars_train"


def test_fgvc_aircraft_variants_with_spaces(root):
    make_fgvc_aircraft(root, num_classes=4, per_class=3)
    splits = DATASETS.get("fgvc_aircraft").read(root)
    assert splits.classnames == [f"Boeing 7{i:02d}-200 / ER" for i in range(4)]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 12, 12)
    first = splits.train[0]
    assert first.path == str(root / "fgvc_aircraft" / "images" / "1000001.jpg")
    assert (first.label, first.classname) == (0, "Boeing 700-200 / ER")
    assert per_label(splits.test) == {i: 3 for i in range(4)}


def test_imagenet_reads_folders_and_has_no_val_split(root):
    make_imagenet(root, num_classes=5, train=6, val=2)
    splits = DATASETS.get("imagenet").read(root)
    assert splits.classnames == [f"imagenet class {i}" for i in range(5)]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 0, 10)
    assert all("/images/val/" in d.path for d in splits.test)
    assert per_label(splits.train) == {i: 6 for i in range(5)}


def test_imagenet_val_is_drawn_from_unpicked_train_images(root):
    make_imagenet(root, num_classes=4, train=[6, 6, 6, 2], val=2)
    data = load_trial_data("imagenet", root, shots=3, seed=1, subsample="all")
    assert per_label(data.train) == {0: 3, 1: 3, 2: 3, 3: 2}
    assert per_label(data.val) == {0: 3, 1: 3, 2: 3}  # class 3 has no image left over
    assert not {d.path for d in data.train} & {d.path for d in data.val}
    assert all("/images/train/" in d.path for d in data.val)
    assert len(data.test_base) == 8 and data.test_new == []


def test_imagenetv2_labels_are_folder_numbers(root):
    make_imagenetv2(root, num_classes=3, per_class=2)
    splits = DATASETS.get("imagenetv2").read(root)
    assert splits.classnames == ["imagenet class 0", "imagenet class 1", "imagenet class 2"]
    assert splits.train == [] and splits.val == []
    assert per_label(splits.test) == {0: 2, 1: 2, 2: 2}
    assert all(Path(d.path).parent.name == str(d.label) for d in splits.test)


@pytest.mark.parametrize("name", sorted(WNID_VARIANTS))
def test_wnid_variants_relabel_their_subset_in_wnid_order(root, name):
    make_wnid_variant(root, name, num_classes=10, present=[7, 2, 5], per_class=2)
    splits = DATASETS.get(name).read(root)
    assert splits.classnames == ["imagenet class 2", "imagenet class 5", "imagenet class 7"]
    assert splits.train == [] and splits.val == []
    assert per_label(splits.test) == {0: 2, 1: 2, 2: 2}
    assert {d.classname for d in splits.test if d.label == 2} == {"imagenet class 7"}


def test_test_only_dataset_loads_for_domain_shift(root):
    make_wnid_variant(root, "imagenet_a", num_classes=6, present=range(6))
    data = load_trial_data("imagenet_a", root, shots=16, seed=1, subsample="all")
    assert data.train == [] and data.val == [] and len(data.test_base) == 12
    assert data.base_classnames == [f"imagenet class {i}" for i in range(6)]


# --- few-shot sampling and the base/new split ------------------------------------------------


def test_base_new_split_of_37_classes(root):
    make_split_json_dataset(root, "oxford_pets", num_classes=37, train=2, val=1, test=2)
    data = load_trial_data("oxford_pets", root, shots=1, seed=1)
    assert len(data.base_classnames) == 19 and len(data.new_classnames) == 18
    assert data.base_classnames == [classname("oxford_pets", i).replace("_", " ") for i in range(19)]
    assert data.new_classnames == [classname("oxford_pets", i).replace("_", " ") for i in range(19, 37)]
    assert sorted(per_label(data.test_base)) == list(range(19))
    assert sorted(per_label(data.test_new)) == list(range(18))
    assert sorted(per_label(data.train)) == list(range(19))
    assert data.template == "a photo of a {}, a type of pet."
    base, new = data.base_classnames, data.new_classnames
    assert all(d.classname == base[d.label] for d in data.train + data.val + data.test_base)
    assert all(d.classname == new[d.label] for d in data.test_new)


def test_fewshot_counts_per_class(root):
    train = [10] * 6
    train[1] = 3  # a class with fewer images than K keeps all of them
    make_split_json_dataset(root, "dtd", num_classes=6, train=train, val=6, test=1)
    data = load_trial_data("dtd", root, shots=8, seed=1, subsample="all")
    assert per_label(data.train) == {0: 8, 1: 3, 2: 8, 3: 8, 4: 8, 5: 8}
    assert per_label(data.val) == {i: 4 for i in range(6)}  # min(K, 4)
    assert len(set(d.path for d in data.train)) == len(data.train)
    small = load_trial_data("dtd", root, shots=2, seed=1, subsample="all")
    assert per_label(small.val) == {i: 2 for i in range(6)}


def test_fewshot_happens_over_all_classes_before_the_split(root):
    make_split_json_dataset(root, "eurosat", num_classes=10, train=9, val=5, test=1)
    everything = load_trial_data("eurosat", root, shots=4, seed=3, subsample="all")
    base2new = load_trial_data("eurosat", root, shots=4, seed=3)
    base_paths = {d.path for d in everything.train if d.label < 5}
    assert {d.path for d in base2new.train} == base_paths


def test_same_seed_same_shots_other_seed_other_shots(root, cache):
    make_split_json_dataset(root, "food101", num_classes=4, train=20, val=8, test=1)
    first = load_trial_data("food101", root, shots=4, seed=1)
    for path in cache.rglob("*.json"):
        path.unlink()  # the draw itself, not only the cache, is deterministic
    again = load_trial_data("food101", root, shots=4, seed=1)
    other = load_trial_data("food101", root, shots=4, seed=2)
    assert first.train == again.train and first.val == again.val
    assert {d.path for d in first.train} != {d.path for d in other.train}


def test_sampling_follows_dassl_semantics():
    items = [Datum(f"/x/{y}_{i}.jpg", y, str(y)) for y in (2, 0, 1) for i in range(5)]
    items += [Datum("/x/3_0.jpg", 3, "3")]
    chosen = sampling.sample_per_label(items, 3, random.Random(7))
    expected_rng = random.Random(7)
    expected = []
    for label in (2, 0, 1):  # the order labels first appear (Dassl's split_dataset_by_label)
        pool = [i for i, d in enumerate(items) if d.label == label]
        expected += expected_rng.sample(pool, 3)
    expected.append(len(items) - 1)  # label 3 has one item: all of it
    assert chosen == expected


def test_base_new_labels():
    assert sampling.base_new_labels(37) == (list(range(19)), list(range(19, 37)))
    assert sampling.base_new_labels(10) == (list(range(5)), list(range(5, 10)))
    assert sampling.base_new_labels(1) == ([0], [])
    for n in (2, 3, 100, 101, 397):
        base, new = sampling.base_new_labels(n)
        assert len(base) == math.ceil(n / 2) and base + new == list(range(n))


def test_fewshot_cache_lives_outside_the_dataset_folder(root, cache):
    folder = make_split_json_dataset(root, "oxford_flowers", num_classes=3, train=5, val=3)
    before = files_under(folder)
    data = load_trial_data("oxford_flowers", root, shots=2, seed=5)
    assert files_under(folder) == before
    (cached,) = (cache / "fewshot" / "oxford_flowers").glob("v2-shot_2-seed_5-*.json")
    record = json.loads(cached.read_text())
    assert (record["dataset"], record["shots"], record["seed"]) == ("oxford_flowers", 2, 5)
    assert len(record["train"]) == 6 and len(record["val"]) == 6
    assert load_trial_data("oxford_flowers", root, shots=2, seed=5) == data


def test_fewshot_cache_is_used_and_keyed_by_split_content(root, cache):
    make_split_json_dataset(root, "sun397", num_classes=2, train=6, val=3)
    reader = DATASETS.get("sun397")
    splits = reader.read(root)
    path = sampling.fewshot_cache_path(splits, 2, 1, sampling.fingerprint(splits))
    sampling.fewshot(splits, 2, 1)
    record = json.loads(path.read_text())
    record["train"] = [0, 6]  # a hand-edited draw is what the cache returns
    path.write_text(json.dumps(record))
    train, _ = sampling.fewshot(splits, 2, 1)
    assert train == [splits.train[0], splits.train[6]]
    path.write_text("{not json")  # a damaged cache is redrawn, not an error
    assert len(sampling.fewshot(splits, 2, 1)[0]) == 4
    changed = DatasetSplits(splits.name, splits.classnames, splits.train[1:], splits.val)
    assert sampling.fingerprint(changed) != sampling.fingerprint(splits)


def test_subsample_all_keeps_every_class(root):
    make_split_json_dataset(root, "ucf101", num_classes=5, train=2, val=1, test=3)
    data = load_trial_data("ucf101", root, shots=16, seed=1, subsample="all")
    assert data.base_classnames == [classname("ucf101", i) for i in range(5)]
    assert data.new_classnames == [] and data.test_new == []
    assert len(data.train) == 10 and len(data.val) == 5 and len(data.test_base) == 15


# --- transforms and the image dataset --------------------------------------------------------


def test_transforms_shapes_and_clip_normalisation(tmp_path):
    image = Image.new("RGB", (40, 30), (255, 255, 255))
    mean = torch.tensor(transforms.CLIP_MEAN)
    std = torch.tensor(transforms.CLIP_STD)
    white = ((1 - mean) / std).view(3, 1, 1).expand(3, 16, 16)
    for make in (transforms.train_transform, transforms.test_transform):
        out = make(16)(image)
        assert out.shape == (3, 16, 16) and out.dtype == torch.float32
        assert torch.allclose(out, white, atol=1e-4)
    assert transforms.CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert transforms.CLIP_STD == (0.26862954, 0.26130258, 0.27577711)


def test_test_transform_resizes_short_side_then_centre_crops():
    image = Image.new("RGB", (60, 20))
    image.paste((255, 0, 0), (0, 0, 20, 20))  # the left third is red, cropped away
    out = transforms.test_transform(16)(image)
    assert out.shape == (3, 16, 16)
    black = (-torch.tensor(transforms.CLIP_MEAN) / torch.tensor(transforms.CLIP_STD)).view(3, 1, 1)
    assert torch.allclose(out[:, 4:12, 4:12], black.expand(3, 8, 8), atol=1e-4)


def test_transform_descriptions_are_stable_and_distinct():
    train = transforms.describe_transform("train", 224)
    test = transforms.describe_transform("test", 224)
    assert train != test != transforms.describe_transform("test", 336)
    assert train == transforms.describe_transform("train", 224)
    assert "224" in train and "bicubic" in test
    with pytest.raises(ValueError):
        transforms.describe_transform("eval", 224)


def test_image_dataset_items(tmp_path):
    items = [Datum(str(write_image(tmp_path / f"{i}.jpg")), i, str(i)) for i in range(3)]
    dataset = transforms.ImageDataset(items, transforms.test_transform(8))
    assert len(dataset) == 3
    tensor, label, index = dataset[2]
    assert tensor.shape == (3, 8, 8) and (label, index) == (2, 2)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_image_names_the_file(tmp_path, suffix):
    path = write_image(tmp_path / f"broken{suffix}")
    truncate(path)
    dataset = transforms.ImageDataset([Datum(str(path), 0, "x")], transforms.test_transform(8))
    with pytest.raises(DorBenchError, match=f"broken{suffix}"):
        dataset[0]


# --- user mistakes ---------------------------------------------------------------------------


def test_missing_root_names_it(tmp_path):
    missing = tmp_path / "no-such-data"
    with pytest.raises(NotFoundError, match="no-such-data") as err:
        load_trial_data("dtd", missing, shots=1, seed=1)
    assert "--root" in str(err.value)


@pytest.mark.parametrize("name", ALL_DATASETS)
def test_missing_dataset_folder_names_folder_and_layout(root, name):
    reader = DATASETS.get(name)
    with pytest.raises(NotFoundError) as err:
        reader.read(root)
    assert str(root / reader.folder) in str(err.value)
    assert "How to fix: lay it out as" in str(err.value)


def test_root_is_required_for_datasets_on_disk():
    with pytest.raises(DorBenchError, match="--root") as err:
        load_trial_data("eurosat", None, shots=1, seed=1)
    assert "eurosat" in str(err.value)


def test_missing_image_folder_names_it(root):
    (root / "eurosat").mkdir()
    with pytest.raises(NotFoundError, match=str(root / "eurosat" / "2750")):
        DATASETS.get("eurosat").read(root)


def test_missing_split_file_names_it(root):
    (root / "dtd" / "images").mkdir(parents=True)
    with pytest.raises(NotFoundError, match="split_zhou_DescribableTextures.json"):
        DATASETS.get("dtd").read(root)


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"train": [], "val": []}', '{"train": [["a.jpg", 0]], "val": [], "test": []}'],
)
def test_malformed_split_json_names_the_file(root, content):
    folder = make_split_json_dataset(root, "caltech101", num_classes=2)
    (folder / "split_zhou_Caltech101.json").write_text(content)
    with pytest.raises(DorBenchError, match="split_zhou_Caltech101.json.*malformed"):
        load_trial_data("caltech101", root, shots=1, seed=1)


def test_fgvc_unknown_variant_names_file_and_line(root):
    folder = make_fgvc_aircraft(root, num_classes=2, per_class=1)
    with (folder / "images_variant_val.txt").open("a") as f:
        f.write("1234567 Concorde\n")
    with pytest.raises(DorBenchError, match=r"line 3 of '.*images_variant_val.txt'.*'Concorde'"):
        DATASETS.get("fgvc_aircraft").read(root)


def test_fgvc_missing_variants_file(root):
    folder = make_fgvc_aircraft(root, num_classes=2, per_class=1)
    (folder / "variants.txt").unlink()
    with pytest.raises(NotFoundError, match="variants.txt"):
        DATASETS.get("fgvc_aircraft").read(root)


def test_imagenet_classnames_line_without_name(root):
    folder = make_imagenet(root, num_classes=2, train=1, val=1)
    (folder / "classnames.txt").write_text("n00000000 tench\nn00000001\n")
    with pytest.raises(DorBenchError, match=r"line 2 of '.*classnames.txt' has no class name"):
        DATASETS.get("imagenet").read(root)


def test_imagenet_missing_class_folder_names_it(root):
    folder = make_imagenet(root, num_classes=3, train=1, val=1)
    for path in (folder / "images" / "val" / "n00000001").iterdir():
        path.unlink()
    (folder / "images" / "val" / "n00000001").rmdir()
    with pytest.raises(NotFoundError, match="images/val/n00000001"):
        DATASETS.get("imagenet").read(root)


def test_variant_folder_not_in_classnames(root):
    folder = make_wnid_variant(root, "imagenet_r", num_classes=3, present=[0, 1])
    write_image(folder / "imagenet-r" / "n99999999" / "x.png")
    with pytest.raises(DorBenchError, match="n99999999"):
        DATASETS.get("imagenet_r").read(root)


def test_bad_subsample_and_shots(root):
    make_split_json_dataset(root, "dtd", num_classes=2)
    with pytest.raises(DorBenchError, match="subsample 'base'"):
        load_trial_data("dtd", root, shots=1, seed=1, subsample="base")
    with pytest.raises(DorBenchError, match="shots"):
        load_trial_data("dtd", root, shots=0, seed=1)
