"""Where commands read and write: the tracking store's precedence (flag > file > $MLFLOW_TRACKING_URI
> default), local places made absolute on the driver, and outputs refused at once when a Ray job's
temporary working copy would swallow them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator import DEFAULT_TRACKING_URI, TRACKING_ENV, places
from orchestrator.cli import main
from workers.errors import DorBenchError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_store_is_the_flag_then_the_file_then_the_environment_then_the_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(TRACKING_ENV, raising=False)
    assert places.tracking_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"  # the default, made absolute
    monkeypatch.setenv(TRACKING_ENV, "http://127.0.0.1:5999")
    assert places.tracking_uri(None) == "http://127.0.0.1:5999"
    assert places.tracking_uri(None, "sqlite:///runs/b.db") == f"sqlite:///{tmp_path / 'runs' / 'b.db'}"
    assert places.tracking_uri("file:store", "sqlite:///b.db") == (tmp_path / "store").as_uri()
    assert places.tracking_uri("sqlite:////abs/c.db", "sqlite:///b.db") == "sqlite:////abs/c.db"
    assert DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:///mlflow.db",
        "sqlite:////abs/runs/mlflow.db",
        "sqlite:///~/mlflow.db",
        "http://127.0.0.1:5000",
        "https://alice:pw@mlflow.example.org",
        "postgresql://mlflow@127.0.0.1:5432/mlflow",
        "postgresql+psycopg://mlflow@db/mlflow",
        "mysql+pymysql://u@db/m",
        "databricks",
        "databricks://profile",
        "file:///abs/mlruns",
        "./mlruns",
        "mlruns",
    ],
)
def test_every_store_mlflow_has_passes_the_uri_check(uri):
    assert places.tracking_uri_problem(uri) is None


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("junk://alice:secret@host", "'junk://***@host' has the scheme 'junk:', which no MLflow store has"),
        ("sqlit:///mlflow.db", "Did you mean 'sqlite'?"),
        ("sqlite://mlflow.db", "names no sqlite database file: write sqlite:///mlflow.db (three slashes"),
        ("sqlite:///", "names no sqlite database file"),
        ("sqlite//mlflow.db", "names no sqlite database file"),
        ("sqlite:///:memory:", "names no sqlite database file"),
        ("mlflow.db", "'mlflow.db' is read by MLflow as a file-store folder, not an sqlite database: write"),
        ("/data/runs.sqlite", "write sqlite:////data/runs.sqlite"),
        ("file:///data/m.db", "write sqlite:////data/m.db"),
        ("http:/127.0.0.1:5000", "names no server: write http://HOST:PORT"),
    ],
)
def test_a_malformed_store_uri_is_refused_before_any_store_is_opened(uri, message, monkeypatch, tmp_path):
    problem = places.tracking_uri_problem(uri)
    assert problem is not None and message in problem and "secret" not in problem
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(TRACKING_ENV, uri)
    for flag, source in ((uri, "--tracking-uri"), (None, f"${TRACKING_ENV}")):
        with pytest.raises(DorBenchError) as err:
            places.tracking_uri(flag)
        assert err.value.what.startswith(f"{source} ") and f"correct {source}" in str(err.value.fix)
    assert list(tmp_path.iterdir()) == []


def test_store_reading_commands_honour_the_environment(monkeypatch, tmp_path, capsys):
    """`dor-bench report` with no --tracking-uri reads $MLFLOW_TRACKING_URI's store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(TRACKING_ENV, f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert main(["report"]) == 2
    assert "elsewhere.db" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


def ray_job(monkeypatch, working_dir: bool) -> None:
    """The environment Ray gives a submitted job's driver (RAY_JOB_CONFIG_JSON_ENV_VAR, as
    `ray job submit` sets it; measured with Ray 2.60)."""
    runtime_env = {"working_dir": "gcs://_ray_pkg_0123.zip"} if working_dir else {}
    config = {"runtime_env": runtime_env, "metadata": {"job_submission_id": "raysubmit_test"}}
    monkeypatch.setenv(places.RAY_JOB_ENV, json.dumps(config))


def test_a_ray_job_in_a_temporary_copy_refuses_relative_outputs_naming_each(monkeypatch, tmp_path, capsys):
    copy = tmp_path / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123"
    copy.mkdir(parents=True)
    (copy / "tiny.yaml").write_text((EXAMPLES / "tiny.yaml").read_text())
    (copy / "words.txt").write_text((EXAMPLES / "words.txt").read_text())
    monkeypatch.chdir(copy)
    monkeypatch.delenv(TRACKING_ENV, raising=False)
    ray_job(monkeypatch, working_dir=True)
    assert main(["run", "tiny.yaml"]) == 2
    err = capsys.readouterr().err
    assert f"This Ray job runs in a temporary copy of its working folder ({copy})" in err
    assert f"the tracking store sqlite:///{copy / 'mlflow.db'} (set tracking_uri in the file" in err
    assert f"the checkpoint folder {copy / '.dor-bench' / 'checkpoints'} (set --checkpoint-dir" in err
    assert f"the report folder {copy / 'reports' / 'tiny'} (set --report-dir" in err
    assert not (copy / "mlflow.db").exists() and not (copy / ".dor-bench").exists()

    shared = tmp_path / "shared"  # absolute places: accepted
    store, (ckpt, report) = places.outputs(
        tracking=(None, f"sqlite:///{shared / 'm.db'}"),
        folders=[(shared / "ckpt", "the checkpoint folder", "--checkpoint-dir"), (shared / "r", "the report", "-r")],
    )
    assert store == f"sqlite:///{shared / 'm.db'}" and ckpt == shared / "ckpt" and report == shared / "r"


def test_a_ray_job_without_a_working_copy_resolves_relative_outputs_in_its_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(TRACKING_ENV, raising=False)
    ray_job(monkeypatch, working_dir=False)
    store, (ckpt,) = places.outputs(tracking=(None, None), folders=[(".dor-bench/c", "the checkpoints", "--c")])
    assert store == f"sqlite:///{tmp_path / 'mlflow.db'}" and ckpt == tmp_path / ".dor-bench" / "c"
    monkeypatch.setenv(places.RAY_JOB_ENV, "not json")
    assert places.job_copy() is None
    with pytest.raises(DorBenchError):  # a working copy: the same relative folder is refused
        ray_job(monkeypatch, working_dir=True)
        places.outputs(tracking=(None, None), folders=[(".dor-bench/c", "the checkpoints", "--c")])
