"""Planning a benchmark: the grid of trials and its description.

The trials are the product of the benchmark file's axes::

    datasets x shots x seeds x methods x (each method's option lists) x DOR off/on
                                                            x (DOR list settings, when on)

``plan`` expands a checked benchmark into trials (each a ``TrialSpec`` with a readable name and
its run_key), ``select`` keeps what ``--only`` asks for, ``describe_plan`` says what the grid is
in words, and ``validate_file`` does all of it for ``dor-bench validate FILE``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import MAX_TRIALS
from orchestrator.places import tracking_uri
from orchestrator.secrets import redact
from orchestrator.settings.benchmark import Benchmark, MethodEntry, load_benchmark
from orchestrator.settings.fields import BenchmarkError, Resources, fmt
from workers.datasets import DATASETS
from workers.errors import DorBenchError, did_you_mean
from workers.identity import normalise
from workers.methods import METHODS
from workers.spec import TrialSpec


@dataclass(frozen=True)
class PlannedTrial:
    """One trial of the grid: its spec, a readable unique name and its run_key (``spec.key()``).

    ``targets`` repeats the benchmark's domain-shift targets (also in ``spec.targets``).
    """

    spec: TrialSpec
    name: str
    run_key: str
    targets: tuple[str, ...] = ()
    resources: Resources = field(default_factory=Resources)


@dataclass
class _Point:
    spec: TrialSpec
    entry: int  # index into benchmark.methods


def plan(benchmark: Benchmark, max_trials: int = MAX_TRIALS) -> list[PlannedTrial]:
    """The trials of ``benchmark`` in a fixed order: datasets x shots x seeds x methods x method
    option axes x DOR off/on x DOR axes. Grid points with the same run_key are run once (the
    first is kept; ``describe_plan`` says how many were dropped).

    Raises:
        BenchmarkError: a ``testing`` entry names no planned trial, or the grid has more than
        ``max_trials`` points (counted before any is built).
    """
    size = grid_size(benchmark)
    if size > max_trials:
        raise BenchmarkError(
            benchmark._source,
            [
                f"the grid has {size:,} trials ({_per_run(benchmark):,} dataset, shots and seed combinations "
                f"x {size // _per_run(benchmark):,} method settings), more than {max_trials:,}: check the lists "
                f"for one longer than meant, or pass --max-trials {size} to plan it anyway"
            ],
        )
    trials, _ = _plan(benchmark)
    _check_testing(benchmark, trials)
    return trials


def _plan(benchmark: Benchmark) -> tuple[list[PlannedTrial], list[tuple[str, str]]]:
    """The unique trials and the dropped duplicates as (dropped name, kept name)."""
    points = _grid(benchmark)
    names = _names(benchmark, points)
    kept: dict[str, PlannedTrial] = {}
    duplicates: list[tuple[str, str]] = []
    taken: set[str] = set()
    for point, name in zip(points, names):
        key = point.spec.key()
        if key in kept:
            duplicates.append((name, kept[key].name))
            continue
        if name in taken:  # cannot happen with the naming rules; keeps names unique regardless
            name = f"{name}~{key[:8]}"
        taken.add(name)
        own = benchmark.methods[point.entry].resources
        kept[key] = PlannedTrial(point.spec, name, key, tuple(benchmark.targets), benchmark.resources.over(own))
    return list(kept.values()), duplicates


#: How the plan says when a trial's outliers are drawn (``dor.resample``).
RESAMPLE_WORDS = {"step": "every step", "epoch": "once per epoch", "never": "once per trial"}


def _grid(b: Benchmark) -> list[_Point]:
    points = []
    for dataset, shots, seed in itertools.product(b.datasets, b.shots, b.seeds):
        for index, entry in enumerate(b.methods):
            for options in _option_combinations(entry.options):
                for use_dor in entry.dor or [False]:
                    for dor in b.dor.specs() if use_dor else [None]:
                        spec = normalise(
                            TrialSpec(
                                method=entry.name,
                                dataset=dataset,
                                root=b.data_root,
                                model=b.model.arch,
                                pretrained=b.model.pretrained,
                                seed=seed,
                                shots=shots,
                                subsample=b.subsample,
                                method_options=options,
                                dor=dor,
                                ece_bins=b.ece_bins,
                                test_per_class=b.test_per_class,
                                targets=list(b.targets),
                            )
                        )
                        points.append(_Point(spec, index))
    return points


def grid_size(b: Benchmark) -> int:
    """How many grid points ``plan`` expands (before duplicates are dropped), without building them."""
    return _per_run(b) * sum(_entry_variants(b, entry)[0] for entry in b.methods)


def _per_run(b: Benchmark) -> int:
    return len(b.datasets) * len(b.shots) * len(b.seeds)


def _option_combinations(options: dict[str, Any]) -> list[dict[str, Any]]:
    keys = list(options)
    axes = [options[k] if isinstance(options[k], list) else [options[k]] for k in keys]
    return [dict(zip(keys, values)) for values in itertools.product(*axes)]


def _names(b: Benchmark, points: list[_Point]) -> list[str]:
    """``method/dataset[/Kshots]/seedS[/option=value...][/dor-lamL[/K..][/B..][/strategy][/vocab-V]
    [/resample-R]]``; options, shots and DOR pool settings appear only when they vary (``V``: a
    built-in vocabulary's name or a word-list file's stem)."""
    varying_options: dict[str, list[str]] = {}
    for method in dict.fromkeys(p.spec.method for p in points):
        defaults = METHODS.get(method).defaults
        mine = [p for p in points if p.spec.method == method]
        keys = dict.fromkeys(k for p in mine for k in p.spec.method_options)
        varying_options[method] = [
            k
            for k in keys
            if len(
                {json.dumps(p.spec.method_options.get(k, defaults.get(k)), sort_keys=True, default=str) for p in mine}
            )
            > 1
        ]
    many_shots = len(set(b.shots)) > 1
    many_sizes = len(set(b.dor.pool_size)) > 1
    many_per_step = len(set(b.dor.outliers_per_step)) > 1
    many_strategies = len(set(b.dor.pool_strategy)) > 1
    many_vocabularies = len(set(b.dor.vocabulary)) > 1
    many_resamples = len(set(b.dor.resample)) > 1
    names = []
    for p in points:
        s = p.spec
        parts = [s.method, s.dataset]
        if many_shots:
            parts.append(f"{s.shots}shots")
        parts.append(f"seed{s.seed}")
        defaults = METHODS.get(s.method).defaults
        parts += [f"{k}={fmt(s.method_options.get(k, defaults.get(k)))}" for k in varying_options[s.method]]
        if s.dor is not None:
            parts.append(f"dor-lam{fmt(s.dor.lam)}")
            if many_sizes:
                parts.append(f"K{s.dor.pool_size}")
            if many_per_step:
                parts.append(f"B{s.dor.outliers_per_step or 'auto'}")
            if many_strategies:
                parts.append(s.dor.pool_strategy)
            if many_vocabularies:
                parts.append(f"vocab-{fmt(Path(s.dor.vocabulary).stem)}")
            if many_resamples:
                parts.append(f"resample-{s.dor.resample}")
        names.append("/".join(parts))
    return names


def _check_testing(b: Benchmark, trials: list[PlannedTrial]) -> None:
    by_name = {t.name: t for t in trials}
    by_key = {t.run_key: t for t in trials}
    names = list(by_name)
    problems = []
    for i, ref in enumerate(b.testing.fail_trials):
        if ref not in by_name and ref not in by_key:
            problems.append(
                f"testing.fail_trials[{i}]: no planned trial is named '{ref}' or has that "
                f"run_key.{did_you_mean(ref, names)}"
            )
    kill = b.testing.kill_worker
    if kill is not None:
        trial = by_name.get(kill.trial) or by_key.get(kill.trial)
        if trial is None:
            problems.append(
                f"testing.kill_worker.trial: no planned trial is named '{kill.trial}' or "
                f"has that run_key.{did_you_mean(kill.trial, names)}"
            )
        else:
            epochs = METHODS.get(trial.spec.method).epochs(trial.spec.method_options)
            if not epochs:
                problems.append(
                    f"testing.kill_worker.trial: '{trial.name}' does not train, so it never reaches an epoch"
                )
            elif kill.epoch > epochs:
                problems.append(
                    f"testing.kill_worker.epoch: '{trial.name}' trains for {epochs} "
                    f"epochs, so it never reaches epoch {kill.epoch}"
                )
    if problems:
        raise BenchmarkError(b._source, problems)


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _entry_variants(b: Benchmark, entry: MethodEntry) -> tuple[int, str]:
    """How many grid points one method entry adds per (dataset, shots, seed), and why."""
    combos = math.prod(len(v) if isinstance(v, list) else 1 for v in entry.options.values())
    n_dor = b.dor.variants()
    flags = entry.dor or [False]
    count = combos * sum(n_dor if flag else 1 for flag in flags)
    if True not in flags:
        dor = ""
    elif False not in flags:
        dor = "DOR on" if n_dor == 1 else f"{n_dor} DOR settings"
    else:
        dor = "DOR off/on" if n_dor == 1 else f"DOR off + {n_dor} DOR settings"
    why = [f"{combos} option settings"] if combos > 1 else []
    if dor:
        why.append(f"({dor})" if why and "+" in dor else dor)
    return count, " x ".join(why)


def describe_plan(benchmark: Benchmark, trials: Sequence[PlannedTrial], max_listed: int = 24) -> str:
    """The plan in words: the trial count as a product of the axes, each axis, and the trials
    (all of them up to ``max_listed``, else the first ``max_listed``)."""
    b = benchmark
    _, duplicates = _plan(b)
    entries = [(e, *_entry_variants(b, e)) for e in b.methods]
    groups: dict[tuple[int, str], list[str]] = {}
    for e, n, why in entries:
        groups.setdefault((n, why), []).append(e.name)
    per_cell = " + ".join(
        (f"{names[0]} {n}" if len(names) == 1 else f"{len(names)} methods ({', '.join(names)}) x {n}")
        + (f" ({why})" if why else "")
        for (n, why), names in groups.items()
    )
    factors = [_plural(len(b.datasets), "dataset")]
    if len(b.shots) > 1:
        factors.append(_plural(len(b.shots), "shot setting"))
    factors.append(_plural(len(b.seeds), "seed"))
    equation = " x ".join(factors) + f" x ({per_cell})"
    lines = [f"Benchmark '{b.name}': {_plural(len(trials), 'trial')} = {equation}"]
    if duplicates:
        lines.append(
            f"  ({grid_size(b)} grid points; {_plural(len(duplicates), 'duplicate')} with the "
            "same run_key as an earlier one dropped: "
            + ", ".join(d if d == k else f"{d} (= {k})" for d, k in duplicates[:3])
            + (", ..." if len(duplicates) > 3 else "")
            + ")"
        )

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<11} {text}")

    pretrained = b.model.pretrained if b.model.pretrained is not None else "none (random init)"
    row("model", f"{b.model.arch}, pretrained {pretrained}")
    builtin = [d for d in b.datasets if DATASETS.get(d).builtin]
    row(
        "datasets", f"({len(b.datasets)}) " + ", ".join(d + (" (built-in)" if d in builtin else "") for d in b.datasets)
    )
    if b.needs_data_root():
        missing = b.data_root is not None and not Path(b.data_root).is_dir()
        row(
            "data root",
            str(b.data_root)
            + (
                "  (not a folder on this machine: edit data_root unless the data lives on the workers only)"
                if missing
                else ""
            ),
        )
    row("shots", ", ".join(map(str, b.shots)))
    row("seeds", ", ".join(map(str, b.seeds)))
    row(
        "subsample",
        {
            "base2new": "base2new (train on base classes; test base and new classes)",
            "all": "all (train and test on every class)",
        }[b.subsample]
        + (f"; at most {b.test_per_class} test images per class" if b.test_per_class else "")
        + f"; ECE with {b.ece_bins} bins",
    )
    for i, (entry, n, why) in enumerate(entries):
        options = ", ".join(f"{k}={v}" for k, v in entry.options.items())
        text = f"{entry.name}: {_plural(n, 'variant')}" + (f" = {why}" if why else "")
        if options:
            text += f"; options {options}"
        row("methods" if i == 0 else "", text)
    if any(True in (e.dor or []) for e in b.methods):
        lam = ", ".join("method default" if x is None else fmt(x) for x in b.dor.lam)
        uses_default = None in b.dor.lam
        if uses_default:
            on = [e.name for e in b.methods if True in (e.dor or [])]
            defaults = ", ".join(f"{m} {fmt(METHODS.get(m).defaults.get('dor_lambda'))}" for m in dict.fromkeys(on))
            lam += f" ({defaults})"
        per_step = ", ".join("number of base classes" if x is None else str(x) for x in b.dor.outliers_per_step)
        kinds = {METHODS.get(e.name).dor_outliers for e in b.methods if True in (e.dor or [])}
        pools = [f"words from {', '.join(b.dor.vocabulary)}"] if "text" in kinds else []
        if "image" in kinds:
            pools.append(f"images from {b.dor.image_source or 'imagenet (built-in data: shapes-outliers)'}")
        row(
            "DOR",
            f"lam {lam}; pool K = {', '.join(map(str, b.dor.pool_size))} "
            f"({', '.join(b.dor.pool_strategy)}) {' and '.join(pools)}; "
            f"B = {per_step} per step, drawn {' / '.join(RESAMPLE_WORDS[r] for r in b.dor.resample)}",
        )
    if b.targets:
        row("targets", ", ".join(b.targets) + " (domain shift: each trial also scores their test splits)")
    row("tracking", f"experiment '{b.name}' at {redact(tracking_uri(None, b.tracking_uri))}")
    own = "".join(f"; {m.name}: {b.resources.over(m.resources).describe()}" for m in b.methods if m.resources)
    row(
        "resources",
        f"{b.resources.describe()} per trial{own}; "
        + (f"at most {b.max_concurrency} at once" if b.max_concurrency else "as many at once as resources allow")
        + f"; {_plural(b.retries, 'retry', 'retries')} after a worker dies",
    )
    if b.testing.fail_trials or b.testing.kill_worker:
        parts = []
        if b.testing.fail_trials:
            parts.append(f"fail {', '.join(b.testing.fail_trials)}")
        if b.testing.kill_worker:
            parts.append(f"kill the worker of {b.testing.kill_worker.trial} at epoch {b.testing.kill_worker.epoch}")
        row("TESTING", "fault injection: " + "; ".join(parts))
    if trials:
        shown = list(trials)[:max_listed]
        width = max(len(t.name) for t in shown)
        lines.append("Trials (name, run_key):")
        lines += [f"  {t.name:<{width}}  {t.run_key}" for t in shown]
        if len(trials) > len(shown):
            lines.append(f"  ... and {len(trials) - len(shown)} more")
    return "\n".join(lines)


def validate_file(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    only: Sequence[str] = (),
    max_trials: int = MAX_TRIALS,
    tracking_uri: str | None = None,
) -> tuple[Benchmark, list[PlannedTrial], str]:
    """Load, check and plan a benchmark file (with command-line ``overrides`` and
    ``--tracking-uri``, keeping the trials ``only`` selects, refusing a grid above
    ``max_trials``): ``(benchmark, trials, description)``.

    Raises:
        DorBenchError: the file is missing or not YAML, or ``only`` selects nothing;
        BenchmarkError: it has problems.
    """
    benchmark = load_benchmark(path, overrides)
    if tracking_uri:
        benchmark = benchmark.model_copy(update={"tracking_uri": tracking_uri})
    trials = select(plan(benchmark, max_trials), only)
    return benchmark, trials, describe_plan(benchmark, trials)


#: What ``--only`` filters on: the spec field each key reads.
ONLY_KEYS = {"method": "method", "dataset": "dataset", "seed": "seed"}


def select(trials: list[PlannedTrial], only: Sequence[str]) -> list[PlannedTrial]:
    """The trials matching every ``--only KEY=V1,V2`` (KEY: method, dataset or seed)."""
    for item in only:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in ONLY_KEYS:
            raise DorBenchError(
                f"--only '{item}' is not KEY=VALUE[,VALUE...] with KEY one of {', '.join(ONLY_KEYS)}."
                f"{did_you_mean(key, list(ONLY_KEYS)) if sep else ''}",
                "write e.g. --only method=coop,kgcoop --only seed=1.",
            )
        wanted = {v.strip() for v in text.split(",") if v.strip()}
        if not wanted:
            raise DorBenchError(
                f"--only {item} names no {key}: it would select no trial.", f"write e.g. --only {key}=VALUE."
            )
        present = sorted({str(getattr(t.spec, ONLY_KEYS[key])) for t in trials})
        unknown = sorted(wanted - set(present))
        if unknown:
            raise DorBenchError(
                f"--only {key}={text}: no planned trial has {key} {', '.join(unknown)}.",
                f"the plan's {key} values: {', '.join(present)}.",
            )
        trials = [t for t in trials if str(getattr(t.spec, ONLY_KEYS[key])) in wanted]
    return trials
