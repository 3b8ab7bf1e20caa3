"""The training image supply: torchvision's augmentation, the device pipeline, loader workers.

Oracles: torchvision's own transforms (``RandomResizedCrop``, ``RandomHorizontalFlip``) and
PIL's crop and bicubic resize, called here on the same images.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from tests.helpers.fake_data import truncate
from workers.datasets import Datum
from workers.datasets.device_pipeline import DecodedCrops, collate_crops, decoded_image, finish_on_device, precrop_side
from workers.datasets.supply import SeededOrder, loader_workers, training_images, usable_cpus
from workers.datasets.transforms import BICUBIC, CLIP_MEAN, CLIP_STD, Draw, TrainAugment, crop_box
from workers.errors import DorBenchError
from workers.trial import run_trial

CPU = torch.device("cpu")
PIXEL = torch.tensor(CLIP_STD).view(3, 1, 1) * 255  # a normalised difference times this: 0-255 levels


def pattern(width: int, height: int) -> np.ndarray:
    """Red grows to the right, green downwards, blue a 6-pixel checkerboard: a wrong box, a swapped
    axis or a missing mirror all change it."""
    y, x = np.mgrid[0:height, 0:width]
    checker = (x // 6 + y // 6) % 2 * 255
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), checker], -1).astype(np.uint8)


def write_photos(folder: Path, sizes: list[tuple[int, int]]) -> list[Datum]:
    """JPEG files of the pattern at the given (width, height), labelled in turn 0, 1, 2."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i, (w, h) in enumerate(sizes):
        path = folder / f"{i}.jpg"
        Image.fromarray(pattern(w, h)).save(path, quality=90)
        items.append(Datum(str(path), i % 3, str(i % 3)))
    return items


def torchvision_train(size: int, min_crop_scale: float) -> T.Compose:
    """The reference's training transform, written with torchvision as Dassl builds it."""
    if min_crop_scale >= 1:
        crop = [T.Resize(size, interpolation=BICUBIC), T.CenterCrop(size)]
    else:
        crop = [T.RandomResizedCrop(size, scale=(min_crop_scale, 1.0), interpolation=BICUBIC)]
    return T.Compose([*crop, T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    both = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), both, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), both, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


# --- the PIL pipeline is torchvision's computation --------------------------------------------


@pytest.mark.parametrize("min_crop_scale", [0.08, 1.0])
def test_train_augment_is_torchvisions_transform(min_crop_scale):
    """Seeded alike, ``TrainAugment`` gives torchvision's exact tensors, from torch's global RNG
    (the cached views) and from a generator of the same seed (the loader's per-image seeds)."""
    image = Image.fromarray(pattern(61, 45))
    reference, ours = torchvision_train(24, min_crop_scale), TrainAugment(24, min_crop_scale)
    flips = 0
    for seed in range(40):
        torch.manual_seed(seed)
        expected = reference(image)
        torch.manual_seed(seed)
        assert torch.equal(ours(image), expected)
        assert torch.equal(ours(image, torch.Generator().manual_seed(seed)), expected)
        flips += ours.draw(61, 45, torch.Generator().manual_seed(seed)).flip
    assert 5 < flips < 35  # both mirrored and plain views were compared


def test_crop_boxes_are_torchvisions_draw_for_draw():
    """``crop_box`` makes ``RandomResizedCrop.get_params``'s draws, in its order, with its central
    fallback (a 400 x 9 strip never fits a 3/4-4/3 box of 8% or more of its area)."""
    for width, height in ((500, 375), (37, 211), (400, 9)):
        image = torch.empty(3, height, width)
        for seed in range(100):
            torch.manual_seed(seed)
            expected = T.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3])
            assert crop_box(width, height, (0.08, 1.0), torch.Generator().manual_seed(seed)) == expected


# --- (a) the device pipeline's crops have torchvision's distribution -----------------------------


@functools.cache
def loader_draws(n: int = 8000) -> list[Draw]:
    """What the device pipeline draws for ``n`` views of a 500 x 375 photo, from the loader's
    per-image seeds (``DecodedCrops`` cuts these boxes: checked below)."""
    augment = TrainAugment(224, 0.08)
    torch.manual_seed(11)
    return [augment.draw(500, 375, torch.Generator().manual_seed(seed)) for _, seed in SeededOrder(n)]


