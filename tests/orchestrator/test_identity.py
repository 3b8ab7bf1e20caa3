"""One trial, one run key: ``dor-bench trial``, a benchmark file and a sweep describe the same
built-in trial in their own words and must give it the same identity (workers/identity.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from orchestrator.benchmark.planning import plan
from orchestrator.cli import build_parser
from orchestrator.settings.benchmark import load_benchmark
from orchestrator.settings.sweep import load_sweep
from orchestrator.translate.flags import spec_from_flags
from orchestrator.translate.sweeps import spec_from_sweep, spec_from_tune
from workers.identity import normalise
from workers.spec import DorSpec, TrialSpec

WORDS = str(Path(__file__).parents[2] / "examples" / "words.txt")


def test_the_same_builtin_trial_has_one_run_key_from_every_entry_point(tmp_path):
    # dor-bench trial: a --root it does not need, epochs at its default, DOR's weight from the method
    args = build_parser().parse_args(
        [
            "trial",
            "--method",
            "coop",
            "--dataset",
            "shapes",
            "--root",
            str(tmp_path),
            "--model",
            "tiny-clip",
            "--pretrained",
            "none",
            "--shots",
            "4",
            "--option",
            "n_ctx=4",
            "--option",
            "epochs=200",
            "--dor-lambda",
            "8",
            "--outliers-per-step",
            "4",
            "--dor-vocabulary",
            WORDS,
        ]
    )
    from_cli = spec_from_flags(args)

    # a benchmark file: a data_root for a real target-less grid, lam left to the method (CoOp: 8)
    bench = {
        "name": "same",
        "data_root": str(tmp_path),
        "datasets": ["shapes"],
        "shots": 4,
        "seeds": [1],
        "model": {"arch": "tiny-clip", "pretrained": "none"},
        "methods": [{"name": "coop", "options": {"n_ctx": 4}, "dor": [True]}],
        "dor": {"outliers_per_step": 4, "vocabulary": WORDS},
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench))
    (from_file,) = plan(load_benchmark(tmp_path / "bench.yaml"))

    # a sweep over lam: its trial for lam 8, seed 1, out of tuning mode
    sweep = {
        "name": "same-sweep",
        "model": {"arch": "tiny-clip", "pretrained": "none"},
        "dataset": "shapes",
        "shots": 4,
        "seeds": [1],
        "method": {"name": "coop", "options": {"n_ctx": 4, "dor_lambda": 8}},
        "dor": {"outliers_per_step": 4, "vocabulary": WORDS},
        "space": {"lam": [2, 8]},
        "objective": {"metric": "val/pseudo_new/ece", "mode": "min"},
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    base = spec_from_sweep(load_sweep(tmp_path / "sweep.yaml")).model_dump(mode="json")
    from_sweep = spec_from_tune(base, {"lam": 8.0}, seed=1).model_copy(update={"validation": None})

    assert from_cli.key() == from_file.run_key == from_sweep.key()
    assert from_cli.root is None and from_cli.method_options == {"n_ctx": 4}
    assert from_cli.dor.lam == 8.0


def test_normalise_is_idempotent_and_resolves_the_weight():
    spec = TrialSpec(
        method="kgcoop",
        dataset="shapes",
        root="/data",
        method_options={"dor_lambda": 3, "kg_weight": 8.0, "lr": 0.01},
        dor=DorSpec(),
    )
    once = normalise(spec)
    assert once.dor.lam == 3.0 and once.method_options == {"lr": 0.01} and once.root is None
    assert normalise(once) == once
    assert normalise(spec.model_copy(update={"method_options": {}})).dor.lam == 2.0  # KgCoOp's default


def test_an_option_written_as_an_integer_is_the_same_trial_as_its_float(tmp_path):
    bench = tmp_path / "b.yaml"
    bench.write_text(
        "name: b\ndatasets: [shapes]\nmodel: {arch: micro-clip}\nmethods: [{name: coop, options: {lr: 1}}]\n"
    )
    [planned] = [t for t in plan(load_benchmark(bench)) if t.spec.dor is None and t.spec.seed == 1]
    args = build_parser().parse_args(
        ["trial", "--model", "micro-clip", "--method", "coop", "--no-recipe", "--option", "lr=1"]
    )
    flagged = spec_from_flags(args)
    assert flagged.method_options["lr"] == 1.0 and type(flagged.method_options["lr"]) is float
    assert flagged.key() == planned.spec.key()
    kept = normalise(TrialSpec(method="coop", method_options={"lr": "fast"}))  # invalid: left for run_trial to refuse
    assert kept.method_options == {"lr": "fast"}
