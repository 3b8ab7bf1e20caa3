"""UCF101 (101 classes): ucf101/UCF-101-midframes + split_zhou_UCF101.json."""

from workers.datasets.base import SplitJsonReader
from workers.datasets.registry import DATASETS

DATASETS.register("ucf101")(
    SplitJsonReader(
        name="ucf101",
        folder="ucf101",
        split_file="split_zhou_UCF101.json",
        image_dir="UCF-101-midframes",
        template="a photo of a person doing {}.",
    )
)
