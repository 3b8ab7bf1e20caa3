"""``dor-bench report`` (and the end of ``dor-bench run``): collect -> aggregate -> render, and
write ``results.parquet`` plus the chosen formats into one folder."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import pyarrow as pa
from mlflow.artifacts import download_artifacts
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

from orchestrator.report.aggregate import Report, build_tables, dataset_name, dataset_order, pool_reliability
from orchestrator.report.collect import collect, write_parquet
from orchestrator.report.plots import reliability_png
from orchestrator.report.render import csv_text, html_report, latex, markdown
from workers.errors import DorBenchError, did_you_mean
from workers.spec import ReliabilityBins

FILES = {"md": "report.md", "latex": "report.tex", "csv": "tables.csv", "html": "report.html"}
FORMATS = tuple(FILES)
#: The tables printed to the terminal (every table is in the files).
TERMINAL = ("acc", "ece", "shift")


def parse_formats(text: str) -> list[str]:
    """``"md,latex"`` -> ["md", "latex"]; an unknown name is a DorBenchError."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in FILES:
            raise DorBenchError(
                f"Unknown report format '{name}'.{did_you_mean(name, FILES)}",
                f"use a comma-separated list of: {', '.join(FILES)} (results.parquet is always written).",
            )
    return list(dict.fromkeys(names))


def default_out_dir(experiment: str) -> Path:
    """``reports/<experiment>`` in the current folder (unsafe characters replaced)."""
    return Path("reports") / (re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._") or "experiment")


@dataclass
class ReportOutput:
    report: Report
    markdown: str  # every table
    terminal: str  # the tables printed at the end of `dor-bench run`
    files: dict[str, Path]
    timings: dict[str, float] = field(default_factory=dict)


def _ready(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".dor-bench-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise DorBenchError(
            f"Cannot write the report to '{out_dir}': {err.strerror or err}.",
            "pass --out with a folder you can write to.",
        ) from None
    return out_dir


def _result_reliability(artifact_uri: str, tracking_uri: str) -> dict[str, Any]:
    """A trial's reliability bins from its result.json (read in place when the store is local)."""
    local = urlparse(artifact_uri)
    if local.scheme in ("", "file"):
        return json.loads((Path(url2pathname(local.path)) / "result.json").read_text()).get("reliability", {})
    os.environ.setdefault(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name, "false")  # no bars mid-report
    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifacts(artifact_uri=f"{artifact_uri}/result.json", dst_path=tmp, tracking_uri=tracking_uri)
        return json.loads(Path(path).read_text()).get("reliability", {})


def reliability_figures(report: Report, table: pa.Table, tracking_uri: str) -> dict[str, list[tuple[str, bytes, str]]]:
    """Per dataset, one PNG per column: every split's reliability diagram, seeds pooled."""
    uris = dict(zip(table.column("run_id").to_pylist(), table.column("artifact_uri").to_pylist()))
    wanted = sorted({r for ids in report.cells.values() for r in ids.values()})

    def load(run_id: str) -> tuple[str, dict[str, Any]]:
        try:
            return run_id, _result_reliability(uris[run_id], tracking_uri)
        except Exception:  # an artifact lost or unreadable: that seed is left out of the diagram
            return run_id, {}

    with ThreadPoolExecutor(8) as pool:
        bins = dict(pool.map(load, wanted))
    order = {v.label: i for i, v in enumerate(report.variants)}
    rows = {d: i for i, d in enumerate(dataset_order({d for _, d, _ in report.cells}))}
    out: dict[str, list[tuple[str, bytes, str]]] = {}
    for (kind, dataset, label), ids in sorted(
        report.cells.items(), key=lambda kv: (kv[0][0], rows[kv[0][1]], order.get(kv[0][2], 0))
    ):
        seeds = [bins[r] for r in ids.values() if bins.get(r)]
        splits = sorted({s for b in seeds for s in b}, key=lambda s: (s not in ("base", "new"), s))
        pooled = {s: ReliabilityBins(**b) for s in splits if (b := pool_reliability([x[s] for x in seeds if s in x]))}
        if not pooled:
            continue
        png = reliability_png(pooled, f"{label} on {dataset_name(dataset)}", dpi=60)
        caption = f"{label}, {len(seeds)} seed{'s' * (len(seeds) != 1)} pooled"
        out.setdefault(dataset_name(dataset) + (" (domain shift)" if kind == "shift" else ""), []).append(
            (label, png, caption)
        )
    return out


def build_report(
    tracking_uri: str,
    experiment: str | None,
    *,
    parent: str | None = None,
    out_dir: str | Path | None = None,
    formats: Sequence[str] = FORMATS,
    planned: Sequence[dict[str, Any]] = (),
) -> ReportOutput:
    """Collect the experiment's trials, build every table, write results.parquet and ``formats``
    into ``out_dir`` (default reports/<experiment>); ``planned`` as in aggregate.build_tables."""
    formats = parse_formats(",".join(formats))
    timings: dict[str, float] = {}
    t = time.perf_counter()
    table = collect(tracking_uri, experiment, parent)
    timings["collect"] = time.perf_counter() - t
    name = table.schema.metadata[b"dor_bench.experiment"].decode()
    out = _ready(Path(out_dir) if out_dir is not None else default_out_dir(name))
    t = time.perf_counter()
    report = build_tables(table, planned, name)
    timings["tables"] = time.perf_counter() - t
    t = time.perf_counter()
    files = {"parquet": write_parquet(table, out / "results.parquet")}
    full = markdown(report)
    texts = {"md": lambda: full, "latex": lambda: latex(report), "csv": lambda: csv_text(report)}
    for fmt in formats:
        if fmt in texts:
            files[fmt] = out / FILES[fmt]
            files[fmt].write_text(texts[fmt](), encoding="utf-8")
    timings["render"] = time.perf_counter() - t
    if "html" in formats:
        t = time.perf_counter()
        figures = reliability_figures(report, table, tracking_uri)
        files["html"] = out / FILES["html"]
        files["html"].write_text(html_report(report, figures), encoding="utf-8")
        timings["html"] = time.perf_counter() - t
    listing = ", ".join(str(p) for p in files.values())
    terminal = markdown(report, TERMINAL, files=f"Full report (ACE, MCE, PIECE, DOR's cost too): {listing}")
    return ReportOutput(report, full, terminal, files, timings)
