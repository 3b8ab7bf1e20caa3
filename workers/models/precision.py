"""The precision a trial runs CLIP and its learned parameters in (the ``precision`` method option).

The references' ``PREC`` is fp16 on their GPUs, with OpenAI's ``clip.load``, which keeps the
weights fp16 on a GPU and converts them to fp32 on a CPU: ``auto`` does the same. Torch-free, so
that checking a settings file never imports torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.errors import DorBenchError

if TYPE_CHECKING:
    import torch

#: ``auto``: fp16 on a GPU, fp32 on a CPU; ``fp16`` holds on any device (slow on a CPU); ``fp32``
#: is the references' ``PREC: fp32``.
PRECISIONS = ("auto", "fp16", "fp32")
DEFAULT_PRECISION = "auto"


def weights_precision(precision: str, device: torch.device) -> str:
    """``fp16`` or ``fp32``: what ``precision`` (one of ``PRECISIONS``) means on ``device``."""
    if precision not in PRECISIONS:
        raise DorBenchError(f"Unknown precision '{precision}'.", f"use one of {', '.join(PRECISIONS)}.")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return precision
