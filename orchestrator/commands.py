"""What each ``dor-bench`` sub-command does (argument parsing lives in cli.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from orchestrator.report.terminal import format_metrics
from workers.errors import DorBenchError
from workers.spec import RunOptions


def run(args: argparse.Namespace) -> int:
    from orchestrator.benchmark.runner import run_benchmark

    store_timeout(args)
    return run_benchmark(
        args.file,
        overrides=args.settings,
        only=args.only,
        max_trials=args.max_trials,
        dry_run=args.dry_run,
        log_format=args.log_format,
        tracking_uri=args.tracking_uri,
        address=args.address,
        rerun=args.rerun,
        checkpoint_dir=args.checkpoint_dir,
        report_dir=args.report_dir,
    )


def report(args: argparse.Namespace) -> int:
    from orchestrator.report.build import build_report, parse_formats

    out = build_report(
        args.tracking_uri, args.experiment, parent=args.parent, out_dir=args.out, formats=parse_formats(args.format)
    )
    print(out.markdown)
    print(f"[dor-bench] wrote {', '.join(str(p) for p in out.files.values())}", file=sys.stderr)
    return 0


def rescore(args: argparse.Namespace) -> int:
    from orchestrator.stored.rescore import rescore as rescore_runs
    from workers.spec import EceBins

    bins = pydantic_check(EceBins, args.ece_bins, "--ece-bins")
    done = rescore_runs(args.tracking_uri, args.experiment, bins, args.parent, args.temperature, args.dac)
    return 0 if done else 1


def eval_prompt(args: argparse.Namespace) -> int:
    import os

    from orchestrator.stored.transfer import eval_run
    from workers.datasets import DATASETS

    dataset = DATASETS.get(args.dataset).name  # unknown: a "did you mean" error
    root = args.root or os.environ.get("DOR_BENCH_DATA")
    if root is None and not DATASETS.get(dataset).builtin:
        raise DorBenchError(f"--dataset {dataset} is read from a data root.", "pass --root DIR or set $DOR_BENCH_DATA.")
    run_id, metrics = eval_run(args.tracking_uri, args.run, dataset, root, args.device)
    print(format_metrics({k.replace(f"target/{dataset}/", "all/"): v for k, v in metrics.items()}))
    print(f"[dor-bench] recorded as run {run_id}", file=sys.stderr)
    return 0


def ui(args: argparse.Namespace) -> int:
    from orchestrator.ui import serve

    return serve(args.tracking_uri, args.port, args.host)


def tune(args: argparse.Namespace) -> int:
    from orchestrator.sweep.tune import run_sweep

    store_timeout(args)
    return run_sweep(
        args.file,
        tracking_uri=args.tracking_uri,
        address=args.address,
        fresh=args.fresh,
        storage=args.storage,
        max_trials=args.max_trials,
    )


def store_timeout(args: argparse.Namespace) -> None:
    """``--store-timeout``, handed to the tracker (``tracking.store_timeout``) through its variable."""
    from orchestrator.server import STORE_TIMEOUT_ENV

    if args.store_timeout is not None:
        os.environ[STORE_TIMEOUT_ENV] = str(args.store_timeout)


def server(args: argparse.Namespace) -> int:
    from orchestrator.server import serve

    return serve(Path(args.data), args.port, args.workers)


def replay(args: argparse.Namespace) -> int:
    from orchestrator.places import tracking_uri
    from orchestrator.secrets import redact
    from orchestrator.tracking import replay as replay_journal

    store = tracking_uri(args.tracking_uri) if args.tracking_uri else None  # a local store made absolute
    made, runs, uri = replay_journal(Path(args.file), store)
    print(
        f"[dor-bench] replayed {args.file} into {redact(uri)}: {made} writes, {runs} runs "
        "(made once: a run or metric already there is not added again)",
        file=sys.stderr,
    )
    return 0


def validate(args: argparse.Namespace) -> int:
    """Print the plan of a benchmark file, or the description of a sweep file (one with a
    ``space``). The file is read before the schemas (and torch, behind the registries) are
    imported, so a missing, binary or malformed file is refused in a fraction of a second."""
    from orchestrator.settings.reader import read_yaml

    data, _ = read_yaml(Path(args.file), "Benchmark", "examples/demo.yaml is a small working benchmark")
    from orchestrator.benchmark.planning import validate_file
    from orchestrator.settings.sweep import describe_sweep, is_sweep_data, load_sweep

    if is_sweep_data(data):
        if args.settings or args.only:
            raise DorBenchError(
                "Command-line settings and --only apply to benchmark files, not sweeps.", "edit the sweep file instead."
            )
        print(describe_sweep(load_sweep(args.file, args.max_trials)))
        return 0
    _, _, plan = validate_file(args.file, args.settings, args.only, args.max_trials)
    print(plan)
    return 0


def trial(args: argparse.Namespace) -> int:
    from orchestrator.translate.flags import spec_from_flags
    from workers.trial import run_trial

    spec = spec_from_flags(args)
    options = RunOptions(
        device=args.device,
        feature_cache=not args.no_feature_cache,
        progress=not args.quiet,
        checkpoint_dir=args.checkpoint_dir,
    )
    return _print_result(run_trial(spec, options), args.json)


def _print_result(result, as_json: bool) -> int:
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        spec = result.spec
        print(f"{spec.method} on {spec.dataset} ({spec.model}/{spec.pretrained}, {spec.shots} shots, seed {spec.seed})")
        print(format_metrics(result.metrics))
    return 0


def data_check(args: argparse.Namespace) -> int:
    from workers.datasets.check import check_datasets, format_report, has_problems

    reports = check_datasets(Path(args.root), args.dataset, stream=sys.stderr)  # progress: the current stderr
    print(format_report(reports))
    return 1 if has_problems(reports) else 0


def micro_clip_pretrain(args: argparse.Namespace) -> int:
    from orchestrator.preflight import unwritable
    from pretraining.micro_clip import PretrainConfig, pretrain
    from workers.errors import NotFoundError, did_you_mean
    from workers.models.names import architectures

    config = PretrainConfig(
        arch=args.arch, steps=args.steps, seed=args.seed, threads=args.threads, init_logit_scale=args.init_logit_scale
    )
    config.validate()
    if args.arch not in architectures():
        raise NotFoundError(
            f"--arch: unknown architecture '{args.arch}'.{did_you_mean(args.arch, architectures())}",
            "pass --arch micro-clip (the default), or one `dor-bench ls models` lists.",
        )
    out = Path(args.out)  # refused before training, not when the weights are saved
    why = f"'{out}' is a folder" if out.is_dir() else unwritable(out.absolute().parent)
    if why:
        raise DorBenchError(
            f"--out: the weights file cannot be written: {why}.",
            "pass --out with a file path in a folder you can write, e.g. --out micro-clip-shapes.pt.",
        )
    record = pretrain(config, out, command=" ".join(["dor-bench", *sys.argv[1:]]))
    print(json.dumps(record["zero_shot"], indent=2, default=str))
    return 0


def ls(args: argparse.Namespace) -> int:
    if args.what == "methods":
        from workers.methods import METHODS

        names = METHODS.names()
    elif args.what == "datasets":
        from workers.datasets import DATASETS

        names = DATASETS.names()
    elif args.what == "vocabularies":
        from workers.vocabularies import VOCABULARIES

        names = VOCABULARIES.names()
    else:
        from workers.models.names import architectures

        names = architectures()
    print("\n".join(names))
    return 0


def pydantic_check(kind: Any, value: object, flag: str) -> Any:
    """``value`` checked as the field type ``kind`` (e.g. ``EceBins``), or a message naming ``flag``."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(kind).validate_python(value)
    except ValidationError as err:
        raise DorBenchError(f"{flag}: {err.errors()[0]['msg']} (got {value!r}).", f"correct {flag}.") from None
