"""ImageNet-A (200 classes, test only): imagenet-adversarial/imagenet-a/<wnid>/*."""

from workers.datasets.imagenet import WnidFolderReader
from workers.datasets.registry import DATASETS

DATASETS.register("imagenet_a")(
    WnidFolderReader(name="imagenet_a", folder="imagenet-adversarial", image_dir="imagenet-a")
)
