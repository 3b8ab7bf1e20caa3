"""SUN397 (397 classes): sun397/SUN397 + split_zhou_SUN397.json."""

from workers.datasets.base import SplitJsonReader
from workers.datasets.registry import DATASETS

DATASETS.register("sun397")(
    SplitJsonReader(
        name="sun397",
        folder="sun397",
        split_file="split_zhou_SUN397.json",
        image_dir="SUN397",
    )
)
