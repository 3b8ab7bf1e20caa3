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
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from workers.datasets.base import DatasetSplits, Datum, text_name
from workers.paths import atomic_write_bytes, cache_dir

VAL_SHOTS = 4  # validation gets min(K, VAL_SHOTS) items per label
#: Bump when the draw changes (v2: labels in first-appearance order, not sorted): cached draws
#: of an older version are never read.
SAMPLING_VERSION = 2


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
