"""A sweep's trial specs: the base every Tune trial starts from, and one Tune config and seed."""

from __future__ import annotations

import copy
from typing import Any

from orchestrator.settings.sweep import INT_KNOBS, Sweep
from workers.identity import normalise
from workers.spec import TrialSpec


def spec_from_sweep(sweep: Sweep) -> TrialSpec:
    """The spec every trial of a sweep starts from (first seed, fixed DOR, tuning mode); the
    Tune config fills in the searched knobs (``spec_from_tune``)."""
    return normalise(
        TrialSpec(
            method=sweep.method.name,
            dataset=sweep.dataset,
            root=sweep.data_root,
            model=sweep.model.arch,
            pretrained=sweep.model.pretrained,
            seed=sweep.seeds[0],
            shots=sweep.shots,
            subsample=sweep.subsample,
            method_options=dict(sweep.method.options),
            dor=sweep.fixed_dor,
            ece_bins=sweep.ece_bins,
            test_per_class=sweep.test_per_class,
            validation=sweep.validation.model_copy(update={"leaky": sweep.leaky}),
        )
    )


def spec_from_tune(base: dict[str, Any], config: dict[str, Any], seed: int) -> TrialSpec:
    """The spec of one seed of a sweep trial: the base spec (JSON) with the Tune ``config``
    (``lam``, ``pool_size``, ``outliers_per_step``, ``pool_strategy``, ``options.<name>``)."""
    data = copy.deepcopy(base)
    data["seed"] = seed
    for key, value in config.items():
        if key.startswith("options."):
            data["method_options"][key.removeprefix("options.")] = plain_value(value)
        else:
            data["dor"][key] = int(value) if key in INT_KNOBS else float(value) if key == "lam" else str(value)
    return normalise(TrialSpec.model_validate(data))


def plain_value(value: Any) -> Any:
    """numpy scalars (from Tune's samplers) as Python values."""
    return value.item() if hasattr(value, "item") else value
