"""`dor-bench ui` serves the MLflow UI on 127.0.0.1 for the given store."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from orchestrator.server import free_port
from tests.helpers.browser import HEADLESS, chromium
from tests.helpers.reports import b2n_metrics, log_trial, spec, store

ROOT = Path(__file__).parents[2]


def test_ui_starts_answers_http_shows_the_runs_in_a_browser_and_stops(tmp_path):
    uri, tracker = store(tmp_path, "ui-check")
    parent = tracker.start_parent("run ui-check.yaml", {})
    log_trial(tracker, parent, spec("coop", "imagenet", 1), b2n_metrics(70, 60, 2.0, 10.0))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "ui", "--tracking-uri", uri, "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        assert f"http://127.0.0.1:{port}" in proc.stderr.readline()
        deadline, body = time.monotonic() + 90, ""
        while time.monotonic() < deadline and not body:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search?max_results=10", timeout=5
                ) as response:
                    body = response.read().decode()
            except OSError:
                assert proc.poll() is None, "the UI exited early"
                time.sleep(0.5)
        assert "ui-check" in body  # it serves the store `run` wrote
        # what a person sees on the runs page it links: the training runs, the benchmark's run
        link = proc.stderr.readline().strip()
        assert link.startswith("[dor-bench]   ui-check: http://127.0.0.1:") and link.endswith("/runs")
        page = subprocess.run(
            [chromium(), *HEADLESS, "--virtual-time-budget=20000", "--dump-dom", link.split(": ", 1)[1]],
            capture_output=True,
            text=True,
            timeout=120,
        )
        seen = re.sub(
            r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style).*?</\1>", "", page.stdout, flags=re.S))
        )
        assert "Training runs" in seen and "run ui-check.yaml" in seen and "matching runs" in seen
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
