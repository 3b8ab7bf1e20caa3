"""ImageNetV2 (1000 classes, test only): imagenetv2-matched-frequency-format-val/<label>/*.

Folder ``<label>`` holds the images of line ``label`` (from 0) of imagenetv2/classnames.txt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workers.datasets.base import DatasetSplits, Datum, dataset_dir, list_images, require_dir
from workers.datasets.imagenet import read_wnid_classnames
from workers.datasets.registry import DATASETS


@dataclass(frozen=True)
class ImageNetV2Reader:
    """Labels are the folder numbers, class names the classnames.txt lines in file order."""

    name: str = "imagenetv2"
    folder: str = "imagenetv2"
    template: str = "a photo of a {}."
    builtin: bool = False
    layout: str = (
        "'imagenetv2/classnames.txt' (\"<wnid> <class name>\" lines) with "
        "'imagenetv2/imagenetv2-matched-frequency-format-val/<label index>/*' (CoOp's DATASETS.md)"
    )

    def read(self, root: Path | None) -> DatasetSplits:
        """Read one numbered folder per class; every image is a test image."""
        folder = dataset_dir(root, self, self.layout)
        names = read_wnid_classnames(folder / "classnames.txt", self.name, self.layout)
        classnames = list(names.values())
        image_dir = folder / "imagenetv2-matched-frequency-format-val"
        require_dir(image_dir, self.name, self.layout)
        test = []
        for label, classname in enumerate(classnames):
            class_dir = require_dir(image_dir / str(label), self.name, self.layout)
            test += [Datum(path, label, classname) for path in list_images(class_dir)]
        return DatasetSplits(self.name, classnames, test=test, template=self.template)


DATASETS.register("imagenetv2")(ImageNetV2Reader())
