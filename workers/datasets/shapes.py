"""The built-in demo dataset "shapes": 60 classes of the synthetic coloured-shapes world.

Labels 0..29 are 30 combinations seen in pretraining (3 per colour, 3 per shape), labels 30..59
are the 30 held-out combinations, so the standard base/new split (first half of the sorted
labels is base) gives base = seen and new = held out. Per class: 24 train, 8 val, 50 test images.

``shapes-split1`` and ``shapes-split2`` are the same world with other base classes (another
balanced choice of 30 seen combinations; the new classes are always the 30 held-out ones), for
checking that a result does not hinge on one choice of base classes.

``shapes-outliers`` holds training images of the 70 seen combinations (other pixels than the
demo's): the built-in source of visual DOR's image outliers. A pool leaves out the trial's base
classes by name, so for the demo 40 combinations remain that are neither base nor new.

On first use the images are generated deterministically into
``cache_dir("data", "shapes-v<VERSION>")`` in CoOp's layout::

    images/<class_name>/<split>_<i>.png
    split_zhou_Shapes.json   {"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}

Generation writes into a temporary sibling folder and renames it into place, so a killed
generation never leaves a half dataset; concurrent generations are serialised by a lock file
where the file system supports it, and otherwise the first rename wins. The data is then read
back through ``read_split_json`` like any real dataset.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

import numpy as np

from workers.datasets import shapes_world as world
from workers.datasets.base import DEFAULT_TEMPLATE, DatasetSplits, read_split_json
from workers.datasets.registry import DATASETS
from workers.errors import DorBenchError
from workers.paths import cache_dir
from workers.progress import Progress

#: Bump when this layout or class choice changes; a new folder name makes every cache regenerate.
#: A changed generator (``shapes_world.WORLD_VERSION``) changes the folder name by itself.
VERSION = 1
FOLDER = f"shapes-v{VERSION}" + (f"-w{world.WORLD_VERSION}" if world.WORLD_VERSION != 1 else "")
SPLIT_FILE = "split_zhou_Shapes.json"
SEED = 20240611
PER_CLASS = {"train": 24, "val": 8, "test": 50}
OUTLIER_FOLDER = f"{FOLDER}-outliers"
OUTLIER_PER_CLASS = {"train": 16, "val": 0, "test": 0}
OUTLIER_SEED = SEED + 1  # other pixels than any demo image
_STALE_AFTER_S = 1800  # temporary folders older than this are left-overs of killed generations


def demo_classes(split: int = 0) -> list[str]:
    """The 60 class names in label order: 30 seen combinations (the base classes, chosen by
    ``split``), then the 30 held-out ones."""
    order = np.random.default_rng(SEED + split).permutation(len(world.SHAPES)).tolist()
    return world.balanced_subset(world.seen_classes(), 3, order) + world.held_out_classes()


def folder_name(split: int = 0) -> str:
    return FOLDER if split == 0 else f"{FOLDER}-split{split}"


def dataset_path(split: int = 0) -> Path:
    """Where the generated dataset lives (it may not exist yet)."""
    return cache_dir("data") / folder_name(split)


def _ready(path: Path) -> bool:
    return (path / SPLIT_FILE).is_file()


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive advisory lock on ``path`` where available; a no-op otherwise."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # e.g. a network file system without locks: the rename race still holds
            pass
        yield
    finally:
        handle.close()


def _generate(tmp: Path, final: Path, classes: list[str], per_class: dict[str, int], seed: int = SEED) -> None:
    """Write the whole dataset into ``tmp`` (images, then the split file last)."""
    total = len(classes) * sum(per_class.values())
    progress = Progress(total, f"shapes: generating the built-in dataset {final.name}", unit="images", delay=1.0)
    splits: dict[str, list[list]] = {name: [] for name in per_class}
    done = 0
    for label, classname in enumerate(classes):
        folder = classname.replace(" ", "_")
        (tmp / "images" / folder).mkdir(parents=True)
        ci, si = world.COLOURS.index(classname.split()[0]), world.SHAPES.index(classname.split()[1])
        for split_index, (name, count) in enumerate(per_class.items()):
            rng = np.random.default_rng([seed, ci, si, split_index])
            for i in range(count):
                image, _ = world.render(classname, rng)
                relpath = f"{folder}/{name}_{i}.png"
                image.save(tmp / "images" / relpath, format="PNG", compress_level=1)
                splits[name].append([relpath, label, classname])
            done += count
            progress.set(done)
    (tmp / SPLIT_FILE).write_text(json.dumps(splits))
    progress.close(f"shapes: generated {total} images in {progress.elapsed:.1f}s -> {final}")


def _tmp_name(folder: str = FOLDER) -> str:
    return f".{folder}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove_stale(parent: Path, folder: str = FOLDER) -> None:
    """Delete temporary folders that killed generations left behind.

    One is stale when its process (named in it) is gone from this host, or, for other hosts
    sharing the cache, when it is older than ``_STALE_AFTER_S``.
    """
    now, host = time.time(), socket.gethostname()
    for entry in parent.glob(f".{folder}.*"):
        with contextlib.suppress(OSError, ValueError):
            if not entry.is_dir():
                continue
            parts = entry.name.partition(".tmp-")[2].rsplit("-", 2)  # [host, pid, tag] for a tmp folder
            dead_here = len(parts) == 3 and parts[0] == host and not _pid_alive(int(parts[1]))
            if dead_here or now - entry.stat().st_mtime > _STALE_AFTER_S:
                shutil.rmtree(entry, ignore_errors=True)


def _publish(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; if another process got there first, keep theirs."""
    if final.exists() and not _ready(final):
        try:
            final.rmdir()  # an empty folder
        except OSError:  # something incomplete that is not ours: move it aside, then drop it
            aside = final.with_name(f".{final.name}.broken-{uuid.uuid4().hex[:8]}")
            os.rename(final, aside)
            shutil.rmtree(aside, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if not _ready(final):
            raise


def ensure_generated(split: int = 0) -> Path:
    """The dataset folder, generating it first if it is not there yet."""
    return _ensure(dataset_path(split), demo_classes(split), PER_CLASS, SEED)


def _ensure(final: Path, classes: list[str], per_class: dict[str, int], seed: int) -> Path:
    """``final``, generated first (``classes``, ``per_class`` images from ``seed``) when missing."""
    if _ready(final):
        return final
    parent, folder = final.parent, final.name
    tmp = parent / _tmp_name(folder)
    try:
        with _lock(parent / f".{folder}.lock"):
            if _ready(final):  # another process generated it while we waited
                return final
            _remove_stale(parent, folder)
            _generate(tmp, final, classes, per_class, seed)
            _publish(tmp, final)
    except OSError as err:
        raise DorBenchError(
            f"Could not generate the built-in dataset '{folder}' in '{final}' ({type(err).__name__}: {err}).",
            "free some disk space, or set DOR_BENCH_CACHE to a writable folder.",
        ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


class ShapesDataset:
    """The built-in demo dataset; ``read`` ignores ``root`` and generates the data on first use.
    ``split`` chooses the base classes (0 = the demo's)."""

    template = DEFAULT_TEMPLATE  # "a photo of a {}."
    builtin = True

    def __init__(self, split: int = 0):
        self.split = split
        self.name = self.folder = "shapes" if split == 0 else f"shapes-split{split}"

    def read(self, root: Path | None = None) -> DatasetSplits:
        path = ensure_generated(self.split)
        classnames, splits = read_split_json(path / SPLIT_FILE, path / "images", self.name)
        return DatasetSplits(self.name, classnames, splits["train"], splits["val"], splits["test"], self.template)


class ShapesOutliers:
    """The built-in image-outlier source of visual DOR (training images only)."""

    name = folder = "shapes-outliers"
    template = DEFAULT_TEMPLATE
    builtin = True

    def read(self, root: Path | None = None) -> DatasetSplits:
        path = _ensure(cache_dir("data") / OUTLIER_FOLDER, world.seen_classes(), OUTLIER_PER_CLASS, OUTLIER_SEED)
        classnames, splits = read_split_json(path / SPLIT_FILE, path / "images", self.name)
        return DatasetSplits(self.name, classnames, splits["train"], splits["val"], splits["test"], self.template)


SHAPES = DATASETS.register("shapes")(ShapesDataset())
DATASETS.register("shapes-outliers")(ShapesOutliers())
DATASETS.alias("demo", "shapes")
for _split in (1, 2):
    DATASETS.register(f"shapes-split{_split}")(ShapesDataset(_split))
