"""What the benchmark and sweep schemas share: the strict base model, field types and known-name
checks, validation that reports every problem at once with its YAML path and line (or the
command line), and relative-path resolution."""

from __future__ import annotations

import contextvars
import itertools
import math
import os
import re
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from orchestrator.places import tracking_uri_problem
from orchestrator.settings.reader import Lines, line_of, yaml_path
from workers.datasets import DATASETS
from workers.errors import DorBenchError, did_you_mean
from workers.methods import METHODS
from workers.models.names import SHIPPED_WEIGHTS, architectures, default_pretrained, names_a_file, pretrained_tags
from workers.spec import DOR_DEFAULTS, DorSpec, PoolExclude, PoolStrategy, Resample, Seed
from workers.vocabularies import VOCABULARIES, vocabulary_problem

T = TypeVar("T")


POOL_STRATEGIES: tuple[str, ...] = typing.get_args(PoolStrategy)


class BenchmarkError(DorBenchError):
    """Everything wrong with one benchmark file, each problem prefixed by its YAML path."""

    def __init__(
        self, source: str | os.PathLike[str], problems: Sequence[str], fix: str | None = None, kind: str = "Benchmark"
    ):
        self.source = str(source)
        self.problems = list(problems)
        count = len(self.problems)
        head = f"{kind} file '{self.source}' has {count} problem{'' if count == 1 else 's'}:"
        super().__init__(
            "\n".join([head, *(f"  - {p}" for p in self.problems)]),
            fix or "correct the file (or the KEY=VALUE setting) and check it again with `dor-bench validate FILE`.",
        )


def custom(message: str) -> PydanticCustomError:
    return PydanticCustomError("dor_bench", "{message}", {"message": message})


Problem = tuple[tuple[str | int, ...], str, Any]  # (location below the field, message, input)


def raise_at(title: str, problems: list[Problem]) -> None:
    """Raise one ValidationError holding several problems at locations below the current field."""
    if problems:
        raise ValidationError.from_exception_data(title, problem_details(problems))


def as_list(value: Any) -> Any:
    """A scalar stands for a one-value axis."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def as_list_or_none(value: Any) -> Any:
    return None if value is None else as_list(value)


def known(kind: str, name: str, names: Sequence[str], listing: str) -> None:
    """A "did you mean" error unless ``name`` is one of ``names`` (``listing`` leads the list)."""
    if name not in names:
        raise custom(f"unknown {kind} '{name}'.{did_you_mean(name, names)} {listing}: {', '.join(names)}.")


def known_dataset(name: str) -> str:
    """The registered name of dataset ``name`` (aliases resolved); a "did you mean" error otherwise."""
    if name not in DATASETS:
        known("dataset", name, DATASETS.names(), "Known datasets")
    return DATASETS.get(name).name


def known_method(name: str) -> str:
    """The registered name of method ``name``; a "did you mean" error otherwise."""
    if name not in METHODS:
        known("method", name, METHODS.names(), "Known methods")
    return METHODS.get(name).name


def known_strategy(name: str) -> str:
    known("pool strategy", name, POOL_STRATEGIES, "Choose one of")
    return name


PosInt = Annotated[int, Field(gt=0)]


NonNegInt = Annotated[int, Field(ge=0)]


NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _ray_gpus(gpus: float) -> float:
    """Ray's rule for GPUs: a share of one GPU (below 1, to 0.0001) or whole GPUs."""
    if gpus > 1 and not gpus.is_integer():
        raise custom(
            f"must be a share of one GPU (below 1: 0.5 runs two trials on a GPU, 0.25 four) or a whole number "
            f"of GPUs, not {gpus:g}: Ray gives a trial part of one GPU or whole GPUs"
        )
    if 0 < gpus < 0.0001:
        raise custom(f"must be 0 or at least 0.0001 (Ray's smallest share of a GPU), not {gpus:g}")
    return gpus


#: GPUs one trial reserves: a share of one GPU (several trials share it) or whole GPUs.
GpuCount = Annotated[float, Field(ge=0, allow_inf_nan=False), AfterValidator(_ray_gpus)]


def _unique(values: list[Any]) -> list[Any]:
    repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
    if repeated:
        raise custom(f"lists {', '.join(map(str, repeated))} more than once; each value once")
    return values


def _folder_safe(name: str) -> str:
    if name in (".", "..") or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise custom(
            f"'{name}' cannot be used: it names a folder (reports/<name>) and an MLflow experiment; "
            "use letters, digits, '.', '_' and '-' (at most 100), starting with a letter or digit"
        )
    return name


