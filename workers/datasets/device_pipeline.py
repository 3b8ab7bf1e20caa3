"""The device image pipeline (method option ``image_pipeline: device``): decode once, resample on the device.

Each training image is decoded once into a uint8 array kept on disk (``decoded_image``: the
cache folder's ``decoded/<dataset>/short<side>/``, one ``.npy`` per image, read memory-mapped, so
every trial and process on the machine shares it through the page cache). A loader (in-process
or worker) cuts each sample's crop box out of it, as drawn by ``TrainAugment.draw`` from the
sample's seed; ``finish_on_device`` then resizes the crops (bicubic, antialiased), mirrors and
normalises them on the trial's device. How this differs from PIL's resampling:
docs/fidelity.md (Augmentation).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from workers.datasets.base import Datum
from workers.datasets.transforms import CLIP_MEAN, CLIP_STD, TrainAugment, load_rgb
from workers.paths import atomic_write_bytes, cache_dir

#: Bump when what a decoded file holds changes (it is part of every decoded file's key).
DECODED_VERSION = 1


def precrop_side(image_size: int, min_crop_scale: float) -> int:
    """The short side images are kept at, at most: large enough that the smallest crop (area
    ``min_crop_scale``) still spans about ``image_size`` pixels, so the cache never makes a crop
    that PIL would downscale from the original an upscale. 224 px at scale 0.08: 792."""
    return math.ceil(image_size / math.sqrt(min(min_crop_scale, 1.0)))


def decoded_folder(dataset: str, side: int) -> Path:
    """Where the decoded images of ``dataset`` kept at short side <= ``side`` live."""
    return cache_dir("decoded", dataset, f"short{side}")


def decoded_image(path: str, side: int, folder: Path) -> np.ndarray:
    """The RGB image at ``path`` as a ``[H, W, 3]`` uint8 array whose short side is at most
    ``side`` (larger images are shrunk with PIL's antialiased bicubic), kept in ``folder``
    (``kept_pixels``)."""

    def shrink(image: Image.Image) -> Image.Image:
        short = min(image.size)
        if short <= side:
            return image
        size = (round(image.width * side / short), round(image.height * side / short))
        return image.resize(size, Image.Resampling.BICUBIC)

    return kept_pixels(path, f"{side}", folder, shrink)


def kept_pixels(path: str, how: str, folder: Path, make: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    """``make`` of the RGB image at ``path``, as a ``[H, W, 3]`` uint8 array, decoded and written
    to ``folder`` the first time (``how`` names what ``make`` does). It is read memory-mapped:
    the pixels stay in the page cache, shared by every process reading them. The file's key
    covers the image's path, size and modification time, so an edited image is decoded again."""
    stat = os.stat(path)
    key = hashlib.sha256(f"v{DECODED_VERSION}|{how}|{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    file = folder / key[:2] / f"{key[:24]}.npy"
    if not file.is_file():
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(make(load_rgb(path))))
        atomic_write_bytes(file, buffer.getvalue())
    return np.load(file, mmap_mode="r")


class DecodedCrops(Dataset):
    """Sample ``(index, seed)`` -> (its crop box cut from the decoded image, uint8 ``[h, w, 3]``;
    whether to mirror it; its label). The box and flip are ``augment.draw`` from ``seed``."""

    def __init__(self, items: Sequence[Datum], augment: TrainAugment, dataset: str):
        self.items, self.augment = list(items), augment
        self.side = precrop_side(augment.image_size, augment.min_crop_scale)
        self.folder = decoded_folder(dataset, self.side)
        self.opened: dict[int, np.ndarray] = {}  # each image mapped once per process (a map, no copy)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, bool, int]:
        index, seed = key
        item = self.items[index]
        if index not in self.opened:
            self.opened[index] = decoded_image(item.path, self.side, self.folder)
        image = self.opened[index]
        draw = self.augment.draw(image.shape[1], image.shape[0], torch.Generator().manual_seed(seed))
        crop = image[draw.top : draw.top + draw.height, draw.left : draw.left + draw.width]
        return torch.from_numpy(np.array(crop)), draw.flip, item.label  # a copy: the cache file is read-only


def collate_crops(
    batch: list[tuple[torch.Tensor, bool, int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of crops of different sizes as one flat uint8 buffer (one copy to the device) and
    their ``[N, 2]`` (height, width); flips and labels as tensors."""
    crops, flips, labels = zip(*batch)
    flat = torch.cat([crop.reshape(-1) for crop in crops])
    shapes = torch.tensor([crop.shape[:2] for crop in crops])
    return flat, shapes, torch.tensor(flips), torch.tensor(labels)


def finish_on_device(
    flat: torch.Tensor, shapes: torch.Tensor, flips: torch.Tensor, size: int, device: torch.device
) -> torch.Tensor:
    """``[N, 3, size, size]`` float32 on ``device`` from ``collate_crops``'s buffer: each
    ``[h, w, 3]`` crop resized to ``size`` x ``size`` (torch's antialiased bicubic, PIL's
    filter, in float32, clamped to 0-255), mirrored where ``flips`` says, CLIP-normalised."""
    pixels = flat.to(device, non_blocking=True).float()
    out = torch.empty(len(shapes), 3, size, size, device=device)
    start = 0
    for k, ((height, width), flip) in enumerate(zip(shapes.tolist(), flips.tolist())):
        crop = pixels[start : start + height * width * 3].view(1, height, width, 3).permute(0, 3, 1, 2)
        resized = F.interpolate(crop, size=(size, size), mode="bicubic", antialias=True, align_corners=False)[0]
        out[k] = resized.flip(-1) if flip else resized
        start += height * width * 3
    mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1) * 255
    return out.clamp_(0, 255).sub_(mean).div_(std)
