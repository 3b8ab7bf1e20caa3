"""CLIP's train and test image transforms, their stable descriptions, and an image Dataset."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from workers.datasets.base import Datum
from workers.errors import DorBenchError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Bump when a transform below changes what it produces (the descriptions are cache keys).
TRANSFORMS_VERSION = 1


def train_transform(image_size: int, min_crop_scale: float = 0.08) -> T.Compose:
    """Random-resized crop (area scale ``min_crop_scale``-1, bicubic), horizontal flip, CLIP
    normalisation. ``min_crop_scale`` >= 1 keeps the whole image (test resize, then flip only)."""
    if min_crop_scale >= 1:
        crop = [T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size)]
    else:
        crop = [T.RandomResizedCrop(image_size, scale=(min_crop_scale, 1.0), interpolation=T.InterpolationMode.BICUBIC)]
    return T.Compose([*crop, T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])


def test_transform(image_size: int) -> T.Compose:
    """Resize the short side (bicubic), centre crop, CLIP normalisation."""
    return T.Compose(
        [
            T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


test_transform.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when a test imports it


def describe_transform(kind: Literal["train", "test"], image_size: int, min_crop_scale: float = 0.08) -> str:
    """A stable text identity of ``train_transform``/``test_transform`` (for cache keys)."""
    crop = (
        f"resize{image_size}(bicubic)+centercrop{image_size}"
        if min_crop_scale >= 1
        else f"rrc{image_size}({min_crop_scale:g}-1,bicubic)"
    )
    steps = {
        "train": f"{crop}+hflip",
        "test": f"resize{image_size}(bicubic)+centercrop{image_size}",
    }
    if kind not in steps:
        raise ValueError(f"kind must be 'train' or 'test', not {kind!r}")
    return f"v{TRANSFORMS_VERSION}:{steps[kind]}+totensor+clipnorm"


def load_rgb(path: str) -> Image.Image:
    """The image at ``path`` as RGB, fully decoded; a DorBenchError naming a bad file."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as err:  # PIL reports broken files in these
        raise DorBenchError(
            f"Cannot read image '{path}' ({type(err).__name__}: {err}).",
            "re-download or replace the file; the dataset check lists every unreadable image.",
        ) from None


class ImageDataset(Dataset):
    """Items as ``(transformed image, label, index)``; images are opened as RGB with PIL."""

    def __init__(self, items: Sequence[Datum], transform: Callable[[Image.Image], torch.Tensor]):
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        item = self.items[index]
        return self.transform(load_rgb(item.path)), item.label, index
