"""OxfordPets (37 classes): oxford_pets/images + split_zhou_OxfordPets.json."""

from workers.datasets.base import SplitJsonReader
from workers.datasets.registry import DATASETS

DATASETS.register("oxford_pets")(
    SplitJsonReader(
        name="oxford_pets",
        folder="oxford_pets",
        split_file="split_zhou_OxfordPets.json",
        image_dir="images",
        template="a photo of a {}, a type of pet.",
    )
)
