"""Checks made before anything is scheduled, for ``dor-bench run`` and ``dor-bench tune`` alike: every problem
that would make trials fail for the same reason (data roots, weights, vocabulary), all at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.benchmark.planning import PlannedTrial
from orchestrator.settings.benchmark import Benchmark
from workers.errors import DorBenchError
from workers.spec import TrialSpec


def preflight(bench: Benchmark, trials: list[PlannedTrial]) -> None:
    """Everything that would make a benchmark's trials fail for the same reason, checked before
    scheduling."""
    wordnet = any(t.spec.dor is not None and t.spec.dor.vocabulary == "wordnet" for t in trials)
    check_inputs(
        bench.datasets, bench.data_root, bench.model.arch, bench.model.pretrained, wordnet, "nothing was scheduled"
    )


def preflight_sweep(sweep: Any, spec: TrialSpec) -> None:
    """A sweep's preflight: its dataset reads, its model loads, its vocabulary is there."""
    wordnet = spec.dor is not None and spec.dor.vocabulary == "wordnet"
    check_inputs(
        [sweep.dataset], sweep.data_root, sweep.model.arch, sweep.model.pretrained, wordnet, "the sweep did not start"
    )


def check_inputs(
    datasets: list[str], data_root: str | None, arch: str, pretrained: str | None, wordnet: bool, consequence: str
) -> None:
    """Read every dataset, load the model and (when needed) WordNet; one error lists every problem."""
    from workers.datasets import DATASETS
    from workers.models.clip import load_clip

    problems = []
    for name in datasets:
        reader = DATASETS.get(name)
        try:
            reader.read(Path(data_root).expanduser() if data_root and not reader.builtin else None)
        except DorBenchError as err:
            problems.append(f"dataset '{name}': {err.message}")
    try:
        load_clip(arch, pretrained, device="cpu")
    except DorBenchError as err:
        problems.append(f"model: {err.message}")
    if wordnet:
        from workers.dor import noun_vocabulary

        try:
            noun_vocabulary()
        except DorBenchError as err:
            problems.append(f"DOR vocabulary: {err.message}")
    if problems:
        raise DorBenchError(f"Preflight found problems; {consequence}:\n  - " + "\n  - ".join(problems))
