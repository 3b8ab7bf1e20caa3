"""The benchmark file: its schema, validation that reports every problem at once, and the grid.

A benchmark file is YAML. Every list-valued setting is a grid axis; the trials are the product of
the axes::

    datasets x shots x seeds x methods x (each method's option lists) x DOR off/on
                                                            x (DOR list settings, when on)

``load_benchmark`` reads and checks a file (a problem names its YAML path and line),
``plan`` expands it into trials (each a ``TrialSpec`` with a readable name and its run_key),
``describe_plan`` says what the grid is in words, and ``validate_file`` does all three for
``dor-bench validate FILE``.

Relative ``data_root`` and ``dor.vocabulary`` paths are read from the benchmark file's folder;
``tracking_uri`` stays as written (an sqlite path is relative to the current folder).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from orchestrator import DEFAULT_TRACKING_URI
from workers.datasets import DATASETS
from workers.errors import DorBenchError, NotFoundError, did_you_mean
from workers.identity import normalise
from workers.methods import METHODS
from workers.models.clip import SHIPPED_WEIGHTS, default_pretrained, list_models
from workers.spec import DOR_DEFAULTS, DorSpec, PoolExclude, PoolStrategy, TrialSpec

__all__ = [
    "Benchmark",
    "BenchmarkError",
    "DorGrid",
    "KillWorker",
    "MethodEntry",
    "ModelSection",
    "PlannedTrial",
    "Resources",
    "Testing",
    "describe_plan",
    "load_benchmark",
    "parse_benchmark",
    "plan",
    "read_yaml",
    "validate_file",
    "validate_settings",
]

T = TypeVar("T")
POOL_STRATEGIES: tuple[str, ...] = typing.get_args(PoolStrategy)
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


# --------------------------------------------------------------------------- errors


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


def _custom(message: str) -> PydanticCustomError:
    return PydanticCustomError("dor_bench", "{message}", {"message": message})


Problem = tuple[tuple[str | int, ...], str, Any]  # (location below the field, message, input)


def _raise_at(title: str, problems: list[Problem]) -> None:
    """Raise one ValidationError holding several problems at locations below the current field."""
    if problems:
        raise ValidationError.from_exception_data(title, _details(problems))


# --------------------------------------------------------------------------- field types


def _as_list(value: Any) -> Any:
    """A scalar stands for a one-value axis."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _as_list_or_none(value: Any) -> Any:
    return None if value is None else _as_list(value)


def _known_dataset(name: str) -> str:
    if name not in DATASETS:
        raise _custom(
            f"unknown dataset '{name}'.{did_you_mean(name, DATASETS.names())} "
            f"Known datasets: {', '.join(DATASETS.names())}."
        )
    return DATASETS.get(name).name


def known_method(name: str) -> str:
    """The registered name of method ``name``; a "did you mean" error otherwise."""
    if name not in METHODS:
        raise _custom(
            f"unknown method '{name}'.{did_you_mean(name, METHODS.names())} "
            f"Known methods: {', '.join(METHODS.names())}."
        )
    return METHODS.get(name).name


def _known_strategy(name: str) -> str:
    if name not in POOL_STRATEGIES:
        raise _custom(
            f"unknown pool strategy '{name}'.{did_you_mean(name, POOL_STRATEGIES)} "
            f"Choose one of: {', '.join(POOL_STRATEGIES)}."
        )
    return name


PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
#: A grid axis: a list of at least one value; a plain scalar is a one-value list.
Axis = Annotated[list[T], BeforeValidator(_as_list), Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- schema


class ModelSection(_Strict):
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
        known = list_models()
        if arch not in known:
            raise _custom(
                f"unknown architecture '{arch}'.{did_you_mean(arch, known)} `dor-bench ls models` lists them."
            )
        return arch

    @field_validator("pretrained")
    @classmethod
    def _pretrained_tag(cls, tag: str | None, info: ValidationInfo) -> str | None:
        arch = info.data.get("arch")
        if tag is None or tag.lower() == "none":
            return None
        if arch is None:
            return tag
        if tag == "default":
            return default_pretrained(arch)
        looks_like_file = "/" in tag or "\\" in tag or tag.lower().endswith(CHECKPOINT_SUFFIXES)
        if not looks_like_file:
            import open_clip

            tags = [*open_clip.list_pretrained_tags_by_model(arch), *SHIPPED_WEIGHTS.get(arch, {})]
            if tag not in tags:
                raise _custom(
                    f"unknown pretrained tag '{tag}' for {arch}.{did_you_mean(tag, tags)} "
                    + (f"Known tags: {', '.join(tags)}; or" if tags else f"{arch} has no pretrained tags: use")
                    + " a checkpoint file, or null for random init."
                )
        return tag


class NamedMethod(_Strict):
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


class MethodEntry(NamedMethod):
    """One method of the grid. The short form ``- coop`` means ``- {name: coop}``."""

    options: dict[str, Any] = Field(
        default_factory=dict,
        description="overrides of the method's published defaults; a list value is a grid axis",
    )
    dor: Annotated[list[bool] | None, BeforeValidator(_as_list_or_none)] = Field(
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
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
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
                    values.append(_coerce_option(key, item, defaults[key]))
                except ValueError as err:
                    problems.append(((key, i) if is_axis else (key,), str(err), item))
            checked[key] = values if is_axis else (values[0] if values else value)
        _raise_at("options", problems)
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
            raise _custom("must not be empty: give false, true or [false, true]")
        if not trains and any(dor):
            raise _custom(f"{name} does not train, so DOR does not apply to it; leave dor out (or set it to false)")
        return list(dict.fromkeys(dor))


class DorGrid(_Strict):
    """Dynamic Outlier Regularization settings for the DOR-on trials; lists are grid axes."""

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
    vocabulary: str = Field(DOR_DEFAULTS["vocabulary"], description="'wordnet' or a word-list file (one per line)")
    exclude: PoolExclude = Field(DOR_DEFAULTS["exclude"], description="class names left out of the pool: base or all")

    @field_validator("pool_strategy")
    @classmethod
    def _strategies(cls, strategies: list[str]) -> list[str]:
        problems: list[Problem] = []
        for i, name in enumerate(strategies):
            try:
                _known_strategy(name)
            except PydanticCustomError as err:
                problems.append(((i,), err.message(), name))
        _raise_at("pool_strategy", problems)
        return strategies

    @field_validator("vocabulary")
    @classmethod
    def _vocabulary_file(cls, vocabulary: str) -> str:
        if vocabulary != "wordnet" and not Path(vocabulary).expanduser().is_file():
            raise _custom(
                f"the word-list file '{vocabulary}' does not exist; use 'wordnet' or a "
                "text file with one outlier word per line (a relative path is read from "
                "the benchmark file's folder)"
            )
        return vocabulary


class Resources(_Strict):
    """What one trial reserves (Ray resources); fractional GPUs share a device."""

    gpus: NonNegFloat = 0
    cpus: Annotated[float, Field(gt=0)] = 1


class KillWorker(_Strict):
    """Kill the worker process running ``trial`` when it finishes epoch ``epoch`` (1-based)."""

    trial: str
    epoch: PosInt


class Testing(_Strict):
    """Fault injection, for dor-bench's own tests only: never set it in a real benchmark."""

    fail_trials: list[str] = Field(
        default_factory=list, description="trial names or run_keys that raise instead of running"
    )
    kill_worker: KillWorker | None = None


class Benchmark(_Strict):
    """One benchmark file: what to run (the grid), where to record it, how to schedule it."""

    name: Annotated[str, Field(min_length=1)] = Field(description="the MLflow experiment name")
    tracking_uri: str = Field(DEFAULT_TRACKING_URI, description="MLflow tracking URI")
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
    seeds: Axis[int] = Field(default_factory=lambda: [1, 2, 3])
    subsample: Literal["base2new", "all"] = "base2new"
    test_per_class: PosInt | None = None
    ece_bins: PosInt = 10
    methods: Axis[MethodEntry]
    dor: DorGrid = Field(default_factory=DorGrid)
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
                known.append(_known_dataset(name))
            except PydanticCustomError as err:
                problems.append(((i,), err.message(), name))
        _raise_at(info.field_name or "datasets", problems)
        return list(dict.fromkeys(known))

    @model_validator(mode="wrap")
    @classmethod
    def _cross_checks(cls, data: Any, handler: Any) -> Any:
        """Checks that span fields run on the raw input too, so they are reported together with
        every other problem rather than after the others are fixed."""
        if not isinstance(data, dict):
            return handler(data)
        return validate_with(cls.__name__, data, handler, _data_root_problems(data))

    def needs_data_root(self) -> list[str]:
        """The datasets (and targets) that are read from ``data_root``."""
        return [n for n in dict.fromkeys([*self.datasets, *self.targets]) if not DATASETS.get(n).builtin]


def validate_with(title: str, data: Any, handler: Any, extra: list[tuple[tuple[str | int, ...], str, Any]]) -> Any:
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
        raise ValidationError.from_exception_data(title, details + _details(extra)) from None
    _raise_at(title, extra)
    return result


def _details(problems: list[tuple[tuple[str | int, ...], str, Any]]) -> list[InitErrorDetails]:
    return [InitErrorDetails(type=_custom(msg), loc=loc, input=value) for loc, msg, value in problems]


def _data_root_problems(raw: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str, Any]]:
    root = raw.get("data_root")
    if isinstance(root, str) and root.strip():
        return []
    names = [*_as_list(raw.get("datasets") or []), *_as_list(raw.get("targets") or [])]
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


def _coerce_option(key: str, value: Any, default: Any) -> Any:
    """``value`` in the type of the method's default (so ``lr: 1`` and ``lr: 1.0`` are one trial)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {value!r}")
    elif isinstance(default, int):
        if not number or float(value) != int(value):
            raise ValueError(f"must be an integer, not {value!r}")
        value = int(value)
    elif isinstance(default, float):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"must be a number, not {value!r}") from None
        elif not number:
            raise ValueError(f"must be a number, not {value!r}")
        value = float(value)
    elif isinstance(default, str) and not isinstance(value, str):
        raise ValueError(f"must be a string, not {value!r}")
    if key == "dor_lambda" and isinstance(value, (int, float)) and value < 0:
        raise ValueError(f"must be >= 0, not {value!r}")
    return value


# --------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads ``1e-3`` as a float (YAML 1.2)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found the key '{key}' twice (first on line {seen[key].line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


#: The data root used when neither the command line nor the file sets one.
DATA_ENV = "DOR_BENCH_DATA"
#: Settings that are paths: given on the command line or in the environment, relative to the
#: current folder (in the file, relative to the file's folder).
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
    data, node = read_yaml(path, "Benchmark", "examples/demo.yaml is a small working benchmark")
    if not isinstance(data, dict):
        return parse_benchmark(data, source=str(path))
    data, overridden = apply_overrides(data, overrides, str(path))
    if not data.get("data_root") and os.environ.get(DATA_ENV):
        data["data_root"] = os.path.abspath(os.path.expanduser(os.environ[DATA_ENV]))
        overridden.add(("data_root",))
    return parse_benchmark(data, source=str(path), base_dir=path.parent, node=node, overridden=overridden)


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
            value = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as err:
            problems.append(f"command-line setting '{item}': the value is not YAML ({err})")
            continue
        if keys in PATH_SETTINGS and isinstance(value, str) and value.strip():
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


def read_yaml(path: Path, kind: str, example: str) -> tuple[Any, yaml.Node | None]:
    """The data of a YAML settings file and its composed node tree (for line numbers).

    Raises:
        NotFoundError: the file is not there. DorBenchError: it is not valid YAML.
    """
    if not path.is_file():
        raise NotFoundError(
            f"{kind} file '{path}' does not exist{' (it is a folder)' if path.is_dir() else ''}.",
            f"check the path; {example}.",
        )
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.load(text, Loader=_Loader)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise _yaml_error(path, err, kind) from None
    return data, node


def parse_benchmark(
    data: Any,
    source: str = "<benchmark>",
    base_dir: str | os.PathLike[str] | None = None,
    node: yaml.Node | None = None,
    overridden: Iterable[tuple[str, ...]] = (),
) -> Benchmark:
    """Check already-parsed benchmark data (a dict); ``source`` names it in errors.

    With ``base_dir``, relative ``data_root`` and ``dor.vocabulary`` paths are read from there;
    ``node`` (the composed YAML) lets each problem name its line.
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
    return validate_settings(Benchmark, data, source, base_dir, node, overridden=overridden)


M = TypeVar("M", bound=BaseModel)


def validate_settings(
    schema: type[M],
    data: dict[str, Any],
    source: str,
    base_dir: str | os.PathLike[str] | None,
    node: yaml.Node | None,
    kind: str = "Benchmark",
    overridden: Iterable[tuple[str, ...]] = (),
) -> M:
    """``data`` checked against ``schema`` (Benchmark, Sweep): every problem at once, each with
    its YAML path and line (or ``[command line]`` for an ``overridden`` setting), in one
    BenchmarkError; relative paths resolved against ``base_dir``."""
    if base_dir is not None:
        data = _resolve_paths(data, Path(base_dir))
    try:
        settings = schema.model_validate(data)
        settings._source = source  # type: ignore[attr-defined]  # every schema has this PrivateAttr
        return settings
    except ValidationError as err:
        problems = []
        for order, error in enumerate(err.errors()):
            text = f"{_yaml_path(error['loc'], data)}: {_message(error, schema)}"
            if any(tuple(error["loc"][: len(p)]) == p for p in overridden):
                problems.append((0, order, text + "  [command line]"))
                continue
            line = _line_of(error["loc"], node)
            problems.append((line or 0, order, text + (f"  [line {line}]" if line else "")))
        raise BenchmarkError(source, [text for _, _, text in sorted(problems)], kind=kind) from None


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    def resolve(value: str) -> str:
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else Path(os.path.abspath(base / p)))

    data = dict(data)
    if isinstance(data.get("data_root"), str) and data["data_root"].strip():
        data["data_root"] = resolve(data["data_root"])
    dor = data.get("dor")
    if isinstance(dor, dict) and isinstance(dor.get("vocabulary"), str) and dor["vocabulary"] != "wordnet":
        data["dor"] = {**dor, "vocabulary": resolve(dor["vocabulary"])}
    return data


