"""The ``dor-bench`` command line: run | tune | report | ui | server | replay | validate | trial |
data check | micro-clip | ls."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError

from orchestrator import DEFAULT_TRACKING_URI, MAX_TRIALS, TRACKING_ENV, places
from orchestrator.secrets import redact
from orchestrator.server import STORE_TIMEOUT_ENV, STORE_TIMEOUT_S
from orchestrator.ui import HOST
from workers.errors import DorBenchError
from workers.spec import DOR_DEFAULTS

Handler = Callable[[argparse.Namespace], int]


_TERMINATED: list[int] = []  # SIGTERM received (Ray re-raises our KeyboardInterrupt as its own)


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (``ray job stop``, ``scancel``, ``kill``): the command stops as Ctrl-C stops it,
    open runs ended KILLED and checkpoints kept, so the same command resumes."""
    _TERMINATED.append(signum)
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; user mistakes print a paragraph, never a traceback."""
    parser = build_parser()
    try:  # KEY=VALUE settings may also follow the options (argparse stops collecting positionals there)
        args, extra = parser.parse_known_args(argv)
    except DorBenchError as err:  # a value checked as it is parsed: --tracking-uri, $MLFLOW_TRACKING_URI
        return _user_error(err)
    if extra and (not hasattr(args, "settings") or any(a.startswith("-") or "=" not in a for a in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.settings = [*args.settings, *extra]
    # The one error boundary: a user's mistake (or a known library error it causes) prints a
    # message and exits 2; anything else is a bug, shown with its traceback.
    main_thread = threading.current_thread() is threading.main_thread()  # where signals can be caught
    _TERMINATED.clear()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return args.handler(args)
    except DorBenchError as err:
        return _user_error(err)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        return _user_error(DorBenchError(f"invalid trial settings: {problems}"))
    except KeyboardInterrupt:
        terminated = bool(_TERMINATED)
        print("terminated (SIGTERM)" if terminated else "interrupted", file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    except BrokenPipeError:  # the reader of our output went away (`dor-bench validate x | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except OSError as err:  # a path the user gave that cannot be read or written
        blocker = _file_in_the_way(err)
        if blocker is not None:
            return _user_error(
                DorBenchError(
                    f"'{blocker}' is a file, where a folder is needed"
                    + (f" (to make '{err.filename}')." if str(blocker) != os.fsdecode(err.filename) else "."),
                    "pass a folder path there (or move the file out of the way) and run the command again.",
                )
            )
        where = f" '{err.filename}'" if err.filename else ""
        return _user_error(
            DorBenchError(
                f"{err.strerror or err}{where}.", "check that the path exists and that you may read (and write) it."
            )
        )
    except MemoryError:
        return _user_error(
            DorBenchError(
                "Out of memory.",
                "lower the batch size, the test images per class or the grid's concurrency (max_concurrency).",
            )
        )
    except Exception:  # not a user mistake: show where, and say so
        print(redact(traceback.format_exc()), file=sys.stderr, end="")
        print(
            f"dor-bench {_version()}: this is a bug in dor-bench, not in your input. Please report it with "
            "the command you ran and the traceback above.",
            file=sys.stderr,
        )
        return 1
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _file_in_the_way(err: OSError) -> Path | None:
    """The file that stands where a folder was to be made ("File exists", "Not a directory"), or None."""
    if not isinstance(err, (FileExistsError, NotADirectoryError)) or not err.filename:
        return None
    path = Path(os.fsdecode(err.filename))
    return next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)


def _user_error(err: DorBenchError) -> int:
    print(f"error: {redact(err.message)}", file=sys.stderr)
    return 2


def _version() -> str:
    from orchestrator.tracking import dor_bench_version

    return dor_bench_version()


def add_selection(parser: argparse.ArgumentParser) -> None:
    """Command-line settings over the file's, and ``--only`` filters (``run`` and ``validate``)."""
    parser.add_argument(
        "settings",
        nargs="*",
        metavar="KEY=VALUE",
        help="settings over the file's, as YAML: data_root=/data seeds=[1] dor.lam=[4,8]",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="run only the trials with these methods, datasets or seeds (method=coop, seed=1; repeatable)",
    )
    add_max_trials(parser)


