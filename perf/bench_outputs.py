"""How big the files a trial keeps are (``prompt.pt``, ``outputs.npz``), measured on synthetic
splits shaped like the paper's datasets and extrapolated to the paper grid's largest dataset, ImageNet (1000
classes: base and new halves of 500, 25,000 test images each, 4 validation images per class at
16 shots), measured in one run.

Usage: python perf/bench_outputs.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from workers import outputs
from workers.evaluation import SplitScores


def outputs_bytes(splits: list[tuple[str, int, int]]) -> int:
    """Size of ``outputs.npz`` for (split, images, classes), logits like CLIP's (scale 100 x cos)."""
    g = torch.Generator().manual_seed(0)
    kept = []
    for split, n, classes in splits:
        logits = 100 * (0.2 + 0.05 * torch.randn(n, classes, generator=g))
        labels = torch.randint(classes, (n,), generator=g)
        proximity = torch.rand(n, generator=g) if split != "val" else None
        kept.append(SplitScores(split, logits, labels, [f"class {i}" for i in range(classes)], proximity))
    with tempfile.TemporaryDirectory() as tmp:
        outputs.keep(Path(tmp), {}, kept)
        return (Path(tmp) / outputs.OUTPUTS_FILE).stat().st_size


def prompt_bytes(method: str) -> int:
    """Size of ``prompt.pt`` for ``method`` on ViT-B/16 (random weights: the shapes are what count)."""
    from workers.methods import METHODS
    from workers.models.clip import load_clip

    clip = load_clip("ViT-B-16", None, device="cpu")
    card = METHODS.get(method)
    model = card.method().build(clip, ["a", "b"], "imagenet", "a photo of a {}.", dict(card.defaults))
    with tempfile.TemporaryDirectory() as tmp:
        outputs.keep(Path(tmp), model.state_dict(), [])
        return (Path(tmp) / outputs.PROMPT_FILE).stat().st_size


def main() -> int:
    mb = 1e6
    # measured: a DTD-sized trial (whole logits) and an ImageNet-shaped one at a tenth of its images
    dtd = outputs_bytes([("base", 1692 // 2, 24), ("new", 1692 // 2, 23), ("val", 96, 24)])
    tenth = outputs_bytes([("base", 2500, 500), ("new", 2500, 500), ("val", 200, 500)])
    imagenet = tenth * 10  # top-10 storage grows with the images, not the classes
    print(f"{'outputs.npz':34} {'MB':>8}")
    print(f"{'DTD (whole logits)':34} {dtd / mb:8.2f}")
    print(f"{'ImageNet, a tenth of the images':34} {tenth / mb:8.2f}")
    print(f"{'ImageNet (x10, estimated)':34} {imagenet / mb:8.2f}")
    print(f"\n{'prompt.pt on ViT-B/16':34} {'MB':>8}")
    for method in ("coop", "cocoop", "kgcoop", "maple"):
        print(f"{method:34} {prompt_bytes(method) / mb:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
