"""The benchmark file: every problem reported at once with its YAML path, and the planned grid."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.benchmark.planning import describe_plan, grid_size, plan, validate_file
from orchestrator.cli import main
from orchestrator.settings.benchmark import Benchmark, load_benchmark, parse_benchmark
from orchestrator.settings.fields import BenchmarkError
from workers.errors import DorBenchError, NotFoundError

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "examples" / "tiny.yaml"


def write(tmp_path: Path, text: str, name: str = "bench.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(BenchmarkError) as info:
        load_benchmark(path)
    assert str(path) in info.value.message
    return info.value.problems


def the_problem(problems: list[str], path: str) -> str:
    found = [p for p in problems if p.startswith(f"{path}: ")]
    assert found, f"no problem at {path} in {problems}"
    return found[0]


# --------------------------------------------------------------------------- bad files


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = write(
        tmp_path,
        """\
        name: x
        datasets: [shapes]
        methods:
          - zeroshot
        seeds: [1, 2
        shots: 4
        """,
    )
    with pytest.raises(DorBenchError) as info:
        load_benchmark(path)
    message = info.value.message
    assert not isinstance(info.value, BenchmarkError)
    assert str(path) in message and "not valid YAML" in message
    assert "line 6, column" in message and "(from line 5)" in message


def test_duplicate_key_is_a_yaml_error(tmp_path):
    path = write(tmp_path, "name: x\ndatasets: [shapes]\nmethods: [zeroshot]\nname: y\n")
    with pytest.raises(DorBenchError, match=r"found the key 'name' twice \(first on line 1\)"):
        load_benchmark(path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(NotFoundError, match="nope.yaml"):
        load_benchmark(tmp_path / "nope.yaml")


def test_empty_file(tmp_path):
    problems = problems_of(write(tmp_path, ""))
    assert "empty" in problems[0]


def test_unknown_method_did_you_mean_with_path(tmp_path):
    path = write(
        tmp_path,
        """\
        name: x
        datasets: [shapes]
        methods:
          - zeroshot
          - cop
        """,
    )
    problem = the_problem(problems_of(path), "methods[1].name")
    assert "unknown method 'cop'. Did you mean 'coop'?" in problem
    assert "[line 5]" in problem


def test_negative_lambda(tmp_path):
    path = write(tmp_path, "name: x\ndatasets: [shapes]\nmethods: [coop]\ndor: {lam: -1}\n")
    assert "must be >= 0" in the_problem(problems_of(path), "dor.lam")
    path = write(tmp_path, "name: x\ndatasets: [shapes]\nmethods: [coop]\ndor: {lam: [8, -2]}\n")
    assert "must be >= 0, not -2" in the_problem(problems_of(path), "dor.lam[1]")


def test_empty_seed_list(tmp_path):
    path = write(tmp_path, "name: x\ndatasets: [shapes]\nmethods: [coop]\nseeds: []\n")
    assert "must not be empty" in the_problem(problems_of(path), "seeds")


def test_missing_data_root_for_a_real_dataset(tmp_path):
    path = write(tmp_path, "name: x\ndatasets: [shapes, oxford_pets]\nmethods: [zeroshot]\n")
    problem = the_problem(problems_of(path), "data_root")
    assert "oxford_pets" in problem and "shapes" not in problem
    # a target dataset needs it too; built-in data alone never does
    path = write(tmp_path, "name: x\ndatasets: [shapes]\ntargets: [imagenet_r]\nmethods: [zeroshot]\n")
    assert "imagenet_r" in the_problem(problems_of(path), "data_root")
    load_benchmark(write(tmp_path, "name: x\ndatasets: [demo]\nmethods: [zeroshot]\n"))


def test_unknown_method_option_did_you_mean(tmp_path):
    path = write(
        tmp_path,
        """\
        name: x
        datasets: [shapes]
        methods:
          - name: coop
            options: {epochz: 3, n_ctx: [4, 2.5]}
          - name: zeroshot
            options: {epochs: 3}
        """,
    )
    problems = problems_of(path)
    assert "unknown option 'epochz' for coop. Did you mean 'epochs'?" in the_problem(
        problems, "methods[0].options.epochz"
    )
    assert "must be an integer" in the_problem(problems, "methods[0].options.n_ctx[1]")
    assert "zeroshot takes: precision." in the_problem(problems, "methods[1].options.epochs")


def test_zeroshot_never_gets_dor(tmp_path):
    path = write(tmp_path, "name: x\ndatasets: [shapes]\nmethods: [{name: zeroshot, dor: true}]\n")
    assert "does not train" in the_problem(problems_of(path), "methods[0].dor")


def test_unknown_settings_and_names_suggest_the_right_ones(tmp_path):
    path = write(
        tmp_path,
        """\
        name: x
        datasets: [shapes, oxford_pet]
        data_root: /data
        model: {arch: ViT-B-61}
        methods: [coop]
        dor: {pool_strategy: [near, farr], pool_siz: 3}
        """,
    )
    problems = problems_of(path)
    assert "Did you mean 'oxford_pets'?" in the_problem(problems, "datasets[1]")
    assert "Did you mean 'ViT-B-16'?" in the_problem(problems, "model.arch")
    assert "Did you mean 'far'?" in the_problem(problems, "dor.pool_strategy[1]")
    assert "unknown setting 'pool_siz'. Did you mean 'pool_size'?" in the_problem(problems, "dor.pool_siz")


def test_several_problems_reported_together(tmp_path):
    path = write(
        tmp_path,
        """\
        name: x
        datasets: [oxford_pets, caltec101]
        seeds: []
        shots: [0, 16]
        methods:
          - zeroshot
          - cop
          - name: coop
            options: {epochz: 3}
        dor: {lam: -1}
        resources: {gpus: -1, cpus: 0}
        """,
    )
    problems = problems_of(path)
    for where in [
        "data_root",
        "datasets[1]",
        "seeds",
        "shots[0]",
        "methods[1].name",
        "methods[2].options.epochz",
        "dor.lam",
        "resources.gpus",
        "resources.cpus",
    ]:
        the_problem(problems, where)
    assert len(problems) == 9
    lines = [int(p.rsplit("[line ", 1)[1].rstrip("]")) for p in problems]
    assert lines == sorted(lines)  # in file order


def test_testing_entries_must_name_planned_trials(tmp_path):
    text = TINY.read_text() + "testing:\n  fail_trials: [coop/shapes/seed1, coop/shapes/sed2]\n"
    (tmp_path / "words.txt").write_text((TINY.parent / "words.txt").read_text())
    bench = load_benchmark(write(tmp_path, text))
    with pytest.raises(BenchmarkError) as info:
        plan(bench)
    (problem,) = info.value.problems
    assert problem.startswith("testing.fail_trials[1]:") and "Did you mean 'coop/shapes/seed2'?" in problem


# --------------------------------------------------------------------------- plans


def test_tiny_plan():
    bench = load_benchmark(TINY)
    trials = plan(bench)
    assert len(trials) == 6  # 2 seeds x (zeroshot 1 + coop 2)
    assert len({t.name for t in trials}) == 6
    assert len({t.run_key for t in trials}) == 6
    assert all(t.run_key == t.spec.key() for t in trials)
    assert [t.run_key for t in plan(load_benchmark(TINY))] == [t.run_key for t in trials]
    for t in trials:
        assert t.spec.model == "tiny-clip" and t.spec.pretrained is None and t.spec.root is None
        assert t.spec.shots == 2 and t.spec.test_per_class == 5
        if t.spec.method == "zeroshot":
            assert t.spec.dor is None and t.spec.method_options == {}
        else:
            assert t.spec.method_options == {"epochs": 2, "batch_size": 16}
    dor_on = [t for t in trials if t.spec.dor is not None]
    assert len(dor_on) == 2
    for t in dor_on:
        assert t.spec.method == "coop" and t.name.endswith("/dor-lam8")
        assert t.spec.dor.lam == 8 and t.spec.dor.outliers_per_step == 4
        vocabulary = Path(t.spec.dor.vocabulary)
        assert vocabulary.is_absolute() and vocabulary == TINY.parent / "words.txt"
    assert [t.name for t in trials[:3]] == ["zeroshot/shapes/seed1", "coop/shapes/seed1", "coop/shapes/seed1/dor-lam8"]
    assert "6 trials = 1 dataset x 2 seeds x (zeroshot 1 + coop 2 (DOR off/on))" in describe_plan(bench, trials)


def grid(tmp_path: Path, extra: str, methods: str = "[zeroshot, coop]") -> list:
    text = f"name: g\ndatasets: [shapes]\nseeds: [1, 2]\nmethods: {methods}\n{extra}"
    return plan(load_benchmark(write(tmp_path, text)))


def test_list_valued_options_and_dor_axes_expand_the_grid(tmp_path):
    base = grid(tmp_path, "")
    assert len(base) == 2 * (1 + 2)
    options = grid(tmp_path, "", "[zeroshot, {name: coop, options: {n_ctx: [4, 8, 16], epochs: 5}}]")
    assert len(options) == 2 * (1 + 3 * 2)
    assert {t.name for t in options if t.spec.seed == 1 and t.spec.dor is None} == {
        "zeroshot/shapes/seed1",
        "coop/shapes/seed1/n_ctx=4",
        "coop/shapes/seed1/n_ctx=8",
        "coop/shapes/seed1/n_ctx=16",
    }
    lams = grid(tmp_path, "dor: {lam: [1, 4, 8]}")
    assert len(lams) == 2 * (1 + 1 + 3)
    both = grid(
        tmp_path,
        "dor: {lam: [1, 4], pool_size: [100, 1000], pool_strategy: [near, far]}",
        "[{name: coop, options: {n_ctx: [4, 16]}, dor: [false, true]}]",
    )
    assert len(both) == 2 * 2 * (1 + 2 * 2 * 2)
    assert len({t.name for t in both}) == len(both)
    assert any(t.name.endswith("/dor-lam4/K1000/far") for t in both)


def test_equal_grid_points_are_run_once_and_reported(tmp_path):
    # lam null is CoOp's default 8; n_ctx 16 is its default: both pairs are the same trial
    trials = grid(tmp_path, "dor: {lam: [null, 8]}", "[{name: coop, options: {n_ctx: [16, 16]}}]")
    assert len(trials) == 2 * 2
    bench = load_benchmark(tmp_path / "bench.yaml")
    text = describe_plan(bench, trials)
    assert "grid points" in text and "duplicates" in text


def test_scalar_and_list_forms_and_option_types_give_the_same_keys(tmp_path):
    a = grid(tmp_path, "shots: 16\ndor: {lam: 2}\n", "[{name: coop, options: {lr: 1, epochs: 5.0}}]")
    b = grid(tmp_path, "shots: [16]\ndor: {lam: [2.0]}\n", "[{name: coop, options: {lr: 1.0, epochs: 5}}]")
    assert [t.run_key for t in a] == [t.run_key for t in b]
    c = grid(tmp_path, "", "[{name: coop, options: {lr: 2e-3}}]")  # YAML 1.1 reads 2e-3 as a string
    assert all(t.spec.method_options == {} for t in c)  # ... dor-bench reads it as the default 0.002


def test_benchmarks_yaml_is_the_papers_grid(monkeypatch):
    monkeypatch.setenv("DOR_BENCH_DATA", "/data")  # the tracked file leaves the data root to the user
    bench, trials, text = validate_file(REPO / "benchmarks.yaml")
    assert len(trials) == 11 * 3 * (1 + 4 * 2) == 297
    assert len({t.name for t in trials}) == len({t.run_key for t in trials}) == 297
    assert bench.model.arch == "ViT-B-16" and bench.model.pretrained == "openai"
    assert bench.resources.gpus == 1 and bench.resources.cpus == 4  # 3 image loader workers a trial
    lams = {(t.spec.method, t.spec.dor.lam) for t in trials if t.spec.dor is not None}
    assert lams == {("coop", 8), ("cocoop", 2), ("kgcoop", 2), ("maple", 2)}
    assert all(t.spec.method_options == {} for t in trials)  # the published defaults
    assert text.startswith(
        "Benchmark 'dor-base2new': 297 trials = 11 datasets x 3 seeds x "
        "(zeroshot 1 + 4 methods (coop, cocoop, kgcoop, maple) x 2 (DOR off/on))"
    )


def test_a_grid_above_the_limit_is_refused_before_it_is_built(tmp_path, capsys):
    path = write(
        tmp_path,
        """\
        name: big
        datasets: [shapes, shapes-split1]
        seeds: [1, 2, 3]
        methods:
          - zeroshot
          - {name: coop, options: {lr: [0.1, 0.2], n_ctx: [1, 2, 4]}}
        dor: {lam: [1, 2]}
        """,
    )
    bench = load_benchmark(path)
    assert grid_size(bench) == len(plan(bench)) == 6 * (1 + 6 * (1 + 2)) == 114
    with pytest.raises(BenchmarkError, match=r"the grid has 114 trials \(6 dataset, shots and seed combinations x 19 "):
        plan(bench, max_trials=100)
    assert main(["validate", str(path), "--max-trials", "100"]) == 2
    assert "or pass --max-trials 114 to plan it anyway" in capsys.readouterr().err
    assert main(["validate", str(path), "--max-trials", "114"]) == 0


def test_domain_shift_example_keeps_its_targets():
    bench, trials, text = validate_file(REPO / "examples" / "domain-shift.yaml", ["data_root=/data"])
    assert bench.subsample == "all" and bench.datasets == ["imagenet"]
    assert bench.targets == ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
    assert len(trials) == 3 * (1 + 4 * 2)
    assert all(t.targets == tuple(bench.targets) and t.spec.subsample == "all" for t in trials)


def test_demo_yaml_plans_nine_trials():
    bench, trials, text = validate_file(REPO / "examples" / "demo.yaml")
    assert len(trials) == 9
    assert bench.model.arch == "micro-clip" and bench.model.pretrained == "shapes"
    coop = [t for t in trials if t.spec.method == "coop"]
    # epochs 200 is CoOp's default, so it is not part of the spec (same run_key either way)
    assert all(
        t.spec.method_options
        == {"lr": 0.05, "n_ctx": 4, "ctx_init": "a photo of a", "augment_views": 8, "min_crop_scale": 1.0}
        and t.spec.shots == 4
        for t in coop
    )
    assert sorted(t.spec.dor.lam for t in coop if t.spec.dor) == [8, 8, 8]
    assert "9 trials = 1 dataset x 3 seeds x (zeroshot 1 + coop 2 (DOR off/on))" in text


def test_defaults_and_python_construction():
    bench = Benchmark(name="b", datasets=["demo"], methods=["coop"])
    assert bench.datasets == ["shapes"] and bench.seeds == [1, 2, 3] and bench.shots == [16]
    assert bench.model.arch == "ViT-B-16" and bench.model.pretrained == "openai"
    assert bench.tracking_uri is None and bench.retries == 2  # None: $MLFLOW_TRACKING_URI, else the default
    assert bench.methods[0].dor == [False, True]
    assert len(plan(bench)) == 3 * 2
    with pytest.raises(BenchmarkError):
        parse_benchmark({"name": "b", "datasets": ["shapes"], "methods": ["cop"]})


# --- command-line settings, the data root from the environment, --only -----------------------------


def test_command_line_settings_override_the_file_and_are_validated_like_it(capsys):
    tiny = str(REPO / "examples" / "tiny.yaml")
    bench, trials, _ = validate_file(tiny, ["seeds=[3]", "dor.lam=[4,8]", "shots=1"])
    assert bench.seeds == [3] and bench.shots == [1] and bench.dor.lam == [4.0, 8.0]
    assert sorted(t.spec.dor.lam for t in trials if t.spec.dor) == [4.0, 8.0] and len(trials) == 4
    assert main(["validate", tiny, "dor.lamm=4", "seeds=oops", "nokey"]) == 2
    err = capsys.readouterr().err
    assert "command-line setting 'nokey' is not KEY=VALUE" in err and "Traceback" not in err
    assert main(["validate", tiny, "dor.lamm=4", "seeds=oops"]) == 2
    err = capsys.readouterr().err
    assert "dor.lamm: unknown setting 'lamm'. Did you mean 'lam'?" in err
    assert "seeds: must be a valid integer" in err and err.count("[command line]") == 2


def test_data_root_from_the_command_line_or_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DOR_BENCH_DATA", raising=False)
    assert main(["validate", str(REPO / "benchmarks.yaml")]) == 2
    assert "DOR_BENCH_DATA" in capsys.readouterr().err
    monkeypatch.setenv("DOR_BENCH_DATA", str(tmp_path / "env-data"))
    bench, trials, _ = validate_file(REPO / "benchmarks.yaml")
    assert bench.data_root == str(tmp_path / "env-data") and len(trials) == 297
    monkeypatch.chdir(tmp_path)  # a command-line path is relative to the current folder
    bench, _, _ = validate_file(REPO / "benchmarks.yaml", ["data_root=flag-data"])
    assert bench.data_root == str(tmp_path / "flag-data")  # the flag wins over the environment


def test_only_selects_trials_by_method_dataset_and_seed():
    tiny = REPO / "examples" / "tiny.yaml"
    _, trials, text = validate_file(tiny, only=["method=coop", "seed=2"])
    assert sorted(t.name for t in trials) == ["coop/shapes/seed2", "coop/shapes/seed2/dor-lam8"]
    assert text.startswith("Benchmark 'tiny': 2 trials")
    with pytest.raises(DorBenchError, match="no planned trial has method kgcoop"):
        validate_file(tiny, only=["method=kgcoop"])
    with pytest.raises(DorBenchError, match="Did you mean 'seed'"):
        validate_file(tiny, only=["seeds=1"])


@pytest.mark.parametrize(
    "setting,message",
    [
        (["dor.outliers_per_step=50", "dor.pool_size=5"], "50 outliers per step cannot be drawn from a pool of 5"),
        (["seeds=[1,1]"], "seeds: lists 1 more than once"),
        (["seeds=[-1]"], "seeds[0]: must be >= 0"),
        (["seeds=[4294967296]"], "seeds[0]: must be less than 4294967296"),
        (["dor.lam=.inf"], "dor.lam: must be a finite number"),
        (["ece_bins=100000000"], "ece_bins: must be less than or equal to 1000"),
        (["name=../evil"], "name: '../evil' cannot be used"),
        (["methods=[{name: coop, options: {lr: .nan}}]"], "methods[0].options.lr: must be a finite number"),
        (["methods=[{name: coop, options: {batch_size: 0}}]"], "methods[0].options.batch_size: must be >= 1"),
    ],
)
def test_values_that_could_only_fail_later_are_refused_by_validate(setting, message, tmp_path, capsys):
    assert main(["validate", str(TINY), *setting]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_trial_flags_get_the_same_checks(capsys):
    base = ["trial", "--model", "tiny-clip", "--pretrained", "none", "--quiet", "--method", "coop"]
    assert main([*base, "--dor-lambda", "8", "--outliers-per-step", "50", "--pool-size", "5"]) == 2
    assert "50 outliers per step cannot be drawn from a pool of 5 words" in capsys.readouterr().err
    assert main([*base, "--batch-size", "0"]) == 2
    assert "batch_size must be >= 1, not 0" in capsys.readouterr().err


def test_a_method_reserves_its_own_resources_over_the_benchmarks(tmp_path):
    path = write(
        tmp_path,
        """
        name: res
        datasets: [shapes]
        seeds: [1]
        methods:
          - name: coop
            dor: [false]
          - name: maple
            dor: [false]
            resources: {memory_gb: 16, gpus: 0.5}
        resources: {cpus: 2, gpus: 0.25}
        """,
    )
    bench, trials, text = validate_file(path)
    reserved = {t.spec.method: t.resources for t in trials}
    assert (reserved["coop"].cpus, reserved["coop"].gpus, reserved["coop"].memory_gb) == (2, 0.25, None)
    assert (reserved["maple"].cpus, reserved["maple"].gpus, reserved["maple"].memory_gb) == (2, 0.5, 16)
    assert "resources   2 CPU, 0.25 GPU per trial; maple: 2 CPU, 0.5 GPU, 16 GB;" in text
    bad = write(tmp_path, path.read_text().replace("memory_gb: 16", "memory_gb: -1, disk: 3"), "bad.yaml")
    with pytest.raises(BenchmarkError) as raised:
        validate_file(bad)
    message = str(raised.value)
    assert "methods[1].resources.memory_gb: must be > 0, not -1" in message
    assert "methods[1].resources.disk: unknown setting 'disk'" in message


def test_ctx_init_takes_text_or_null_in_every_method_that_has_it(tmp_path):
    """``ctx_init: null`` (random context vectors) is what the n_ctx-too-long error suggests: every
    prompt method takes it; anything but text or null is refused at the door, not in the worker."""
    from workers.methods import METHODS

    having = [n for n in METHODS.names() if "ctx_init" in METHODS.get(n).defaults]
    assert {"coop", "kgcoop", "maple"} <= set(having)
    methods = "\n".join(f"  - {{name: {n}, options: {{ctx_init: null}}, dor: [false]}}" for n in having)
    path = write(tmp_path, f"name: c\ndatasets: [shapes]\nseeds: [1]\nmethods:\n{methods}\n")
    _, trials, _ = validate_file(path)
    assert {t.spec.method for t in trials} == set(having)
    bad = write(tmp_path, path.read_text().replace("ctx_init: null", "ctx_init: [a photo, {x: 1}]"), "bad.yaml")
    assert the_problem(problems_of(bad), "methods[0].options.ctx_init[1]").endswith("or null, not {'x': 1}  [line 5]")