def add_store_selection(parser: argparse.ArgumentParser) -> None:
    """Which recorded runs a command reads: the store, the experiment, optionally one parent run."""
    parser.add_argument("--experiment", help="MLflow experiment = the benchmark's name (default: the store's only one)")
    add_tracking_uri(parser)
    parser.add_argument("--parent", metavar="RUN_ID", help="only the trials of this `dor-bench run` parent run")


def add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    """The store a command reads (``run`` and ``tune`` take the file's unless told otherwise)."""
    parser.add_argument(
        "--tracking-uri",
        type=places.tracking_uri,
        default="",  # a string default goes through `type` when parsed: $MLFLOW_TRACKING_URI, else the default
        help=f"MLflow store (default: ${TRACKING_ENV}, else {DEFAULT_TRACKING_URI}, as `run` writes)",
    )


def add_store_timeout(parser: argparse.ArgumentParser) -> None:
    """How long ``run`` and ``tune`` keep the writes for an MLflow store they cannot reach."""
    parser.add_argument(
        "--store-timeout",
        type=_seconds,
        metavar="S",
        help="while the MLflow store cannot be reached (a server restarting), trials go on and their writes "
        "wait; after S seconds the command stops and keeps them for `dor-bench replay` "
        f"(default: ${STORE_TIMEOUT_ENV}, else {STORE_TIMEOUT_S:.0f})",
    )


