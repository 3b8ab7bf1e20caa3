"""CoCoOp (Zhou et al., 2022): context tokens shifted per image by a small meta-network."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workers.methods.base import PromptModel, PromptModule
from workers.methods.prompting import (
    context_setup,
    init_context,
    placeholder_tokens,
    prompt_prefix,
)
from workers.models.clip import ClipBundle, encode_text


class ConditionalPromptModel(PromptModule):
    """``ctx + meta_net(image feature)`` before each name: every prompt is image-conditioned,
    so ``encode_names`` returns ``[N images, len(names), D]``."""

    image_conditioned = True

    def __init__(self, clip: ClipBundle, n_ctx: int, ctx_init: str | None):
        super().__init__(clip)
        n_ctx, ctx_init = context_setup(n_ctx, ctx_init, length_from_init=True)
        self.prefix = prompt_prefix(n_ctx, ctx_init)
        self.ctx = nn.Parameter(init_context(clip, n_ctx, ctx_init).to(clip.device))
        embed_dim = clip.model.text_projection.shape[-1]
        width = self.ctx.shape[-1]
        self.meta_net = nn.Sequential(
            nn.Linear(embed_dim, embed_dim // 16), nn.ReLU(inplace=True), nn.Linear(embed_dim // 16, width)
        ).to(clip.device)

    def encode_names(self, names: list[str], image_features: torch.Tensor | None = None) -> torch.Tensor:
        if image_features is None:
            raise ValueError("CoCoOp prompts are image-conditioned: pass image_features")
        tokens = placeholder_tokens(self.clip, names, self.prefix)
        shift = self.meta_net(F.normalize(image_features.float(), dim=-1).to(self.ctx.dtype))  # [N, width]
        context = self.ctx.unsqueeze(0) + shift.unsqueeze(1)  # [N, n_ctx, width]
        n, p = len(shift), len(names)
        # every (image, name) prompt in one text-encoder pass
        feats = encode_text(self.clip, tokens.repeat(n, 1), context.repeat_interleave(p, dim=0))
        return feats.view(n, p, -1)


class CoCoOp:
    name = "cocoop"
    frozen_image_encoder = True

    def build(
        self, clip: ClipBundle, classnames: list[str], dataset: str, template: str, options: dict[str, Any]
    ) -> PromptModel:
        return ConditionalPromptModel(clip, options["n_ctx"], options["ctx_init"]).in_clip_precision()