def test_device_crops_have_random_resized_crop_statistics():
    """Crop area scale and log aspect ratio of the loader's draws against
    ``RandomResizedCrop.get_params`` called as often: the two-sample KS statistics stay below
    0.03 (the 0.1% critical value for 8000 + 8000 draws is 0.031), and the means and quartiles
    agree."""
    ours = np.array([(d.height, d.width) for d in loader_draws()], dtype=float)
    image = torch.empty(3, 375, 500)
    torch.manual_seed(12)
    theirs = np.array(
        [T.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3])[2:] for _ in range(len(ours))],
        dtype=float,
    )
    for stat in (lambda hw: hw[:, 0] * hw[:, 1] / (375 * 500), lambda hw: np.log(hw[:, 1] / hw[:, 0])):
        a, b = stat(ours), stat(theirs)
        assert ks_statistic(a, b) < 0.03
        assert np.quantile(a, [0.25, 0.5, 0.75]) == pytest.approx(np.quantile(b, [0.25, 0.5, 0.75]), abs=0.02)
        assert a.mean() == pytest.approx(b.mean(), abs=0.01)
    scale = ours[:, 0] * ours[:, 1] / (375 * 500)
    assert scale.min() > 0.07 and scale.max() <= 1  # the (0.08, 1) range, up to rounding


def test_decoded_crops_cut_the_drawn_box(tmp_path):
    """``DecodedCrops`` returns exactly the drawn box of the decoded photo, and its flip."""
    items = write_photos(tmp_path, [(500, 375)])
    crops, augment = DecodedCrops(items, TrainAugment(224, 0.08), "photos"), TrainAugment(224, 0.08)
    pixels = np.asarray(Image.open(items[0].path).convert("RGB"))
    for seed in range(20):
        crop, flip, label = crops[(0, seed)]
        d = augment.draw(500, 375, torch.Generator().manual_seed(seed))
        assert np.array_equal(crop.numpy(), pixels[d.top : d.top + d.height, d.left : d.left + d.width])
        assert flip == d.flip and label == 0


# --- (b) the device resampling is PIL's crop and resize, closely --------------------------------


@pytest.mark.parametrize("box", [(5, 7, 60, 50), (10, 20, 12, 20), (0, 0, 73, 97), (30, 10, 40, 33)])
def test_device_crop_is_pils_crop_and_resize(box):
    """The same box, cut and resized on the device and by PIL (torchvision's ``resized_crop``,
    bicubic): under one 0-255 level apart on average (downscaled and upscaled boxes). Shifting the
    box by 3 pixels, swapping the axes or mirroring is at least 15 levels apart."""
    top, left, height, width = box
    pixels = pattern(97, 73)
    expected = TF.normalize(
        TF.to_tensor(TF.resized_crop(Image.fromarray(pixels), top, left, height, width, [32, 32], BICUBIC)),
        CLIP_MEAN,
        CLIP_STD,
    )

    def device(pixels: np.ndarray, top: int, left: int, height: int, width: int, flip: bool = False) -> torch.Tensor:
        crop = torch.from_numpy(np.array(pixels[top : top + height, left : left + width]))
        return finish_on_device(*collate_crops([(crop, flip, 0)])[:3], 32, CPU)[0]

    def levels(x: torch.Tensor) -> float:
        return float(((x - expected).abs() * PIXEL).mean())

    assert levels(device(pixels, *box)) < 1.0
    assert levels(device(pixels, top + 3, left, height, width)) > 15
    assert levels(device(pixels, *box, flip=True)) > 15
    if left + width <= 73 and top + height <= 97:  # the transposed image, cut at the transposed box
        assert levels(device(pixels.transpose(1, 0, 2), left, top, width, height)) > 15
    assert torch.equal(device(pixels, *box, flip=True), device(pixels, *box).flip(-1))


# --- (c) flips ---------------------------------------------------------------------------------


def test_half_of_the_views_are_mirrored():
    """8000 per-image seeds: the flip rate is 0.5 within 0.022 (4 standard deviations)."""
    flips = [d.flip for d in loader_draws()]
    assert abs(sum(flips) / len(flips) - 0.5) < 0.022


# --- (d) loader workers change nothing ---------------------------------------------------------


def photo_batches(items: list, size: int, pipeline: str, workers: int):
    """The training-image supply of ``items`` in batches of 4 at ``size`` px on the CPU."""
    return training_images(
        items,
        TrainAugment(size, 0.08),
        dataset="photos",
        batch_size=4,
        drop_last=True,
        device=CPU,
        pipeline=pipeline,
        workers=workers,
    )