#: A benchmark's or sweep's name: the MLflow experiment and the report folder.
ExperimentName = Annotated[str, AfterValidator(_folder_safe)]


def _store_uri(uri: str | None) -> str | None:
    problem = tracking_uri_problem(uri) if uri else None
    if problem:
        raise custom(problem)
    return uri


#: A settings file's ``tracking_uri``: refused here when malformed, before any store is opened.
TrackingUri = Annotated[str | None, AfterValidator(_store_uri)]


#: A grid axis: a list of at least one value; a plain scalar is a one-value list.
Axis = Annotated[list[T], BeforeValidator(as_list), Field(min_length=1)]
#: The seeds axis: each seed once.
Seeds = Annotated[list[Seed], BeforeValidator(as_list), Field(min_length=1), AfterValidator(_unique)]


#: Set during the first validation pass: leave pretrained tags that need open_clip (and torch)
#: unchecked. A context variable, not pydantic's context, which default factories do not see.
_DEFER_TAGS: contextvars.ContextVar[bool] = contextvars.ContextVar("defer_pretrained_tags", default=False)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(Strict):
    """The CLIP model every trial uses."""

    arch: str = Field("ViT-B-16", description="open_clip architecture (`dor-bench ls models`)")
    pretrained: str | None = Field(
        "default",
        validate_default=True,
        description="pretrained tag or checkpoint file; omitted (or 'default'): the architecture's "
        "default (openai, or dor-bench's shipped weights); null or 'none': random init",
    )

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        known = architectures()
        if arch not in known:
            raise custom(f"unknown architecture '{arch}'.{did_you_mean(arch, known)} `dor-bench ls models` lists them.")
        return arch

    @field_validator("pretrained")
    @classmethod
    def _pretrained_tag(cls, tag: str | None, info: ValidationInfo) -> str | None:
        arch = info.data.get("arch")
        if tag is None or tag.lower() == "none":
            return None
        if arch is None:
            return tag
        shipped = SHIPPED_WEIGHTS.get(arch, {})
        if _DEFER_TAGS.get() and arch not in shipped:
            return tag  # the first, torch-free pass: open_clip's tags are looked up in the second
        if tag == "default":
            return default_pretrained(arch)
        if not names_a_file(tag) and tag not in shipped:
            tags = pretrained_tags(arch)
            if tag not in tags:
                raise custom(
                    f"unknown pretrained tag '{tag}' for {arch}.{did_you_mean(tag, tags)} "
                    + (f"Known tags: {', '.join(tags)}; or" if tags else f"{arch} has no pretrained tags: use")
                    + " a checkpoint file, or null for random init."
                )
        return tag


class NamedMethod(Strict):
    """A method by registered name; the short form ``coop`` means ``{name: coop}``."""

    name: str = Field(description="method name (`dor-bench ls methods`)")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @field_validator("name")
    @classmethod
    def _known_method(cls, name: str) -> str:
        return known_method(name)


class Resources(Strict):
    """What one trial reserves (Ray resources); fractional GPUs share a device."""

    gpus: GpuCount = 0
    cpus: Annotated[float, Field(gt=0)] = 1
    memory_gb: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        None, description="memory one trial reserves (Ray's `memory` resource); None: none reserved"
    )

    def over(self, own: MethodResources | None) -> Resources:
        """These resources with a method's own on top (what it leaves unset is kept)."""
        return self.model_copy(update=own.model_dump(exclude_none=True)) if own else self

    def describe(self) -> str:
        memory = f", {fmt(self.memory_gb)} GB" if self.memory_gb else ""
        return f"{fmt(float(self.cpus))} CPU, {fmt(float(self.gpus))} GPU{memory}"


class MethodResources(Strict):
    """A method's own resources (MaPLe and CoCoOp need more memory than CoOp), over the
    benchmark's ``resources``."""

    gpus: GpuCount | None = None
    cpus: Annotated[float, Field(gt=0)] | None = None
    memory_gb: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None


def validate_with(title: str, data: Any, handler: Any, extra: list[Problem]) -> Any:
    """Run a wrap validator's ``handler`` and report ``extra`` (problems found on the raw data)
    together with the schema's own problems, in one ValidationError."""
    try:
        result = handler(data)
    except ValidationError as err:
        if not extra:
            raise
        details = [
            InitErrorDetails(
                type=PydanticCustomError(e["type"], "{message}", {**e.get("ctx", {}), "message": e["msg"]}),
                loc=e["loc"],
                input=e["input"],
            )
            for e in err.errors()
        ]
        raise ValidationError.from_exception_data(title, details + problem_details(extra)) from None
    raise_at(title, extra)
    return result


