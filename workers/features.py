"""Frozen image-encoder features, computed once and cached on disk.

The cache key covers everything the features depend on: the image tower's weights
(fingerprint), the dataset, the split, the exact list of images (paths, sizes, modification
times) and the transform. Change any of them and the key changes.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader

from workers.datasets.base import Datum
from workers.datasets.transforms import ImageDataset
from workers.models.clip import ClipBundle
from workers.paths import atomic_write_bytes, cache_dir
from workers.progress import Progress


def feature_key(clip: ClipBundle, dataset: str, split: str, items: Sequence[Datum], transform_id: str) -> str:
    """The cache key of one split's features."""
    digest = hashlib.sha256()
    for part in (clip.arch, clip.visual_fingerprint, str(clip.dtype), dataset, split, transform_id):
        digest.update(part.encode() + b"\0")
    for item in items:
        stat = os.stat(item.path)
        digest.update(f"{item.path}|{item.label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


@torch.no_grad()
def encode_images(
    clip: ClipBundle,
    items: Sequence[Datum],
    transform: Callable,
    *,
    batch_size: int = 128,
    num_workers: int = 0,
    desc: str = "encoding images",
    progress: bool = True,
) -> torch.Tensor:
    """Image features (float32, not normalised) of ``items`` in order, straight from the encoder."""
    loader = DataLoader(
        ImageDataset(list(items), transform), batch_size=batch_size, num_workers=num_workers, shuffle=False
    )
    bar = Progress(len(items), desc, enabled=progress)
    chunks = []
    for images, _, _ in loader:
        chunks.append(clip.model.encode_image(images.to(clip.device, clip.dtype)).float().cpu())
        bar.update(len(images))
    return torch.cat(chunks) if chunks else torch.empty(0)


def cached_image_features(
    clip: ClipBundle,
    items: Sequence[Datum],
    transform: Callable,
    transform_id: str,
    *,
    dataset: str,
    split: str,
    use_cache: bool = True,
    progress: bool = True,
) -> tuple[torch.Tensor, bool]:
    """Features of ``items``, read from the cache when present. Returns (features, cache_hit)."""
    if not use_cache:
        return encode_images(clip, items, transform, desc=f"{dataset}/{split}", progress=progress), False
    path = cache_dir("features") / f"{feature_key(clip, dataset, split, items, transform_id)}.pt"
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True), True
    feats = encode_images(clip, items, transform, desc=f"{dataset}/{split}", progress=progress)
    buffer = io.BytesIO()
    torch.save(feats, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return feats, False
