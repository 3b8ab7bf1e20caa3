"""OxfordFlowers (102 classes): oxford_flowers/jpg + split_zhou_OxfordFlowers.json."""

from workers.datasets.base import SplitJsonReader
from workers.datasets.registry import DATASETS

DATASETS.register("oxford_flowers")(
    SplitJsonReader(
        name="oxford_flowers",
        folder="oxford_flowers",
        split_file="split_zhou_OxfordFlowers.json",
        image_dir="jpg",
        template="a photo of a {}, a type of flower.",
    )
)