def problem_details(problems: list[Problem]) -> list[InitErrorDetails]:
    return [InitErrorDetails(type=custom(msg), loc=loc, input=value) for loc, msg, value in problems]


M = TypeVar("M", bound=BaseModel)


def validate_settings(
    schema: type[M],
    data: dict[str, Any],
    source: str,
    base_dir: str | os.PathLike[str] | None,
    lines: Lines | None,
    kind: str = "Benchmark",
    overridden: Iterable[tuple[str, ...]] = (),
) -> M:
    """``data`` checked against ``schema`` (Benchmark, Sweep): every problem at once, each with
    its YAML path and line (or ``[command line]`` for an ``overridden`` setting), in one
    BenchmarkError; relative paths resolved against ``base_dir``."""
    if base_dir is not None:
        data = resolve_paths(data, Path(base_dir))
    try:
        # Twice: every check but open_clip's pretrained tags first, so that a file with problems
        # is refused without importing torch; then all of them on a file that passed.
        token = _DEFER_TAGS.set(True)
        try:
            schema.model_validate(data)
        finally:
            _DEFER_TAGS.reset(token)
        settings = schema.model_validate(data)
        settings._source = source  # type: ignore[attr-defined]  # every schema has this PrivateAttr
        return settings
    except ValidationError as err:
        problems = []
        for order, error in enumerate(err.errors()):
            text = f"{yaml_path(error['loc'], data)}: {error_message(error, schema)}"
            if any(tuple(error["loc"][: len(p)]) == p for p in overridden):
                problems.append((0, order, text + "  [command line]"))
                continue
            line = line_of(error["loc"], lines)
            problems.append((line or 0, order, text + (f"  [line {line}]" if line else "")))
        raise BenchmarkError(source, [text for _, _, text in sorted(problems)], kind=kind) from None


def resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    def resolve(value: str) -> str:
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else Path(os.path.abspath(base / p)))

    data = dict(data)
    if isinstance(data.get("data_root"), str) and data["data_root"].strip():
        data["data_root"] = resolve(data["data_root"])
    dor = data.get("dor")
    if isinstance(dor, dict) and "vocabulary" in dor:
        data["dor"] = {**dor, "vocabulary": resolve_vocabularies(dor["vocabulary"], resolve)}
    return data


def resolve_vocabularies(value: Any, resolve: Callable[[str], str]) -> Any:
    """``dor.vocabulary`` (one or a list) with each word-list file's path resolved; built-in names,
    and anything that is not a path, as they are."""
    if isinstance(value, list):
        return [resolve_vocabularies(v, resolve) for v in value]
    return resolve(value) if isinstance(value, str) and value.strip() and value not in VOCABULARIES else value


