"""A trial spec as MLflow params and back (torch-free: reports read params)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from workers.spec import TrialSpec

if TYPE_CHECKING:
    pass


def params_from_spec(spec: TrialSpec) -> dict[str, str]:
    """The spec as MLflow params: nested fields joined with dots, strings as they are, everything
    else as JSON."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = json.dumps(value) if not isinstance(value, str) else value

    walk("", spec.canonical_dict())
    return out


def spec_from_params(params: dict[str, str]) -> TrialSpec:
    """The spec a trial run's params record (``params_from_spec`` undone)."""
    data: dict[str, Any] = {}
    for key, text in params.items():
        *sections, name = key.split(".")
        node = data
        for section in sections:
            node = node.setdefault(section, {})
        try:
            value = json.loads(text)
        except ValueError:
            value = text  # a string, logged as it is
        node[name] = value
    for section in ("dor", "validation"):  # a section that was off is logged as its own null
        if data.get(section) == {}:
            data[section] = None
    return TrialSpec.model_validate(data)
