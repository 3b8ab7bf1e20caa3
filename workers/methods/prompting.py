"""Encoding learned prompts through CLIP's frozen text encoder (shared by every tuned method).

A prompt for name ``n`` is tokenised as ``[SOS] X X ... X n. [EOS]`` with one placeholder ``X``
per context token; the placeholder embeddings are then replaced by learned context vectors, so
the class name (or an outlier word) sits exactly where the method puts it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn

from workers.errors import DorBenchError
from workers.models.clip import ClipBundle


@torch.no_grad()
def frozen_image_features(clip: ClipBundle, images: torch.Tensor) -> torch.Tensor:
    """CLIP's own image features (float32, not normalised): methods whose image side is frozen."""
    return clip.model.encode_image(images).float()


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
    """Token ids ``[len(names), L]`` of ``"{prefix} {name}."`` prompts."""
    return clip.tokenizer([f"{prefix} {name}." for name in names]).to(clip.device)


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


def encode_with_context(
    clip: ClipBundle,
    tokens: torch.Tensor,
    context: torch.Tensor,
    deep_context: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """L2-normalised text features of prompts whose positions 1..n_ctx hold ``context``.

    Args:
        tokens: ``[P, L]`` placeholder token ids from :func:`placeholder_tokens`.
        context: ``[n_ctx, W]`` shared by all prompts, or ``[P, n_ctx, W]`` per prompt.
        deep_context: optional per-layer replacements for the context positions in layers
            1..len(deep_context) (MaPLe's deeper text prompts), each ``[n_ctx, W]``.
    """
    model = clip.model
    dtype = model.transformer.get_cast_dtype()
    n_ctx = context.shape[-2]
    with torch.no_grad():
        embedded = model.token_embedding(tokens).to(dtype)
    if context.dim() == 2:
        context = context.unsqueeze(0).expand(tokens.shape[0], -1, -1)
    x = torch.cat([embedded[:, :1], context.to(dtype), embedded[:, 1 + n_ctx :]], dim=1)
    x = x + model.positional_embedding.to(dtype)
    for depth, block in enumerate(model.transformer.resblocks):
        if deep_context is not None and 1 <= depth <= len(deep_context):
            deep = deep_context[depth - 1].to(dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :1], deep, x[:, 1 + n_ctx :]], dim=1)
        x = block(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    projection = model.text_projection
    x = projection(x) if isinstance(projection, nn.Linear) else x @ projection
    return F.normalize(x.float(), dim=-1)
