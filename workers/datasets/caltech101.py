"""Caltech101 (100 classes): caltech-101/101_ObjectCategories + split_zhou_Caltech101.json."""

from workers.datasets.base import SplitJsonReader
from workers.datasets.registry import DATASETS

DATASETS.register("caltech101")(
    SplitJsonReader(
        name="caltech101",
        folder="caltech-101",
        split_file="split_zhou_Caltech101.json",
        image_dir="101_ObjectCategories",
    )
)
