"""The sweep file (``dor-bench tune FILE``): one base trial, a search space over DOR's knobs and
method options, a search algorithm, an optional ASHA scheduler and an honest objective.

Same family as the benchmark file (``config.py``): the same model, method-option and DOR checks,
and every problem reported at once with its YAML path and line. ``describe_sweep`` says in words
what a sweep will do (``dor-bench validate`` prints it).
"""

from __future__ import annotations

import math
import os
import re
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from orchestrator import DEFAULT_TRACKING_URI, MAX_TRIALS, TRACKING_ENV
from orchestrator.places import tracking_uri
from orchestrator.secrets import redact
from orchestrator.settings.fields import (
    DorSection,
    ExperimentName,
    ModelSection,
    NamedMethod,
    PosInt,
    Problem,
    Resources,
    Seeds,
    Strict,
    TrackingUri,
    custom,
    fmt,
    known_dataset,
    known_strategy,
    raise_at,
    validate_settings,
    validate_with,
)
from orchestrator.settings.reader import Lines, read_yaml
from workers.catalog import NAMES, TEST_AVERAGED, VALIDATION
from workers.datasets import DATASETS
from workers.errors import did_you_mean
from workers.methods import METHODS
from workers.methods.training import coerce_option
from workers.spec import DorSpec, EceBins, Seed, ValidationSpec

#: Metrics a tuning trial reports per epoch, by where their data comes from.
VAL_METRIC = re.compile(rf"^val/(pseudo_base|pseudo_new|avg)/({'|'.join(VALIDATION)})$|^val/hm$")
TEST_METRIC = re.compile(rf"^(base|new)/({'|'.join(NAMES)})$|^avg/({'|'.join(TEST_AVERAGED)})$|^hm$")
#: The DOR knobs a space may search (``options.<name>`` searches a method option).
KNOBS = ("lam", "pool_size", "outliers_per_step", "pool_strategy")
INT_KNOBS = ("pool_size", "outliers_per_step")


class Range(Strict):
    """A continuous dimension: ``{log_uniform: [lo, hi]}`` or ``{uniform: [lo, hi]}`` (integers
    for integer knobs). Only random and Optuna search can sample a range."""

    log_uniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _one_bounded_range(self) -> Range:
        given = [(k, v) for k, v in (("log_uniform", self.log_uniform), ("uniform", self.uniform)) if v]
        if len(given) != 1:
            raise custom("give exactly one of log_uniform: [lo, hi] or uniform: [lo, hi]")
        kind, (lo, hi) = given[0]
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise custom(f"{kind}: both ends must be finite numbers, not [{lo:g}, {hi:g}]")
        if not lo < hi:
            raise custom(f"{kind}: the low end must be below the high end, not [{lo:g}, {hi:g}]")
        if kind == "log_uniform" and lo <= 0:
            raise custom(f"log_uniform needs a low end above 0, not {lo:g} (lambda 0 is a list value)")
        return self

    @property
    def kind(self) -> str:
        return "log_uniform" if self.log_uniform else "uniform"

    @property
    def bounds(self) -> tuple[float, float]:
        return self.log_uniform or self.uniform  # type: ignore[return-value]


def _dimension(value: Any) -> Any:
    """A mapping is a range; anything else is a list of values (a scalar: one value)."""
    if isinstance(value, dict):
        try:
            return Range.model_validate(value)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(map(str, first["loc"]))
            if first["type"] == "extra_forbidden":
                raise custom(
                    f"unknown range '{where}'.{did_you_mean(where, RANGES)} A range is {{log_uniform: [lo, hi]}} "
                    "or {uniform: [lo, hi]}; a list is a set of values"
                ) from None
            raise custom(f"{where + ': ' if where else ''}{first['msg'].removeprefix('Value error, ')}") from None
    if isinstance(value, (list, tuple)) and not value:
        raise custom("an empty list searches nothing: give at least one value, or leave it out")
    return list(value) if isinstance(value, (list, tuple)) else [value]


