"""Secrets stay secret: a tracking URI with a password, and MLflow's own credential variables,
never reach any output of a run or a report; services bind to 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import ray
import yaml

from orchestrator.cli import main
from orchestrator.secrets import redact
from orchestrator.server import free_port
from orchestrator.ui import exposure_warning, ui_command

EXAMPLES = Path(__file__).parents[2] / "examples"
PASSWORD, ENV_PASSWORD = "S3cretPw", "EnvS3cretTok"


def test_redact_takes_credentials_out_of_every_url():
    assert redact("http://alice:S3cretPw@127.0.0.1:5055") == "http://***@127.0.0.1:5055"
    assert (
        redact("see https://tok@host/x and postgresql://u:p@db/x.")
        == "see https://***@host/x and postgresql://***@db/x."
    )
    assert redact("http://alice:pw@host:5000", mask=None) == "http://host:5000"
    assert redact("sqlite:///mlflow.db") == "sqlite:///mlflow.db" and redact("a@b.c") == "a@b.c"


def test_ui_binds_loopback_unless_told_and_warns_then():
    command = ui_command("sqlite:///x.db", 5000)
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert exposure_warning("127.0.0.1") is None and exposure_warning("localhost") is None
    warning = exposure_warning("0.0.0.0")
    assert warning is not None and "no login of its own" in warning
    assert ui_command("sqlite:///x.db", 5000, "0.0.0.0")[command.index("--host") + 1] == "0.0.0.0"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 (sqlite backend, served artifacts)."""
    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / 'server.db'}",
            "--artifacts-destination",
            str(folder / "art"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "the MLflow server did not start"
            time.sleep(0.5)
    yield port, folder
    proc.terminate()
    proc.wait(timeout=30)


def test_a_run_and_a_report_through_a_password_uri_write_the_password_nowhere(
    tmp_path, mlflow_server, monkeypatch, capsys
):
    port, server_folder = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ENV_PASSWORD)  # MLflow's own way: used, never copied
    uri = f"http://alice:{PASSWORD}@127.0.0.1:{port}"
    config = yaml.safe_load((EXAMPLES / "tiny.yaml").read_text())
    config.update(name="secret", seeds=[1])
    config["dor"]["vocabulary"] = str(EXAMPLES / "words.txt")
    bench = tmp_path / "bench.yaml"
    bench.write_text(yaml.safe_dump(config))

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert (
            main(
                [
                    "run",
                    str(bench),
                    f"tracking_uri={uri}",
                    "--checkpoint-dir",
                    str(tmp_path / "ckpt"),
                    "--report-dir",
                    str(tmp_path / "run-report"),
                ]
            )
            == 0
        )
    finally:
        ray.shutdown()
    assert (
        main(
            [
                "report",
                "--experiment",
                "secret",
                "--tracking-uri",
                uri,
                "--out",
                str(tmp_path / "report"),
                "--format",
                "md,latex,csv,html",
            ]
        )
        == 0
    )
    assert main(["validate", str(bench), f"tracking_uri={uri}"]) == 0
    assert main(["report", "--experiment", "no-such", "--tracking-uri", uri]) == 2  # an error message
    out = capsys.readouterr()
    printed = out.out + out.err
    assert f"http://***@127.0.0.1:{port}" in printed  # the URI was shown, redacted
    assert "No experiment 'no-such'" in printed

    leaks = [
        str(p)
        for folder in (tmp_path, server_folder)
        for p in folder.rglob("*")
        if p.is_file() and (PASSWORD.encode() in p.read_bytes() or ENV_PASSWORD.encode() in p.read_bytes())
    ]
    assert leaks == [] and PASSWORD not in printed and ENV_PASSWORD not in printed
    assert (tmp_path / "report" / "results.parquet").is_file() and any((server_folder / "art").rglob("result.json"))
