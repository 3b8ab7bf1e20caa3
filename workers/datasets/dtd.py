"""DescribableTextures (47 classes): dtd/images + split_zhou_DescribableTextures.json."""

from workers.datasets.base import SplitJsonReader
from workers.datasets.registry import DATASETS

DATASETS.register("dtd")(
    SplitJsonReader(
        name="dtd",
        folder="dtd",
        split_file="split_zhou_DescribableTextures.json",
        image_dir="images",
        template="{} texture.",
    )
)
