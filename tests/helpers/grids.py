"""Benchmark grids for tests: examples/tiny.yaml with changes, `dor-bench run` on it, its child runs."""

from __future__ import annotations

from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.tracking import RUN_KEY

EXAMPLES = Path(__file__).parents[2] / "examples"


def write_benchmark(folder: Path, **changes) -> Path:
    """examples/tiny.yaml with ``changes``, the word list copied beside it."""
    config = yaml.safe_load((EXAMPLES / "tiny.yaml").read_text())
    config.update(changes)
    (folder / "words.txt").write_text((EXAMPLES / "words.txt").read_text())
    config["dor"]["vocabulary"] = "words.txt"
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def child_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id]) if RUN_KEY in r.data.tags]


def run(path: Path, uri: str, folder: Path, *extra: str) -> int:
    return main(
        [
            "run",
            str(path),
            "--tracking-uri",
            uri,
            "--checkpoint-dir",
            str(folder / "ckpt"),
            "--report-dir",
            str(folder / "report"),
            *extra,
        ]
    )
