"""``dor-bench ui``: the MLflow UI against the store ``run`` writes to, on 127.0.0.1 unless
``--host`` says otherwise (then with a warning: the UI has no authentication of its own)."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
from pathlib import Path

from orchestrator.secrets import redact
from workers.errors import DorBenchError

HOST = "127.0.0.1"


def ui_command(tracking_uri: str, port: int, host: str = HOST) -> list[str]:
    """The MLflow UI server command for ``tracking_uri`` on ``host``:``port`` (one worker)."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def runs_pages(tracking_uri: str, base: str) -> list[tuple[str, str]]:
    """Each experiment's runs table in the UI (MLflow 3 opens an experiment on its GenAI
    overview, where trials do not show): ``(name, url)``; none for a store not written yet."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        return []
    from mlflow.tracking import MlflowClient

    experiments = MlflowClient(tracking_uri).search_experiments()
    return [(e.name, f"{base}/#/experiments/{e.experiment_id}/runs") for e in experiments if e.name != "Default"]


def exposure_warning(host: str) -> str | None:
    """What to tell a user who binds the UI beyond this machine; None for a loopback address."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    return (
        f"[dor-bench] warning: the MLflow UI listens on {host}, reachable from other machines, and has "
        "no login of its own: anyone who can reach it can read and change every run. Prefer the "
        "default 127.0.0.1 and an SSH tunnel (ssh -L 5000:127.0.0.1:5000 HOST)."
    )


def port_in_use(port: int, host: str = HOST) -> bool:
    """Whether something listens on ``host``:``port``."""
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


def serve(tracking_uri: str, port: int, host: str = HOST) -> int:
    """Run the UI until interrupted; returns its exit status."""
    probe_host = HOST if host in ("0.0.0.0", "::") else host
    if port_in_use(port, probe_host):
        raise DorBenchError(
            f"Port {port} on {host} is already in use.", "pass another one with --port, or stop what listens there."
        )
    if warning := exposure_warning(host):
        print(warning, file=sys.stderr, flush=True)
    print(
        f"[dor-bench] MLflow UI for {redact(tracking_uri)}: http://{host}:{port}  (Ctrl-C stops it)",
        file=sys.stderr,
        flush=True,
    )
    for name, url in runs_pages(tracking_uri, f"http://{probe_host}:{port}"):
        print(f"[dor-bench]   {name}: {url}", file=sys.stderr, flush=True)
    process = subprocess.Popen(ui_command(tracking_uri, port, host))
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait(timeout=10)
        return 0
