"""Few-shot sampling (Dassl semantics), its on-disk cache, and the base/new class split.

Sampling happens over **all** classes, before the base/new split, as in CoOp:
for each label, in the order labels first appear in the split (Dassl's
``split_dataset_by_label`` fills a dict as it walks the items), K training items are drawn with
``random.Random(seed).sample``
(all of them when a class has fewer than K), then min(K, 4) validation items per label with the
same generator. A dataset without a validation split (ImageNet) gets its validation items drawn
from the training items not picked for training.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from workers.datasets.base import DatasetSplits, Datum, text_name
from workers.paths import atomic_write_bytes, cache_dir

VAL_SHOTS = 4  # validation gets min(K, VAL_SHOTS) items per label
#: Bump when the draw changes (v2: labels in first-appearance order, not sorted): cached draws
#: of an older version are never read.
SAMPLING_VERSION = 2

#: What a trial needs of its few-shot validation items: nothing; some of the trained classes'
#: (PIECE's proximity reference); every trained class's (tuning mode scores each class).
ValidationNeed = Literal["none", "some", "each"]


@dataclass(frozen=True)
class SplitNeeds:
    """What a trial reads of a dataset beyond its test split."""

    train: bool  # a train image of every trained class (the method trains)
    validation: ValidationNeed


def sample_per_label(
    items: Sequence[Datum], shots: int, rng: random.Random, skip: frozenset[int] = frozenset()
) -> list[int]:
    """Indices of up to ``shots`` items per label (all when fewer), never one in ``skip``."""
    by_label: dict[int, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        if index not in skip:
            by_label[item.label].append(index)
    chosen = []
    for label in by_label:  # first-appearance order, as Dassl's generate_fewshot_dataset
        pool = by_label[label]
        chosen += rng.sample(pool, shots) if len(pool) >= shots else pool
    return chosen


def draw_fewshot(splits: DatasetSplits, shots: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices into the train split and the validation source (see ``val_source``)."""
    rng = random.Random(seed)
    train = sample_per_label(splits.train, shots, rng)
    val_shots = min(shots, VAL_SHOTS)
    if splits.val:
        return train, sample_per_label(splits.val, val_shots, rng)
    return train, sample_per_label(splits.train, val_shots, rng, skip=frozenset(train))


def validation_counts(splits: DatasetSplits, shots: int) -> Counter[int]:
    """How many validation items ``draw_fewshot`` gives each label, counted without drawing: from
    the val split, or (none there) from the train items the ``shots``-shot draw leaves."""
    per_label = min(shots, VAL_SHOTS)
    if splits.val:
        return Counter({label: min(n, per_label) for label, n in Counter(d.label for d in splits.val).items()})
    left = Counter(d.label for d in splits.train)
    return Counter({label: min(max(n - shots, 0), per_label) for label, n in left.items()})


def split_problems(splits: DatasetSplits, shots: int, labels: Sequence[int], needs: SplitNeeds) -> list[str]:
    """Why a trial could not use ``labels`` (its trained classes) of ``splits`` with ``shots``
    shots as ``needs`` says: a class with no train image, or validation items missing. Empty when
    it can; each problem names the dataset, the classes and the split. Counts items only: no
    image is opened."""
    problems = []
    train = Counter(d.label for d in splits.train)
    empty = [label for label in labels if not train[label]] if needs.train else []
    if empty:
        problems.append(
            f"Dataset '{splits.name}': the train split has no image of {_classes(splits, empty)}, which the trials "
            "train on; give every trained class at least one train image in the split file (or re-download "
            "it), or use another dataset."
        )
    val = validation_counts(splits, shots)
    source = "the val split" if splits.val else f"the train images left over by the {shots}-shot draw (no val split)"
    fix = (
        "add val images of them to the split file"
        if splits.val
        else f"give them more than {shots} train images, or lower shots"
    )
    if needs.validation == "each":
        missing = [label for label in labels if not val[label] and label not in empty]
        if missing:
            problems.append(
                f"Dataset '{splits.name}': no validation image of {_classes(splits, missing)} in {source}; "
                f"tuning scores every base class on its validation images: {fix}."
            )
    elif needs.validation == "some" and not any(val[label] for label in labels):
        problems.append(
            f"Dataset '{splits.name}': no validation image of any base class in {source}; PIECE measures "
            f"each test image's proximity to them: {fix}."
        )
    return problems


