"""`dor-bench tune` on a real local Ray Tune and a real MLflow sqlite store (tiny-clip, shapes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.settings.benchmark import parse_benchmark
from orchestrator.settings.sweep import parse_sweep
from orchestrator.sweep.state import StateCopies, repair
from orchestrator.sweep.trainable import FLOOR_PENALTY
from orchestrator.tracking import PARENT, SWEEP_STORAGE, TRIAL_STATUS, TUNE_TRIAL
from workers.errors import DorBenchError

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture()
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def write_sweep(folder: Path, **changes) -> Path:
    """examples/sweep-tiny.yaml with ``changes`` (top-level sections replaced), words beside it."""
    config = yaml.safe_load((EXAMPLES / "sweep-tiny.yaml").read_text())
    config.update(changes)
    (folder / "words.txt").write_text((EXAMPLES / "words.txt").read_text())
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def sweep_runs(uri: str, name: str) -> tuple[list, list]:
    """(parent runs, child runs) of the sweep's experiment."""
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    return ([r for r in runs if PARENT not in r.data.tags], [r for r in runs if PARENT in r.data.tags])


def tune_args(path: Path, tmp: Path) -> list[str]:
    return ["tune", str(path), "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--storage", str(tmp / "tune")]


def test_sweep_end_to_end_with_asha(tmp_path, capsys, local_ray):
    path = write_sweep(tmp_path)  # 3 lambdas x 2 B, 3 epochs, ASHA grace 1, reduction 2
    assert main(tune_args(path, tmp_path)) == 0
    out = capsys.readouterr().out
    parents, children = sweep_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "sweep-tiny")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 6 and len({c.data.tags[TUNE_TRIAL] for c in children}) == 6
    assert {c.data.tags[PARENT] for c in children} == {parents[0].info.run_id}
    assert {(float(c.data.params["tune.lam"]), int(c.data.params["tune.outliers_per_step"])) for c in children} == {
        (lam, b) for lam in (0, 2, 8) for b in (4, 16)
    }
    assert all("dor_bench.leaky" not in c.data.tags for c in [*parents, *children])

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    reports = {}
    for c in children:
        history = client.get_metric_history(c.info.run_id, "epoch/val/pseudo_new/ece")
        reports[c.data.tags[TUNE_TRIAL]] = len(history)
        assert [m.step for m in history] == list(range(1, len(history) + 1))
        assert c.data.metrics["reports"] == len(history)
        # streamed as Tune reported them: each row arrived before the run ended, at its own time
        assert max(m.timestamp for m in history) <= c.info.end_time
        assert len(history) == 1 or len({m.timestamp for m in history}) > 1
        # the objective is the last epoch's value, moved by the penalty when the floor was missed
        # (pseudo-base accuracy of a random tiny CLIP sits near the floor: which trials miss it
        # depends on the epoch ASHA stops them at)
        missed = c.data.metrics["floor_met"] != 1.0
        assert c.data.metrics["objective"] == pytest.approx(history[-1].value + FLOOR_PENALTY * missed)
        status = c.data.tags[TRIAL_STATUS]
        assert status == ("completed" if len(history) == 3 else "early-stopped")
    # ASHA: some trials stopped before max_t = 3 epochs, at least one ran to the end
    assert min(reports.values()) < 3 and max(reports.values()) == 3
    assert sum(n < 3 for n in reports.values()) >= 2

    completed = [c for c in children if c.data.tags[TRIAL_STATUS] == "completed"]
    best = min(
        completed,
        key=lambda c: (c.data.metrics["floor_met"] != 1.0, c.data.metrics["objective"], c.data.tags[TUNE_TRIAL]),
    )  # ties: the first trial
    assert parents[0].data.tags["dor_bench.best_trial"] == best.data.tags[TUNE_TRIAL]
    assert parents[0].data.metrics["best_objective"] == best.data.metrics["objective"]
    assert f"Best configuration (trial {best.data.tags[TUNE_TRIAL]})" in out
    assert f"| 1 | {best.data.tags[TUNE_TRIAL]} | completed |" in out
    lam = float(best.data.params["tune.lam"])
    assert f"--dor-lambda {lam:.4g}" in out

    report = tmp_path / "tune" / "sweep-tiny" / "report"
    assert {p.name for p in report.iterdir()} >= {
        "report.md",
        "objective_vs_lambda.png",
        "objective_vs_B.png",
        "best-benchmark.yaml",
    }
    fragment = yaml.safe_load((report / "best-benchmark.yaml").read_text())
    bench = parse_benchmark(fragment)
    assert bench.methods[0].name == "coop" and bench.seeds == [1, 2, 3]
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"objective_vs_lambda.png", "objective_vs_B.png", "report.md", "sweep.yaml", "sweep.txt"} <= artifacts


