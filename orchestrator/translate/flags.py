"""A trial spec as ``dor-bench trial`` flags and back."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml
from pydantic import ValidationError

from orchestrator.settings.reader import parse_value
from workers.errors import DorBenchError
from workers.identity import normalise
from workers.methods import METHODS
from workers.models.names import architectures, default_pretrained, tuning_recipe
from workers.spec import TrialSpec
from workers.vocabularies import vocabulary_problem


def spec_from_flags(args: argparse.Namespace) -> TrialSpec:
    """The normalised spec of ``dor-bench trial``'s flags (the shipped weights' recipe filling
    what they leave unset, unless ``--no-recipe``)."""
    pretrained = args.pretrained
    if pretrained is None and args.model in architectures():
        pretrained = default_pretrained(args.model)
    tunes = METHODS.get(args.method).trains and not args.no_recipe
    recipe = tuning_recipe(args.model, pretrained, args.method) if tunes else {}
    overrides = dict(recipe.get("options", {}))
    overrides.update(
        {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr), ("batch_size", args.batch_size)) if v is not None}
    )
    overrides.update(parse_options(args.option))
    shots = args.shots if args.shots is not None else recipe.get("shots", 16)
    if recipe:
        print(
            f"[dor-bench] {args.model}/{pretrained} recipe for {args.method} (flags override it): "
            f"shots {shots}, " + ", ".join(f"{k}={v}" for k, v in overrides.items()),
            file=sys.stderr,
        )
    try:
        spec = _spec(args, pretrained, shots, overrides)
    except ValidationError as err:
        problems = [
            f"{FLAGS.get(tuple(map(str, e['loc'])), _dotted(e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        ]
        raise DorBenchError(
            "Invalid trial flags: " + "; ".join(problems) + ".",
            "correct the flags (`dor-bench trial --help` lists each with its meaning).",
        ) from None
    if args.dor_lambda is not None and not METHODS.get(args.method).trains:  # the spec would drop DOR silently
        raise DorBenchError(
            f"Invalid trial flags: --dor-lambda: {args.method} does not train, so DOR does not apply to it.",
            "leave out --dor-lambda, or pass a --method that trains (`dor-bench ls methods`).",
        )
    return spec


#: The ``dor-bench trial`` flag of each spec field (error messages name the flag, not the field).
FLAGS: dict[tuple[str, ...], str] = {
    **{(f,): f"--{f.replace('_', '-')}" for f in TrialSpec.model_fields},
    ("method_options",): "--option",
    ("dor", "lam"): "--dor-lambda",
    ("dor", "pool_size"): "--pool-size",
    ("dor", "outliers_per_step"): "--outliers-per-step",
    ("dor", "pool_strategy"): "--pool-strategy",
    ("dor", "vocabulary"): "--dor-vocabulary",
    ("dor", "resample"): "--dor-resample",
    ("dor", "image_source"): "--dor-image-source",
    ("dor", "exclude"): "--pool-exclude",
    ("dor",): "--outliers-per-step",  # B <= K is checked on the whole DOR setting
}


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(map(str, loc)) or "the trial"


def _spec(args: argparse.Namespace, pretrained: str | None, shots: int, overrides: dict[str, Any]) -> TrialSpec:
    dor = None
    if args.dor_lambda is not None:  # validated as a part of the spec, so errors name the DOR flags
        problem = vocabulary_problem(args.dor_vocabulary)
        if problem:
            raise DorBenchError(f"Invalid trial flags: --dor-vocabulary: {problem}.", "correct --dor-vocabulary.")
        dor = {
            "lam": args.dor_lambda,
            "pool_size": args.pool_size,
            "outliers_per_step": args.outliers_per_step,
            "pool_strategy": args.pool_strategy,
            "vocabulary": args.dor_vocabulary,
            "resample": args.dor_resample,
            "exclude": args.pool_exclude,
            "image_source": args.dor_image_source,
        }
    return normalise(
        TrialSpec(
            method=args.method,
            dataset=args.dataset,
            root=args.root,
            model=args.model,
            pretrained=pretrained,
            seed=args.seed,
            shots=shots,
            subsample=args.subsample,
            ece_bins=args.ece_bins,
            method_options=overrides,
            dor=dor,
            test_per_class=args.test_per_class,
        )
    )


def parse_options(pairs: list[str]) -> dict[str, object]:
    """``["n_ctx=4", "ctx_init=a photo of a"]`` -> typed values (YAML scalars)."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DorBenchError(f"--option '{pair}' is not KEY=VALUE.", "write e.g. --option n_ctx=4.")
        options[key.strip()] = parse_value(value, f"--option '{pair}'")
    return options


def flags_from_spec(spec: TrialSpec) -> list[str]:
    """``dor-bench trial`` flags that rebuild ``spec`` exactly (``--no-recipe``: nothing is filled
    in behind its back). Domain-shift targets and tuning mode have no flags: they are refused."""
    if spec.targets or spec.validation is not None:
        raise DorBenchError(
            "A trial with domain-shift targets or in tuning mode cannot be written as `dor-bench trial` flags.",
            "run it from a benchmark file (targets) or a sweep file (tuning mode).",
        )
    spec = normalise(spec)
    parts = ["--method", spec.method, "--dataset", spec.dataset]
    if spec.root is not None:
        parts += ["--root", spec.root]
    parts += ["--model", spec.model, "--pretrained", spec.pretrained or "none"]
    parts += ["--shots", str(spec.shots), "--seed", str(spec.seed), "--no-recipe"]
    defaults = TrialSpec.model_fields
    for name, flag in (
        ("subsample", "--subsample"),
        ("ece_bins", "--ece-bins"),
        ("test_per_class", "--test-per-class"),
    ):
        value = getattr(spec, name)
        if value != defaults[name].default:
            parts += [flag, str(value)]
    for key, value in spec.method_options.items():
        parts += ["--option", f"{key}={_yaml_scalar(value)}"]
    if spec.dor is not None:
        dor = spec.dor
        parts += ["--dor-lambda", _number(dor.lam if dor.lam is not None else 0.0)]
        if dor.outliers_per_step is not None:
            parts += ["--outliers-per-step", str(dor.outliers_per_step)]
        parts += ["--pool-size", str(dor.pool_size), "--pool-strategy", dor.pool_strategy]
        parts += ["--pool-exclude", dor.exclude, "--dor-vocabulary", dor.vocabulary]
        parts += ["--dor-resample", dor.resample]
        if dor.image_source is not None:
            parts += ["--dor-image-source", dor.image_source]
    return parts


def _yaml_scalar(value: Any) -> str:
    """``value`` as the YAML text ``parse_options`` reads back to the same value."""
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text.removesuffix("...").strip()


def _number(value: float) -> str:
    """A float as short text that reads back exactly (8.0 -> "8", 0.0035 -> "0.0035")."""
    text = repr(float(value))
    return text.removesuffix(".0")