def error_message(error: ErrorDetails, root: type[BaseModel]) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "dor_bench":
        return error["msg"]
    if kind == "missing":
        return "required, but missing"
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        allowed = list(_model_at(error["loc"][:-1], root).model_fields)
        return f"unknown setting '{key}'.{did_you_mean(key, allowed)} Allowed here: {', '.join(allowed)}."
    if kind == "greater_than_equal":
        return f"must be >= {fmt(ctx.get('ge'))}, not {value!r}"
    if kind == "greater_than":
        return f"must be > {fmt(ctx.get('gt'))}, not {value!r}"
    if kind == "too_short":
        return "must not be empty"
    if kind == "model_type":  # a section (model:, dor:, a method) given as a list, a string or nothing
        model, parent, name = _model_at(error["loc"], root), _model_at(error["loc"][:-1], root), error["loc"][-1]
        keys = f"settings ({', '.join(model.model_fields)})"
        if value is None:
            field = parent.model_fields.get(name) if isinstance(name, str) else None
            optional = field is not None and not field.is_required()
            return f"is empty: give its {keys}" + (", or leave it out for the defaults" if optional else "")
        named = issubclass(model, NamedMethod)
        got = "a list" if isinstance(value, list) else repr(value)
        return f"must be {'a method name or ' if named else ''}a mapping of its {keys}, not {got}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, not {value!r}"
    message = error["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    if isinstance(value, (str, int, float, bool)) or value is None:
        message += f" (got {value!r})"
    return message


def _model_at(loc: Iterable[str | int], root: type[BaseModel]) -> type[BaseModel]:
    """The schema model (below ``root``) that holds the settings at ``loc``."""
    model: type[BaseModel] = root
    for part in loc:
        if isinstance(part, str) and part in model.model_fields:
            found = _find_model(model.model_fields[part].annotation)
            if found is None:
                break
            model = found
    return model


def _find_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _find_model(arg)
        if found is not None:
            return found
    return None


def fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if value is None:
        return "none"
    return re.sub(r"[\s/]+", "_", str(value))


class DorSection(Strict):
    """The ``dor:`` section of both settings files: DOR's knobs with ``DorSpec``'s defaults. In a
    benchmark file a list is a grid axis; a sweep file takes one value per knob (its ``space``
    searches). Adding a DOR knob: a field of ``DorSpec``, a field here, and its place in ``specs``."""

    lam: Axis[NonNegFloat | None] = Field(
        default_factory=lambda: list[float | None]([None]), description="DOR weight; null: the method's default"
    )
    pool_size: Axis[PosInt] = Field(default_factory=lambda: [DOR_DEFAULTS["pool_size"]], description="K: pool words")
    outliers_per_step: Axis[PosInt | None] = Field(
        default_factory=lambda: list[int | None]([None]), description="B: words per step; null: number of base classes"
    )
    pool_strategy: Axis[str] = Field(
        default_factory=lambda: [DOR_DEFAULTS["pool_strategy"]], description="near, far or random"
    )
    vocabulary: Axis[str] = Field(
        default_factory=lambda: [DOR_DEFAULTS["vocabulary"]],
        description=f"{', '.join(VOCABULARIES.names())} or a word-list file (one word per line)",
    )
    resample: Axis[Resample] = Field(
        default_factory=lambda: [DOR_DEFAULTS["resample"]],
        description="when the B outliers are drawn: every step, once per epoch, or never again",
    )
    exclude: PoolExclude = Field(DOR_DEFAULTS["exclude"], description="class names left out of the pool: base or all")
    image_source: str | None = Field(
        DOR_DEFAULTS["image_source"],
        description="visual DOR (vpt, clip_adapter): the dataset of outlier images; null: imagenet, "
        "or shapes-outliers for built-in data",
    )

    @field_validator("image_source")
    @classmethod
    def _known_source(cls, source: str | None) -> str | None:
        return None if source is None else known_dataset(source)

    @field_validator("pool_strategy")
    @classmethod
    def _strategies(cls, strategies: list[str]) -> list[str]:
        problems: list[Problem] = []
        for i, name in enumerate(strategies):
            try:
                known_strategy(name)
            except PydanticCustomError as err:
                problems.append(((i,), err.message(), name))
        raise_at("pool_strategy", problems)
        return strategies

    @model_validator(mode="after")
    def _outliers_fit_the_pool(self) -> DorSection:
        smallest = min(self.pool_size)
        problems: list[Problem] = [
            (
                ("outliers_per_step", i),
                f"{b} outliers per step cannot be drawn from a pool of {smallest} words (pool_size); "
                f"set outliers_per_step to at most {smallest}, or a larger pool_size",
                b,
            )
            for i, b in enumerate(self.outliers_per_step)
            if b is not None and b > smallest
        ]
        raise_at("outliers_per_step", problems)
        return self

    @field_validator("vocabulary")
    @classmethod
    def _vocabularies(cls, vocabularies: list[str]) -> list[str]:
        problems: list[Problem] = [
            ((i,), f"{problem} (a relative path is read from the settings file's folder)", name)
            for i, name in enumerate(vocabularies)
            if (problem := vocabulary_problem(name))
        ]
        raise_at("vocabulary", problems)
        return vocabularies

    def specs(self) -> list[DorSpec]:
        """Every combination of the axes, as trial settings (a null lam is resolved by ``normalise``)."""
        return [
            DorSpec(
                lam=None if lam is None else float(lam),
                pool_size=size,
                outliers_per_step=per_step,
                pool_strategy=strategy,
                vocabulary=vocabulary,
                resample=resample,
                exclude=self.exclude,
                image_source=self.image_source,
            )
            for lam, size, per_step, strategy, vocabulary, resample in itertools.product(
                self.lam, self.pool_size, self.outliers_per_step, self.pool_strategy, self.vocabulary, self.resample
            )
        ]

    def variants(self) -> int:
        """How many combinations ``specs`` gives, without building them."""
        axes = (self.lam, self.pool_size, self.outliers_per_step, self.pool_strategy, self.vocabulary, self.resample)
        return math.prod(len(axis) for axis in axes)
