"""StanfordCars (196 classes): split paths (cars_train/..., cars_test/...) start in the folder."""

from workers.datasets.base import SplitJsonReader
from workers.datasets.registry import DATASETS

DATASETS.register("stanford_cars")(
    SplitJsonReader(
        name="stanford_cars",
        folder="stanford_cars",
        split_file="split_zhou_StanfordCars.json",
        image_dir="",
    )
)
