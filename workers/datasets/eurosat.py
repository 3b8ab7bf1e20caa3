"""EuroSAT (10 classes): eurosat/2750 + split_zhou_EuroSAT.json."""

from workers.datasets.base import SplitJsonReader
from workers.datasets.registry import DATASETS

DATASETS.register("eurosat")(
    SplitJsonReader(
        name="eurosat",
        folder="eurosat",
        split_file="split_zhou_EuroSAT.json",
        image_dir="2750",
        template="a centered satellite photo of {}.",
    )
)
