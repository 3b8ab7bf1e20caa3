"""The benchmark file: its schema, and loading it with command-line settings on top.

A benchmark file is YAML. Every list-valued setting is a grid axis (``orchestrator.benchmark.planning``
expands them into trials). Relative ``data_root`` and ``dor.vocabulary`` paths are read from the
benchmark file's folder; ``tracking_uri`` stays as written (an sqlite path is relative to the
current folder). The data root comes from the command line, else the file, else
``$DOR_BENCH_DATA``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from orchestrator import DEFAULT_TRACKING_URI, TRACKING_ENV
from orchestrator.settings.fields import (
    Axis,
    BenchmarkError,
    DorSection,
    ExperimentName,
    MethodResources,
    ModelSection,
    NamedMethod,
    NonNegInt,
    PosInt,
    Problem,
    Resources,
    Seeds,
    Strict,
    TrackingUri,
    as_list,
    as_list_or_none,
    custom,
    known_dataset,
    raise_at,
    resolve_vocabularies,
    validate_settings,
    validate_with,
)
from orchestrator.settings.reader import Lines, parse_value, read_yaml
from workers.datasets import DATASETS
from workers.errors import DorBenchError, did_you_mean
from workers.methods import METHODS
from workers.methods.training import coerce_option
from workers.spec import EceBins


class MethodEntry(NamedMethod):
    """One method of the grid. The short form ``- coop`` means ``- {name: coop}``."""

    options: dict[str, Any] = Field(
        default_factory=dict,
        description="overrides of the method's published defaults; a list value is a grid axis",
    )
    resources: MethodResources | None = Field(
        None, description="what this method's trials reserve, over the benchmark's resources"
    )
    dor: Annotated[list[bool] | None, BeforeValidator(as_list_or_none)] = Field(
        None,
        validate_default=True,
        description="DOR variants to run: default [false, true] for training methods, [false] for "
        "zeroshot (which never gets DOR)",
    )

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if name is None:  # an unknown method: its name is the problem already reported
            return options
        defaults = METHODS.get(name).defaults
        problems: list[Problem] = []
        checked: dict[str, Any] = {}
        for key, value in options.items():
            if key not in defaults:
                hint = did_you_mean(key, defaults)
                takes = f" {name} takes: {', '.join(sorted(defaults))}." if defaults else f" {name} takes no options."
                problems.append(((key,), f"unknown option '{key}' for {name}.{hint}{takes}", value))
                continue
            is_axis = isinstance(value, list)
            if is_axis and not value:
                problems.append(((key,), "an empty list gives no trials; give at least one value", value))
                continue
            values = []
            for i, item in enumerate(value if is_axis else [value]):
                try:
                    values.append(coerce_option(key, item, defaults[key]))
                except ValueError as err:
                    problems.append(((key, i) if is_axis else (key,), str(err), item))
            checked[key] = values if is_axis else (values[0] if values else value)
        raise_at("options", problems)
        return checked

    @field_validator("dor")
    @classmethod
    def _dor_variants(cls, dor: list[bool] | None, info: ValidationInfo) -> list[bool] | None:
        name = info.data.get("name")
        if name is None:
            return dor
        trains = METHODS.get(name).trains
        if dor is None:
            return [False, True] if trains else [False]
        if not dor:
            raise custom("must not be empty: give false, true or [false, true]")
        if not trains and any(dor):
            raise custom(f"{name} does not train, so DOR does not apply to it; leave dor out (or set it to false)")
        return list(dict.fromkeys(dor))


class KillWorker(Strict):
    """Kill the worker process running ``trial`` when it finishes epoch ``epoch`` (1-based)."""

    trial: str
    epoch: PosInt


class Testing(Strict):
    """Fault injection, for dor-bench's own tests only: never set it in a real benchmark."""

    fail_trials: list[str] = Field(
        default_factory=list, description="trial names or run_keys that raise instead of running"
    )
    kill_worker: KillWorker | None = None


class Benchmark(Strict):
    """One benchmark file: what to run (the grid), where to record it, how to schedule it."""

    name: ExperimentName = Field(description="the MLflow experiment name")
    tracking_uri: TrackingUri = Field(
        None, description=f"MLflow tracking URI (default: ${TRACKING_ENV}, else {DEFAULT_TRACKING_URI})"
    )
    model: ModelSection = Field(default_factory=ModelSection)
    data_root: str | None = Field(
        None, description="folder holding the CoOp-style dataset folders (unused by built-in data)"
    )
    datasets: Axis[str]
    targets: list[str] = Field(
        default_factory=list,
        description="domain-shift target datasets (evaluated by the orchestrator; not yet used)",
    )
    shots: Axis[PosInt] = Field(default_factory=lambda: [16])
    seeds: Seeds = Field(default_factory=lambda: [1, 2, 3])
    subsample: Literal["base2new", "all"] = "base2new"
    test_per_class: PosInt | None = None
    ece_bins: EceBins = 10
    methods: Axis[MethodEntry]
    dor: DorSection = Field(default_factory=DorSection)
    resources: Resources = Field(default_factory=Resources)
    max_concurrency: PosInt | None = Field(None, description="None: as many actors as resources allow")
    retries: NonNegInt = Field(2, description="re-runs of a trial whose worker died")
    testing: Testing = Field(default_factory=Testing)

    _source: str = PrivateAttr("<benchmark>")  # the file it was read from, for error messages

    @field_validator("datasets", "targets")
    @classmethod
    def _known_datasets(cls, names: list[str], info: ValidationInfo) -> list[str]:
        problems: list[Problem] = []
        known: list[str] = []
        for i, name in enumerate(names):
            try:
                known.append(known_dataset(name))
            except PydanticCustomError as err:
                problems.append(((i,), err.message(), name))
        raise_at(info.field_name or "datasets", problems)
        return list(dict.fromkeys(known))

    @model_validator(mode="wrap")
    @classmethod
    def _cross_checks(cls, data: Any, handler: Any) -> Any:
        """Checks that span fields run on the raw input too, so they are reported together with
        every other problem rather than after the others are fixed."""
        if not isinstance(data, dict):
            return handler(data)
        return validate_with(cls.__name__, data, handler, data_root_problems(data))

    def needs_data_root(self) -> list[str]:
        """The datasets (and targets) that are read from ``data_root``."""
        return [n for n in dict.fromkeys([*self.datasets, *self.targets]) if not DATASETS.get(n).builtin]


