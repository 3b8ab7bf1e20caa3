"""Tiny fake dataset trees in the exact on-disk layouts of CoOp's DATASETS.md (SPEC section 4).

The folder and file names are written out here independently of the readers, so the tests check
the readers against the layout users have on disk. Images are 8x8 JPEG or PNG files.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

# name: (dataset folder, image folder the split paths start from, split file)
SPLIT_JSON = {
    "caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    "oxford_pets": ("oxford_pets", "images", "split_zhou_OxfordPets.json"),
    "stanford_cars": ("stanford_cars", "", "split_zhou_StanfordCars.json"),
    "oxford_flowers": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    "food101": ("food-101", "images", "split_zhou_Food101.json"),
    "sun397": ("sun397", "SUN397", "split_zhou_SUN397.json"),
    "dtd": ("dtd", "images", "split_zhou_DescribableTextures.json"),
    "eurosat": ("eurosat", "2750", "split_zhou_EuroSAT.json"),
    "ucf101": ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
}
# name: (dataset folder, image folder holding one folder per wnid)
WNID_VARIANTS = {
    "imagenet_sketch": ("imagenet-sketch", "images"),
    "imagenet_a": ("imagenet-adversarial", "imagenet-a"),
    "imagenet_r": ("imagenet-rendition", "imagenet-r"),
}
TEMPLATES = {
    "oxford_pets": "a photo of a {}, a type of pet.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "food101": "a photo of {}, a type of food.",
    "ucf101": "a photo of a person doing {}.",
}
SPLITS = ("train", "val", "test")


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 90)).save(buffer, format=fmt)
    return buffer.getvalue()


_IMAGE_BYTES = {".jpg": _encoded("JPEG"), ".jpeg": _encoded("JPEG"), ".png": _encoded("PNG")}


def write_image(path: Path) -> Path:
    """An 8x8 image at ``path`` (JPEG or PNG by suffix), parent folders created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_IMAGE_BYTES[path.suffix.lower()])
    return path


def truncate(path: Path) -> None:
    """Cut an image file in half, as an interrupted download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def counts_per_class(num_classes: int, per_class: int | Sequence[int]) -> list[int]:
    """``per_class`` as one count per class."""
    return [per_class] * num_classes if isinstance(per_class, int) else list(per_class)


def classname(name: str, label: int) -> str:
    """A class name with spaces, unique per dataset and label."""
    return f"{name} class {label:03d}"


def make_split_json_dataset(
    root: Path,
    name: str,
    num_classes: int,
    train: int | Sequence[int] = 3,
    val: int | Sequence[int] = 2,
    test: int | Sequence[int] = 2,
) -> Path:
    """A split_zhou dataset (``name`` in SPLIT_JSON) with the given images per class and split."""
    folder, image_dir, split_file = SPLIT_JSON[name]
    base = root / folder
    split: dict[str, list] = {}
    for split_name, per_class in zip(SPLITS, (train, val, test)):
        split[split_name] = []
        for label, count in enumerate(counts_per_class(num_classes, per_class)):
            for i in range(count):
                if name == "stanford_cars":  # paths start in the dataset folder itself
                    sub = "cars_test" if split_name == "test" else "cars_train"
                    relpath = f"{sub}/{label:03d}{split_name[:2]}{i:02d}.jpg"
                else:
                    ext = ".png" if name == "eurosat" else ".jpg"
                    relpath = f"c{label:03d}/{split_name}_{i}{ext}"
                write_image(base / image_dir / relpath)
                split[split_name].append([relpath, label, classname(name, label)])
    (base / split_file).write_text(json.dumps(split))
    return base


def make_fgvc_aircraft(root: Path, num_classes: int, per_class: int = 3) -> Path:
    """fgvc_aircraft/: images/<id>.jpg, variants.txt, images_variant_{train,val,test}.txt."""
    base = root / "fgvc_aircraft"
    variants = [f"Boeing 7{label:02d}-200 / ER" for label in range(num_classes)]
    (base / "variants.txt").parent.mkdir(parents=True, exist_ok=True)
    (base / "variants.txt").write_text("".join(v + "\n" for v in variants))
    image_id = 1000000
    for split in SPLITS:
        lines = []
        for variant in variants:
            for _ in range(per_class):
                image_id += 1
                write_image(base / "images" / f"{image_id}.jpg")
                lines.append(f"{image_id} {variant}\n")
        (base / f"images_variant_{split}.txt").write_text("".join(lines))
    return base


def wnid(index: int) -> str:
    """The fake wnid of ImageNet class ``index`` (sorted order = index order)."""
    return f"n{index:08d}"


def write_classnames(folder: Path, num_classes: int) -> list[str]:
    """A classnames.txt of ``num_classes`` "<wnid> <name with spaces>" lines; returns the names."""
    names = [f"imagenet class {i}" for i in range(num_classes)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classnames.txt").write_text("".join(f"{wnid(i)} {n}\n" for i, n in enumerate(names)))
    return names


def make_imagenet(root: Path, num_classes: int, train: int | Sequence[int] = 6, val: int = 2) -> Path:
    """imagenet/: classnames.txt, images/train/<wnid>/*.JPEG, images/val/<wnid>/*.JPEG."""
    base = root / "imagenet"
    write_classnames(base, num_classes)
    for i, count in enumerate(counts_per_class(num_classes, train)):
        for j in range(count):
            write_image(base / "images" / "train" / wnid(i) / f"{wnid(i)}_{j}.jpeg")
        for j in range(val):
            write_image(base / "images" / "val" / wnid(i) / f"ILSVRC2012_val_{i:04d}{j}.jpeg")
    return base


def make_imagenetv2(root: Path, num_classes: int, per_class: int = 2) -> Path:
    """imagenetv2/: classnames.txt, imagenetv2-matched-frequency-format-val/<label>/*.jpeg."""
    base = root / "imagenetv2"
    write_classnames(base, num_classes)
    for label in range(num_classes):
        for j in range(per_class):
            write_image(base / "imagenetv2-matched-frequency-format-val" / str(label) / f"{j}.jpeg")
    return base


def make_wnid_variant(root: Path, name: str, num_classes: int, present: Sequence[int], per_class: int = 2) -> Path:
    """An ImageNet variant (``name`` in WNID_VARIANTS) with folders for the ``present`` classes.

    Its classnames.txt lists all ``num_classes`` ImageNet classes; a README.txt sits beside the
    class folders, as in the ImageNet-A and -R downloads.
    """
    folder, image_dir = WNID_VARIANTS[name]
    base = root / folder
    write_classnames(base, num_classes)
    for index in present:
        for j in range(per_class):
            write_image(base / image_dir / wnid(index) / f"{j}.png")
    (base / image_dir / "README.txt").write_text("class folders are wnids\n")
    return base


def make_all(root: Path, num_classes: int = 4) -> Path:
    """Every one of the 15 datasets, ``num_classes`` classes each (variants: a subset)."""
    for name in SPLIT_JSON:
        make_split_json_dataset(root, name, num_classes)
    make_fgvc_aircraft(root, num_classes)
    make_imagenet(root, num_classes)
    make_imagenetv2(root, num_classes)
    for name in WNID_VARIANTS:
        make_wnid_variant(root, name, num_classes, present=range(1, num_classes))
    return root
