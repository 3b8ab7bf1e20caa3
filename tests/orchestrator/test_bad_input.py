"""Bad input through the real CLI, one table: every command refuses each kind of mistake with exit
code 2, a message that names the field, YAML path, flag or file and says how to fix it, no
traceback, and nothing written (no MLflow store or run, no report, no checkpoint, no Tune state).

Each case runs ``orchestrator.cli.main(argv)`` in-process (parser, handler and error boundary:
the real CLI) in a fresh folder that is also the current folder, so anything a command writes by
default (``mlflow.db``, ``mlruns/``, ``reports/``, ``.dor-bench/``) lands where the test looks.
A case that could blow up (an alias bomb) runs ``dor-bench`` in a subprocess with a timeout and
a memory cap. Inputs are tiny: the micro-CLIP, a fake ``oxford_pets`` tree in CoOp's layout (so
no case generates the built-in shapes data) and a four-word outlier vocabulary.

Tripwires: a command that gets past its checks would open the MLflow store and start Ray. Those
two steps raise ``Tripped`` instead (not an ``Exception``, so the CLI's error boundary does not
swallow it), so an input that is not refused fails its case at once rather than running trials;
an in-process deadline (SIGALRM) does the same for a command that hangs (a huge grid).
"""

from __future__ import annotations

import copy
import json
import re
import resource
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from orchestrator.cli import main

#: A refusal takes well under a second once the CLI's modules are imported; a case still running
#: after this long has not refused its input.
DEADLINE_S = 20.0
#: The subprocess cases: address-space cap (the wall-clock limit is the case's deadline).
MEMORY_CAP = 4 << 30

WORDS = "apple\nriver\nhammer\ncloud\n"
GARBAGE = bytes(range(256)) * 64  # 16 kB that are no weights file, no text and no database
HOW = "How to fix"


class Tripped(BaseException):
    """The command went past the point where it should have refused its input."""


# --------------------------------------------------------------------------- the inputs


DROP = object()


