"""`dor-bench run` end to end on a real local Ray and a real MLflow sqlite store."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from orchestrator.cli import main
from orchestrator.tracking import RUN_KEY, TRIAL_NAME
from tests.helpers.grids import child_runs, run, write_benchmark


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_grid_end_to_end_then_resume_skips_everything(tmp_path, capsys):
    path = write_benchmark(tmp_path, name="e2e")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert run(path, uri, tmp_path) == 0
    out = capsys.readouterr()
    runs = child_runs(uri, "e2e")
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags[RUN_KEY] for r in runs}) == 6
    for r in runs:
        assert {"base/acc", "new/ece", "hm", "avg/ece"} <= set(r.data.metrics)
        assert r.data.params["dataset"] == "shapes"
    dor_runs = [r for r in runs if "dor" in r.data.tags[TRIAL_NAME]]
    assert len(dor_runs) == 2 and all("epoch/train/dor" in r.data.metrics for r in dor_runs)
    assert "| Dataset | Zero-shot CLIP base |" in out.out and "| CoOp+DOR HM |" in out.out
    shapes = next(line for line in out.out.splitlines() if line.startswith("| shapes |"))
    assert shapes.count("(2)") == 9 and "†" not in shapes  # 3 columns x base/new/HM, 2 seeds each
    assert {p.name for p in (tmp_path / "report").iterdir()} == {
        "results.parquet",
        "report.md",
        "report.tex",
        "tables.csv",
        "report.html",
    }
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(runs[0].info.run_id)}
    assert {
        "trial_spec.json",
        "result.json",
        "per_class.json",
        "prompt.pt",
        "outputs.npz",
        "reliability.png",
    } <= artifacts
    png = MlflowClient(uri).download_artifacts(runs[0].info.run_id, "reliability.png", str(tmp_path))
    with Image.open(png) as diagram:  # drawn by the worker: base and new side by side, 4 x 4 inches each
        assert (diagram.format, diagram.size) == ("PNG", (800, 400))
    left = {p.name: p for p in (tmp_path / "ckpt").iterdir()}  # checkpoints and kept files go once recorded
    assert set(left) <= {".outbox"} and not any(left[".outbox"].iterdir() if left else [])  # every write made
    assert_kept_files_travelled_with_the_result(uri, dor_runs[0], tmp_path)
    assert runs[0].info.artifact_uri.startswith((tmp_path / "mlruns").as_uri())  # beside mlflow.db
    # what MLflow's UI and a reader need: the experiment's kind, each trial's dataset, the parent's files
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("e2e")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    [dataset] = runs[0].inputs.dataset_inputs
    assert dataset.dataset.name == "shapes" and dataset.tags[0].value == "train" and len(dataset.dataset.digest) == 16
    digests = {r.data.tags[TRIAL_NAME].split("/")[2]: r.inputs.dataset_inputs[0].dataset.digest for r in runs}
    assert len(set(digests.values())) == 2  # one few-shot draw per seed, shared by the methods
    [parent] = [r for r in client.search_runs([experiment.experiment_id]) if RUN_KEY not in r.data.tags]
    files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"benchmark.yaml", "plan.txt", "report"} <= files
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {"report/report.md"}
    plan = Path(client.download_artifacts(parent.info.run_id, "plan.txt", str(tmp_path))).read_text()
    assert plan.startswith("Benchmark 'e2e': 6 trials")
    assert len(parent.data.tags["mlflow.source.git.commit"]) == 40

    # rescoring the kept outputs: 10 bins gives back every recorded metric, 15 bins changes the
    # binned ones (ECE, ACE, MCE, PIECE) and nothing else
    for bins in ("10", "15"):
        extra = ["--temperature", "--dac"] if bins == "10" else []
        assert main(["rescore", "--experiment", "e2e", "--tracking-uri", uri, "--ece-bins", bins, *extra]) == 0
    assert "rescored 6 of 6 finished trials with 15 ECE bins" in capsys.readouterr().err
    changed = set()
    for r in child_runs(uri, "e2e"):
        m = r.data.metrics
        recorded = {k: v for k, v in m.items() if "/" in k and not k.startswith(("epoch/", "rescored/", "posthoc/"))}
        assert {k: m[f"rescored/bins10/{k}"] for k in recorded} == pytest.approx(recorded, abs=1e-9)
        for k in recorded:
            if k.rsplit("/", 1)[1] in ("acc", "nll", "confidence", "n"):
                assert m[f"rescored/bins15/{k}"] == pytest.approx(m[k], abs=1e-9)
            elif m[f"rescored/bins15/{k}"] != pytest.approx(m[k], abs=1e-9):
                changed.add(k.rsplit("/", 1)[1])
        assert r.data.tags["dor_bench.rescored"] == "bins10,bins15"
        # temperature scaling, fitted on the base validation images: a temperature, the same accuracy
        assert m["posthoc/temperature/T"] > 0 and m["posthoc/temperature/base/acc"] == m["base/acc"]
        # DAC leaves base classes as they are (each is its own nearest base class)
        assert {k: m[f"posthoc/dac/{k}"] for k in recorded if k.startswith("base/")} == pytest.approx(
            {k: v for k, v in recorded.items() if k.startswith("base/")}, abs=1e-9
        )
        assert "posthoc/dac/new/ece" in m
    # (a random tiny CLIP is never confident: every sample sits in the lowest bin of both ECEs,
    # so ECE itself stays; ACE's equal-mass bins move)
    assert "ace" in changed and changed <= {"ece", "ace", "mce", "mce_weighted", "piece"}

    assert run(path, uri, tmp_path) == 0
    assert "6 of 6 trials already finished" in capsys.readouterr().err
    assert len(child_runs(uri, "e2e")) == 6

    # the plan against the store: a new seed on the command line is the only work left
    assert run(path, uri, tmp_path, "--dry-run", "seeds=[1,2,3]") == 0
    out = capsys.readouterr()
    actions = [line.split()[0] for line in out.out.splitlines()]
    assert actions.count("skip") == 6 and actions.count("run") == 3
    assert "9 trials: 3 to run, 0 to resume from checkpoints, 6 finished (skipped)" in out.err
    assert len(child_runs(uri, "e2e")) == 6


def assert_kept_files_travelled_with_the_result(uri: str, recorded, tmp_path: Path) -> None:
    """The trial's kept files reached its run as bytes sent with its result: the worker removed its
    folder before the driver recorded the run (the driver removes none), and the run holds exactly
    what the trial kept: the same prompt tensors and outputs as the same trial run here again (one
    thread, as in its Ray worker)."""
    import numpy as np
    import torch

    from workers.outputs import OUTPUTS_FILE, PROMPT_FILE
    from workers.trial import run_trial

    key = recorded.data.tags[RUN_KEY]
    assert not (tmp_path / "ckpt" / key).exists()  # the worker's own copy is gone
    client = MlflowClient(uri)
    got = Path(client.download_artifacts(recorded.info.run_id, "", str(tmp_path / "recorded")))
    assert "kept" not in json.loads((got / "per_class.json").read_text())["info"]  # nor named in the record
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = json.loads((got / "trial_spec.json").read_text())
        result = run_trial(spec, {"progress": False, "device": "cpu", "keep_dir": str(tmp_path / "again")})
    finally:
        torch.set_num_threads(threads)
    again = Path(result.info["kept"])
    assert {k: recorded.data.metrics[k] for k in result.metrics} == pytest.approx(result.metrics, abs=1e-9)
    prompt = torch.load(got / PROMPT_FILE, weights_only=True)
    want = torch.load(again / PROMPT_FILE, weights_only=True)
    assert prompt.keys() == want.keys() and all(torch.equal(prompt[k], want[k]) for k in want)
    assert (got / PROMPT_FILE).read_bytes() == (again / PROMPT_FILE).read_bytes()
    with np.load(got / OUTPUTS_FILE) as outputs, np.load(again / OUTPUTS_FILE) as expected:
        assert sorted(outputs.files) == sorted(expected.files) and len(expected.files) > 3
        assert all(np.array_equal(outputs[k], expected[k]) for k in expected.files)


def test_killed_worker_is_retried_without_duplicates(tmp_path, capsys):
    path = write_benchmark(tmp_path, name="kill", testing={"kill_worker": {"trial": "coop/shapes/seed1", "epoch": 1}})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert run(path, uri, tmp_path) == 0
    assert "worker died during 'coop/shapes/seed1'" in capsys.readouterr().err
    runs = child_runs(uri, "kill")
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
    killed = [r for r in runs if r.data.tags[TRIAL_NAME] == "coop/shapes/seed1"]
    assert len(killed) == 1 and killed[0].data.tags["dor_bench.attempts"] == "2"


def test_failing_trial_is_recorded_failed_and_the_rest_finish(tmp_path, capsys):
    path = write_benchmark(tmp_path, name="fail", testing={"fail_trials": ["coop/shapes/seed2"]})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert run(path, uri, tmp_path) == 1
    runs = child_runs(uri, "fail")
    status = {r.data.tags[TRIAL_NAME]: r.info.status for r in runs}
    assert status.pop("coop/shapes/seed2") == "FAILED"
    assert len(status) == 5 and set(status.values()) == {"FINISHED"}
    out = capsys.readouterr()
    assert "injected failure" in out.err
    assert "Failed and unfinished trials (1, not in the tables)" in out.out
    assert "| coop/shapes/seed2 |" in out.out and "(1/2)†" in out.out


def test_preflight_failure_schedules_nothing(tmp_path, capsys):
    config = {
        "name": "pre",
        "data_root": str(tmp_path / "no-such-data"),
        "datasets": ["oxford_pets"],
        "model": {"arch": "tiny-clip", "pretrained": "none"},
        "seeds": [1],
        "methods": ["zeroshot"],
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert run(path, uri, tmp_path) == 2
    err = capsys.readouterr().err
    assert "Preflight" in err and "no-such-data" in err
    assert not (tmp_path / "mlflow.db").exists()


def legacy_key(spec) -> str:
    """The run key protocol 1 gave this trial: its spec had no ``protocol`` nor ``dor.exclude``."""
    import hashlib
    import json

    data = spec.canonical_dict()
    del data["protocol"]
    if data["dor"]:
        del data["dor"]["exclude"]
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def test_runs_of_an_older_protocol_are_rerun_and_never_averaged_in(tmp_path, capsys):
    from orchestrator.benchmark.planning import plan
    from orchestrator.settings.benchmark import load_benchmark
    from orchestrator.tracking import PARENT
    from orchestrator.translate.params import params_from_spec

    path = write_benchmark(tmp_path, name="legacy")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("legacy", artifact_location=(tmp_path / "mlruns").as_uri())
    parent = client.create_run(experiment).info.run_id
    for trial in plan(load_benchmark(path)):  # the same grid, recorded before the parity fixes
        params = {k: v for k, v in params_from_spec(trial.spec).items() if k not in ("protocol", "dor.exclude")}
        run_id = client.create_run(
            experiment, tags={PARENT: parent, RUN_KEY: legacy_key(trial.spec), TRIAL_NAME: trial.name}
        ).info.run_id
        for k, v in params.items():
            client.log_param(run_id, k, v)
        for k in ("base/acc", "new/acc", "hm", "base/ece", "new/ece", "avg/ece"):
            client.log_metric(run_id, k, 99.0)
        client.set_terminated(run_id, "FINISHED")
    client.set_terminated(parent, "FINISHED")

    assert run(path, uri, tmp_path) == 0
    assert "0 of 6 trials already finished" in capsys.readouterr().err
    assert len(child_runs(uri, "legacy")) == 12
    assert (
        main(
            [
                "report",
                "--experiment",
                "legacy",
                "--tracking-uri",
                uri,
                "--out",
                str(tmp_path / "all"),
                "--format",
                "md",
            ]
        )
        == 0
    )
    report = (tmp_path / "all" / "report.md").read_text()
    assert "6 runs of an older protocol left out" in report
    shapes = next(line for line in report.splitlines() if line.startswith("| shapes |"))
    assert "99.00" not in shapes and shapes.count("(2)") >= 3  # 2 seeds of protocol 2 each, no more


def test_dry_run_on_a_new_store_writes_nothing(tmp_path, capsys):
    path = write_benchmark(tmp_path, name="dry")
    (tmp_path / "ckpt").mkdir()
    resumable = next(t for t in plan_of(path) if t.name == "coop/shapes/seed1")
    (tmp_path / "ckpt" / f"{resumable.run_key}.pt").write_bytes(b"")  # an interrupted trial
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    assert run(path, uri, tmp_path, "--dry-run", "--only", "method=coop") == 0
    out = capsys.readouterr()
    assert sorted(line.split()[0] for line in out.out.splitlines()) == ["resume", "run", "run", "run"]
    assert not (tmp_path / "store").exists() and not (tmp_path / "report").exists()


def plan_of(path: Path) -> list:
    from orchestrator.benchmark.planning import plan
    from orchestrator.settings.benchmark import load_benchmark

    return plan(load_benchmark(path))


def test_a_trial_streams_its_epochs_live_and_a_retry_continues_its_run(tmp_path, capsys):
    """While the grid runs, the trial's child run is RUNNING and its epoch metrics grow; its worker
    is killed after epoch 2 and the retried trial goes on in the same run, every epoch once."""
    epochs = 6
    path = write_benchmark(
        tmp_path,
        name="live",
        shots=4,
        seeds=[1],
        methods=[{"name": "coop", "options": {"epochs": epochs, "batch_size": 2}, "dor": [False]}],
        testing={"kill_worker": {"trial": "coop/shapes/seed1", "epoch": 2}},
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome: list[int] = []
    grid = threading.Thread(target=lambda: outcome.append(run(path, uri, tmp_path, "--log-format", "json")))
    grid.start()
    client, seen = MlflowClient(uri), []  # (run id, status, epochs logged) while the grid runs
    while grid.is_alive():
        experiment = client.get_experiment_by_name("live")
        for r in client.search_runs([experiment.experiment_id]) if experiment else []:
            if RUN_KEY in r.data.tags:
                steps = [m.step for m in client.get_metric_history(r.info.run_id, "epoch/train/loss")]
                seen.append((r.info.run_id, r.info.status, len(steps)))
        time.sleep(0.05)
    grid.join()
    assert outcome == [0]
    out = capsys.readouterr()
    assert "worker died during 'coop/shapes/seed1'" in out.err
    events = [json.loads(line) for line in out.out.splitlines()]  # stdout holds only the events
    assert [e["attempt"] for e in events if e["event"] == "trial_started"] == [1, 2]
    assert {e["epoch"] for e in events if e["event"] == "epoch"} >= {1, 2, epochs}
    assert [e["event"] for e in events[-2:]] == ["trial_finished", "grid_finished"]
    assert events[-1]["finished"] == events[-1]["planned"] == 1 and "hm" in events[-2]["metrics"]
    [live] = child_runs(uri, "live")
    assert {run_id for run_id, _, _ in seen} == {live.info.run_id}  # one run, from start to end
    running = [n for _, status, n in seen if status == "RUNNING"]
    assert running and min(running) < epochs and len(set(running)) >= 2  # seen growing while it ran
    history = client.get_metric_history(live.info.run_id, "epoch/train/loss")
    assert sorted(m.step for m in history) == list(range(1, epochs + 1))  # each epoch once, none lost
    first = min(m.timestamp for m in history)
    assert first < live.info.end_time and len({m.timestamp for m in history}) >= 3  # logged as they came
    assert live.info.status == "FINISHED" and live.data.tags["dor_bench.attempts"] == "2"