def _yaml_error(path: Path, err: yaml.YAMLError, kind: str = "Benchmark") -> DorBenchError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    detail = f"{context}: {problem}" if context and "twice" not in problem else problem
    context_mark = getattr(err, "context_mark", None)
    if context and context_mark is not None and mark is not None and context_mark.line != mark.line:
        detail = f"{context} (from line {context_mark.line + 1}): {problem}"
    snippet = ""
    if mark is not None and mark.buffer is not None:
        lines = mark.buffer.rstrip("\0").splitlines()
        if 0 <= mark.line < len(lines):
            snippet = (
                f"\n    {mark.line + 1} | {lines[mark.line]}\n      {' ' * len(str(mark.line + 1))}"
                f"{' ' * (mark.column + 1)}^"
            )
    return DorBenchError(
        f"{kind} file '{path}' is not valid YAML{where}: {detail}.{snippet}",
        "fix the YAML there (indentation, a missing ':' or an unclosed quote or bracket are the usual causes).",
    )


# --------------------------------------------------------------------------- error messages


def _yaml_path(loc: tuple[str | int, ...], raw: Any) -> str:
    """``('methods', 1, 'name')`` -> ``methods[1].name``; an index into a scalar that stood for a
    one-value list is left out (``dor.lam``, not ``dor.lam[0]``)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            if isinstance(raw, list):
                out += f"[{part}]"
                raw = raw[part] if part < len(raw) else None
            elif part != 0:
                out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
            raw = raw.get(part) if isinstance(raw, dict) else None
    return out or "(top level)"


def _line_of(loc: tuple[str | int, ...], node: yaml.Node | None) -> int | None:
    """The 1-based line of the deepest YAML node along ``loc``."""
    if node is None:
        return None
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            child = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if child is None:  # an unknown key points at the key itself
                key = next((k for k, _ in node.value if getattr(k, "value", None) == part), None)
                child = key
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node = child
    return node.start_mark.line + 1


def _message(error: ErrorDetails, root: type[BaseModel]) -> str:
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
        return f"must be >= {_fmt(ctx.get('ge'))}, not {value!r}"
    if kind == "greater_than":
        return f"must be > {_fmt(ctx.get('gt'))}, not {value!r}"
    if kind == "too_short":
        return "must not be empty"
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


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class PlannedTrial:
    """One trial of the grid: its spec, a readable unique name and its run_key (``spec.key()``).

    ``targets`` repeats the benchmark's domain-shift targets (also in ``spec.targets``).
    """

    spec: TrialSpec
    name: str
    run_key: str
    targets: tuple[str, ...] = ()


@dataclass
class _Point:
    spec: TrialSpec
    entry: int  # index into benchmark.methods


def plan(benchmark: Benchmark) -> list[PlannedTrial]:
    """The trials of ``benchmark`` in a fixed order: datasets x shots x seeds x methods x method
    option axes x DOR off/on x DOR axes. Grid points with the same run_key are run once (the
    first is kept; ``describe_plan`` says how many were dropped).

    Raises:
        BenchmarkError: a ``testing`` entry names no planned trial.
    """
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
        kept[key] = PlannedTrial(point.spec, name, key, tuple(benchmark.targets))
    return list(kept.values()), duplicates


def _grid(b: Benchmark) -> list[_Point]:
    points = []
    for dataset, shots, seed in itertools.product(b.datasets, b.shots, b.seeds):
        for index, entry in enumerate(b.methods):
            for options in _option_combinations(entry.options):
                for use_dor in entry.dor or [False]:
                    for dor in _dor_specs(b.dor) if use_dor else [None]:
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


def _option_combinations(options: dict[str, Any]) -> list[dict[str, Any]]:
    keys = list(options)
    axes = [options[k] if isinstance(options[k], list) else [options[k]] for k in keys]
    return [dict(zip(keys, values)) for values in itertools.product(*axes)]


def _dor_variants_count(grid: DorGrid) -> int:
    return len(grid.lam) * len(grid.pool_size) * len(grid.outliers_per_step) * len(grid.pool_strategy)


def _dor_specs(grid: DorGrid) -> list[DorSpec]:
    """The DOR settings of one DOR-on trial family (a null lam is resolved by ``normalise``)."""
    specs = []
    for lam, size, per_step, strategy in itertools.product(
        grid.lam, grid.pool_size, grid.outliers_per_step, grid.pool_strategy
    ):
        specs.append(
            DorSpec(
                lam=None if lam is None else float(lam),
                pool_size=size,
                outliers_per_step=per_step,
                pool_strategy=strategy,
                vocabulary=grid.vocabulary,
                exclude=grid.exclude,
            )
        )
    return specs


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if value is None:
        return "none"
    return re.sub(r"[\s/]+", "_", str(value))


def _names(b: Benchmark, points: list[_Point]) -> list[str]:
    """``method/dataset[/Kshots]/seedS[/option=value...][/dor-lamL[/K..][/B..][/strategy]]``;
    options, shots and DOR pool settings appear only when they vary."""
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
    names = []
    for p in points:
        s = p.spec
        parts = [s.method, s.dataset]
        if many_shots:
            parts.append(f"{s.shots}shots")
        parts.append(f"seed{s.seed}")
        defaults = METHODS.get(s.method).defaults
        parts += [f"{k}={_fmt(s.method_options.get(k, defaults.get(k)))}" for k in varying_options[s.method]]
        if s.dor is not None:
            parts.append(f"dor-lam{_fmt(s.dor.lam)}")
            if many_sizes:
                parts.append(f"K{s.dor.pool_size}")
            if many_per_step:
                parts.append(f"B{s.dor.outliers_per_step or 'auto'}")
            if many_strategies:
                parts.append(s.dor.pool_strategy)
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
            config = {**METHODS.get(trial.spec.method).defaults, **trial.spec.method_options}
            epochs = config.get("epochs")
            if not METHODS.get(trial.spec.method).trains or epochs is None:
                problems.append(
                    f"testing.kill_worker.trial: '{trial.name}' does not train, so it never reaches an epoch"
                )
            elif kill.epoch > int(epochs):
                problems.append(
                    f"testing.kill_worker.epoch: '{trial.name}' trains for {epochs} "
                    f"epochs, so it never reaches epoch {kill.epoch}"
                )
    if problems:
        raise BenchmarkError(b._source, problems)


# --------------------------------------------------------------------------- description


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _entry_variants(b: Benchmark, entry: MethodEntry) -> tuple[int, str]:
    """How many grid points one method entry adds per (dataset, shots, seed), and why."""
    combos = len(_option_combinations(entry.options))
    n_dor = _dor_variants_count(b.dor)
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
    grid_size = len(b.datasets) * len(b.shots) * len(b.seeds) * sum(n for _, n, _ in entries)
    equation = " x ".join(factors) + f" x ({per_cell})"
    lines = [f"Benchmark '{b.name}': {_plural(len(trials), 'trial')} = {equation}"]
    if duplicates:
        lines.append(
            f"  ({grid_size} grid points; {_plural(len(duplicates), 'duplicate')} with the "
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
        lam = ", ".join("method default" if x is None else _fmt(x) for x in b.dor.lam)
        uses_default = None in b.dor.lam
        if uses_default:
            on = [e.name for e in b.methods if True in (e.dor or [])]
            defaults = ", ".join(f"{m} {_fmt(METHODS.get(m).defaults.get('dor_lambda'))}" for m in dict.fromkeys(on))
            lam += f" ({defaults})"
        per_step = ", ".join("number of base classes" if x is None else str(x) for x in b.dor.outliers_per_step)
        row(
            "DOR",
            f"lam {lam}; pool K = {', '.join(map(str, b.dor.pool_size))} "
            f"({', '.join(b.dor.pool_strategy)}) words from {b.dor.vocabulary}; "
            f"B = {per_step} per step",
        )
    if b.targets:
        row("targets", ", ".join(b.targets) + " (domain shift: each trial also scores their test splits)")
    row("tracking", f"experiment '{b.name}' at {b.tracking_uri}")
    gpus = _fmt(float(b.resources.gpus))
    row(
        "resources",
        f"{_fmt(float(b.resources.cpus))} CPU, {gpus} GPU per trial; "
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
    path: str | os.PathLike[str], overrides: Sequence[str] = (), only: Sequence[str] = ()
) -> tuple[Benchmark, list[PlannedTrial], str]:
    """Load, check and plan a benchmark file (with command-line ``overrides``, keeping the trials
    ``only`` selects): ``(benchmark, trials, description)``.

    Raises:
        DorBenchError: the file is missing or not YAML, or ``only`` selects nothing;
        BenchmarkError: it has problems.
    """
    benchmark = load_benchmark(path, overrides)
    trials = select(plan(benchmark), only)
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
        present = sorted({str(getattr(t.spec, ONLY_KEYS[key])) for t in trials})
        unknown = sorted(wanted - set(present))
        if unknown:
            raise DorBenchError(
                f"--only {key}={text}: no planned trial has {key} {', '.join(unknown)}.",
                f"the plan's {key} values: {', '.join(present)}.",
            )
        trials = [t for t in trials if str(getattr(t.spec, ONLY_KEYS[key])) in wanted]
    return trials
