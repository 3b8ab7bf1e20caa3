"""One trial, one identity: the normal form of a ``TrialSpec``, whichever entry point built it.

``dor-bench trial``, a benchmark file and a sweep describe the same trial in different words (a
data root given for built-in data, an option set to its default value, DOR's weight left to the
method or given as the ``dor_lambda`` option). ``normalise`` maps all of them to one spec, so
the same trial has the same run key from every entry point: it is skipped as done, resumed and
averaged as one. Every entry point calls it, and ``run_trial`` too (it is idempotent).
"""

from __future__ import annotations

from typing import Any

from workers.datasets import DATASETS
from workers.methods import METHODS
from workers.methods.training import coerce_option
from workers.spec import TrialSpec


def normalise(spec: TrialSpec) -> TrialSpec:
    """The normal form of ``spec``:

    - no data root for built-in datasets (they never read one);
    - method options in the type of the method's default (``lr: 1`` is ``lr: 1.0``), and those
      equal to the default left out (a value that is not valid is kept, for ``run_trial`` to refuse);
    - the ``dor_lambda`` option folded into ``dor.lam`` (it matters only there) and a null
      ``dor.lam`` resolved to it, else to the method's default: the spec records the weight used;
    - for a method whose DOR regularises images, a null ``dor.image_source`` resolved to the
      default source (``imagenet``, or ``shapes-outliers`` for built-in data).
    """
    card = METHODS.get(spec.method)
    defaults = card.defaults
    options = {k: _typed(k, v, defaults) for k, v in spec.method_options.items()}
    lam_option = options.pop("dor_lambda", None)
    options = {
        k: v for k, v in options.items() if not (k in defaults and v == defaults[k] and type(v) is type(defaults[k]))
    }
    dor = spec.dor
    if dor is not None and dor.lam is None:
        lam = lam_option if lam_option is not None else defaults.get("dor_lambda")
        dor = dor.model_copy(update={"lam": None if lam is None else float(lam)})
    builtin = DATASETS.get(spec.dataset).builtin
    if dor is not None and card.dor_outliers == "image" and dor.image_source is None:
        dor = dor.model_copy(update={"image_source": "shapes-outliers" if builtin else "imagenet"})
    root = None if builtin else spec.root
    return spec.model_copy(update={"root": root, "method_options": options, "dor": dor})


def _typed(key: str, value: Any, defaults: dict[str, Any]) -> Any:
    if key not in defaults:
        return value
    try:
        return coerce_option(key, value, defaults[key])
    except ValueError:
        return value
