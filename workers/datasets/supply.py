"""A trial's supply of augmented training images: loader workers, seeded draws, two pipelines.

**Seeds.** Every epoch draws one int64 from the trial's torch RNG; from it come the epoch's
shuffled order and one seed per image (``SeededOrder``). An image's crop and flip are drawn from
its own seed, in whichever process loads it, so the batches are the same with 0, 2 or 8 loader
workers, and a trial resumed from a checkpoint (which keeps the torch RNG) draws what the
uninterrupted trial would have drawn. The loader's own worker-seed draw comes from a separate
generator, so the trial's RNG advances by exactly one draw per epoch whatever the worker count.

**Pipelines** (the method option ``image_pipeline``): ``pil`` decodes each JPEG and augments it with
PIL (``TrainAugment``, torchvision's computation) in the loader; ``device`` reads decoded images
from a disk cache, cuts the crop box in the loader and resizes, mirrors and normalises on the
trial's device (``device_pipeline.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from workers.datasets.base import Datum
from workers.datasets.device_pipeline import DecodedCrops, collate_crops, finish_on_device
from workers.datasets.transforms import TrainAugment, load_rgb
from workers.errors import DorBenchError

#: The most loader workers the automatic count starts (the references run 8: CoOp's configs).
MAX_AUTO_WORKERS = 8
#: Batches each worker keeps ready, so that one slow image does not stall a step.
PREFETCH_BATCHES = 4

Batches = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]


def usable_cpus() -> int:
    """The CPUs this process may use: its CPU affinity, lowered by ``OMP_NUM_THREADS`` when set
    (Ray sets it to the CPUs it gave the task or actor)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limit = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(cpus, int(limit))) if limit.isdigit() and int(limit) > 0 else cpus


def loader_workers(requested: int | None, batches_per_epoch: int) -> int:
    """``requested``, or (None) one worker per usable CPU but the one the trial's own process
    uses, at most ``MAX_AUTO_WORKERS`` and at most one per batch of an epoch."""
    if requested is not None:
        return requested
    return max(0, min(usable_cpus() - 1, MAX_AUTO_WORKERS, batches_per_epoch))


class SeededOrder(Sampler[tuple[int, int]]):
    """Each epoch, ``(index, seed)`` of every image in a shuffled order, all drawn at the epoch's
    start from one int64 of torch's global (the trial's) RNG."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = torch.Generator().manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        order = torch.randperm(self.n, generator=epoch).tolist()
        seeds = torch.empty(self.n, dtype=torch.int64).random_(generator=epoch).tolist()
        return iter([(i, seeds[i]) for i in order])


class SeededImages(Dataset):
    """Sample ``(index, seed)`` -> (the image decoded with PIL and augmented from ``seed``, label)."""

    def __init__(self, items: Sequence[Datum], augment: TrainAugment):
        self.items, self.augment = list(items), augment

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        item = self.items[index]
        return self.augment(load_rgb(item.path), torch.Generator().manual_seed(seed)), item.label


class _Reported(Dataset):
    """A dataset whose DorBenchError (an unreadable image) comes back as the sample, so that it
    reaches the trial as itself and not as a loader worker's traceback."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]  # every dataset here has a length

    def __getitem__(self, key):
        try:
            return self.base[key]
        except DorBenchError as err:
            return err


class _CollateReported:
    """``collate`` of a batch, or the first DorBenchError in it."""

    def __init__(self, collate: Callable):
        self.collate = collate

    def __call__(self, batch: list):
        failed = [entry for entry in batch if isinstance(entry, DorBenchError)]
        return failed[0] if failed else self.collate(batch)


def training_images(
    items: Sequence[Datum],
    augment: TrainAugment,
    *,
    dataset: str,
    batch_size: int,
    drop_last: bool,
    device: torch.device,
    pipeline: Literal["pil", "device"] = "pil",
    workers: int | None = None,
) -> Batches:
    """A factory of one epoch's shuffled, augmented training batches ``(images, labels)`` on
    ``device``. One loader serves every epoch: its workers (``loader_workers(workers, ...)``)
    persist, and batches are pinned in memory when ``device`` is CUDA."""
    n_batches = len(items) // batch_size if drop_last else -(-len(items) // batch_size)
    count = loader_workers(workers, n_batches)
    if pipeline == "device":
        dataset_: Dataset = DecodedCrops(items, augment, dataset)
        collate: Callable = collate_crops
    else:
        dataset_, collate = SeededImages(items, augment), default_collate
    loader = DataLoader(
        _Reported(dataset_),
        batch_size=batch_size,
        sampler=SeededOrder(len(items)),
        drop_last=drop_last,
        collate_fn=_CollateReported(collate),
        num_workers=count,
        persistent_workers=count > 0,
        prefetch_factor=PREFETCH_BATCHES if count > 0 else None,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),  # the workers' own seeds: unused, kept off the trial's RNG
    )

    def epoch() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in loader:
            if isinstance(batch, DorBenchError):
                raise batch
            if pipeline == "device":
                flat, shapes, flips, labels = batch
                images = finish_on_device(flat, shapes, flips, augment.image_size, device)
            else:
                images, labels = batch
                images = images.to(device, non_blocking=True)
            yield images, labels.to(device, non_blocking=True)

    return epoch
