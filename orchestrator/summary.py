"""The end-of-run table: per dataset and method variant, mean +- std over seeds (sample std)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable

from workers.spec import TrialSpec

COLUMNS = (("base/acc", "base acc"), ("new/acc", "new acc"), ("hm", "HM"),
           ("base/ece", "base ECE"), ("new/ece", "new ECE"), ("avg/ece", "avg ECE"),
           ("new/confidence", "new conf"))


def variant(spec: TrialSpec) -> str:
    """The table column a trial belongs to, e.g. ``coop``, ``coop+DOR(lam=8)``."""
    if spec.dor is None:
        return spec.method
    return f"{spec.method}+DOR(lam={spec.dor.lam:g})" if spec.dor.lam is not None else f"{spec.method}+DOR"


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}"


def summary_table(rows: Iterable[tuple[TrialSpec, dict[str, float]]]) -> str:
    """A Markdown table of finished trials (spec, final metrics); "new conf" above "new acc"
    means overconfidence on new classes."""
    groups: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    for spec, metrics in rows:
        groups[(spec.dataset, variant(spec))].append(metrics)
    header = "| dataset | method | seeds | " + " | ".join(label for _, label in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (3 + len(COLUMNS))]
    for (dataset, name), runs in groups.items():  # in plan order
        cells = [cell([m[key] for m in runs if key in m]) for key, _ in COLUMNS]
        lines.append(f"| {dataset} | {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
