"""``dor-bench ui``: the MLflow UI, on 127.0.0.1 only, against the store ``run`` writes to."""

from __future__ import annotations

import socket
import subprocess
import sys

from workers.errors import DorBenchError

HOST = "127.0.0.1"


def ui_command(tracking_uri: str, port: int) -> list[str]:
    """The MLflow UI server command for ``tracking_uri`` on 127.0.0.1:``port`` (one worker)."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        tracking_uri,
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def serve(tracking_uri: str, port: int) -> int:
    """Run the UI until interrupted; returns its exit status."""
    with socket.socket() as probe:
        if probe.connect_ex((HOST, port)) == 0:
            raise DorBenchError(
                f"Port {port} on {HOST} is already in use.", "pass another one with --port, or stop what listens there."
            )
    print(
        f"[dor-bench] MLflow UI for {tracking_uri}: http://{HOST}:{port}  (Ctrl-C stops it)",
        file=sys.stderr,
        flush=True,
    )
    process = subprocess.Popen(ui_command(tracking_uri, port))
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait(timeout=10)
        return 0
