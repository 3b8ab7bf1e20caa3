"""Learned prompts of the tuned methods: their context length, initial vectors and placeholders.

A prompt for name ``n`` is tokenised as ``[SOS] X X ... X n. [EOS]`` with one placeholder ``X``
per context token; ``workers.models.clip.encode_text`` then puts the learned context vectors in
place of the placeholders, so the class name (or an outlier word) sits exactly where the method
puts it.
"""

from __future__ import annotations

import torch

from workers.errors import DorBenchError
from workers.models.clip import ClipBundle


@torch.no_grad()
def frozen_image_features(clip: ClipBundle, images: torch.Tensor) -> torch.Tensor:
    """CLIP's own image features (float32, not normalised): methods whose image side is frozen."""
    return clip.model.encode_image(images.to(clip.dtype)).float()  # OpenAI's encode_image casts so


def context_setup(n_ctx: int, init: str | None, length_from_init: bool) -> tuple[int, str | None]:
    """The context length and init text a method learns from its ``n_ctx`` and ``ctx_init`` options.

    The init's underscores become spaces, as in every official trainer. CoOp, CoCoOp and KgCoOp
    (``length_from_init``) learn one token per init word whatever ``n_ctx`` says
    (``n_ctx = len(ctx_init.split(" "))``); MaPLe learns the first ``n_ctx`` tokens of the init.
    """
    if not init:
        return n_ctx, None
    init = init.replace("_", " ")
    return (len(init.split(" ")), init) if length_from_init else (n_ctx, init)


def prompt_prefix(n_ctx: int, init: str | None) -> str:
    """The words before the class name: ``init`` (its first n_ctx words get learned), else n_ctx X's."""
    return init if init else " ".join(["X"] * n_ctx)


def placeholder_tokens(clip: ClipBundle, names: list[str], prefix: str) -> torch.Tensor:
    """Token ids ``[len(names), L]`` (on the CPU) of ``"{prefix} {name}."`` prompts."""
    return clip.tokenizer([f"{prefix} {name}." for name in names])


def init_context(clip: ClipBundle, n_ctx: int, init: str | None, std: float = 0.02) -> torch.Tensor:
    """Initial context vectors ``[n_ctx, width]``: the embeddings of the first n_ctx tokens of
    ``init`` (e.g. "a photo of a"), or random N(0, std) when ``init`` is None."""
    width = clip.model.token_embedding.weight.shape[1]
    if init is None:
        return torch.randn(n_ctx, width) * std
    tokens = clip.tokenizer([init]).to(clip.device)
    words = int((tokens[0] != 0).sum()) - 2  # without [SOS] and [EOS]
    if n_ctx > words:  # the context would overwrite the class name: every prompt the same
        raise DorBenchError(
            f"n_ctx={n_ctx} context tokens cannot be initialised from ctx_init '{init}' "
            f"({words} tokens): the extra ones would overwrite the class name.",
            f"set n_ctx to at most {words}, or ctx_init to null for {n_ctx} random tokens.",
        )
    with torch.no_grad():
        embedded = clip.model.token_embedding(tokens)[0].float().cpu()
    return embedded[1 : 1 + n_ctx].clone()