def _classes(splits: DatasetSplits, labels: Sequence[int], shown: int = 5) -> str:
    """``class 'a'`` or ``8 classes: 'a', 'b', ... and 3 more``."""
    names = [splits.classnames[label] for label in labels]
    if len(names) == 1:
        return f"class '{names[0]}'"
    listed = ", ".join(f"'{n}'" for n in names[:shown])
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} classes: {listed}{more}"


def val_source(splits: DatasetSplits) -> list[Datum]:
    """The list validation items are drawn from: the val split, or train when there is none."""
    return splits.val or splits.train


def fingerprint(splits: DatasetSplits) -> str:
    """A hash of everything the draw depends on: class names, train and val items in order."""
    digest = hashlib.sha256(json.dumps(splits.classnames).encode())
    for name, items in (("train", splits.train), ("val", splits.val)):
        digest.update(f"\n{name}:{len(items)}".encode())
        for item in items:
            digest.update(f"\n{item.path}\t{item.label}".encode())
    return digest.hexdigest()


def fewshot_cache_path(splits: DatasetSplits, shots: int, seed: int, fprint: str) -> Path:
    """Where the draw for (dataset, shots, seed, split fingerprint) is cached."""
    return cache_dir("fewshot", splits.name) / f"v{SAMPLING_VERSION}-shot_{shots}-seed_{seed}-{fprint[:16]}.json"


def _read_cache(path: Path, fprint: str, n_train: int, n_val: int) -> tuple[list[int], list[int]] | None:
    """The cached indices, or None when the file is absent, stale or damaged (then redrawn)."""
    try:
        data = json.loads(path.read_text())
        train, val = [int(i) for i in data["train"]], [int(i) for i in data["val"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if data.get("fingerprint") != fprint:
        return None
    if any(not 0 <= i < n_train for i in train) or any(not 0 <= i < n_val for i in val):
        return None
    return train, val


def fewshot(splits: DatasetSplits, shots: int, seed: int) -> tuple[list[Datum], list[Datum]]:
    """The few-shot train and val items for ``seed``, drawn once and then read from the cache.

    The cache lives under ``workers.paths.cache_dir("fewshot", <dataset>)``, never in the
    dataset folder, and is keyed by shots, seed and the split fingerprint.
    """
    source = val_source(splits)
    fprint = fingerprint(splits)
    path = fewshot_cache_path(splits, shots, seed, fprint)
    cached = _read_cache(path, fprint, len(splits.train), len(source))
    if cached is None:
        cached = draw_fewshot(splits, shots, seed)
        record = {
            "dataset": splits.name,
            "shots": shots,
            "seed": seed,
            "fingerprint": fprint,
            "val_from": "val" if splits.val else "train",
            "train": cached[0],
            "val": cached[1],
        }
        atomic_write_bytes(path, json.dumps(record).encode())
    train, val = cached
    return [splits.train[i] for i in train], [source[i] for i in val]


def base_new_labels(num_classes: int) -> tuple[list[int], list[int]]:
    """CoOp's split of the sorted labels: base = the first ceil(n/2), new = the rest."""
    labels = list(range(num_classes))
    m = math.ceil(num_classes / 2)
    return labels[:m], labels[m:]


def relabel(items: Sequence[Datum], labels: Sequence[int]) -> list[Datum]:
    """The items whose label is in ``labels``, relabelled by position in ``labels`` (from 0), their
    class names as text (``text_name``)."""
    new_label = {old: new for new, old in enumerate(labels)}
    return [Datum(d.path, new_label[d.label], text_name(d.classname)) for d in items if d.label in new_label]
