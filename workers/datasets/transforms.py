"""CLIP's train and test image transforms, their stable descriptions, and an image Dataset.

The training augmentation is one object, ``TrainAugment``: ``draw`` picks a crop box and a flip
(the draws torchvision's ``RandomResizedCrop`` + ``RandomHorizontalFlip`` make, in their order,
from any generator), and calling it applies them to a PIL image. The same draw drives the
device pipeline (``workers/datasets/device_pipeline.py``), which resamples on the trial's device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from workers.datasets.base import Datum
from workers.errors import DorBenchError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: The aspect ratio range of the random-resized crop (torchvision's default; Dassl passes none).
CROP_RATIO = (3 / 4, 4 / 3)
_LOG_RATIO: list[float] = torch.log(torch.tensor(CROP_RATIO)).tolist()  # in float32, as torchvision

#: Bump when a transform below changes what it produces (the descriptions are cache keys).
TRANSFORMS_VERSION = 1

BICUBIC = T.InterpolationMode.BICUBIC


def crop_box(
    width: int, height: int, scale: tuple[float, float], generator: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """A random-resized crop's box ``(top, left, height, width)``: the draws, arithmetic and
    central fallback of ``torchvision.transforms.RandomResizedCrop.get_params`` (ratio
    ``CROP_RATIO``), taken from ``generator`` (None: torch's global generator, as torchvision)."""
    for _ in range(10):
        area = width * height * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(_LOG_RATIO[0], _LOG_RATIO[1], generator=generator)).item()
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    # ten misses: the whole image, cut to the nearest allowed aspect ratio, centred
    w, h = width, height
    if width / height < CROP_RATIO[0]:
        h = round(width / CROP_RATIO[0])
    elif width / height > CROP_RATIO[1]:
        w = round(height * CROP_RATIO[1])
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass(frozen=True)
class Draw:
    """One training view of one image: a crop box in the image's pixels, and whether to mirror it."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


class TrainAugment:
    """Random-resized crop (area scale ``min_crop_scale``-1, ratio 3/4-4/3, bicubic) to
    ``image_size``, horizontal flip with probability 0.5, CLIP normalisation. ``min_crop_scale``
    >= 1 keeps the whole image (the test resize and centre crop, then the flip only)."""

    def __init__(self, image_size: int, min_crop_scale: float = 0.08):
        self.image_size, self.min_crop_scale = image_size, min_crop_scale

    def draw(self, width: int, height: int, generator: torch.Generator | None = None) -> Draw:
        """The random part, for an image of ``width`` x ``height``. Without a crop the box is the
        centred square of the short side (what the resize and centre crop keep)."""
        if self.min_crop_scale >= 1:
            side = min(width, height)
            box = ((height - side) // 2, (width - side) // 2, side, side)
        else:
            box = crop_box(width, height, (self.min_crop_scale, 1.0), generator)
        flip = bool(torch.rand(1, generator=generator).item() < 0.5)
        return Draw(*box, flip=flip)

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        """The augmented, normalised view of a PIL image (draws from ``generator``; None: torch's
        global generator, which makes it equal to torchvision's transforms seeded the same)."""
        draw = self.draw(*image.size, generator)
        size = self.image_size
        if self.min_crop_scale >= 1:
            image = TF.center_crop(TF.resize(image, size, interpolation=BICUBIC), size)
        else:
            image = TF.resized_crop(image, draw.top, draw.left, draw.height, draw.width, [size, size], BICUBIC)
        if draw.flip:
            image = TF.hflip(image)
        return TF.normalize(TF.to_tensor(image), CLIP_MEAN, CLIP_STD)


def train_transform(image_size: int, min_crop_scale: float = 0.08) -> TrainAugment:
    """The training augmentation (``TrainAugment``) as a transform of a PIL image."""
    return TrainAugment(image_size, min_crop_scale)


def test_transform(image_size: int) -> T.Compose:
    """Resize the short side (bicubic), centre crop, CLIP normalisation."""
    return T.Compose([*test_view(image_size).transforms, *normalised_tensor().transforms])


def test_view(image_size: int) -> T.Compose:
    """``test_transform``'s pixels: the PIL image resized (short side, bicubic) and centre-cropped."""
    return T.Compose([T.Resize(image_size, interpolation=BICUBIC), T.CenterCrop(image_size)])


def normalised_tensor() -> T.Compose:
    """``test_transform``'s last steps: uint8 pixels (PIL or ``[H, W, 3]``) to a CLIP-normalised tensor."""
    return T.Compose([T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])


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
