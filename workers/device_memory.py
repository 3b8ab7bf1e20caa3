"""A trial's GPU memory: the share of a GPU it shares with other trials, and running out of it.

Ray schedules fractional GPUs (``resources: gpus: 0.5``) but does not divide their memory, so a
trial that outgrew its share would take its neighbours' memory or die with CUDA's own traceback.
``gpu_memory_guard`` caps this process's CUDA caching allocator at the trial's share
(``RunOptions.gpu_share``) and turns running out of GPU memory into a ``GpuMemoryError`` that says
what the share allowed, what the trial reached and how to give it more. The cap covers what the
caching allocator holds (every tensor, cuBLAS' workspaces); the CUDA context of each process (a
few hundred MiB) lies outside it, so a GPU shared by k trials at 1/k each can still fill up just
before a trial reaches its cap: that is reported the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from workers.errors import DorBenchError

GIB = 2**30
#: What CUDA says when the device itself is full (outside the caching allocator's own check).
DRIVER_OUT_OF_MEMORY = ("CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED")


class GpuMemoryError(DorBenchError):
    """A trial that ran out of GPU memory: recorded as failed, the grid goes on (a retry would
    run out again)."""


def cap_gpu_share(device: torch.device, share: float | None) -> None:
    """On CUDA, cap this process's caching allocator at ``share`` of ``device``'s memory (no
    share: the whole device, lifting a cap an earlier trial of this process set); on any other
    device, nothing."""
    if device.type != "cuda":
        return
    torch.cuda.set_per_process_memory_fraction(share if share is not None else 1.0, device)


@contextmanager
def gpu_memory_guard(device: torch.device, share: float | None) -> Iterator[None]:
    """Run a trial within its share of ``device`` (``cap_gpu_share``; its peak memory counted
    from here). Running out of GPU memory inside becomes a ``GpuMemoryError``; every other
    exception passes through unchanged."""
    cap_gpu_share(device, share)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield
    except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
        if not out_of_memory(err):
            raise
        total, peak = memory_facts(device)
        raise gpu_memory_error(share, total, peak, tried_to_allocate(str(err))) from None


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is CUDA running out of memory: the caching allocator's refusal, or the
    device itself full (a CUDA context or library workspace that could not be made)."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or any(text in str(err) for text in DRIVER_OUT_OF_MEMORY)


def memory_facts(device: torch.device) -> tuple[int | None, int | None]:
    """``device``'s total memory and the most memory this trial's tensors held on it (bytes),
    each None when it cannot be read (not a CUDA device here)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None, None
    return torch.cuda.get_device_properties(device).total_memory, torch.cuda.max_memory_allocated(device)


def tried_to_allocate(message: str) -> str | None:
    """The amount CUDA's message says could not be allocated (``2.00 GiB``), if it says one."""
    found = re.search(r"Tried to allocate ([\d.]+ ?[KMGT]?i?B)", message)
    return found.group(1) if found else None


def gpu_memory_error(
    share: float | None, total: int | None, peak: int | None, tried: str | None = None
) -> GpuMemoryError:
    """The error of a trial that ran out of GPU memory with ``share`` of a GPU of ``total``
    bytes (None: the whole GPU / not known), its tensors having reached ``peak`` bytes."""
    gib = lambda n: f"{n / GIB:.1f} GiB"
    if share is not None:
        allows = f" ({gib(share * total)} of the GPU's {gib(total)})" if total else ""
        what = f"The trial ran out of GPU memory within its share of the GPU, resources.gpus {share:g}{allows}"
    else:
        what = "The trial ran out of GPU memory" + (f" (the GPU has {gib(total)})" if total else "")
    if peak:
        what += f"; its tensors reached {gib(peak)}"
    if tried:
        what += f"; CUDA could not allocate {tried} more"
    if share is not None:
        fix = (
            f"give the method a larger share of a GPU in the benchmark file, e.g. `resources: {{gpus: "
            f"{min(1.0, 2 * share):g}}}` under the method (its own `resources:`) or in the benchmark's "
            "`resources:` (a sweep file: its `resources:`); 1 gives it a GPU of its own. Or use a smaller batch "
            "(method_options.batch_size)."
        )
    else:
        fix = (
            "use a smaller batch (method_options.batch_size) or a GPU with more memory; if other processes "
            "hold memory on this GPU (nvidia-smi lists them), run the trial where it has the GPU to itself."
        )
    return GpuMemoryError(what + ".", fix)
