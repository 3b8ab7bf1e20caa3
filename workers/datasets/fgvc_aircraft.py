"""FGVCAircraft (100 variants): images/<id>.jpg + variants.txt + images_variant_*.txt."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workers.datasets.base import DatasetSplits, Datum, dataset_dir, read_lines, require_dir
from workers.datasets.registry import DATASETS
from workers.errors import DorBenchError


@dataclass(frozen=True)
class FGVCAircraftReader:
    """Class names from variants.txt (index = label); each split file has "<id> <variant>" lines."""

    name: str = "fgvc_aircraft"
    folder: str = "fgvc_aircraft"
    template: str = "a photo of a {}, a type of aircraft."
    builtin: bool = False
    layout: str = (
        "'fgvc_aircraft/images/<id>.jpg' with 'fgvc_aircraft/variants.txt' and "
        "'fgvc_aircraft/images_variant_{train,val,test}.txt' (CoOp's DATASETS.md)"
    )

    def read(self, root: Path | None) -> DatasetSplits:
        """Read the variant names and the three split files."""
        folder = dataset_dir(root, self, self.layout)
        image_dir = require_dir(folder / "images", self.name, self.layout)
        classnames = read_lines(folder / "variants.txt", self.name, self.layout)
        label_of = {name: label for label, name in enumerate(classnames)}
        splits = {}
        for split in ("train", "val", "test"):
            split_file = folder / f"images_variant_{split}.txt"
            items = []
            for number, line in enumerate(read_lines(split_file, self.name, self.layout), 1):
                image_id, _, variant = line.partition(" ")
                if variant not in label_of:
                    raise DorBenchError(
                        f"Dataset '{self.name}': line {number} of '{split_file}' names the variant "
                        f"'{variant}', which is not in '{folder / 'variants.txt'}'.",
                        "lines must read '<image id> <variant>'; re-download the dataset (CoOp's DATASETS.md).",
                    )
                items.append(Datum(str(image_dir / f"{image_id}.jpg"), label_of[variant], variant))
            splits[split] = items
        return DatasetSplits(self.name, classnames, template=self.template, **splits)


DATASETS.register("fgvc_aircraft")(FGVCAircraftReader())