def _settings(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied; a dotted key reaches into sections, ``DROP`` removes."""
    data = copy.deepcopy(base)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        section = data
        for part in parents:
            section = section.setdefault(part, {})
        if value is DROP:
            section.pop(last, None)
        else:
            section[last] = value
    return data


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=10**9)


def coop(**options: Any) -> dict[str, Any]:
    """The benchmark's coop entry (methods[1]) with these options."""
    return {"name": "coop", "options": {"epochs": 1, **options}, "dor": [False, True]}


#: A small valid benchmark: micro-CLIP on the built-in shapes data (validate never reads data).
BENCH: dict[str, Any] = {
    "name": "bad-input",
    "model": {"arch": "micro-clip", "pretrained": "shapes"},
    "datasets": ["shapes"],
    "shots": 1,
    "seeds": [1],
    "test_per_class": 1,
    "methods": ["zeroshot", coop()],
    "dor": {"lam": 8, "outliers_per_step": 4, "vocabulary": "words.txt"},
}
#: What ``run`` cases read instead of shapes, should they get as far as the data.
FAKE_DATA = {"datasets": ["oxford_pets"], "data_root": "{data}"}

#: A small valid sweep (on the fake data too).
SWEEP: dict[str, Any] = {
    "name": "bad-sweep",
    "model": {"arch": "micro-clip", "pretrained": "shapes"},
    "dataset": "oxford_pets",
    "data_root": "{data}",
    "method": {"name": "coop", "options": {"epochs": 1}},
    "shots": 1,
    "seeds": [1],
    "dor": {"vocabulary": "words.txt", "pool_size": 4},
    "space": {"lam": [0, 8]},
}

RUN_FLAGS = (
    "--tracking-uri",
    "sqlite:///{d}/mlflow.db",
    "--checkpoint-dir",
    "{d}/checkpoints",
    "--report-dir",
    "{d}/reports",
)
TUNE_FLAGS = ("--tracking-uri", "sqlite:///{d}/mlflow.db", "--storage", "{d}/tune")
TRIAL_FLAGS = (
    *("--method", "coop", "--dataset", "oxford_pets", "--root", "{data}", "--model", "micro-clip"),
    *("--shots", "1", "--epochs", "1", "--test-per-class", "1", "--quiet", "--no-feature-cache"),
    *("--checkpoint-dir", "{d}/checkpoints"),
)


@dataclass
class Case:
    """One bad input: the command line ({d}: the case's folder, {data}: the fake data root), the
    files written into {d} first, and the regular expressions its output must match: what is
    named and what to do. Every message also carries a "How to fix" hint unless ``hint`` is off."""

    argv: tuple[str, ...]
    expect: tuple[str, ...]
    files: dict[str, str | bytes] = field(default_factory=dict)
    code: int = 2
    hint: bool = True
    store: bool = False  # {d}/mlflow.db is an MLflow store (experiment 'demo', no runs) beforehand
    subprocess: bool = False  # run dor-bench in a subprocess (deadline as timeout, memory cap)
    deadline_s: float = DEADLINE_S
    real_tracker: bool = False  # the case is about opening the store: no tripwire there
    env: dict[str, str] = field(default_factory=dict)  # environment variables set for the case


def run_case(changes: dict[str, Any] | None = None, *extra: str, text: str | bytes | None = None, **kw: Any) -> Case:
    """``dor-bench run {d}/bench.yaml ... EXTRA`` on BENCH (fake data) with ``changes``, or ``text``
    (EXTRA last: its flags win, its KEY=VALUE settings follow the options)."""
    body = text if text is not None else dump(_settings(BENCH, {**FAKE_DATA, **(changes or {})}))
    files = {"bench.yaml": body, "words.txt": WORDS, **kw.pop("files", {})}
    return Case(("run", "{d}/bench.yaml", *RUN_FLAGS, *extra), files=files, **kw)


def validate_case(
    changes: dict[str, Any] | None = None, *extra: str, text: str | bytes | None = None, **kw: Any
) -> Case:
    """``dor-bench validate {d}/bench.yaml EXTRA...`` on BENCH with ``changes``, or ``text``."""
    body = text if text is not None else dump(_settings(BENCH, changes or {}))
    files = {"bench.yaml": body, "words.txt": WORDS, **kw.pop("files", {})}
    return Case(("validate", "{d}/bench.yaml", *extra), files=files, **kw)


def tune_case(changes: dict[str, Any] | None = None, *, text: str | bytes | None = None, **kw: Any) -> Case:
    """``dor-bench tune {d}/sweep.yaml`` on SWEEP with ``changes``, or ``text``."""
    body = text if text is not None else dump(_settings(SWEEP, changes or {}))
    files = {"sweep.yaml": body, "words.txt": WORDS, **kw.pop("files", {})}
    return Case(("tune", "{d}/sweep.yaml", *TUNE_FLAGS), files=files, **kw)


def trial_case(*flags: str, **kw: Any) -> Case:
    """``dor-bench trial`` on the fake data with the micro-CLIP, then ``flags`` (the last wins)."""
    return Case(("trial", *TRIAL_FLAGS, *flags), **kw)


def case(id: str, c: Case, *marks: pytest.MarkDecorator) -> Any:
    return pytest.param(c, id=id, marks=marks)


ALIAS_BOMB = "\n".join(
    ["name: bomb", "datasets: [shapes]", "methods: [zeroshot]", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol"]']
    + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    + ["seeds: *a9", ""]
)  # 7 x 9^9 = 2.7e9 strings once expanded

CASES = [
    # ---------------------------------------------------------------- the file itself (reader)
    case(
        "run-yaml-syntax-error",
        run_case(
            text="name: x\ndatasets: [shapes]\nmethods:\n  - zeroshot\nseeds: [1, 2\nshots: 4\n",
            expect=(r"bench\.yaml", r"not valid YAML", r"line \d+, column \d+", r"fix the YAML"),
        ),
    ),
    case(
        "validate-duplicate-key",
        validate_case(
            text="name: a\ndatasets: [shapes]\nmethods: [zeroshot]\nname: b\n",
            expect=(r"bench\.yaml", r"key 'name' twice", r"first on line 1", r"fix the YAML"),
        ),
    ),
    case(
        "run-python-tag",
        run_case(
            text="name: !!python/object/apply:os.system ['touch {d}/pwned']\ndatasets: [shapes]\nmethods: [zeroshot]\n",
            expect=(r"bench\.yaml", r"tag", r"python", r"remove the tag"),
        ),
    ),
    case(
        "tune-python-tag",
        tune_case(
            text="name: sweep\ndataset: !!python/name:os.system\nmethod: coop\nspace: {lam: [0, 8]}\n",
            expect=(r"sweep\.yaml", r"tag", r"at dataset", r"remove the tag"),
        ),
    ),
    case(
        "run-binary-file",
        run_case(text=b"\x00\xff\xfe\x00 binary \x89PNG", expect=(r"bench\.yaml", r"not UTF-8", r"YAML settings file")),
    ),
    case(
        "validate-latin1-file",
        validate_case(
            text="name: caf\xe9\ndatasets: [shapes]\nmethods: [zeroshot]\n".encode("latin-1"),
            expect=(r"bench\.yaml", r"not UTF-8", r"byte 9", r"YAML settings file"),
        ),
    ),
    case("run-empty-file", run_case(text="", expect=(r"bench\.yaml", r"empty", r"name, datasets and methods"))),
    case(
        "validate-comments-only-file",
        validate_case(text="# nothing but a comment\n", expect=(r"bench\.yaml", r"empty", r"examples/demo\.yaml")),
    ),
    case(
        "validate-top-level-list",
        validate_case(
            text="- name: x\n- datasets: [shapes]\n", expect=(r"bench\.yaml", r"top level must be a mapping", r"list")
        ),
    ),
    case(
        "tune-top-level-scalar",
        tune_case(text="just words\n", expect=(r"sweep\.yaml", r"top level must be a mapping", r"space")),
    ),
    case(
        "tune-missing-file",
        Case(("tune", "{d}/nope.yaml", *TUNE_FLAGS), expect=(r"nope\.yaml", r"does not exist", r"check the path")),
    ),
    case(
        "validate-alias-bomb",
        validate_case(text=ALIAS_BOMB, expect=(r"bench\.yaml", r"alias", r"plainly"), subprocess=True, deadline_s=60),
    ),
    case(
        "run-file-over-size-limit",
        run_case(
            text=dump(_settings(BENCH, FAKE_DATA)) + ("# " + "x" * 97 + "\n") * 200_000,  # 20 MB of comments
            expect=(r"bench\.yaml", r"20\.0 MB", r"at most", r"settings file you meant"),
        ),
    ),
    # ---------------------------------------------------------------- names (did you mean)
    case(
        "run-unknown-method",
        run_case({"methods": ["zeroshot", "cop"]}, expect=(r"methods\[1\]\.name", r"Did you mean 'coop'", r"line \d+")),
    ),
    case(
        "validate-unknown-dataset",
        validate_case({"datasets": ["shapez"]}, expect=(r"datasets\[0\]", r"Did you mean 'shapes'")),
    ),
    case(
        "run-unknown-architecture",
        run_case({"model.arch": "micro-clp"}, expect=(r"model\.arch", r"Did you mean 'micro-clip'")),
    ),
    case(
        "validate-unknown-pretrained-tag",
        validate_case({"model.pretrained": "shapez"}, expect=(r"model\.pretrained", r"Did you mean 'shapes'")),
    ),
    case(
        "run-unknown-top-level-key",
        run_case({"seed": [1]}, expect=(r"unknown setting 'seed'", r"Did you mean 'seeds'", r"Allowed here")),
    ),
    case(
        "validate-unknown-dor-key",
        validate_case({"dor.lambda": 8}, expect=(r"dor\.lambda", r"unknown setting", r"Did you mean 'lam'")),
    ),
    # ---------------------------------------------------------------- values
    case(
        "run-outliers-per-step-above-pool-size",
        run_case(
            {"dor.pool_size": 2},
            # today the problem is placed at 'dor' (the section), not at dor.outliers_per_step
            expect=(r"dor(\.outliers_per_step)?: 4 outliers per step", r"pool of 2 words", r"at most 2"),
        ),
    ),
    case(
        "validate-duplicate-seeds",
        validate_case({"seeds": [1, 2, 1]}, expect=(r"seeds: lists 1 more than once", r"each value once")),
    ),
    case("run-negative-seed", run_case({"seeds": [-1]}, expect=(r"seeds\[0\]", r"must be >= 0"))),
    case(
        "validate-seed-above-2-32", validate_case({"seeds": [2**32]}, expect=(r"seeds\[0\]", r"less than 4294967296"))
    ),
    case(
        "run-lr-nan",
        run_case({"methods": ["zeroshot", coop(lr=float("nan"))]}, expect=(r"methods\[1\]\.options\.lr", r"finite")),
    ),
    case(
        "validate-lr-inf",
        validate_case({"methods": ["zeroshot", coop(lr=float("inf"))]}, expect=(r"options\.lr", r"finite")),
    ),
    case("run-lr-zero", run_case({"methods": ["zeroshot", coop(lr=0)]}, expect=(r"options\.lr", r"must be > 0"))),
    case(
        "validate-lr-negative",
        validate_case({"methods": ["zeroshot", coop(lr=-0.01)]}, expect=(r"options\.lr", r"must be > 0")),
    ),
    case(
        "validate-lr-axis-with-a-bad-value",
        validate_case({"methods": ["zeroshot", coop(lr=[0.01, -1])]}, expect=(r"options\.lr\[1\]", r"must be > 0")),
    ),
    case("run-dor-lam-inf", run_case({"dor.lam": float("inf")}, expect=(r"dor\.lam", r"finite"))),
    case(
        "validate-batch-size-zero",
        validate_case({"methods": ["zeroshot", coop(batch_size=0)]}, expect=(r"options\.batch_size", r"must be >= 1")),
    ),
    case(
        "run-epochs-zero",
        run_case({"methods": ["zeroshot", coop(epochs=0)]}, expect=(r"options\.epochs", r"must be >= 1")),
    ),
    case(
        "validate-lr-of-the-wrong-type",
        validate_case({"methods": ["zeroshot", coop(lr="fast")]}, expect=(r"options\.lr", r"must be a number")),
    ),
    case(
        "run-unknown-method-option",
        run_case(
            {"methods": ["zeroshot", coop(n_cxt=4)]},
            expect=(r"options\.n_cxt", r"unknown option 'n_cxt' for coop", r"Did you mean 'n_ctx'"),
        ),
    ),
    case("validate-ece-bins-zero", validate_case({"ece_bins": 0}, expect=(r"ece_bins", r"must be > 0"))),
    case("run-ece-bins-1e8", run_case({"ece_bins": 10**8}, expect=(r"ece_bins", r"less than or equal to 1000"))),
    case(
        "run-experiment-name-with-dotdot",
        run_case({"name": "../escape"}, expect=(r"name: '\.\./escape' cannot be used", r"letters, digits")),
    ),
    case("validate-empty-methods", validate_case({"methods": []}, expect=(r"methods: must not be empty",))),
    case("run-empty-datasets", run_case({"datasets": []}, expect=(r"datasets: must not be empty",))),
    case("validate-shots-zero", validate_case({"shots": 0}, expect=(r"shots", r"must be > 0"))),
    case(
        "validate-zeroshot-with-dor",
        validate_case(
            {"methods": [{"name": "zeroshot", "dor": True}]}, expect=(r"methods\[0\]\.dor", r"does not train")
        ),
    ),
    case(
        "run-data-root-unset-for-a-real-dataset",
        run_case({"data_root": DROP}, expect=(r"data_root: required", r"oxford_pets", r"DOR_BENCH_DATA")),
    ),
    case(
        "run-data-root-missing-for-a-real-dataset",
        run_case(
            {"data_root": "{d}/nope"},
            expect=(r"Preflight", r"oxford_pets", r"/nope'", r"nothing was scheduled", r"--root|data_root|data check"),
        ),
    ),
    case(
        "run-grid-of-a-million-trials",
        run_case(
            {"seeds": list(range(1000)), "shots": list(range(1, 1001)), "methods": ["zeroshot"]},
            expect=(r"1,000,000|1000000|10\^6", r"trials", r"--only|fewer|at most|limit|more than"),
            deadline_s=10,
        ),
    ),
    # ---------------------------------------------------------------- files the settings name
    case(
        "run-vocabulary-missing",
        run_case(
            {"dor.vocabulary": "nope.txt"}, expect=(r"dor\.vocabulary", r"nope\.txt", r"does not exist", "wordnet")
        ),
    ),
    case(
        "run-vocabulary-empty",
        run_case(
            {"dor.vocabulary": "empty.txt"},
            files={"empty.txt": "\n \n"},
            expect=(r"dor\.vocabulary", r"empty\.txt", r"empty|no words", r"one outlier word per line"),
        ),
    ),
    case(
        "run-vocabulary-not-utf8",
        run_case(
            {"dor.vocabulary": "words.latin1"},
            files={"words.latin1": "caf\xe9\nna\xefve\n".encode("latin-1")},
            expect=(r"dor\.vocabulary", r"words\.latin1", r"not UTF-8", r"save it as UTF-8"),
        ),
    ),
    case(
        "run-pretrained-weights-are-garbage",
        run_case(
            {"model.pretrained": "{d}/garbage.pt"},
            files={"garbage.pt": GARBAGE},
            expect=(r"Preflight", r"garbage\.pt", r"not a checkpoint", r"nothing was scheduled", r"PyTorch checkpoint"),
        ),
    ),
    case(
        "run-tracking-store-parent-is-a-file",
        Case(
            ("run", "{d}/bench.yaml", "--tracking-uri", "sqlite:///{d}/blocker/mlflow.db", "--report-dir", "{d}/r"),
            files={"bench.yaml": dump(_settings(BENCH, FAKE_DATA)), "words.txt": WORDS, "blocker": "a file"},
            expect=(r"tracking_uri", r"blocker' is a file, not a folder", r"set tracking_uri|--tracking-uri"),
            hint=False,  # the fix is written into the problem itself
            real_tracker=True,
        ),
    ),
    case(
        "run-checkpoint-dir-parent-is-a-file",
        run_case(
            None,
            "--checkpoint-dir",
            "{d}/blocker/checkpoints",
            files={"blocker": "a file"},
            expect=(r"checkpoint", r"blocker' is a file, not a folder", r"--checkpoint-dir"),
            hint=False,
        ),
    ),
    case(
        "run-report-dir-parent-is-a-file",
        run_case(
            None,
            "--report-dir",
            "{d}/blocker/reports",
            files={"blocker": "a file"},
            expect=(r"report", r"blocker' is a file, not a folder", r"--report-dir"),
            hint=False,
        ),
    ),
    case(
        "tune-storage-parent-is-a-file",
        Case(
            ("tune", "{d}/sweep.yaml", "--tracking-uri", "sqlite:///{d}/mlflow.db", "--storage", "{d}/blocker/tune"),
            files={"sweep.yaml": dump(SWEEP), "words.txt": WORDS, "blocker": "a file"},
            expect=(r"storage", r"blocker' is a file, not a folder", r"--storage"),
            hint=False,
        ),
    ),
    # ---------------------------------------------------------------- command-line settings, --only
    case(
        "run-override-unknown-key",
        run_case(None, "seedz=[1]", expect=(r"seedz", r"Did you mean 'seeds'", r"\[command line\]")),
    ),
    case(
        "run-override-repeated-seeds",
        run_case(None, "seeds=[1,1]", expect=(r"seeds: lists 1 more than once", r"\[command line\]")),
    ),
    case(
        "validate-override-value-not-yaml",
        validate_case(None, "seeds=[1,", expect=(r"command-line setting 'seeds=\[1,'", r"not valid YAML")),
    ),
    case(
        "run-override-into-a-value",
        run_case(None, "name.x=1", expect=(r"command-line setting 'name\.x=1'", r"'name' is not a section")),
    ),
    case(
        "run-only-unknown-method",
        run_case(
            None, "--only", "method=coopp", expect=(r"--only method=coopp", r"no planned trial", r"coop, zeroshot")
        ),
    ),
    case(
        "validate-only-unknown-key",
        validate_case(None, "--only", "seeds=1", expect=(r"--only 'seeds=1'", r"Did you mean 'seed'")),
    ),
    case(
        "validate-sweep-with-command-line-settings",
        Case(
            ("validate", "{d}/sweep.yaml", "seeds=[1]"),
            files={"sweep.yaml": dump(SWEEP), "words.txt": WORDS},
            expect=(r"Command-line settings and --only apply to benchmark files", r"edit the sweep file"),
        ),
    ),
    # ---------------------------------------------------------------- sweeps (tune)
    case(
        "tune-log-uniform-low-end-zero",
        tune_case(
            {"space.lam": {"log_uniform": [0, 10]}, "search": {"algorithm": "random", "samples": 2}},
            expect=(r"space\.lam", r"log_uniform", r"above 0"),
        ),
    ),
    case(
        "tune-unknown-objective-metric",
        tune_case(
            {"objective": {"metric": "val/pseudo_new/eec"}},
            expect=(r"objective\.metric", r"Did you mean 'val/pseudo_new/ece'"),
        ),
    ),
    case(
        "tune-test-metric-without-leaky",
        tune_case({"objective": {"metric": "new/ece"}}, expect=(r"objective\.metric", r"leaky: true")),
    ),
    case(
        "tune-range-with-grid-search",
        tune_case({"space.lam": {"uniform": [0, 10]}}, expect=(r"space\.lam", r"random or optuna")),
    ),
    case("tune-negative-lambda-in-space", tune_case({"space.lam": [-1, 8]}, expect=(r"space\.lam", r">= 0, not -1"))),
    case(
        "tune-unknown-option-in-space",
        tune_case({"space.options": {"lrr": [0.01, 0.1]}}, expect=(r"space\.options\.lrr", r"Did you mean 'lr'")),
    ),
    case("tune-zeroshot", tune_case({"method": "zeroshot"}, expect=(r"method", r"does not train", r"coop"))),
    case(
        "tune-outliers-per-step-above-pool-size",
        tune_case(
            {"space": {"outliers_per_step": [2, 50]}},
            expect=(r"space\.outliers_per_step", r"50", r"pool_size", r"at most 4"),
        ),
    ),
    case(
        "tune-data-root-missing",
        tune_case(
            {"data_root": "{d}/nope"}, expect=(r"Preflight", r"oxford_pets", r"/nope'", r"the sweep did not start")
        ),
    ),
    case(
        "tune-vocabulary-missing",
        tune_case(
            {"dor.vocabulary": "nope.txt"}, expect=(r"dor\.vocabulary", r"nope\.txt", r"does not exist", r"wordnet")
        ),
    ),
    case(
        "tune-grid-of-a-million-trials",
        tune_case(
            {"space": {"lam": list(range(1000)), "options": {"lr": [round(0.001 * (i + 1), 3) for i in range(1000)]}}},
            expect=(r"1,000,000|1000000|10\^6", r"trials", r"fewer|at most|limit|more than|random"),
        ),
    ),
    # ---------------------------------------------------------------- trial
    case(
        "trial-device-cuda-without-cuda",
        trial_case("--device", "cuda", expect=(r"'cuda'", r"no CUDA device", r"--device cpu")),
        pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
    ),
    case(
        "trial-negative-seed",
        trial_case("--seed", "-1", expect=(r"--seed", r"greater than or equal to 0")),
    ),
    case(
        "trial-seed-above-2-32",
        trial_case("--seed", str(2**32), expect=(r"seed", r"4294967296|4294967295|2\*\*32")),
    ),
    case("trial-lr-nan", trial_case("--lr", "nan", expect=(r"lr", r"finite"))),
    case("trial-lr-zero", trial_case("--lr", "0", expect=(r"lr", r"must be > 0"))),
    case("trial-epochs-zero", trial_case("--epochs", "0", expect=(r"epochs", r"must be >= 1"))),
    case(
        "trial-dor-lambda-inf",
        trial_case("--dor-lambda", "inf", expect=(r"--dor-lambda|lam", r"finite")),
    ),
    case(
        "trial-ece-bins-zero",
        trial_case("--ece-bins", "0", expect=(r"--ece-bins|ece_bins", r"greater than 0|> 0")),
    ),
    case(
        "trial-option-of-the-wrong-type",
        trial_case("--option", "lr=fast", expect=(r"lr", r"number")),
    ),
    case(
        "trial-unknown-pretrained-tag",
        trial_case("--pretrained", "shapez", expect=(r"'shapez'", r"Did you mean 'shapes'", r"checkpoint file")),
    ),
    case(
        "trial-pretrained-weights-are-garbage",
        trial_case(
            "--pretrained",
            "{d}/garbage.pt",
            files={"garbage.pt": GARBAGE},
            expect=(r"garbage\.pt", r"not a checkpoint", r"PyTorch checkpoint"),
        ),
    ),
    case(
        "trial-vocabulary-missing",
        trial_case(
            "--dor-lambda",
            "8",
            "--dor-vocabulary",
            "{d}/nope.txt",
            expect=(r"nope\.txt", r"does not exist", r"one outlier word per line"),
        ),
    ),
    case(
        "trial-vocabulary-empty",
        trial_case(
            "--dor-lambda",
            "8",
            "--dor-vocabulary",
            "{d}/empty.txt",
            files={"empty.txt": ""},
            expect=(r"empty\.txt", r"empty|no words", r"one outlier word per line"),
        ),
    ),
    case(
        "trial-vocabulary-not-utf8",
        trial_case(
            "--dor-lambda",
            "8",
            "--dor-vocabulary",
            "{d}/words.latin1",
            files={"words.latin1": "caf\xe9\n".encode("latin-1")},
            expect=(r"words\.latin1", r"not UTF-8", r"UTF-8 text"),
        ),
    ),
    case(
        "trial-epochs-not-a-number",
        trial_case(
            "--epochs", "many", expect=(r"usage: dor-bench trial", r"--epochs: invalid int value: 'many'"), hint=False
        ),
    ),
    # ---------------------------------------------------------------- report
    case(
        "report-store-missing",
        Case(
            ("report", "--tracking-uri", "sqlite:///{d}/mlflow.db", "--experiment", "demo", "--out", "{d}/reports"),
            expect=(r"No MLflow store", r"mlflow\.db", r"dor-bench run", r"--tracking-uri"),
        ),
    ),
    case(
        "report-store-folder-missing",
        Case(
            ("report", "--tracking-uri", "sqlite:///{d}/nope/mlflow.db", "--out", "{d}/reports"),
            expect=(r"No MLflow store", r"nope/mlflow\.db", r"--tracking-uri"),
        ),
    ),
    case(
        "report-store-is-garbage",
        Case(
            ("report", "--tracking-uri", "sqlite:///{d}/garbage.db", "--experiment", "demo", "--out", "{d}/reports"),
            files={"garbage.db": GARBAGE},
            expect=(r"garbage\.db", r"not a database", r"check --tracking-uri"),
        ),
    ),
    case(
        "report-experiment-missing",
        Case(
            ("report", "--tracking-uri", "sqlite:///{d}/mlflow.db", "--experiment", "demoo", "--out", "{d}/reports"),
            expect=(r"No experiment 'demoo'", r"Did you mean 'demo'", r"existing experiments: demo"),
            store=True,
        ),
    ),
    case(
        "report-parent-run-missing",
        Case(
            ("report", "--tracking-uri", "sqlite:///{d}/mlflow.db", "--experiment", "demo", "--parent", "0123abcd"),
            expect=(r"No run '0123abcd'", r"--parent"),
            store=True,
        ),
    ),
    case(
        "report-unknown-format",
        Case(
            ("report", "--tracking-uri", "sqlite:///{d}/mlflow.db", "--format", "md,pdf", "--out", "{d}/reports"),
            expect=(r"Unknown report format 'pdf'", r"comma-separated list of: md, latex, csv, html"),
        ),
    ),
    # ---------------------------------------------------------------- data check
    case(
        "data-check-root-missing",
        Case(("data", "check", "--root", "{d}/nope"), expect=(r"/nope'", r"does not exist", r"pass --root")),
    ),
    case(
        "data-check-root-is-a-file",
        Case(
            ("data", "check", "--root", "{d}/afile"),
            files={"afile": "not a folder"},
            expect=(r"afile'", r"not a folder", r"pass --root"),
        ),
    ),
    case(
        "data-check-unknown-dataset",
        Case(
            ("data", "check", "--root", "{data}", "--dataset", "oxford_pet"),
            expect=(r"'oxford_pet'", r"Did you mean 'oxford_pets'", r"dor-bench ls"),
        ),
    ),
    # ---------------------------------------------------------------- the tracking store's URI
    case(
        "validate-tracking-uri-unknown-scheme",
        validate_case(
            {"tracking_uri": "junk://alice:secret@host"},
            expect=(r"tracking_uri: 'junk://\*\*\*@host'", r"scheme 'junk:'", r"sqlite:///mlflow\.db", r"line \d+"),
        ),
    ),
    case(
        "validate-tracking-uri-database-as-plain-path",
        validate_case(
            {"tracking_uri": "runs/mlflow.db"},
            expect=(r"tracking_uri: 'runs/mlflow\.db'", r"file-store folder", r"write sqlite:///runs/mlflow\.db"),
        ),
    ),
    case(
        "run-dry-run-tracking-uri-sqlite-with-two-slashes",
        run_case(
            None,
            "--dry-run",
            "--tracking-uri",
            "sqlite://m.db",
            expect=(r"--tracking-uri 'sqlite://m\.db'", r"names no sqlite database file", r"three slashes"),
        ),
    ),
    case(
        "run-dry-run-store-is-garbage",
        run_case(
            None,
            "--dry-run",
            "--tracking-uri",
            "sqlite:///{d}/garbage.db",
            files={"garbage.db": GARBAGE},
            expect=(r"Cannot read the MLflow tracking store", r"garbage\.db", r"not a database", r"tracking_uri"),
            real_tracker=True,
        ),
    ),
    case(
        "report-tracking-uri-from-the-environment",
        Case(
            ("report", "--out", "{d}/reports"),
            env={"MLFLOW_TRACKING_URI": "sqlite//mlflow.db"},
            expect=(r"\$MLFLOW_TRACKING_URI 'sqlite//mlflow\.db'", r"names no sqlite database file", r"--tracking-uri"),
        ),
    ),
    case(
        "eval-tracking-uri-unknown-scheme",
        Case(
            ("eval", "--run", "0123abcd", "--dataset", "shapes", "--tracking-uri", "mlfow://host"),
            expect=(r"--tracking-uri 'mlfow://host'", r"no MLflow store has", r"http://HOST:5000"),
        ),
    ),
    case(
        "eval-store-missing",
        Case(
            ("eval", "--run", "0123abcd", "--dataset", "shapes", "--tracking-uri", "sqlite:///{d}/nope.db"),
            expect=(r"No MLflow store at '.*nope\.db'", r"--tracking-uri"),
        ),
    ),
    case(
        "tune-tracking-uri-server-without-host",
        Case(
            ("tune", "{d}/sweep.yaml", "--tracking-uri", "http:/127.0.0.1:5000", "--storage", "{d}/tune"),
            files={"sweep.yaml": dump(SWEEP), "words.txt": WORDS},
            expect=(r"--tracking-uri 'http:/127\.0\.0\.1:5000'", r"names no server", r"http://HOST:PORT"),
        ),
    ),
    # ---------------------------------------------------------------- more sections and values
    case(
        "validate-model-as-a-string",
        validate_case(
            {"model": "micro-clip"},
            expect=(r"model: must be a mapping of its settings \(arch, pretrained\), not 'micro-clip'",),
        ),
    ),
    case(
        "validate-empty-dor-section",
        validate_case({"dor": None}, expect=(r"dor: is empty: give its settings \(lam, ", r"leave it out")),
    ),
    case(
        "validate-method-entry-as-a-number",
        validate_case({"methods": ["zeroshot", 5]}, expect=(r"methods\[1\]: must be a method name or a mapping",)),
    ),
    case(
        "validate-ctx-init-a-number",
        validate_case(
            {"methods": ["zeroshot", coop(ctx_init=5)]},
            expect=(r"methods\[1\]\.options\.ctx_init", r"must be text .* or null, not 5"),
        ),
    ),
    case(
        "validate-benchmark-file-is-a-folder",
        Case(("validate", "{d}"), expect=(r"Benchmark file '.*' is a folder, not a file", r"check the path")),
    ),
    case(
        "run-only-with-no-value",
        run_case(None, "--only", "seed=", expect=(r"--only seed= names no seed", r"--only seed=VALUE")),
    ),
    case(
        "run-store-timeout-negative",
        run_case(None, "--store-timeout", "-5", expect=(r"--store-timeout", r"seconds above 0"), hint=False),
    ),
    # ---------------------------------------------------------------- sweep spaces
    case(
        "tune-lambda-range-below-zero",
        tune_case(
            {"space.lam": {"uniform": [-1, 8]}, "search": {"algorithm": "random", "samples": 2}},
            expect=(r"space\.lam: lambda ranges start at 0 or more, not -1",),
        ),
    ),
    case(
        "tune-range-to-infinity",
        tune_case(
            {"space.pool_size": {"uniform": [1, float("inf")]}, "search": {"algorithm": "random", "samples": 2}},
            expect=(r"space\.pool_size", r"both ends must be finite"),
        ),
    ),
    case(
        "tune-option-range-below-its-minimum",
        tune_case(
            {"space.options": {"lr": {"uniform": [-0.1, 0.1]}}, "search": {"algorithm": "random", "samples": 2}},
            expect=(r"space\.options\.lr: the range's low end must be > 0",),
        ),
    ),
    case(
        "tune-range-over-a-text-option",
        tune_case(
            {"space.options": {"ctx_init": {"uniform": [1, 2]}}, "search": {"algorithm": "random", "samples": 2}},
            expect=(r"space\.options\.ctx_init: ctx_init is not a number", r"list of its values"),
        ),
    ),
    case(
        "tune-empty-list-in-space",
        tune_case({"space.lam": []}, expect=(r"space\.lam: an empty list searches nothing",)),
    ),
    case(
        "tune-unknown-range-kind",
        tune_case(
            {"space.lam": {"normal": [0, 8]}, "search": {"algorithm": "random", "samples": 2}},
            expect=(r"space\.lam: unknown range 'normal'", r"log_uniform: \[lo, hi\]"),
        ),
    ),
    case(
        "tune-pool-strategy-as-a-range",
        tune_case(
            {"space.pool_strategy": {"uniform": [0, 1]}},
            expect=(r"space\.pool_strategy: pool strategies are names, not a range",),
        ),
    ),
    case(
        "tune-negative-search-seed",
        tune_case(
            {"search": {"algorithm": "random", "samples": 2, "seed": -1}}, expect=(r"search\.seed: must be >= 0",)
        ),
    ),
    # ---------------------------------------------------------------- trial, replay, ui, server, micro-clip
    case("trial-ctx-init-a-number", trial_case("--option", "ctx_init=5", expect=(r"ctx_init", r"must be text"))),
    case(
        "trial-dor-lambda-for-zeroshot",
        Case(
            ("trial", "--method", "zeroshot", "--dataset", "oxford_pets", "--root", "{data}", "--model", "micro-clip")
            + ("--shots", "1", "--test-per-class", "1", "--quiet", "--dor-lambda", "8"),
            expect=(r"--dor-lambda: zeroshot does not train", r"leave out --dor-lambda"),
        ),
    ),
    case(
        "trial-checkpoint-dir-is-a-file",
        trial_case(
            "--checkpoint-dir",
            "{d}/afile",
            files={"afile": "not a folder"},
            expect=(r"afile' is a file, where a folder is needed", r"pass a folder path"),
        ),
    ),
    case(
        "replay-binary-journal",
        Case(
            ("replay", "{d}/writes.jsonl"),
            files={"writes.jsonl": GARBAGE},
            expect=(r"writes\.jsonl' is not a dor-bench journal", r"\.outbox"),
        ),
    ),
    case(
        "replay-journal-naming-no-store",
        Case(
            ("replay", "{d}/writes.jsonl"),
            files={"writes.jsonl": '{"journal": 1}\n'},
            expect=(r"writes\.jsonl' is not a dor-bench journal",),
        ),
    ),
    case(
        "ui-port-out-of-range",
        Case(
            ("ui", "--port", "99999", "--tracking-uri", "sqlite:///{d}/mlflow.db"),
            expect=(r"--port: must be a whole number from 1 to 65535, not '99999'",),
            hint=False,
        ),
    ),
    case(
        "server-no-workers",
        Case(
            ("server", "--data", "{d}/server", "--workers", "0"),
            expect=(r"--workers: must be a whole number of 1 or more",),
            hint=False,
        ),
    ),
    case(
        "micro-clip-pretrain-out-is-a-folder",
        Case(("micro-clip", "pretrain", "--out", "{d}"), expect=(r"--out", r"is a folder", r"file path")),
    ),
    case(
        "micro-clip-pretrain-unknown-arch",
        Case(
            ("micro-clip", "pretrain", "--out", "{d}/w.pt", "--arch", "micro-clp"),
            expect=(r"--arch: unknown architecture 'micro-clp'", r"Did you mean 'micro-clip'"),
        ),
    ),
    case(
        "micro-clip-pretrain-fewer-steps-than-the-warm-up",
        Case(("micro-clip", "pretrain", "--out", "{d}/w.pt", "--steps", "10"), expect=(r"--steps 50 or more",)),
    ),
]


# --------------------------------------------------------------------------- the harness


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A small oxford_pets tree in CoOp's layout (4 classes: 2 base, 2 new; 8x8 images)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    folder = root / "oxford_pets"
    split: dict[str, list[list[Any]]] = {"train": [], "val": [], "test": []}
    for name, count in (("train", 2), ("val", 1), ("test", 1)):
        for label in range(4):
            for i in range(count):
                relpath = f"c{label}/{name}_{i}.jpg"
                (folder / "images" / relpath).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8), (40 * label, 90, 200)).save(folder / "images" / relpath)
                split[name].append([relpath, label, f"breed {label}"])
    (folder / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    return root


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> Path:
    """An MLflow sqlite store with one experiment ('demo') and no runs; each case copies it."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("store")
    MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").create_experiment(
        "demo", artifact_location=(folder / "artifacts").as_uri()
    )
    return folder / "mlflow.db"


def snapshot(*roots: Path) -> dict[str, tuple[bool, int, int]]:
    """Every path under ``roots``: (is a folder, size, mtime) for files."""
    out = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            stat = path.stat()
            out[str(path)] = (True, 0, 0) if path.is_dir() else (False, stat.st_size, stat.st_mtime_ns)
    return out


def set_tripwires(monkeypatch: pytest.MonkeyPatch, store: bool) -> None:
    """Starting Ray, a server or pretraining (and, with ``store``, opening the MLflow store) raises
    ``Tripped``."""
    import ray

    import orchestrator.benchmark.runner as runner
    import orchestrator.cluster as cluster
    import orchestrator.server as server
    import orchestrator.ui as ui
    import pretraining.micro_clip as micro_clip
    from orchestrator.tracking import Tracker

    def start_ray(*args: Any, **kwargs: Any) -> None:
        raise Tripped("the command went on to start Ray")

    def start(*args: Any, **kwargs: Any) -> None:
        raise Tripped("the command went on to start a server or to pretrain")

    for module, name in ((server, "serve"), (ui, "serve"), (micro_clip, "pretrain")):
        monkeypatch.setattr(module, name, start)

    def open_store(self: Any, tracking_uri: str, *args: Any, **kwargs: Any) -> None:
        raise Tripped(f"the command went on to open the MLflow store {tracking_uri}")

    monkeypatch.setattr(ray, "init", start_ray)
    monkeypatch.setattr(cluster, "start_ray", start_ray)  # also when another test left Ray running
    monkeypatch.setattr(runner, "start_ray", start_ray)
    if store:
        monkeypatch.setattr(Tracker, "__init__", open_store)


def in_process(argv: list[str], capsys: pytest.CaptureFixture[str], deadline_s: float) -> tuple[Any, str, str]:
    def expire(signum: int, frame: Any) -> None:
        raise Tripped(f"still running after {deadline_s:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, deadline_s)
    try:
        code: Any = main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    except Tripped as tripped:
        code = f"not refused: {tripped}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def in_subprocess(argv: list[str], cwd: Path, timeout_s: float) -> tuple[Any, str, str]:
    script = Path(sys.executable).with_name("dor-bench")  # the venv's console script
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "orchestrator.cli"]

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    try:
        done = subprocess.run(
            [*command, *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout_s, preexec_fn=cap_memory
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"dor-bench {' '.join(argv)} still running after {timeout_s:g} s")
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_with_a_message_and_nothing_written(
    case: Case, request, tmp_path, data_root, monkeypatch, capsys
):
    for name in ("DOR_BENCH_DATA", "RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    set_tripwires(monkeypatch, store=not case.real_tracker)
    folder = tmp_path / "case"
    folder.mkdir()

    def fill(text: str) -> str:
        return text.replace("{d}", str(folder)).replace("{data}", str(data_root))

    for name, content in case.files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else fill(content).encode())
    if case.store:
        shutil.copy(request.getfixturevalue("mlflow_store"), folder / "mlflow.db")
    monkeypatch.chdir(folder)
    before = snapshot(tmp_path, data_root)

    argv = [fill(a) for a in case.argv]
    if case.subprocess:
        code, out, err = in_subprocess(argv, folder, case.deadline_s)
    else:
        code, out, err = in_process(argv, capsys, case.deadline_s)
    shown = out + err

    assert "Traceback" not in shown, shown
    assert code == case.code, f"exit {code}, expected {case.code}:\n{shown}"
    missing = [p for p in (*case.expect, *([HOW] if case.hint else [])) if not re.search(p, shown)]
    assert not missing, f"the message lacks {missing}:\n{shown}"
    assert snapshot(tmp_path, data_root) == before, "the command wrote files"
    if case.store:  # still no runs in the store it was pointed at
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
        assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_the_table_covers_every_command():
    commands = {c.values[0].argv[0] for c in CASES}
    assert commands == set("validate run trial tune report data eval replay ui server micro-clip".split())
    assert len(CASES) >= 45 and len({c.id for c in CASES}) == len(CASES)