def test_driver_killed_mid_sweep_resumes_without_rerunning_finished_trials(tmp_path, capsys):
    common = {
        "space": {"lam": [0, 1, 4, 8]},
        "scheduler": {"asha": False},
        "search": {"algorithm": "grid", "concurrency": 1},
        "method": {"name": "coop", "options": {"epochs": 2, "batch_size": 16, "n_ctx": 4}},
    }
    path = write_sweep(tmp_path, testing={"exit_driver_after_trials": 2}, **common)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *tune_args(path, tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )  # its Ray reaper must not take pytest with it
    assert first.returncode == 75, first.stderr[-3000:]  # the driver died (os._exit) mid-sweep
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _, before = sweep_runs(uri, "sweep-tiny")
    assert len(before) == 2
    done = {c.data.tags[TUNE_TRIAL]: c.info.run_id for c in before}
    trial_dirs = {
        d.name.split("_")[2] + "_" + d.name.split("_")[3]: d
        for d in (tmp_path / "tune" / "sweep-tiny").glob("sweep_trial_*")
    }
    lines_before = {t: (trial_dirs[t] / "result.json").read_text() for t in done}
    # a driver killed while Tune rewrites its state leaves the file cut short (seen in CI): the
    # resume must use the last complete copy the sweep kept, not start the sweep over
    # or the search algorithm's (a pickle) half copied into the sweep's folder (also seen in CI)
    (state,) = (tmp_path / "tune" / "sweep-tiny").glob("experiment_state-*.json")
    state.write_bytes(b"")
    (searcher,) = (tmp_path / "tune" / "sweep-tiny").glob("basic-variant-state-*.json")
    searcher.write_bytes(searcher.read_bytes()[: searcher.stat().st_size // 2])

    path = write_sweep(tmp_path, **common)  # the same sweep without the fault injection
    restarted = time.time() * 1000
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(tune_args(path, tmp_path)) == 0
    finally:
        ray.shutdown()
    err = capsys.readouterr().err
    assert "resuming the sweep saved in" in err and f"{state.name} was cut short" in err
    assert f"{searcher.name} was cut short" in err
    parents, after = sweep_runs(uri, "sweep-tiny")
    assert len(parents) == 1  # the same parent run, reopened
    assert parents[0].data.tags[SWEEP_STORAGE] == str(tmp_path / "tune" / "sweep-tiny")
    ids = [c.data.tags[TUNE_TRIAL] for c in after]
    assert len(after) == 4 and len(set(ids)) == 4
    assert all(c.data.tags[TRIAL_STATUS] == "completed" and c.data.metrics["reports"] == 2 for c in after)
    for trial, run_id in done.items():  # finished trials: one record, from before, not re-run
        assert [c.info.run_id for c in after if c.data.tags[TUNE_TRIAL] == trial] == [run_id]
        assert (trial_dirs[trial] / "result.json").read_text() == lines_before[trial]
        assert len(lines_before[trial].splitlines()) == 2
    new = [c for c in after if c.data.tags[TUNE_TRIAL] not in done]
    assert len(new) == 2 and all(c.info.start_time >= restarted for c in new)
    assert {float(c.data.params["tune.lam"]) for c in after} == {0, 1, 4, 8}


def test_test_split_objective_needs_the_leaky_flag(tmp_path):
    config = yaml.safe_load((EXAMPLES / "sweep-tiny.yaml").read_text())
    config["objective"] = {"metric": "new/ece", "mode": "min"}
    with pytest.raises(Exception, match="never reads") as err:
        parse_sweep(config, base_dir=EXAMPLES)
    assert "leaky: true" in str(err.value)
    config["leaky"] = True
    assert parse_sweep(config, base_dir=EXAMPLES).leaky is True


REACHES = "space.outliers_per_step: reaches {} outliers per step, but the pool can be as small as {}"


@pytest.mark.parametrize(
    ("space", "dor", "message", "smallest"),
    [
        ({"pool_size": [8, 100], "outliers_per_step": [4, 16]}, {}, REACHES.format(16, 8), 8),
        ({"pool_size": {"uniform": [3, 50]}, "outliers_per_step": [4]}, {}, REACHES.format(4, 3), 3),
        # the fixed settings alone: the same check (and message) as a benchmark file's
        ({"lam": [1]}, {"pool_size": 5, "outliers_per_step": 6}, "dor.outliers_per_step: 6 outliers per step", 5),
    ],
)
def test_a_space_reaching_more_outliers_than_its_pool_is_refused(space, dor, message, smallest):
    config = yaml.safe_load((EXAMPLES / "sweep-tiny.yaml").read_text())
    config.update(space=space, dor={**config["dor"], **dor}, search={"algorithm": "random", "samples": 4})
    with pytest.raises(Exception) as err:
        parse_sweep(config, base_dir=EXAMPLES)
    assert message in str(err.value)
    config["space"] = {**space, "outliers_per_step": [smallest]} if "outliers_per_step" in space else space
    config["dor"]["outliers_per_step"] = min(config["dor"].get("outliers_per_step") or smallest, smallest)
    assert parse_sweep(config, base_dir=EXAMPLES).name == "sweep-tiny"


def test_a_sweep_above_the_trial_limit_is_refused_unless_asked(tmp_path, capsys):
    space = {"lam": list(range(200)), "options": {"lr": [0.001 * (i + 1) for i in range(100)]}}
    path = write_sweep(tmp_path, space=space)
    assert main(["validate", str(path)]) == 2
    assert "the sweep has 20,000 trials (grid search), more than 10,000" in capsys.readouterr().err
    assert main(["validate", str(path), "--max-trials", "20000"]) == 0
    out = capsys.readouterr().out
    assert "20000 trials" in out and "lam: 0, 1, 2, 3, 4, 5, 6, 7, ... (200 values)" in out


def test_best_command_reproduces_the_swept_settings():
    """The printed command parses back to the sweep's settings, and opts out of the micro-clip recipe
    (the sweep tuned from the method's defaults)."""
    import shlex
    from pathlib import Path

    from orchestrator.cli import build_parser
    from orchestrator.settings.sweep import load_sweep
    from orchestrator.sweep.summary import Row, best_command

    sweep = load_sweep(Path(__file__).parents[2] / "examples" / "sweep-tiny.yaml")
    row = Row("t1", {"lam": 2.0, "outliers_per_step": 16}, "completed", {"objective": 1.0})
    args = build_parser().parse_args(shlex.split(best_command(sweep, row))[1:])
    assert (args.model, args.pretrained, args.shots, args.dor_lambda, args.outliers_per_step) == (
        "tiny-clip",
        "none",
        4,
        2.0,
        16,
    )
    # every setting spelled out, nothing left to a recipe: the command rebuilds the swept trial exactly
    assert sorted(args.option) == ["batch_size=16", "epochs=3", "n_ctx=4"] and args.no_recipe
    from orchestrator.translate.flags import spec_from_flags
    from orchestrator.translate.sweeps import spec_from_sweep, spec_from_tune

    swept = spec_from_tune(spec_from_sweep(sweep).model_dump(mode="json"), row.config, 1)
    assert spec_from_flags(args) == swept.model_copy(update={"validation": None})
    micro = sweep.model_copy(
        update={"model": sweep.model.model_copy(update={"arch": "micro-clip", "pretrained": "shapes"})}
    )
    assert build_parser().parse_args(shlex.split(best_command(micro, row))[1:]).no_recipe


def test_best_fragment_keeps_every_fixed_dor_setting(tmp_path):
    """The best-configuration benchmark file loads back to the swept DOR settings, the fixed ones
    (exclude, image_source, vocabulary, resample, ...) included, not to DOR's defaults."""
    from orchestrator.benchmark.planning import validate_file
    from orchestrator.sweep.summary import Row, best_fragment
    from orchestrator.translate.sweeps import spec_from_sweep, spec_from_tune
    from workers.spec import DOR_DEFAULTS

    config = yaml.safe_load((EXAMPLES / "sweep-tiny.yaml").read_text())
    fixed = {
        "vocabulary": "words.txt",
        "resample": "epoch",
        "exclude": "all",
        "image_source": "shapes-outliers",
        "pool_size": 64,
        "pool_strategy": "far",
    }
    config["dor"] = fixed
    sweep = parse_sweep(config, base_dir=EXAMPLES)
    row = Row("t1", {"lam": 2.0, "outliers_per_step": 16}, "completed", {"objective": 1.0})
    path = tmp_path / "best-benchmark.yaml"
    path.write_text(best_fragment(sweep, row))

    benchmark, trials, _ = validate_file(path)
    swept = spec_from_tune(spec_from_sweep(sweep).model_dump(mode="json"), row.config, 1).dor
    assert swept is not None and benchmark.dor.specs() == [swept]
    assert [t.spec.dor for t in trials if t.spec.dor is not None and t.spec.seed == 1] == [swept]
    # each fixed setting is one a dropped field would have reverted
    assert all(getattr(swept, k) != DOR_DEFAULTS[k] for k in fixed)
    assert (swept.exclude, swept.image_source, swept.resample) == ("all", "shapes-outliers", "epoch")
    assert swept.vocabulary == str(EXAMPLES / "words.txt")


def test_demo_sweep_tunes_from_the_demo_recipe():
    """examples/sweep-demo.yaml validates, and its fixed CoOp options are the demo benchmark's."""
    from pathlib import Path

    from orchestrator.benchmark.planning import validate_file
    from orchestrator.settings.sweep import load_sweep

    examples = Path(__file__).parents[2] / "examples"
    sweep = load_sweep(examples / "sweep-demo.yaml")
    _, trials, _ = validate_file(examples / "demo.yaml")
    coop = next(t.spec for t in trials if t.spec.method == "coop")
    assert sweep.shots == coop.shots and sweep.model.arch == "micro-clip"
    assert {k: v for k, v in sweep.method.options.items() if k != "epochs"} == coop.method_options
    assert sweep.method.options["epochs"] == 200 and not sweep.leaky


def test_a_cut_short_state_file_puts_back_the_last_complete_set(tmp_path):
    """The set is taken from Tune's staging folder whole or not at all, and a resume that finds any
    file cut short puts back every file of it: an experiment state and a searcher state of
    different steps would not agree on which trials are running."""
    import pickle

    staging, folder = tmp_path / "staging", tmp_path / "sweep"
    staging.mkdir()
    folder.mkdir()
    state, searcher = "experiment_state-1.json", "basic-variant-state-1.json"  # the searcher's: a pickle
    copies = StateCopies(folder)
    copies.keep(staging)  # nothing saved yet: nothing kept
    assert repair(folder) == []
    (staging / state).write_text('{"trials": 2}')
    (staging / searcher).write_bytes(pickle.dumps({"live": {"trial-2"}}))
    copies.keep(staging)
    (staging / state).write_text('{"trials": 3}')
    (staging / searcher).write_bytes(pickle.dumps({"live": set()}))
    copies.keep(staging)
    (staging / state).write_text('{"tri')  # cut short while Tune wrote it: the set is not kept
    copies.keep(staging)

    (folder / state).write_text('{"trials": 4}')  # a later step's, copied whole
    (folder / searcher).write_bytes(pickle.dumps({"live": {"trial-4"}})[:-3])  # its pair, cut short
    assert repair(folder) == [searcher]
    assert (folder / state).read_text() == '{"trials": 3}'
    assert pickle.loads((folder / searcher).read_bytes()) == {"live": set()}
    assert repair(folder) == []  # readable files are left alone

    (folder / "experiment_state-2.json").write_bytes(b"")  # a later session's, never saved whole
    assert repair(folder) == ["experiment_state-2.json"]
    assert not (folder / "experiment_state-2.json").exists()

    elsewhere = tmp_path / "unkept"
    elsewhere.mkdir()
    (elsewhere / state).write_bytes(b"")
    with pytest.raises(DorBenchError, match=f"{state} cannot be read") as refused:
        repair(elsewhere)
    assert "--fresh" in refused.value.fix
