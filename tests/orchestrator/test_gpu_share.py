"""Several trials per GPU: each trial is told the share of a GPU Ray schedules it with (so that
its memory is capped there), and a GPU count Ray cannot schedule is refused with the file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.benchmark.actors import trial_options
from orchestrator.benchmark.planning import validate_file
from orchestrator.benchmark.runner import make_job
from orchestrator.settings.fields import BenchmarkError
from orchestrator.settings.sweep import load_sweep
from workers.spec import RunOptions

REPO = Path(__file__).resolve().parents[2]

BENCH = """\
name: share
model: {arch: tiny-clip, pretrained: none}
datasets: [shapes]
seeds: [1]
methods:
  - name: coop
    dor: [false]
  - name: maple
    dor: [false]
    resources: {gpus: 0.5}
  - name: kgcoop
    resources: {gpus: 1}
  - name: zeroshot
    resources: {gpus: 0}
resources: {gpus: 0.25}
"""


def write(tmp_path: Path, text: str, name: str = "bench.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_trial_is_sent_the_share_of_a_gpu_it_is_scheduled_with(tmp_path):
    bench, trials, _ = validate_file(write(tmp_path, BENCH))
    options = RunOptions(checkpoint_dir="ckpt", progress=False).model_dump()
    sent = {}
    for trial in trials:
        job = make_job(trial, bench)
        sent[trial.spec.method] = (job.shape.gpus, trial_options(options, job.shape))
    # the benchmark's share, a method's own share, a whole GPU, no GPU
    assert {m: (gpus, o["gpu_share"]) for m, (gpus, o) in sent.items()} == {
        "coop": (0.25, 0.25),
        "maple": (0.5, 0.5),
        "kgcoop": (1, None),
        "zeroshot": (0, None),
    }
    for _, sent_options in sent.values():  # the rest as the driver set it; valid RunOptions
        assert RunOptions.model_validate(sent_options).checkpoint_dir == "ckpt"
    assert options["gpu_share"] is None  # the driver's options are not changed


def test_a_gpu_count_ray_cannot_schedule_is_refused_naming_the_file_and_field(tmp_path):
    text = BENCH.replace("resources: {gpus: 0.25}", "resources: {gpus: 1.5}")
    text = text.replace("resources: {gpus: 0.5}", "resources: {gpus: 0.00001}")
    path = write(tmp_path, text.replace("resources: {gpus: 1}", "resources: {gpus: 2}"))
    with pytest.raises(BenchmarkError) as raised:
        validate_file(path)
    err = raised.value
    assert str(path) in err.message
    assert len(err.problems) == 2  # 2 whole GPUs are fine
    whole, tiny = sorted(err.problems, key=lambda p: not p.startswith("resources.gpus"))
    assert whole.startswith(
        "resources.gpus: must be a share of one GPU (below 1: 0.5 runs two trials on a GPU, 0.25 four) or a "
        "whole number of GPUs, not 1.5"
    )
    assert tiny.startswith("methods[1].resources.gpus: must be 0 or at least 0.0001")
    with pytest.raises(BenchmarkError, match=r"resources\.gpus: must be a share of one GPU .*not 2\.5"):
        validate_file(write(tmp_path, BENCH), overrides=["resources.gpus=2.5"])


def test_a_sweeps_gpus_follow_the_same_rule(tmp_path):
    text = (REPO / "examples" / "sweep-tiny.yaml").read_text()
    assert "\nresources:\n  cpus: 1\n" in text
    text = text.replace("\nresources:\n  cpus: 1\n", "\nresources:\n  cpus: 1\n  gpus: {gpus}\n")
    (tmp_path / "words.txt").write_text((REPO / "examples" / "words.txt").read_text())
    with pytest.raises(BenchmarkError, match=r"resources\.gpus: must be a share of one GPU .*not 1\.5"):
        load_sweep(write(tmp_path, text.replace("{gpus}", "1.5"), "sweep.yaml"))
    assert load_sweep(write(tmp_path, text.replace("{gpus}", "0.25"), "sweep.yaml")).resources.gpus == 0.25
