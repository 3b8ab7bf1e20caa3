"""A kept prompt scored on another dataset (cross-dataset transfer): exactly the trial's own
domain-shift scoring (``score_targets``), for a prompt learned earlier and read back."""

from __future__ import annotations

import torch

from workers.datasets import DATASETS
from workers.evaluation import Evaluation, evaluate
from workers.methods import METHODS
from workers.spec import RunOptions, TrialSpec
from workers.trial import score_targets, warm_clip


def score_prompt(
    spec: TrialSpec, state: dict[str, torch.Tensor], dataset: str, root: str | None, options: RunOptions
) -> Evaluation:
    """``state`` (the prompt ``spec``'s trial learned) on ``dataset``'s test split with its own
    classes; metrics keyed ``target/<dataset>/<metric>`` as a domain-shift target's are."""
    card = METHODS.get(spec.method)
    config = {**card.defaults, **spec.method_options}
    clip = warm_clip(spec.model, spec.pretrained, options.device, config["precision"])
    method = card.method()
    # A learned state never depends on class names (they are given when scoring): any will do.
    reader = DATASETS.get(dataset)
    names = [f"class {i}" for i in range(2)]
    model = method.build(clip, names, reader.name, "a photo of a {}.", config)
    model.load_state_dict(state)
    model.eval()
    target = spec.model_copy(update={"targets": [reader.name], "root": None if reader.builtin else root})
    return evaluate(score_targets(target, model, method, clip, options), n_bins=spec.ece_bins)
