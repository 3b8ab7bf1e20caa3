"""Tuning mode (``TrialSpec.validation``): an honest objective without the new classes.

While tuning, the real new classes are unknown, so a seeded part of the base classes plays
their role: these *pseudo-new* classes are left out of training, and after every epoch the model
is scored on the **validation** images of the pseudo-base and pseudo-new classes. Nothing here
touches the test split; ``run_trial`` scores it only when the spec says ``leaky``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from workers.catalog import VALIDATION
from workers.datasets.base import Datum, TrialData
from workers.datasets.sampling import relabel
from workers.errors import DorBenchError
from workers.evaluation import SplitScores, evaluate
from workers.methods.base import PromptModel
from workers.metrics import harmonic_mean
from workers.spec import ValidationSpec


@dataclass
class Holdout:
    """The trial's base classes split into pseudo-base (trained on) and pseudo-new (held out)."""

    training: TrialData  # pseudo-base classes only; no test items at all
    pseudo_new_classnames: list[str]
    val_new: list[Datum]  # validation items of the pseudo-new classes, relabelled from 0
    leaky: bool  # the real test splits are scored too


def pseudo_new_count(n_base: int, pseudo_new: float) -> int:
    """How many of ``n_base`` classes are held out: a share (below 1) or a count."""
    count = round(pseudo_new * n_base) if pseudo_new < 1 else int(pseudo_new)
    if not 1 <= count < n_base:
        raise DorBenchError(
            f"validation.pseudo_new = {pseudo_new:g} holds out {count} of {n_base} base classes; "
            "at least one must be held out and at least one kept for training.",
            "choose a share between 0 and 1 or a count below the number of base classes.",
        )
    return count


def hold_out(data: TrialData, spec: ValidationSpec) -> Holdout:
    """Pick the pseudo-new classes with ``spec.holdout_seed`` (the same for every trial seed)."""
    n = len(data.base_classnames)
    new = sorted(random.Random(spec.holdout_seed).sample(range(n), pseudo_new_count(n, spec.pseudo_new)))
    base = [label for label in range(n) if label not in new]
    training = TrialData(
        name=data.name,
        template=data.template,
        base_classnames=[data.base_classnames[i] for i in base],
        new_classnames=[],
        train=relabel(data.train, base),
        val=relabel(data.val, base),
        test_base=[],
        test_new=[],
    )
    return Holdout(training, [data.base_classnames[i] for i in new], relabel(data.val, new), spec.leaky)


LogitsFn = Callable[[PromptModel, list[Datum], str, list[str]], torch.Tensor]


@torch.no_grad()
def validation_metrics(model: PromptModel, holdout: Holdout, logits: LogitsFn, n_bins: int) -> dict[str, float]:
    """``val/pseudo_base/*``, ``val/pseudo_new/*``, ``val/avg/*`` and ``val/hm`` of ``model``.

    ``logits(model, items, split, classnames)`` scores validation items against class names (the
    trial loop supplies it, with its image-feature cache). The model must be in eval mode.
    """
    splits = []
    for split, items, names in (
        ("val/pseudo_base", holdout.training.val, holdout.training.base_classnames),
        ("val/pseudo_new", holdout.val_new, holdout.pseudo_new_classnames),
    ):
        labels = torch.tensor([d.label for d in items])
        splits.append(SplitScores(split, logits(model, items, split.replace("/", "-"), names), labels, names))
    m = evaluate(splits, n_bins=n_bins).metrics
    m["val/hm"] = harmonic_mean(m["val/pseudo_base/acc"], m["val/pseudo_new/acc"])
    for name in VALIDATION:  # averaged over pseudo-base and pseudo-new into val/avg/<name>
        m[f"val/avg/{name}"] = (m[f"val/pseudo_base/{name}"] + m[f"val/pseudo_new/{name}"]) / 2
    return m