@pytest.mark.parametrize("pipeline", ["pil", "device"])
def test_same_seed_same_batches_with_0_and_2_workers(tmp_path, pipeline):
    """Two epochs of batches, in-process and from 2 worker processes, are equal tensor for tensor,
    and leave the trial's RNG in the same state (so the next epoch and a resumed trial agree)."""
    items = write_photos(tmp_path, [(40 + 7 * i, 30 + 5 * (i % 4)) for i in range(10)])
    runs = []
    for workers in (0, 2):
        torch.manual_seed(5)
        supply = photo_batches(items, 16, pipeline, workers)
        batches = [batch for _ in range(2) for batch in supply()]
        runs.append((batches, torch.get_rng_state()))
    (zero, state0), (two, state2) = runs
    assert len(zero) == len(two) == 4 and all(len(labels) == 4 for _, labels in zero)
    for (x0, y0), (x2, y2) in zip(zero, two):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    assert not torch.equal(zero[0][0], zero[2][0])  # the second epoch drew new views
    assert torch.equal(state0, state2)


def test_pil_and_device_pipelines_take_the_same_crops(tmp_path):
    """For images under the cache's size cap, both pipelines cut the same box and mirror alike
    from the same seed: their batches differ only by resampling (under 1.5 levels on average)."""
    items = write_photos(tmp_path, [(64, 48), (50, 70), (90, 60), (33, 41)])
    batches = {}
    for pipeline in ("pil", "device"):
        torch.manual_seed(8)
        supply = photo_batches(items, 32, pipeline, workers=0)
        batches[pipeline] = next(supply())
    assert torch.equal(batches["pil"][1], batches["device"][1])
    assert float(((batches["pil"][0] - batches["device"][0]).abs() * PIXEL).mean()) < 1.5


def test_automatic_worker_count_follows_the_cpu_share(monkeypatch):
    """None: the usable CPUs (affinity, lowered by Ray's OMP_NUM_THREADS) but one, at most 8 and
    at most one per batch; a number is taken as it is."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert usable_cpus() == 1 and loader_workers(None, 100) == 0
    monkeypatch.delenv("OMP_NUM_THREADS")
    cpus = len(__import__("os").sched_getaffinity(0))
    assert usable_cpus() == cpus
    assert loader_workers(None, 100) == min(cpus - 1, 8)
    assert loader_workers(None, 1) == min(cpus - 1, 1)
    assert loader_workers(3, 1) == 3 and loader_workers(0, 100) == 0


def test_unreadable_image_in_a_worker_names_the_file(tmp_path):
    items = write_photos(tmp_path, [(40, 30)] * 4)
    truncate(Path(items[2].path))
    supply = photo_batches(items, 16, "pil", workers=2)
    with pytest.raises(DorBenchError, match="2.jpg") as caught:
        list(supply())
    assert "Traceback" not in str(caught.value)


# --- the decoded cache -------------------------------------------------------------------------


def test_decoded_cache_keeps_small_images_whole_and_shrinks_large_ones(tmp_path):
    """An image whose short side is within the cap is kept pixel for pixel as PIL decodes it; a
    larger one is shrunk to the cap. An image is decoded once, and again once it is edited."""
    assert precrop_side(224, 0.08) == math.ceil(224 / math.sqrt(0.08)) == 792 and precrop_side(224, 1.0) == 224
    small, large = write_photos(tmp_path / "in", [(60, 40), (300, 200)])
    folder = tmp_path / "decoded"
    assert np.array_equal(decoded_image(small.path, 50, folder), np.asarray(Image.open(small.path).convert("RGB")))
    assert decoded_image(large.path, 50, folder).shape == (50, 75, 3)
    decoded_image(small.path, 50, folder)
    assert len(list(folder.rglob("*.npy"))) == 2
    Image.new("RGB", (60, 40), (9, 9, 9)).save(small.path)
    assert decoded_image(small.path, 50, folder).max() < 20 and len(list(folder.rglob("*.npy"))) == 3


# --- (e) a trial with the device pipeline --------------------------------------------------------


def test_trial_trains_and_scores_with_the_device_pipeline(session_cache):
    spec = {
        "method": "coop",
        "dataset": "shapes",
        "model": "tiny-clip",
        "pretrained": None,
        "shots": 2,
        "test_per_class": 2,
        "method_options": {"epochs": 2, "batch_size": 16, "image_pipeline": "device"},
    }
    result = run_trial(spec, {"progress": False, "loader_workers": 2})
    assert [row["epoch"] for row in result.history] == [1.0, 2.0]
    assert all(math.isfinite(row["train/loss"]) for row in result.history)
    assert 0 <= result.metrics["base/acc"] <= 100 and result.metrics["base/n"] > 0
    assert any((session_cache / "decoded" / "shapes").rglob("*.npy"))
