"""ImageNet (1000 classes) read from its folders, plus the helpers its test-only variants share.

Layout: imagenet/classnames.txt ("<wnid> <class name>" lines), imagenet/images/train/<wnid>/* and
imagenet/images/val/<wnid>/*. Labels follow sorted wnids (CoOp's order). The val folder is the test
set; the reader returns no validation split, so few-shot sampling draws the validation images
from the training images it did not pick (see ``workers.datasets.sampling``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workers.datasets.base import (
    DatasetSplits,
    Datum,
    dataset_dir,
    list_images,
    read_lines,
    require_dir,
)
from workers.datasets.registry import DATASETS
from workers.errors import DorBenchError


def read_wnid_classnames(path: Path, dataset: str, layout: str) -> dict[str, str]:
    """``classnames.txt`` as {wnid: class name}, in file order."""
    names: dict[str, str] = {}
    for number, line in enumerate(read_lines(path, dataset, layout), 1):
        wnid, _, classname = line.partition(" ")
        if not classname.strip():
            raise DorBenchError(
                f"Dataset '{dataset}': line {number} of '{path}' has no class name.",
                "each line must read '<wnid> <class name>' (CoOp's DATASETS.md has the file).",
            )
        names[wnid] = classname.strip()
    return names


def read_wnid_folders(
    image_dir: Path, wnids: list[str], names: dict[str, str], dataset: str, layout: str
) -> list[Datum]:
    """The images of ``image_dir/<wnid>/`` for each wnid, labelled by its position in ``wnids``."""
    items = []
    for label, wnid in enumerate(wnids):
        folder = require_dir(image_dir / wnid, dataset, layout)
        items += [Datum(path, label, names[wnid]) for path in list_images(folder)]
    return items


def wnid_subfolders(image_dir: Path, names: dict[str, str], classnames_file: Path, dataset: str) -> list[str]:
    """The sorted class folders of ``image_dir``; each must be a wnid in ``classnames_file``."""
    wnids = sorted(p.name for p in image_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [w for w in wnids if w not in names]
    if unknown:
        raise DorBenchError(
            f"Dataset '{dataset}': {len(unknown)} folder(s) in '{image_dir}' are not wnids "
            f"listed in '{classnames_file}', e.g. '{unknown[0]}'.",
            "use the classnames.txt from CoOp's DATASETS.md and keep only class folders there.",
        )
    return wnids


@dataclass(frozen=True)
class ImageNetReader:
    """Train = every image under images/train; test = images/val; no val split of its own."""

    name: str = "imagenet"
    folder: str = "imagenet"
    template: str = "a photo of a {}."
    builtin: bool = False
    layout: str = (
        "'imagenet/classnames.txt' (\"<wnid> <class name>\" lines) with "
        "'imagenet/images/train/<wnid>/*' and 'imagenet/images/val/<wnid>/*' (CoOp's DATASETS.md)"
    )

    def read(self, root: Path | None) -> DatasetSplits:
        """Read the class names and the train and val folders of every class."""
        folder = dataset_dir(root, self, self.layout)
        classnames_file = folder / "classnames.txt"
        names = read_wnid_classnames(classnames_file, self.name, self.layout)
        wnids = sorted(names)
        splits = {}
        for split, subdir in (("train", "train"), ("test", "val")):
            image_dir = require_dir(folder / "images" / subdir, self.name, self.layout)
            wnid_subfolders(image_dir, names, classnames_file, self.name)
            splits[split] = read_wnid_folders(image_dir, wnids, names, self.name, self.layout)
        classnames = [names[w] for w in wnids]
        return DatasetSplits(self.name, classnames, template=self.template, **splits)


@dataclass(frozen=True)
class WnidFolderReader:
    """A test-only ImageNet variant with one folder per wnid; its classes are the wnids present.

    Class names come from the variant's own classnames.txt (ImageNet's); labels are 0..n-1 in
    sorted wnid order, so ImageNet-A and -R get their 200-class subsets.
    """

    name: str
    folder: str
    image_dir: str
    template: str = "a photo of a {}."
    builtin: bool = False

    @property
    def layout(self) -> str:
        return (
            f"'{self.folder}/classnames.txt' (\"<wnid> <class name>\" lines) with "
            f"'{self.folder}/{self.image_dir}/<wnid>/*' (CoOp's DATASETS.md)"
        )

    def read(self, root: Path | None) -> DatasetSplits:
        """Read the class folders present; every image is a test image."""
        folder = dataset_dir(root, self, self.layout)
        classnames_file = folder / "classnames.txt"
        names = read_wnid_classnames(classnames_file, self.name, self.layout)
        image_dir = require_dir(folder / self.image_dir, self.name, self.layout)
        wnids = wnid_subfolders(image_dir, names, classnames_file, self.name)
        test = read_wnid_folders(image_dir, wnids, names, self.name, self.layout)
        classnames = [names[w] for w in wnids]
        return DatasetSplits(self.name, classnames, test=test, template=self.template)


DATASETS.register("imagenet")(ImageNetReader())
