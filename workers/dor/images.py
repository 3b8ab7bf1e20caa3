"""Visual DOR: a pool of outlier images and the regulariser on their image features.

For methods that tune CLIP's image side and keep its text side frozen (VPT, CLIP-Adapter), DOR
regularises image features instead of text features: every step draws B outlier images from the
pool and adds ``lam * (1 - mean cos(f_tuned(x_o), f_zs(x_o)))``, ``f_zs`` the frozen zero-shot
image features of the pool, computed once through the on-disk feature cache.

The pool comes from a dataset in CoOp's layout (``imagenet`` by default; ``shapes-outliers`` for
the built-in world). Images of classes named like the target's excluded classes are left out;
at most ``CANDIDATES_PER_CLASS`` training images per class are candidates (a fixed draw), and the
pool keeps the ``near`` / ``far`` / ``random`` K of them by the mean cosine similarity of their
zero-shot image feature to the base class names' zero-shot text features, as the text pool does.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from workers.datasets import DATASETS, Datum
from workers.datasets.base import text_name
from workers.datasets.device_pipeline import kept_pixels
from workers.datasets.sampling import sample_per_label
from workers.datasets.transforms import describe_transform, normalised_tensor, test_transform, test_view
from workers.dor.pool import check_strategy, encode_words, normalise_name, pick
from workers.dor.regularizer import OutlierRegularizer
from workers.errors import DorBenchError
from workers.features import cached_image_features
from workers.models.clip import ClipBundle
from workers.paths import cache_dir

#: Training images per source class that may enter a pool (ImageNet: at most 16,000 candidates
#: to encode once, instead of 1.28 million).
CANDIDATES_PER_CLASS = 16


@dataclass
class ImageOutlierPool:
    """Outlier images and their frozen zero-shot image features (row i belongs to ``items[i]``)."""

    items: list[Datum]
    features: torch.Tensor  # [K, D] float32, CLIP's image features before normalisation, CPU
    scores: torch.Tensor  # [K] mean cosine similarity of each image to the base class names
    strategy: str
    size: int  # the K asked for; len(items) is smaller only when ``note`` says why
    source: str
    image_size: int
    note: str = ""

    def __len__(self) -> int:
        return len(self.items)

    @property
    def zero_shot(self) -> torch.Tensor:
        """The L2-normalised zero-shot features ``f_zs`` [K, D]."""
        return F.normalize(self.features, dim=-1)

    def pixels(self, index: Sequence[int]) -> torch.Tensor:
        """The images at ``index`` through CLIP's test transform, ``[B, 3, H, W]``: exactly
        ``test_transform``'s tensors, from each image's resized and centre-cropped pixels kept on
        disk the first time it is drawn (a step draws B images: decoding them again each step
        would cost more than encoding them)."""
        how, view, tensor = f"test{self.image_size}", test_view(self.image_size), normalised_tensor()
        folder = cache_dir("decoded", self.source, how)
        kept = [kept_pixels(self.items[i].path, how, folder, view) for i in index]
        return torch.stack([tensor(np.array(pixels)) for pixels in kept])  # a copy: the kept file is read-only


def build_image_pool(
    clip: ClipBundle,
    source: str,
    root: str | None,
    base_classnames: Sequence[str],
    exclude: Sequence[str],
    strategy: str = "near",
    size: int = 5000,
    seed: int = 0,
    *,
    use_cache: bool = True,
    progress: bool = True,
) -> ImageOutlierPool:
    """The image-outlier pool from dataset ``source`` (read under ``root`` unless built in):
    images of classes named in ``exclude`` are left out, and ``size`` of the rest kept by
    ``strategy`` (``random``: drawn with ``seed``)."""
    check_strategy(strategy)
    reader = DATASETS.get(source)
    if root is None and not reader.builtin:
        raise DorBenchError(
            f"Visual DOR draws its outlier images from '{source}', which is read under the data root; "
            "the trial has none.",
            "set the data root (data_root / --root) to the folder holding it in CoOp's layout, or "
            "dor.image_source to another dataset.",
        )
    train = reader.read(None if root is None else Path(root).expanduser().absolute()).train
    banned = {normalise_name(name) for name in exclude}
    allowed = [d for d in train if normalise_name(text_name(d.classname)) not in banned]
    candidates = [allowed[i] for i in sorted(sample_per_label(allowed, CANDIDATES_PER_CLASS, random.Random(0)))]
    if not candidates:
        raise DorBenchError(
            f"No outlier images remain in '{source}' after removing the classes named like the trial's.",
            "set dor.image_source to a dataset with other classes.",
        )
    size_px = clip.image_size
    features, _ = cached_image_features(
        clip,
        candidates,
        test_transform(size_px),
        describe_transform("test", size_px),
        dataset=source,
        split="dor-outliers",
        use_cache=use_cache,
        progress=progress,
    )
    base = encode_words(clip, list(base_classnames), progress=False)
    scores = (F.normalize(features, dim=-1) @ base.T).mean(dim=1)
    order = pick(scores, strategy, size, seed)
    note = "" if len(order) == size else f"only {len(candidates)} candidate images, fewer than the {size} asked for"
    return ImageOutlierPool(
        items=[candidates[i] for i in order.tolist()],
        features=features[order],
        scores=scores[order],
        strategy=strategy,
        size=size,
        source=source,
        image_size=size_px,
        note=note,
    )


class ImageOutlierRegularizer(OutlierRegularizer[ImageOutlierPool]):
    """DOR on outlier images: ``draw_index`` gives this step's pool indices, which the trial
    encodes through the method's image side."""
