"""ImageNet-Sketch (1000 classes, test only): imagenet-sketch/images/<wnid>/*."""

from workers.datasets.imagenet import WnidFolderReader
from workers.datasets.registry import DATASETS

DATASETS.register("imagenet_sketch")(
    WnidFolderReader(name="imagenet_sketch", folder="imagenet-sketch", image_dir="images")
)
