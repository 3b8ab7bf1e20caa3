"""The dataset layer: registered readers (one module each) and ``load_trial_data``."""

from __future__ import annotations

import random
from pathlib import Path

from workers.datasets import (
    caltech101,  # noqa: F401
    dtd,  # noqa: F401
    eurosat,  # noqa: F401
    fgvc_aircraft,  # noqa: F401
    food101,  # noqa: F401
    imagenet,  # noqa: F401
    imagenet_a,  # noqa: F401
    imagenet_r,  # noqa: F401
    imagenet_sketch,  # noqa: F401
    imagenetv2,  # noqa: F401
    oxford_flowers,  # noqa: F401
    oxford_pets,  # noqa: F401
    shapes,  # noqa: F401
    stanford_cars,  # noqa: F401
    sun397,  # noqa: F401
    ucf101,  # noqa: F401
)
from workers.datasets.base import DatasetSplits, Datum, TrialData, text_name
from workers.datasets.registry import DATASETS
from workers.datasets.sampling import (
    SplitNeeds,
    base_new_labels,
    fewshot,
    relabel,
    sample_per_label,
    split_problems,
)
from workers.errors import DorBenchError

__all__ = ["DATASETS", "DatasetSplits", "Datum", "SplitNeeds", "TrialData", "load_trial_data", "trained_labels"]

SUBSAMPLES = ("base2new", "all")


def load_trial_data(
    dataset: str,
    root: str | Path | None,
    shots: int,
    seed: int,
    subsample: str = "base2new",
    test_per_class: int | None = None,
    require: SplitNeeds | None = None,
) -> TrialData:
    """Read ``dataset`` under ``root``, draw its few-shot train/val for ``seed``, split the classes.

    ``subsample="base2new"``: train/val/test_base hold the first ceil(n/2) classes and test_new
    the rest, each relabelled from 0. Class names come as text (``text_name``: underscores to
    spaces), the form every prompt, anchor, outlier pool and report uses. ``subsample="all"``:
    every class is base, test_new is empty.
    ``root`` may be None only for built-in datasets. ``test_per_class`` keeps at most that many
    test images per class (a fixed draw, the same for every seed), for quick runs.
    With ``require`` (what the trial reads besides the test split), a DorBenchError names every
    trained class without the train or validation images it needs (``split_problems``).
    """
    reader = DATASETS.get(dataset)
    if subsample not in SUBSAMPLES:
        raise DorBenchError(f"Unknown subsample '{subsample}'.", f"use one of: {', '.join(SUBSAMPLES)}.")
    if shots < 1:
        raise DorBenchError(f"shots must be at least 1, not {shots}.", "pass --shots 1 or more.")
    if root is None and not reader.builtin:
        raise DorBenchError(
            f"Dataset '{reader.name}' needs a data root.",
            "pass --root pointing at the folder that holds the CoOp-style dataset folders "
            f"(this one is read from '<root>/{reader.folder}').",
        )
    splits = reader.read(None if root is None else Path(root).expanduser().absolute())
    if require is not None:
        problems = split_problems(splits, shots, trained_labels(len(splits.classnames), subsample), require)
        if problems:
            raise DorBenchError("\n".join(problems))
    train, val = fewshot(splits, shots, seed)
    test = splits.test
    if test_per_class is not None:
        test = [test[i] for i in sorted(sample_per_label(test, test_per_class, random.Random(0)))]
    base = trained_labels(len(splits.classnames), subsample)
    new = [label for label in range(len(splits.classnames)) if label not in base]
    return TrialData(
        name=splits.name,
        template=splits.template,
        base_classnames=[text_name(splits.classnames[i]) for i in base],
        new_classnames=[text_name(splits.classnames[i]) for i in new],
        train=relabel(train, base),
        val=relabel(val, base),
        test_base=relabel(test, base),
        test_new=relabel(test, new),
    )


def trained_labels(num_classes: int, subsample: str) -> list[int]:
    """The labels a trial trains on: the base classes (``base2new``), or every class (``all``)."""
    return base_new_labels(num_classes)[0] if subsample == "base2new" else list(range(num_classes))