def data_root_problems(raw: dict[str, Any]) -> list[Problem]:
    root = raw.get("data_root")
    if isinstance(root, str) and root.strip():
        return []
    names = [*as_list(raw.get("datasets") or []), *as_list(raw.get("targets") or [])]
    real = [DATASETS.get(n).name for n in names if isinstance(n, str) and n in DATASETS]
    real = [n for n in dict.fromkeys(real) if not DATASETS.get(n).builtin]
    if not real:
        return []
    return [
        (
            ("data_root",),
            f"required: {', '.join(real)} {'is' if len(real) == 1 else 'are'} read from a data root "
            "in CoOp layout; set data_root to the folder that holds the dataset folders (in the "
            f"file, as data_root=DIR on the command line, or as ${DATA_ENV}; "
            "`dor-bench data check --root DIR` checks it)",
            root,
        )
    ]


#: The data root used when neither the command line nor the file sets one.
DATA_ENV = "DOR_BENCH_DATA"


#: Settings that are paths: given on the command line or in the environment, relative to the
#: current folder (in the file, relative to the file's folder); a built-in vocabulary's name is not.
PATH_SETTINGS = (("data_root",), ("dor", "vocabulary"))


def load_benchmark(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Benchmark:
    """Read and check a benchmark file, with command-line ``overrides`` (``KEY=VALUE``, see
    ``apply_overrides``) on top and ``$DOR_BENCH_DATA`` as the data root when neither sets one.

    Raises:
        NotFoundError: the file is not there.
        DorBenchError: the file is not valid YAML (naming its line and column).
        BenchmarkError: the file or an override does not fit the schema; lists every problem at once.
    """
    path = Path(path)
    data, lines = read_yaml(path, "Benchmark", "examples/demo.yaml is a small working benchmark")
    if not isinstance(data, dict):
        return parse_benchmark(data, source=str(path))
    data, overridden = apply_overrides(data, overrides, str(path))
    if not data.get("data_root") and os.environ.get(DATA_ENV):
        data["data_root"] = os.path.abspath(os.path.expanduser(os.environ[DATA_ENV]))
        overridden.add(("data_root",))
    return parse_benchmark(data, source=str(path), base_dir=path.parent, lines=lines, overridden=overridden)


def apply_overrides(
    data: dict[str, Any], overrides: Sequence[str], source: str
) -> tuple[dict[str, Any], set[tuple[str, ...]]]:
    """``data`` with command-line settings on top: ``seeds=[1]``, ``dor.lam=[4,8]``,
    ``data_root=/data`` (dotted keys reach into sections; values are YAML). Returns the new data
    and the overridden paths, so that a problem with one is reported as the command line's."""
    data = copy.deepcopy(data)
    paths: set[tuple[str, ...]] = set()
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        keys = tuple(k.strip() for k in key.split("."))
        if not sep or not all(keys):
            problems.append(f"command-line setting '{item}' is not KEY=VALUE (e.g. seeds=[1] or dor.lam=[4,8])")
            continue
        try:
            value = parse_value(text, f"command-line setting '{item}'")
        except DorBenchError as err:
            problems.append(err.what.rstrip("."))
            continue
        if keys == ("dor", "vocabulary"):
            value = resolve_vocabularies(value, lambda v: os.path.abspath(os.path.expanduser(v)))
        elif keys in PATH_SETTINGS and isinstance(value, str) and value.strip():
            value = os.path.abspath(os.path.expanduser(value))
        section = data
        for depth, part in enumerate(keys[:-1]):
            if section.get(part) is None:
                section[part] = {}
            if not isinstance(section[part], dict):
                problems.append(f"command-line setting '{item}': '{'.'.join(keys[: depth + 1])}' is not a section")
                break
            section = section[part]
        else:
            section[keys[-1]] = value
            paths.add(keys)
    if problems:
        raise BenchmarkError(source, problems)
    return data, paths


def parse_benchmark(
    data: Any,
    source: str = "<benchmark>",
    base_dir: str | os.PathLike[str] | None = None,
    lines: Lines | None = None,
    overridden: Iterable[tuple[str, ...]] = (),
) -> Benchmark:
    """Check already-parsed benchmark data (a dict); ``source`` names it in errors.

    With ``base_dir``, relative ``data_root`` and ``dor.vocabulary`` paths are read from there;
    ``lines`` (from ``read_yaml``) lets each problem name its line.
    """
    if data is None:
        raise BenchmarkError(
            source, ["the file is empty: it needs at least name, datasets and methods (see examples/demo.yaml)"]
        )
    if not isinstance(data, dict):
        raise BenchmarkError(
            source,
            [f"the top level must be a mapping of settings (name: ..., datasets: ...), not a {type(data).__name__}"],
        )
    return validate_settings(Benchmark, data, source, base_dir, lines, overridden=overridden)
