"""Food101 (101 classes): food-101/images + split_zhou_Food101.json."""

from workers.datasets.base import SplitJsonReader
from workers.datasets.registry import DATASETS

DATASETS.register("food101")(
    SplitJsonReader(
        name="food101",
        folder="food-101",
        split_file="split_zhou_Food101.json",
        image_dir="images",
        template="a photo of {}, a type of food.",
    )
)
