"""Every translation of a spec (orchestrator/translate/) as a round trip: what goes out comes back
the same, so MLflow params, trial commands and sweep configs never disagree about a trial."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from orchestrator.cli import build_parser
from orchestrator.translate.flags import flags_from_spec, spec_from_flags
from orchestrator.translate.params import params_from_spec, spec_from_params
from orchestrator.translate.sweeps import spec_from_tune
from workers.errors import DorBenchError
from workers.identity import normalise
from workers.spec import DorSpec, TrialSpec, ValidationSpec

WORDS = str(Path(__file__).parents[2] / "examples" / "words.txt")
SPECS = [
    TrialSpec(
        method="coop",
        dataset="shapes",
        model="micro-clip",
        pretrained="shapes",
        shots=4,
        seed=3,
        method_options={"epochs": 200, "lr": 0.05, "n_ctx": 4, "ctx_init": "a photo of a", "augment_views": 8},
        dor=DorSpec(lam=8, outliers_per_step=15, pool_size=300, pool_strategy="far", exclude="all", vocabulary=WORDS),
    ),
    TrialSpec(method="zeroshot", dataset="oxford_pets", root="/data/coop", model="ViT-B-16", pretrained="openai"),
    TrialSpec(
        method="kgcoop",
        dataset="dtd",
        root="/data",
        model="tiny-clip",
        pretrained=None,
        shots=2,
        subsample="all",
        ece_bins=15,
        test_per_class=5,
        method_options={"lr": 1e-05, "ctx_init": "yes", "kg_weight": 0.5},
        dor=DorSpec(lam=0.125),
    ),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.method)
def test_trial_flags_round_trip(spec):
    spec = normalise(spec)
    args = build_parser().parse_args(["trial", *flags_from_spec(spec)])
    assert spec_from_flags(args) == spec
    # and through a shell: the command a sweep prints
    command = " ".join(shlex.quote(p) for p in ["dor-bench", "trial", *flags_from_spec(spec)])
    assert spec_from_flags(build_parser().parse_args(shlex.split(command)[1:])).key() == spec.key()


@pytest.mark.parametrize("spec", [*SPECS, SPECS[0].model_copy(update={"validation": ValidationSpec(leaky=True)})])
def test_mlflow_params_round_trip(spec):
    spec = normalise(spec)
    params = params_from_spec(spec)
    assert all(isinstance(v, str) for v in params.values())
    assert spec_from_params(params) == spec and spec_from_params(params).key() == spec.key()


def test_specs_without_flags_are_refused():
    with pytest.raises(DorBenchError, match="cannot be written as `dor-bench trial` flags"):
        flags_from_spec(SPECS[1].model_copy(update={"targets": ["imagenetv2"]}))


def test_a_tune_config_lands_in_the_spec():
    base = normalise(SPECS[0].model_copy(update={"validation": ValidationSpec()})).model_dump(mode="json")
    spec = spec_from_tune(base, {"lam": 2, "outliers_per_step": 7, "options.lr": 0.01}, seed=2)
    assert (spec.dor.lam, spec.dor.outliers_per_step, spec.method_options["lr"], spec.seed) == (2.0, 7, 0.01, 2)
    assert spec.dor.exclude == "all" and spec.validation == ValidationSpec()