def _seconds(text: str) -> float:
    """``--store-timeout``: seconds above 0 (inf: wait for the store as long as it takes)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds above 0 (e.g. {STORE_TIMEOUT_S:.0f}), not {text!r}"
        )
    return seconds


def _whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` (to ``high``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"of {low} or more"
            raise argparse.ArgumentTypeError(f"must be a whole number {bounds}, not {text!r}")
        return value

    return parse


#: A TCP port to listen on.
PORT = _whole(1, 65535)


def add_max_trials(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-trials",
        type=_whole(1),
        default=MAX_TRIALS,
        metavar="N",
        help="refuse a grid or sweep of more than N trials (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    from orchestrator import commands

    parser = argparse.ArgumentParser(prog="dor-bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run (or resume) a benchmark file on Ray, recording in MLflow")
    run.add_argument("file", help="benchmark YAML, e.g. benchmarks.yaml or examples/demo.yaml")
    add_selection(run)
    run.add_argument(
        "--dry-run", action="store_true", help="print the plan against the store (run, skip, resume) and stop"
    )
    run.add_argument("--tracking-uri", type=places.well_formed, help="MLflow store (default: the file's tracking_uri)")
    run.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else local Ray)")
    run.add_argument("--rerun", action="store_true", help="run trials again even if finished")
    run.add_argument(
        "--checkpoint-dir",
        default=".dor-bench/checkpoints",
        help="per-epoch trial checkpoints (shared storage on a cluster)",
    )
    run.add_argument("--report-dir", help="where the end-of-run report goes (default: reports/<name>)")
    run.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="json: one JSON object per line on stdout per trial started / epoch / finished / failed",
    )
    add_store_timeout(run)
    run.set_defaults(handler=commands.run)

    tune = sub.add_parser("tune", help="run (or resume) a Ray Tune sweep file, recording in MLflow")
    tune.add_argument("file", help="sweep YAML, e.g. examples/sweep-tiny.yaml")
    tune.add_argument("--tracking-uri", type=places.well_formed, help="MLflow store (default: the file's tracking_uri)")
    tune.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else local Ray)")
    tune.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    add_max_trials(tune)
    tune.add_argument(
        "--storage",
        default=".dor-bench/tune",
        help="Tune state and the sweep report go to STORAGE/<name> (shared on a cluster)",
    )
    add_store_timeout(tune)
    tune.set_defaults(handler=commands.tune)

    report = sub.add_parser("report", help="the paper's tables from the runs in MLflow (md, LaTeX, CSV, HTML, Parquet)")
    add_store_selection(report)
    report.add_argument("--out", help="output folder (default: reports/<experiment>)")
    report.add_argument(
        "--format",
        default="md,latex,csv,html",
        help="comma-separated: md,latex,csv,html (results.parquet is always written)",
    )
    report.set_defaults(handler=commands.report)

    rescore = sub.add_parser("rescore", help="recompute recorded trials' metrics from their kept outputs (no training)")
    add_store_selection(rescore)
    rescore.add_argument("--ece-bins", type=int, required=True, help="bins of ECE, ACE, MCE and PIECE (e.g. 15)")
    rescore.add_argument(
        "--temperature",
        action="store_true",
        help="also temperature scaling fitted on each trial's base validation images (posthoc/temperature/*)",
    )
    rescore.add_argument(
        "--dac", action="store_true", help="also DAC, distance-aware calibration of each class (posthoc/dac/*)"
    )
    rescore.set_defaults(handler=commands.rescore)

    ev = sub.add_parser("eval", help="score a recorded trial's kept prompt on another dataset (cross-dataset)")
    ev.add_argument("--run", required=True, metavar="RUN_ID", help="the trial's MLflow run ID")
    ev.add_argument("--dataset", required=True, help="the dataset to score it on (`dor-bench ls datasets`)")
    ev.add_argument("--root", help="data root in CoOp layout (default: $DOR_BENCH_DATA; built-in data needs none)")
    add_tracking_uri(ev)
    ev.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ev.set_defaults(handler=commands.eval_prompt)

    ui = sub.add_parser("ui", help="the MLflow UI on 127.0.0.1 for the store `run` writes to")
    add_tracking_uri(ui)
    ui.add_argument("--port", type=PORT, default=5000)
    ui.add_argument(
        "--host", default=HOST, help="address to listen on (default 127.0.0.1; another one is warned about)"
    )
    ui.set_defaults(handler=commands.ui)

    server = sub.add_parser(
        "server", help="an MLflow server for a team on 127.0.0.1: runs in PostgreSQL, artifacts served from --data"
    )
    server.add_argument(
        "--data", required=True, help="its folder: the PostgreSQL cluster (postgres/), the artifacts (artifacts/)"
    )
    server.add_argument("--port", type=PORT, default=5000, help="MLflow's port on 127.0.0.1 (default: %(default)s)")
    server.add_argument("--workers", type=_whole(1), default=4, help="MLflow's server processes (default: %(default)s)")
    server.set_defaults(handler=commands.server)

    replay = sub.add_parser("replay", help="write the journal of writes a run kept (store unreachable) into the store")
    replay.add_argument("file", help="the journal named by the run's error (CHECKPOINT_DIR/.outbox/.../writes.jsonl)")
    replay.add_argument(
        "--tracking-uri", type=places.well_formed, help="the store (default: the one the journal was written for)"
    )
    replay.set_defaults(handler=commands.replay)

    validate = sub.add_parser("validate", help="check a benchmark or sweep file and print its plan")
    validate.add_argument("file")
    add_selection(validate)
    validate.set_defaults(handler=commands.validate)

    trial = sub.add_parser("trial", help="run one trial (no Ray) and print its metrics")
    add_trial_arguments(trial)
    trial.add_argument("--json", action="store_true", help="print the full result as JSON")
    trial.set_defaults(handler=commands.trial)

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    check = data_sub.add_parser("check", help="check datasets under a CoOp-style data root")
    check.add_argument("--root", required=True, help="the data root (CoOp layout)")
    check.add_argument("--dataset", action="append", help="dataset name (repeatable; default: all)")
    check.set_defaults(handler=commands.data_check)

    micro = sub.add_parser("micro-clip", help="the micro-CLIP pretrained on the shapes world")
    micro_sub = micro.add_subparsers(dest="micro_command", required=True, metavar="ACTION")
    pre = micro_sub.add_parser("pretrain", help="pretrain it (resumable; ~4 CPU-minutes at 400 steps)")
    pre.add_argument("--out", required=True, help="weights file to write (a .json record goes beside it)")
    pre.add_argument("--steps", type=int, default=400)
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--arch", default="micro-clip")
    pre.add_argument(
        "--init-logit-scale",
        type=float,
        default=50.0,
        help="start of the learnable logit scale (CLIP's usual is 1/0.07 = 14.3)",
    )
    pre.add_argument("--threads", type=int, help="torch CPU threads (speed only)")
    pre.set_defaults(handler=commands.micro_clip_pretrain)

    ls = sub.add_parser("ls", help="list registered methods, datasets, models or DOR vocabularies")
    ls.add_argument("what", choices=["methods", "datasets", "models", "vocabularies"])
    ls.set_defaults(handler=commands.ls)
    return parser


def add_trial_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="zeroshot", help="method name (dor-bench ls methods)")
    p.add_argument("--dataset", default="shapes", help="dataset name (dor-bench ls datasets)")
    p.add_argument("--root", help="data root in CoOp layout (not needed for built-in data)")
    p.add_argument("--model", default="ViT-B-16", help="open_clip architecture")
    p.add_argument(
        "--pretrained",
        help="pretrained tag, checkpoint path, or none (default: the "
        "model's own: shipped weights for micro-clip, else openai)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--shots", type=int, help="shots per base class (default: the shipped weights' recipe, else 16)")
    p.add_argument(
        "--no-recipe", action="store_true", help="ignore the shipped weights' tuning recipe (use the method's defaults)"
    )
    p.add_argument(
        "--test-per-class", type=int, help="score at most N test images per class (quick runs; default: all)"
    )
    p.add_argument("--subsample", choices=["base2new", "all"], default="base2new")
    p.add_argument("--ece-bins", type=int, default=10)
    p.add_argument("--epochs", type=int, help="override the method's epochs")
    p.add_argument("--lr", type=float, help="override the method's learning rate")
    p.add_argument("--batch-size", type=int, help="override the method's batch size")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other method option, e.g. n_ctx=4 or augment_views=4 (repeatable)",
    )
    dor = p.add_argument_group("Dynamic Outlier Regularization (on when --dor-lambda is given)")
    dor.add_argument("--dor-lambda", type=float, help="DOR weight (0 = the plain method)")
    dor.add_argument("--outliers-per-step", type=int, help="B (default: number of base classes)")
    dor.add_argument("--pool-size", type=int, default=DOR_DEFAULTS["pool_size"], help="K outlier words in the pool")
    dor.add_argument("--pool-strategy", choices=["near", "far", "random"], default=DOR_DEFAULTS["pool_strategy"])
    dor.add_argument(
        "--pool-exclude",
        choices=["base", "all"],
        default=DOR_DEFAULTS["exclude"],
        help="class names left out of the pool: the base classes' or all the dataset's",
    )
    dor.add_argument(
        "--dor-vocabulary",
        default=DOR_DEFAULTS["vocabulary"],
        help="a built-in vocabulary (dor-bench ls vocabularies) or a word-list file (one outlier word per line)",
    )
    dor.add_argument(
        "--dor-resample",
        choices=["step", "epoch", "never"],
        default=DOR_DEFAULTS["resample"],
        help="draw the B outliers every step (the authors' code), once per epoch, or once per trial (never)",
    )
    dor.add_argument(
        "--dor-image-source",
        help="visual DOR (vpt, clip_adapter): the dataset of outlier images (default: imagenet under --root, "
        "shapes-outliers for built-in data)",
    )
    p.add_argument("--checkpoint-dir", help="save a checkpoint per epoch here and resume from it")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    p.add_argument("--no-feature-cache", action="store_true", help="re-encode test images")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


if __name__ == "__main__":
    sys.exit(main())
