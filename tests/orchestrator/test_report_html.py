"""The HTML report: self-contained, opens in headless Chromium without errors; its screenshot is
kept in $DOR_BENCH_TEST_ARTIFACTS (default: test-artifacts/ at the repository root)."""

from __future__ import annotations

import os
import re
import struct
import subprocess
from pathlib import Path

import pytest

from orchestrator.report.aggregate import pool_reliability
from orchestrator.report.build import build_report
from tests.helpers.browser import HEADLESS, chromium
from tests.helpers.reports import b2n_metrics, bins, log_trial, spec, store

ROOT = Path(__file__).parents[2]


def test_reliability_bins_pool_seeds_by_count():
    a = bins([2, 0, 8], [0.5, 0.0, 1.0], [0.4, 0.0, 0.9]).model_dump()
    b = bins([6, 0, 2], [1.0, 0.0, 0.5], [0.5, 0.0, 0.8]).model_dump()
    pooled = pool_reliability([a, b])
    assert pooled["count"] == [8, 0, 10]
    assert pooled["accuracy"] == pytest.approx([0.875, 0.0, 0.9])
    assert pooled["confidence"] == pytest.approx([0.475, 0.0, 0.88])
    assert pool_reliability([a, bins([1], [1.0], [1.0]).model_dump()]) is None  # different bins


def test_html_report_renders_in_headless_chromium(tmp_path):
    uri, tracker = store(tmp_path, "html")
    parent = tracker.start_parent("run", {})
    for dataset in ("imagenet", "eurosat"):
        for lam in (None, 8.0):
            for seed in (1, 2):
                rel = {split: bins([5, 10 * seed, 20], [0.2, 0.5, 0.9], [0.15, 0.6, 0.95]) for split in ("base", "new")}
                log_trial(
                    tracker,
                    parent,
                    spec("coop", dataset, seed, lam),
                    b2n_metrics(70 + seed, 60 + seed, 2.0, 10.0 - 4 * (lam is not None)),
                    reliability=rel,
                )
    out = build_report(uri, "html", out_dir=tmp_path / "report", formats=["html"])
    page = out.files["html"]
    text = page.read_text()
    assert "<script" not in text and not re.search(r'(src|href)="(https?:)?//', text)  # self-contained
    assert text.count('src="data:image/png;base64,') == 4  # 2 datasets x 2 columns, seeds pooled

    flags = [chromium(), *HEADLESS]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<table id="acc">' in dom.stdout and "EuroSAT" in dom.stdout and "CoOp+DOR" in dom.stdout
    artifacts = Path(os.environ.get("DOR_BENCH_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "report-html.png"
    shot.unlink(missing_ok=True)
    run = subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1400,2000", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    page_errors = [
        line
        for line in (dom.stderr + run.stderr).splitlines()
        if "CONSOLE" in line or "Uncaught" in line or "net::ERR" in line or "Failed to load" in line
    ]
    assert page_errors == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1400, 2000)
    assert len(data) > 30_000  # a rendered page, not a blank one
