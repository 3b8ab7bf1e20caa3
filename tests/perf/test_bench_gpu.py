"""perf/bench_gpu.py end to end at its smallest: tiny-clip on CPU, every phase, one JSON.

The GPU machine runs this script once, for minutes: these check that its code paths (the
measured trials, the concurrent trial processes, the projection, the report) work before then.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
ROWS = {"CoOp", "CoOp+DOR", "CoCoOp", "KgCoOp", "MaPLe"}
#: Base classes of the paper's 11 datasets: ceil(classes / 2) of SPEC section 4's counts.
BASE = {
    "imagenet": 500,
    "caltech101": 50,
    "oxford_pets": 19,
    "stanford_cars": 98,
    "oxford_flowers": 51,
    "food101": 51,
    "fgvc_aircraft": 50,
    "sun397": 199,
    "dtd": 24,
    "eurosat": 5,
    "ucf101": 51,
}


def run_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> dict:
    """The script on CPU with tiny-clip and tiny sizes; its JSON."""
    from workers.dor.vocabulary import vocabulary_path

    monkeypatch.setenv("DOR_BENCH_CACHE", str(tmp_path / "cache"))
    # the text-encoding ratio draws its outliers from the user's noun list: a short one here
    vocabulary_path().write_text((ROOT / "examples" / "words.txt").read_text())
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a shared 2-core machine: no thread contention
    env.pop("OUT", None)
    command = [sys.executable, str(ROOT / "perf" / "bench_gpu.py"), "--device", "cpu", "--small"]
    command += ["--arch", "tiny-clip", "--image-px", "40", "--steps", "1", "--json", str(out), *args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["errors"] == [], result["errors"]
    assert "| CoOp+DOR |" in out.with_suffix(".md").read_text()
    return result


def test_the_cpu_path_measures_every_method_and_projects_the_grid(tmp_path, monkeypatch):
    result = run_bench(tmp_path, monkeypatch, "--classes", "2", "4", "--concurrency", "1")
    assert result["meta"]["device_kind"] == "cpu" and any("SMALL RUN" in note for note in result["notes"])
    styles = result["meta"]["styles"]
    assert styles["reference"]["full_text_context"] is True and styles["reference"]["loader_workers"] == 0
    assert styles["dor-bench"]["full_text_context"] is False

    single = {(r["row"], r["style"], r["classes"]): r for r in result["single"]}
    for row in ROWS:
        for classes in (2, 4):
            for style in ("reference", "dor-bench"):
                record = single[(row, style, classes)]
                assert record["steps_per_s"] > 0 and not record["warmup_included"]
                assert record["timed_steps"] % record["steps_per_epoch"] == 0
                assert math.isclose(record["steps_per_s"], record["timed_steps"] / record["seconds"], rel_tol=1e-2)
                assert math.isclose(record["images_per_s"], record["steps_per_s"] * record["batch"])
        assert single[(row, "dor-bench, device images", 2)]["steps_per_s"] > 0
    assert single[("CoCoOp", "reference", 4)]["batch"] == 1 and single[("CoOp", "reference", 4)]["batch"] == 4

    projection = result["projection"]
    assert projection["trials"] == 297 and projection["trained_trials"] == 264
    configs = projection["per_config"]
    # published epochs and batches: CoOp 200 x 32, CoCoOp 10 x 1, MaPLe 5 x 4; 16 shots, 3 seeds
    assert configs["coop"]["steps"] == 3 * 200 * sum(16 * b // 32 for b in BASE.values())
    assert configs["cocoop"]["steps"] == 3 * 10 * sum(16 * b for b in BASE.values())
    assert configs["maple+dor"]["steps"] == 3 * 5 * sum(16 * b // 4 for b in BASE.values())
    a, slope = projection["fits_s_per_step"]["CoOp reference"].values()
    hours = 3 * 200 * sum(16 * b // 32 * (a + slope * b) for b in BASE.values()) / 3600
    assert math.isclose(configs["coop"]["reference_h"], hours, rel_tol=1e-9)
    a, slope = projection["fits_s_per_step"]["MaPLe dor-bench"].values()  # DOR: B = b more prompts
    hours = 3 * 5 * sum(16 * b // 4 * (a + slope * 2 * b) for b in BASE.values()) / 3600
    assert math.isclose(configs["maple+dor"]["dor-bench_h"], hours, rel_tol=1e-9)
    # device images: measured at 2 classes only, with dor-bench's slope per class through that point
    device = {(r["row"], r["style"]): r for r in result["single"] if r["classes"] == 2}
    a, slope = projection["fits_s_per_step"]["CoOp dor-bench, device images"].values()
    assert slope == projection["fits_s_per_step"]["CoOp dor-bench"]["b_per_class"]
    assert math.isclose(a + slope * 2, device[("CoOp", "dor-bench, device images")]["step_s"], rel_tol=1e-9)
    shared = result["meta"]["shared_style"]
    assert shared in ("dor-bench", "dor-bench, device images") and projection["shared_style"] == shared
    assert configs["coop"]["shared_k1_h"] == configs["coop"][f"{shared}_h"]
    assert projection["totals"]["reference_h"] > 0 and projection["best_k"] == 1

    cpu = result["cpu"]
    assert cpu["images_pil_0_workers"]["images_per_s_per_core"] > 0
    assert [t["prompts"] for t in cpu["tokens"]] == [4, 8] and all(t["ratio"] > 1 for t in cpu["tokens"])
    assert cpu["text"]["full_length"] == 32 and 0 < cpu["text"]["truncated_length"] < 32  # tiny-clip's context


@pytest.mark.slow
def test_trials_sharing_the_device_run_as_separate_processes(tmp_path, monkeypatch):
    result = run_bench(tmp_path, monkeypatch, "--classes", "2", "--concurrency", "2")
    single = {(r["row"], r["style"]): r for r in result["single"]}
    for row in ROWS:
        together = result["concurrent"]["2"][row]
        assert len(together["per_trial_steps_per_s"]) == 2 and all(r > 0 for r in together["per_trial_steps_per_s"])
        alone = single[(row, result["meta"]["shared_style"])]["steps_per_s"]
        assert math.isclose(together["speedup"], together["steps_per_s"] / alone)
    speedup = result["projection"]["speedup_vs_one"]["2"]["CoOp"]
    coop = result["projection"]["per_config"]["coop"]
    assert math.isclose(coop["shared_k2_h"], coop[f"{result['meta']['shared_style']}_h"] / speedup)
    assert result["projection"]["best_k"] in (1, 2) and result["concurrency_meta"]["2"]["cpus_per_trial"] == 1
