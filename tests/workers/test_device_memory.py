"""A trial's share of a GPU: its allocator capped there, and running out of GPU memory reported
as an error that says what the share allowed and how to give the trial more."""

from __future__ import annotations

import pytest
import torch

from workers.device_memory import GpuMemoryError, cap_gpu_share, gpu_memory_error, gpu_memory_guard
from workers.errors import DorBenchError
from workers.spec import RunOptions, gpu_share
from workers.trial import run_trial

CPU = torch.device("cpu")
#: What CUDA's caching allocator says when it cannot allocate (torch 2.x, abridged).
CUDA_SAYS = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which "
    "1.50 GiB is free. Of the allocated memory 38.20 GiB is allocated by PyTorch."
)


@pytest.fixture
def capped(monkeypatch):
    """The fractions ``torch.cuda.set_per_process_memory_fraction`` was called with."""
    calls: list[tuple[float, torch.device]] = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d=None: calls.append((f, d)))
    return calls


def test_the_cap_is_a_no_op_on_cpu(capped):
    cap_gpu_share(CPU, 0.5)
    cap_gpu_share(CPU, None)
    assert capped == []
    with gpu_memory_guard(CPU, 0.25):  # nothing of CUDA is touched
        pass
    assert capped == []


def test_on_cuda_the_cap_is_the_share_or_the_whole_gpu(capped):
    cuda = torch.device("cuda", 0)
    cap_gpu_share(cuda, 0.25)
    cap_gpu_share(cuda, None)  # a later trial of the same process without a share: the cap lifted
    assert capped == [(0.25, cuda), (1.0, cuda)]


def test_running_out_of_memory_within_a_share_says_the_share_and_the_fix():
    with pytest.raises(GpuMemoryError) as raised:
        with gpu_memory_guard(CPU, 0.25):
            raise torch.cuda.OutOfMemoryError(CUDA_SAYS)
    err = raised.value
    assert isinstance(err, DorBenchError) and err.__suppress_context__  # no CUDA traceback shown
    assert err.what == (
        "The trial ran out of GPU memory within its share of the GPU, resources.gpus 0.25; "
        "CUDA could not allocate 2.00 GiB more."
    )
    assert err.fix is not None
    assert "`resources: {gpus: 0.5}` under the method (its own `resources:`)" in err.fix
    assert "the benchmark's `resources:`" in err.fix and "method_options.batch_size" in err.fix


def test_the_error_names_the_gpus_memory_what_the_share_allows_and_the_peak():
    err = gpu_memory_error(0.25, total=80 * 2**30, peak=int(19.5 * 2**30), tried="512.00 MiB")
    assert err.what == (
        "The trial ran out of GPU memory within its share of the GPU, resources.gpus 0.25 (20.0 GiB of the "
        "GPU's 80.0 GiB); its tensors reached 19.5 GiB; CUDA could not allocate 512.00 MiB more."
    )
    whole = gpu_memory_error(None, total=80 * 2**30, peak=79 * 2**30)
    assert whole.what == "The trial ran out of GPU memory (the GPU has 80.0 GiB); its tensors reached 79.0 GiB."
    assert whole.fix is not None and "method_options.batch_size" in whole.fix and "nvidia-smi" in whole.fix
    assert "gpus: 1}" in gpu_memory_error(0.75, None, None).message  # never more than one GPU


def test_a_full_device_is_reported_the_same_way():
    with pytest.raises(GpuMemoryError, match="resources.gpus 0.5"):
        with gpu_memory_guard(CPU, 0.5):
            raise RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported")


@pytest.mark.parametrize("error", [ValueError("not memory"), RuntimeError("shape mismatch"), KeyError("x")])
def test_other_exceptions_pass_through_unchanged(error):
    with pytest.raises(type(error)) as raised:
        with gpu_memory_guard(CPU, 0.5):
            raise error
    assert raised.value is error


def test_a_trial_that_runs_out_of_gpu_memory_fails_with_its_share_named():
    """Through ``run_trial``: the guard covers the whole trial (here its first epoch's end)."""

    def out_of_memory(epoch: int, row: dict[str, float]) -> None:
        raise torch.cuda.OutOfMemoryError(CUDA_SAYS)

    spec = {"method": "coop", "dataset": "shapes", "model": "tiny-clip", "pretrained": None, "shots": 1}
    spec |= {"method_options": {"epochs": 1}, "test_per_class": 1}
    with pytest.raises(GpuMemoryError, match=r"resources\.gpus 0\.5; CUDA could not allocate 2\.00 GiB more"):
        run_trial(spec, {"progress": False, "device": "cpu", "gpu_share": 0.5}, on_epoch=out_of_memory)


def test_the_share_is_a_fraction_of_one_gpu():
    assert [gpu_share(g) for g in (0, 0.25, 0.5, 1, 2)] == [None, 0.25, 0.5, None, None]
    assert RunOptions().gpu_share is None
    for bad in (0, 1.5, -0.5):
        with pytest.raises(ValueError):
            RunOptions(gpu_share=bad)