#: The kinds of range a sweep dimension may be.
RANGES = ("log_uniform", "uniform")


Values = Annotated[list[Any], Field(min_length=1)]
Dimension = Annotated[Range | Values, Field(union_mode="left_to_right")]


class Space(Strict):
    """What the sweep searches. A list is a set of values (grid axis, or a choice); a mapping
    ``{log_uniform: [lo, hi]}`` / ``{uniform: [lo, hi]}`` is a range."""

    lam: Dimension | None = Field(None, description="DOR weight lambda (0 = the plain method)")
    pool_size: Dimension | None = Field(None, description="K: outlier words in the pool")
    outliers_per_step: Dimension | None = Field(None, description="B: outlier words per step")
    pool_strategy: Values | None = Field(None, description="near, far, random")
    options: dict[str, Dimension] = Field(default_factory=dict, description="method options")

    @field_validator(*KNOBS, mode="before")
    @classmethod
    def _knob(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name == "pool_strategy" and isinstance(value, dict):
            raise custom("pool strategies are names, not a range: give a list such as [near, far, random]")
        return None if value is None else _dimension(value)

    @field_validator("options", mode="before")
    @classmethod
    def _option_dimensions(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        dimensions: dict[str, Any] = {}
        problems: list[Problem] = []
        for key, dim in value.items():
            try:
                dimensions[key] = _dimension(dim)
            except PydanticCustomError as err:
                problems.append(((key,), err.message(), dim))
        raise_at("options", problems)
        return dimensions

    @field_validator("lam")
    @classmethod
    def _weights(cls, dim: Any) -> Any:
        if isinstance(dim, Range):
            if dim.bounds[0] < 0:
                raise custom(f"lambda ranges start at 0 or more, not {dim.bounds[0]:g}")
            return dim
        for v in dim:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or not math.isfinite(v):
                raise custom(f"lambda values must be finite numbers >= 0, not {v!r}")
        return [float(v) for v in dim]

    @field_validator("pool_size", "outliers_per_step")
    @classmethod
    def _counts(cls, dim: Any, info: ValidationInfo) -> Any:
        if isinstance(dim, Range):
            if dim.bounds[0] < 1:
                raise custom(f"{info.field_name} ranges start at 1 or more")
            return dim
        for v in dim:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise custom(f"{info.field_name} values must be whole numbers >= 1, not {v!r}")
        return dim

    @field_validator("pool_strategy")
    @classmethod
    def _strategies(cls, values: list[Any]) -> list[Any]:
        for v in values:
            known_strategy(str(v))
        return values

    def dimensions(self) -> dict[str, Range | list[Any]]:
        """Every searched dimension by its Tune config name (``lam``, ``options.lr``, ...)."""
        dims: dict[str, Any] = {k: getattr(self, k) for k in KNOBS if getattr(self, k) is not None}
        dims.update({f"options.{k}": v for k, v in self.options.items()})
        return dims


class MethodSection(NamedMethod):
    """The method of every sweep trial, with fixed option overrides (``method: coop`` is short)."""

    options: dict[str, Any] = Field(default_factory=dict, description="fixed overrides")

    @field_validator("name")
    @classmethod
    def _training_method(cls, name: str) -> str:
        if not METHODS.get(name).trains:
            raise custom(
                f"{name} does not train, so there is nothing to tune; choose one that does "
                f"({', '.join(n for n in METHODS.names() if METHODS.get(n).trains)})"
            )
        return name

    @field_validator("options")
    @classmethod
    def _fixed_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        return options if name is None else _checked_options(name, options, allow_lists=False)


class Floor(Strict):
    """A constraint on a second metric; trials that miss it rank after every trial that meets it."""

    metric: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _a_bound(self) -> Floor:
        if self.min is None and self.max is None:
            raise custom("give min: (the metric must be at least this) or max:")
        return self


class Objective(Strict):
    """What the sweep optimises, per epoch (ASHA) and at the end (ranking)."""

    metric: str = Field("val/pseudo_new/ece", description="a val/* metric (test metrics need leaky)")
    mode: Literal["min", "max"] = "min"
    floor: Floor | None = Field(None, description="e.g. {metric: val/pseudo_base/acc, min: 60}")

    def describe(self) -> str:
        text = f"{self.mode} {self.metric}"
        if self.floor:
            bounds = [
                f">= {fmt(self.floor.min)}" if self.floor.min is not None else "",
                f"<= {fmt(self.floor.max)}" if self.floor.max is not None else "",
            ]
            text += f" (floor: {self.floor.metric} {' and '.join(b for b in bounds if b)})"
        return text


class Search(Strict):
    """How configurations are chosen and how many run at once."""

    algorithm: Literal["grid", "random", "optuna"] = "grid"
    samples: PosInt = Field(1, description="random/optuna: trials to run; grid: must be 1")
    seed: Seed = Field(0, description="seed of the random or Optuna sampler")
    concurrency: PosInt = Field(2, description="trials running at once")


class Scheduler(Strict):
    """ASHA early stopping on the per-epoch objective (``training_iteration`` = epochs so far)."""

    asha: bool = False
    grace_period: PosInt = Field(1, description="epochs every trial gets before it can be stopped")
    reduction_factor: Annotated[float, Field(gt=1)] = 2


class SweepTesting(Strict):
    """Fault injection, for dor-bench's own tests only."""

    exit_driver_after_trials: PosInt | None = Field(
        None, description="the driver process exits hard once this many trials have ended"
    )


class Sweep(Strict):
    """One sweep file."""

    name: ExperimentName = Field(description="MLflow experiment and Tune run name")
    tracking_uri: TrackingUri = Field(
        None, description=f"MLflow tracking URI (default: ${TRACKING_ENV}, else {DEFAULT_TRACKING_URI})"
    )
    model: ModelSection = Field(default_factory=ModelSection)
    data_root: str | None = None
    dataset: str
    method: MethodSection
    shots: PosInt = 16
    seeds: Seeds = Field(default_factory=lambda: [1], description="each trial trains every seed")
    subsample: Literal["base2new", "all"] = "base2new"
    test_per_class: PosInt | None = Field(None, description="only used by a leaky sweep")
    ece_bins: EceBins = 10
    dor: DorSection = Field(default_factory=DorSection, description="fixed DOR settings (the space overrides them)")
    space: Space
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    objective: Objective = Field(default_factory=Objective)
    leaky: bool = Field(False, description="allow test-split metrics (the sweep is tagged leaky)")
    search: Search = Field(default_factory=Search)
    scheduler: Scheduler = Field(default_factory=Scheduler)
    resources: Resources = Field(default_factory=Resources)
    testing: SweepTesting = Field(default_factory=SweepTesting)

    _source: str = PrivateAttr("<sweep>")

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, name: str) -> str:
        return known_dataset(name)

    @field_validator("validation")
    @classmethod
    def _not_leaky_here(cls, validation: ValidationSpec) -> ValidationSpec:
        if validation.leaky:
            raise custom("set the top-level 'leaky: true' instead (it tags the sweep as leaky)")
        return validation

    @model_validator(mode="after")
    def _cross_checks(self) -> Sweep:
        problems: list[Problem] = []
        dims = self.space.dimensions()
        if not dims:
            problems.append(
                (
                    ("space",),
                    "empty: search at least one of lam, pool_size, outliers_per_step, pool_strategy or options.<name>",
                    None,
                )
            )
        if self.search.algorithm == "grid":
            for key, dim in dims.items():
                if isinstance(dim, Range):
                    problems.append(
                        (
                            ("space", *key.split(".")),
                            "a range needs search.algorithm random or optuna; grid search takes a list of values",
                            None,
                        )
                    )
            if self.search.samples != 1:
                problems.append(
                    (
                        ("search", "samples"),
                        "grid search runs every combination once; leave samples at 1 (or use random/optuna)",
                        self.search.samples,
                    )
                )
        problems += self._outliers_within_pool()
        if self.scheduler.asha and self.scheduler.grace_period > self.max_t:
            problems.append(
                (("scheduler", "grace_period"), f"trials only report {self.max_t} epochs", self.scheduler.grace_period)
            )
        raise_at("Sweep", problems)
        return self

    @field_validator("dor")
    @classmethod
    def _one_value_per_knob(cls, dor: DorSection) -> DorSection:
        problems: list[Problem] = [
            (
                (knob,),
                "a sweep fixes one value per DOR knob; "
                + ("search several under space instead" if knob in KNOBS else "compare several in a benchmark file"),
                values,
            )
            for knob, values in dor
            if isinstance(values, list) and len(values) > 1
        ]
        raise_at("dor", problems)
        return dor

    @property
    def fixed_dor(self) -> DorSpec:
        """The DOR settings every trial of the sweep shares, before its space fills in its values."""
        return self.dor.specs()[0]

    def _outliers_within_pool(self) -> list[Problem]:
        """A trial whose B (outliers per step) exceeds its K (pool size) fails once it has started."""
        pool: Any = self.space.pool_size or self.dor.pool_size
        per_step: Any = self.space.outliers_per_step or self.dor.outliers_per_step
        smallest_pool = pool.bounds[0] if isinstance(pool, Range) else min(pool)
        values = per_step.bounds if isinstance(per_step, Range) else per_step
        largest = max((v for v in values if v is not None), default=None)
        if largest is None or largest <= smallest_pool:
            return []
        where = ("space", "outliers_per_step") if self.space.outliers_per_step else ("dor", "outliers_per_step")
        return [
            (
                where,
                f"reaches {largest:g} outliers per step, but the pool can be as small as {smallest_pool:g} words "
                f"(pool_size); those trials would fail: keep outliers_per_step at most {smallest_pool:g}, "
                "or every pool_size at least as large",
                largest,
            )
        ]

    @model_validator(mode="wrap")
    @classmethod
    def _raw_checks(cls, data: Any, handler: Any) -> Any:
        """Checks that span sections, run on the raw input so they are reported together with
        every other problem (defined after ``_cross_checks`` so
        that it wraps it)."""
        return validate_with(cls.__name__, data, handler, _raw_problems(data) if isinstance(data, dict) else [])

    @property
    def epochs(self) -> int:
        return METHODS.get(self.method.name).epochs(self.method.options)

    @property
    def max_t(self) -> int:
        """Reports per trial: one per epoch per seed (a searched ``epochs`` counts its largest)."""
        dim = self.space.options.get("epochs")
        epochs = max(int(v) for v in (dim.bounds if isinstance(dim, Range) else dim)) if dim else self.epochs
        return epochs * len(self.seeds)

    def grid_size(self) -> int | None:
        """Trials of a grid sweep (the product of the lists); None for random/optuna."""
        if self.search.algorithm != "grid":
            return None
        return math.prod(len(d) for d in self.space.dimensions().values() if isinstance(d, list))


def _raw_problems(raw: dict[str, Any]) -> list[Problem]:
    """Problems that need several sections: data root, objective metrics vs leaky, the searched
    method options vs the method."""
    problems: list[Problem] = []
    dataset = raw.get("dataset")
    if (
        isinstance(dataset, str)
        and dataset in DATASETS
        and not DATASETS.get(dataset).builtin
        and not (isinstance(raw.get("data_root"), str) and raw["data_root"].strip())
    ):
        problems.append(
            (
                ("data_root",),
                f"required: {dataset} is read from a data root in CoOp layout; "
                "set data_root to the folder that holds the dataset folders",
                raw.get("data_root"),
            )
        )
    leaky = raw.get("leaky") is True
    objective = _mapping(raw.get("objective"))
    floor = _mapping(objective.get("floor"))
    for loc, metric in (
        (("objective", "metric"), objective.get("metric", "val/pseudo_new/ece")),
        (("objective", "floor", "metric"), floor.get("metric")),
    ):
        message = _metric_problem(metric, leaky) if isinstance(metric, str) else None
        if message:
            problems.append((loc, message, metric))
    method = raw.get("method")
    method = method.get("name") if isinstance(method, dict) else method
    space = _mapping(raw.get("space"))
    options = _mapping(space.get("options"))
    fixed = raw["method"].get("options") or {} if isinstance(raw.get("method"), dict) else {}
    if isinstance(method, str) and method in METHODS and METHODS.get(method).trains:
        defaults = METHODS.get(method).defaults
        for key, dim in options.items():
            if key not in defaults:
                problems.append(
                    (
                        ("space", "options", key),
                        f"unknown option '{key}' for {method}."
                        f"{did_you_mean(key, defaults)} {method} takes: {', '.join(sorted(defaults))}.",
                        dim,
                    )
                )
            elif isinstance(fixed, dict) and key in fixed:
                problems.append((("space", "options", key), "also fixed in method.options; keep one", dim))
            elif isinstance(dim, (list, tuple)) or not isinstance(dim, dict):
                for i, value in enumerate(dim if isinstance(dim, (list, tuple)) else [dim]):
                    try:
                        coerce_option(key, value, defaults[key])
                    except ValueError as err:
                        problems.append((("space", "options", key, i), str(err), value))
            else:
                problems += _option_range_problems(key, dim, defaults[key])
    return problems


def _option_range_problems(key: str, dim: dict[str, Any], default: Any) -> list[Problem]:
    """A range over a method option: the option must be a number, and both ends values it takes
    (a malformed range is reported by ``Range`` itself)."""
    try:
        bounds = Range.model_validate(dim).bounds
    except ValidationError:
        return []
    where = ("space", "options", key)
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return [(where, f"{key} is not a number, so it has no range: search a list of its values", dim)]
    problems: list[Problem] = []
    for end, value in zip(("low", "high"), bounds):
        try:
            coerce_option(key, value, default)
        except ValueError as err:
            problems.append((where, f"the range's {end} end {err}", value))
    return problems


def _metric_problem(metric: str, leaky: bool) -> str | None:
    if VAL_METRIC.match(metric):
        return None
    if TEST_METRIC.match(metric):
        return (
            None
            if leaky
            else (
                f"'{metric}' is scored on the real test split, which an honest sweep never reads (the "
                "new classes are unknown while tuning); use a val/* metric such as val/pseudo_new/ece, "
                "or set 'leaky: true' to allow it (the sweep is then tagged leaky)"
            )
        )
    known = ["val/pseudo_new/ece", "val/pseudo_base/acc", "val/hm", "val/avg/ece", "val/pseudo_new/nll"]
    return (
        f"unknown metric '{metric}'.{did_you_mean(metric, known)} Tuning metrics are "
        f"val/{{pseudo_base,pseudo_new,avg}}/{{{','.join(VALIDATION)}}} and val/hm"
    )


def _checked_options(method: str, options: dict[str, Any], allow_lists: bool) -> dict[str, Any]:
    """``options`` coerced to the method's option types; a ValueError names every problem."""
    defaults = METHODS.get(method).defaults
    problems, out = [], {}
    for key, value in options.items():
        if key not in defaults:
            problems.append(
                f"unknown option '{key}' for {method}.{did_you_mean(key, defaults)} "
                f"{method} takes: {', '.join(sorted(defaults))}."
            )
            continue
        if isinstance(value, list) and not allow_lists:
            problems.append(f"{key}: a fixed option takes one value; search lists under space.options")
            continue
        try:
            out[key] = (
                [coerce_option(key, v, defaults[key]) for v in value]
                if isinstance(value, list)
                else coerce_option(key, value, defaults[key])
            )
        except ValueError as err:
            problems.append(f"{key}: {err}")
    if problems:
        raise custom("; ".join(problems)) if not allow_lists else ValueError("; ".join(problems))
    return out


def is_sweep_data(data: Any) -> bool:
    """A settings file is a sweep when it has a ``space`` (a benchmark never does)."""
    return isinstance(data, dict) and "space" in data


def load_sweep(path: str | os.PathLike[str], max_trials: int = MAX_TRIALS) -> Sweep:
    """Read and check a sweep file; a BenchmarkError ("Sweep file ...") lists every problem, or
    says the sweep has more than ``max_trials`` trials."""
    from pathlib import Path

    from orchestrator.settings.fields import BenchmarkError

    path = Path(path)
    data, lines = read_yaml(path, "Sweep", "examples/sweep-tiny.yaml is a small working sweep")
    sweep = parse_sweep(data, str(path), path.parent, lines)
    trials = sweep.grid_size() or sweep.search.samples
    if trials > max_trials:
        raise BenchmarkError(
            str(path),
            [
                f"the sweep has {trials:,} trials ({sweep.search.algorithm} search), more than {max_trials:,}: "
                f"check the space for a list longer than meant, or pass --max-trials {trials} to run it anyway"
            ],
            kind="Sweep",
        )
    return sweep


def parse_sweep(
    data: Any, source: str = "<sweep>", base_dir: str | os.PathLike[str] | None = None, lines: Lines | None = None
) -> Sweep:
    """Check already-parsed sweep data."""
    from orchestrator.settings.fields import BenchmarkError

    if not isinstance(data, dict):
        raise BenchmarkError(
            source, ["the top level must be a mapping of settings (name:, dataset:, method:, space: ...)"], kind="Sweep"
        )
    return validate_settings(Sweep, data, source, base_dir, lines, kind="Sweep")


def describe_sweep(s: Sweep) -> str:
    """The sweep in words (what ``dor-bench validate`` prints for a sweep file)."""
    trials = s.grid_size() or s.search.samples
    lines = [
        f"Sweep '{s.name}': {trials} trials ({s.search.algorithm} search"
        + (f", seed {s.search.seed}" if s.search.algorithm != "grid" else "")
        + f"), at most {s.search.concurrency} at once"
    ]

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<11} {text}")

    pretrained = s.model.pretrained if s.model.pretrained is not None else "none (random init)"
    options = ", ".join(f"{k}={v}" for k, v in s.method.options.items())
    row(
        "base trial",
        f"{s.method.name}{f' ({options})' if options else ''} on {s.dataset}, "
        f"{s.shots} shots, seeds {', '.join(map(str, s.seeds))}, "
        f"{s.model.arch}/{pretrained}, {s.epochs} epochs",
    )
    for i, (key, dim) in enumerate(s.space.dimensions().items()):
        text = (
            f"{dim.kind} [{fmt(dim.bounds[0])}, {fmt(dim.bounds[1])}]"
            if isinstance(dim, Range)
            else ", ".join(fmt(v) for v in dim[:8]) + (f", ... ({len(dim)} values)" if len(dim) > 8 else "")
        )
        row("space" if i == 0 else "", f"{key}: {text}")
    row(
        "validation",
        f"{fmt(s.validation.pseudo_new)} of the base classes held out as pseudo-new "
        f"(holdout seed {s.validation.holdout_seed}); scored on validation images "
        "after every epoch",
    )
    row("objective", s.objective.describe() + (" (floor misses rank last)" if s.objective.floor else ""))
    if s.leaky:
        row("LEAKY", "the real test split is scored too; the sweep is tagged leaky")
    row(
        "scheduler",
        f"ASHA on the objective: grace {s.scheduler.grace_period}, reduction factor "
        f"{fmt(s.scheduler.reduction_factor)}, max {s.max_t} reports"
        if s.scheduler.asha
        else f"none (every trial runs {s.max_t} reports)",
    )
    row("resources", f"{fmt(float(s.resources.cpus))} CPU, {fmt(float(s.resources.gpus))} GPU per trial")
    row("tracking", f"experiment '{s.name}' at {redact(tracking_uri(None, s.tracking_uri))}")
    if s.testing.exit_driver_after_trials:
        row("TESTING", f"the driver exits after {s.testing.exit_driver_after_trials} trials end")
    return "\n".join(lines)


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` when it is a mapping, else an empty one (the schema reports the wrong type)."""
    return value if isinstance(value, dict) else {}
