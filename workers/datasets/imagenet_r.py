"""ImageNet-R (200 classes, test only): imagenet-rendition/imagenet-r/<wnid>/*."""

from workers.datasets.imagenet import WnidFolderReader
from workers.datasets.registry import DATASETS

DATASETS.register("imagenet_r")(
    WnidFolderReader(name="imagenet_r", folder="imagenet-rendition", image_dir="imagenet-r")
)
