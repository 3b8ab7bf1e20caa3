"""dor.vocabulary (a built-in name or a word-list file) and dor.resample (step, epoch, never) in
the settings files, the trial flags, the run key and the ablation examples."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from orchestrator.benchmark.planning import plan, validate_file
from orchestrator.cli import build_parser, main
from orchestrator.settings.benchmark import load_benchmark
from orchestrator.settings.fields import BenchmarkError
from orchestrator.settings.sweep import parse_sweep
from orchestrator.translate.flags import flags_from_spec, spec_from_flags
from orchestrator.translate.params import params_from_spec, spec_from_params
from workers.errors import DorBenchError
from workers.identity import normalise
from workers.spec import DOR_DEFAULTS, LATER_DOR_DEFAULTS, DorSpec, TrialSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: The run keys of examples/demo.yaml's CoOp + DOR trials (seeds 1-3) as a spec without the DOR
#: fields added later (dor.resample, dor.image_source) gives them: recorded before they existed
#: (commit b8bf2ab, protocol 3: a180ff95b903e7be, e7d01b805bcc8841, 42881619068a482b), here
#: under protocol 4, which re-keys every trial on purpose.
DEMO_DOR_KEYS = ["32a1ca9d3bd9676a", "afb7d48f363ccdf7", "15f96569d6a7487c"]


def spec(**dor) -> TrialSpec:
    return TrialSpec(
        method="coop",
        dataset="shapes",
        model="micro-clip",
        pretrained="shapes",
        shots=4,
        method_options={"lr": 0.05},
        dor=DorSpec(lam=8.0, **dor),
    )


# --------------------------------------------------------------------------- the run key


def test_the_default_resample_keeps_every_earlier_run_key():
    default = spec()
    data = default.model_dump(mode="json", exclude={"validation"})  # unset, so never in a key
    for name in LATER_DOR_DEFAULTS:  # fields that did not exist when the earlier keys were recorded
        del data["dor"][name]
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    assert default.canonical_json() == text
    # protocol 3 recorded bf79b9c8bee44a7f
    assert default.key() == hashlib.sha256(text.encode()).hexdigest()[:16] == "9774b036470add79"
    assert spec(resample="step").key() == default.key()
    epoch, never = spec(resample="epoch"), spec(resample="never")
    assert epoch.canonical_dict()["dor"]["resample"] == "epoch"
    assert len({default.key(), epoch.key(), never.key()}) == 3


def test_later_dor_defaults_are_dorspec_defaults():
    assert LATER_DOR_DEFAULTS["resample"] == "step"
    assert all(DOR_DEFAULTS[name] == value for name, value in LATER_DOR_DEFAULTS.items())


def test_a_builtin_vocabulary_has_one_name():
    assert spec(vocabulary="CLIP-BPE").dor.vocabulary == "clip-bpe"
    assert spec(vocabulary="CLIP-BPE").key() == spec(vocabulary="clip-bpe").key() != spec().key()


@pytest.mark.parametrize("dor", [{"resample": "epoch", "vocabulary": "clip-bpe"}, {"resample": "never"}, {}])
def test_resample_and_vocabulary_round_trip_through_flags_and_params(dor):
    trial = normalise(spec(**dor))
    assert spec_from_flags(build_parser().parse_args(["trial", *flags_from_spec(trial)])) == trial
    assert spec_from_params(params_from_spec(trial)) == trial
    assert ("dor.resample" in params_from_spec(trial)) == ("resample" in dor)


# --------------------------------------------------------------------------- settings and flags


def bench(tmp_path: Path, dor: dict) -> Path:
    path = tmp_path / "bench.yaml"
    methods = [{"name": "coop", "dor": [True]}]
    model = {"arch": "tiny-clip", "pretrained": "none"}  # no tag to look up in open_clip
    path.write_text(
        yaml.safe_dump({"name": "b", "model": model, "datasets": ["shapes"], "methods": methods, "dor": dor})
    )
    (tmp_path / "words.txt").write_text("apple\npear\n")
    return path


def test_an_unknown_vocabulary_is_named_with_the_choices(tmp_path):
    with pytest.raises(BenchmarkError) as info:
        load_benchmark(bench(tmp_path, {"vocabulary": ["wordnet", "clip-bep"], "resample": "epoc"}))
    resample, vocabulary = sorted(info.value.problems)
    assert vocabulary.startswith("dor.vocabulary[1]: unknown vocabulary ")
    assert (
        "Did you mean 'clip-bpe'?" in vocabulary and "Use one of clip-bpe, wordnet, or a UTF-8 text file" in vocabulary
    )
    assert resample.startswith("dor.resample: must be one of 'step', 'epoch' or 'never', not 'epoc'")


def test_vocabulary_names_are_not_paths_and_files_are(tmp_path):
    path = bench(tmp_path, {"vocabulary": ["clip-bpe", "words.txt"]})
    assert load_benchmark(path).dor.vocabulary == ["clip-bpe", str(tmp_path / "words.txt")]
    for setting, expected in (
        ("dor.vocabulary=WordNet", ["WordNet"]),  # a name on the command line is no path either
        (f"dor.vocabulary=[clip-bpe, {tmp_path / 'words.txt'}]", ["clip-bpe", str(tmp_path / "words.txt")]),
    ):
        assert load_benchmark(path, [setting]).dor.vocabulary == expected
    trials = plan(load_benchmark(path, ["dor.resample=[step, never]", "seeds=[1]"]))
    assert [t.name for t in trials] == [
        "coop/shapes/seed1/dor-lam8/vocab-clip-bpe/resample-step",
        "coop/shapes/seed1/dor-lam8/vocab-clip-bpe/resample-never",
        "coop/shapes/seed1/dor-lam8/vocab-words/resample-step",
        "coop/shapes/seed1/dor-lam8/vocab-words/resample-never",
    ]
    assert len({t.run_key for t in trials}) == 4


def test_a_sweep_fixes_one_vocabulary_and_one_resampling():
    sweep = yaml.safe_load((EXAMPLES / "sweep-tiny.yaml").read_text())
    sweep["dor"] = {"vocabulary": "clip-bpe", "resample": "never"}
    assert (parse_sweep(sweep).fixed_dor.vocabulary, parse_sweep(sweep).fixed_dor.resample) == ("clip-bpe", "never")
    sweep["dor"] = {"vocabulary": ["clip-bpe", "wordnet"], "resample": ["step", "epoch"]}
    with pytest.raises(BenchmarkError) as info:
        parse_sweep(sweep)
    assert sorted(p.split(":")[0] for p in info.value.problems) == ["dor.resample", "dor.vocabulary"]
    assert all("compare several in a benchmark file" in p for p in info.value.problems)


def test_trial_flags_refuse_an_unknown_vocabulary_before_the_trial(capsys):
    args = ["trial", "--method", "coop", "--model", "tiny-clip", "--pretrained", "none", "--dor-lambda", "8"]
    with pytest.raises(DorBenchError, match=r"--dor-vocabulary: unknown vocabulary 'wordnot'.*Did you mean 'wordnet'"):
        spec_from_flags(build_parser().parse_args([*args, "--dor-vocabulary", "wordnot"]))
    parsed = spec_from_flags(
        build_parser().parse_args([*args, "--dor-vocabulary", "clip-bpe", "--dor-resample", "epoch"])
    )
    assert (parsed.dor.vocabulary, parsed.dor.resample) == ("clip-bpe", "epoch")
    assert main(["ls", "vocabularies"]) == 0 and capsys.readouterr().out.split() == ["clip-bpe", "wordnet"]


# --------------------------------------------------------------------------- the ablation examples


@pytest.mark.parametrize(
    ("file", "field", "values"),
    [
        ("ablation-vocabulary.yaml", "vocabulary", ["wordnet", "clip-bpe", str(EXAMPLES / "words.txt")]),
        ("ablation-resample.yaml", "resample", ["step", "epoch", "never"]),
    ],
)
def test_ablation_examples_plan_one_trial_per_setting(file, field, values):
    bench, trials, text = validate_file(EXAMPLES / file)
    assert len(trials) == len({t.run_key for t in trials}) == 15  # 3 seeds x (zeroshot, CoOp, 3 DOR settings)
    dor = [t for t in trials if t.spec.dor is not None]
    assert len(dor) == 9 and all(t.spec.method == "coop" and t.spec.dor.lam == 8.0 for t in dor)
    for seed, demo_key in zip((1, 2, 3), DEMO_DOR_KEYS):
        arms = {getattr(t.spec.dor, field): t for t in dor if t.spec.seed == seed}
        assert list(arms) == values
        # the first arm is the default: the demo's CoOp + DOR trial, with its recorded run key
        assert arms[values[0]].run_key == demo_key
    assert "15 trials = 1 dataset x 3 seeds x (zeroshot 1 + coop 4 (DOR off + 3 DOR settings))" in text


def test_visual_dor_example_plans_image_outliers_and_an_absent_source_is_refused_at_the_door(tmp_path, capsys):
    bench, trials, text = validate_file(EXAMPLES / "visual-dor.yaml")
    dor = [t for t in trials if t.spec.dor is not None]
    assert len(trials) == 21 and len(dor) == 12
    assert {(t.spec.method, t.spec.dor.image_source, t.spec.dor.lam) for t in dor} == {
        (m, "shapes-outliers", lam) for m in ("clip_adapter", "vpt") for lam in (1.0, 10.0)
    }
    assert "images from imagenet (built-in data: shapes-outliers)" in text and "words from" not in text
    # ImageNet as the source needs the data root: refused before anything is scheduled
    store = tmp_path / "mlflow.db"
    args = [
        "run",
        str(EXAMPLES / "visual-dor.yaml"),
        "dor.image_source=imagenet",
        "--tracking-uri",
        f"sqlite:///{store}",
    ]
    assert main([*args, "--checkpoint-dir", str(tmp_path / "ck"), "--report-dir", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err
    assert "nothing was scheduled" in err and "dor.image_source: Dataset 'imagenet' needs a data root" in err
    assert not store.exists()
