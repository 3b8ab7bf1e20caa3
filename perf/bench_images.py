"""How fast a trial's training images come, per configuration, measured in one run.

Synthetic 500 x 375 JPEGs (a typical photo) in CoOp's DTD layout, read by dor-bench's own DTD
reader, go through ``workers/datasets/supply.py`` as a trial takes them (random-resized crop to
224, flip, CLIP normalisation, batches of 32, on the trial's device): ``pil`` with the images
decoded and augmented in the trial's process (0 workers) and in N loader workers, and
``device`` (decoded once into the cache, crops resized on the device: the GPU when there is
one, else the CPU). Rates are counted after a warm-up epoch (workers started, decoded cache
filled); the trial's process uses one torch thread, so "per core" divides by the processes at
work (workers + the trial's process; the trial's process alone with 0 workers).

Visual DOR's outlier images (a step draws B of them through the test transform): decoded with
PIL each time they are drawn against kept after their first draw (``ImageOutlierPool.pixels``).

``image_supply_rate`` is importable; ``python perf/bench_images.py [--workers N] [--images 256]``
prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from workers.datasets.supply import training_images, usable_cpus
from workers.datasets.transforms import TrainAugment


def write_photos(root: Path, images: int, classes: int = 4, size: tuple[int, int] = (500, 375)) -> Path:
    """``images`` photo-like JPEGs (smooth colour fields, edges, grain; quality 90) as
    ``<root>/dtd/images/<class>/<name>.jpg`` with a ``split_zhou_DescribableTextures.json``
    listing them all as training images; returns ``root``."""
    rng = np.random.default_rng(0)
    width, height = size
    y, x = np.mgrid[0:height, 0:width] / max(size)
    train = []
    for i in range(images):
        label = i % classes
        base = rng.uniform(40, 215, 3) + 60 * np.sin(rng.uniform(2, 12) * x[..., None] + rng.uniform(0, 6, 3))
        blocks = (np.sin(rng.uniform(5, 30) * y) > 0)[..., None] * rng.uniform(-50, 50, 3)
        pixels = np.clip(base + blocks + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)
        relpath = f"class{label}/photo{i:04d}.jpg"
        (root / "dtd" / "images" / relpath).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "dtd" / "images" / relpath, quality=90)
        train.append([relpath, label, f"class{label}"])
    split = {"train": train, "val": train[:classes], "test": train[:classes]}
    (root / "dtd" / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    return root


def image_supply_rate(
    pipeline: Literal["pil", "device"],
    workers: int,
    *,
    root: Path,
    device: str = "cpu",
    image_size: int = 224,
    batch_size: int = 32,
    epochs: int = 2,
) -> dict:
    """Training images per second (and per core) of one configuration over ``epochs`` epochs of
    the DTD training images under ``root``, after one warm-up epoch."""
    from workers.datasets import DATASETS

    items = DATASETS.get("dtd").read(root).train
    dev = torch.device(device)
    torch.manual_seed(0)
    supply = training_images(
        items,
        TrainAugment(image_size, 0.08),
        dataset="bench-images",
        batch_size=batch_size,
        drop_last=True,
        device=dev,
        pipeline=pipeline,
        workers=workers,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in supply():  # warm-up: workers start, the decoded cache fills
            pass
        count, start = 0, time.perf_counter()
        for _ in range(epochs):
            for images, _labels in supply():
                count += len(images)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    cores = workers + 1 if workers else 1
    return {
        "pipeline": pipeline,
        "workers": workers,
        "device": str(dev),
        "images": count,
        "images_per_s": count / seconds,
        "cores": cores,
        "images_per_s_per_core": count / seconds / cores,
    }


def outlier_pixels_rate(root: Path, draws: int = 4, per_draw: int = 64) -> dict[str, float]:
    """Images/s of visual DOR's outlier draws in the trial's process: PIL's test transform on each
    drawn image, against ``ImageOutlierPool.pixels`` once every image was drawn once."""
    from workers.datasets import DATASETS
    from workers.datasets.transforms import load_rgb, test_transform
    from workers.dor.images import ImageOutlierPool

    items = DATASETS.get("dtd").read(root).train
    pool = ImageOutlierPool(items, torch.zeros(len(items), 1), torch.zeros(len(items)), "near", len(items), "dtd", 224)
    pool.pixels(range(len(items)))  # the first draw of each image keeps it
    generator = torch.Generator().manual_seed(0)
    picks = [torch.randperm(len(items), generator=generator)[:per_draw].tolist() for _ in range(draws)]
    transform = test_transform(224)
    rates = {}
    for label, draw in (
        ("pil", lambda index: torch.stack([transform(load_rgb(items[i].path)) for i in index])),
        ("kept", pool.pixels),
    ):
        start = time.perf_counter()
        for index in picks:
            draw(index)
        rates[label] = draws * per_draw / (time.perf_counter() - start)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=max(1, min(usable_cpus() - 1, 8)), help="N for pil/N")
    parser.add_argument("--images", type=int, default=256, help="training images (one epoch)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per configuration")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    configs: list[tuple[Literal["pil", "device"], int, str]] = [
        ("pil", 0, device),
        ("pil", args.workers, device),
        ("device", 0, device),
        ("device", args.workers, device),
    ]
    if device == "cuda":
        configs.append(("device", 0, "cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DOR_BENCH_CACHE"] = str(Path(tmp) / "cache")  # the decoded cache, thrown away after
        root = write_photos(Path(tmp), args.images)
        print(f"{args.images} JPEGs of 500 x 375, crops of 224, batches of 32; {usable_cpus()} usable CPUs")
        print(
            f"{'pipeline':9} {'workers':>7} {'device':>7} {'images/s':>9} {'cores':>5} {'per core':>9} {'vs pil/0':>9}"
        )
        rows = [image_supply_rate(p, w, root=root, device=d, epochs=args.epochs) for p, w, d in configs]
        first = rows[0]["images_per_s"]
        for r in rows:
            print(
                f"{r['pipeline']:9} {r['workers']:7d} {r['device']:>7} {r['images_per_s']:9.1f} {r['cores']:5d} "
                f"{r['images_per_s_per_core']:9.1f} {r['images_per_s'] / first:9.2f}"
            )
        outliers = outlier_pixels_rate(root)
        print(
            f"visual DOR's outlier images (test transform, one process): {outliers['pil']:.0f}/s decoded each draw, "
            f"{outliers['kept']:.0f}/s kept: {outliers['kept'] / outliers['pil']:.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
