"""MaPLe (Khattak et al., 2023): coupled text and vision prompts in the first ``depth`` layers.

Text side: the first ``n_ctx`` words of the prompt prefix are learned at the input, and new
learned tokens replace them in layers 1..depth-1. Vision side: each of those text prompts is
projected (text width -> vision width) into tokens appended to the image sequence, so the image
encoder changes and its features can never come from a cache.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workers.methods.base import PromptModel, PromptModule
from workers.methods.prompting import (
    context_setup,
    init_context,
    placeholder_tokens,
    prompt_prefix,
)
from workers.models.clip import ClipBundle, encode_image, encode_text


class MultiModalPromptModel(PromptModule):
    """Learned text prompts in the first ``depth`` text layers, coupled into vision prompts."""

    def __init__(self, clip: ClipBundle, n_ctx: int, ctx_init: str | None, depth: int):
        super().__init__(clip)
        visual = clip.model.visual
        text_layers = len(clip.model.transformer.resblocks)
        vision_layers = len(visual.transformer.resblocks)
        self.depth = max(1, min(depth, text_layers, vision_layers))
        n_ctx, ctx_init = context_setup(n_ctx, ctx_init, length_from_init=False)
        self.prefix = prompt_prefix(n_ctx, ctx_init)
        self.ctx = nn.Parameter(init_context(clip, n_ctx, ctx_init).to(clip.device))
        text_width, vision_width = self.ctx.shape[-1], visual.conv1.out_channels
        self.deep_text = nn.ParameterList(
            nn.Parameter(torch.randn(n_ctx, text_width, device=clip.device) * 0.02) for _ in range(self.depth - 1)
        )
        # one coupling projection for the input prompts and one per deeper layer
        self.couplings = nn.ModuleList(nn.Linear(text_width, vision_width).to(clip.device) for _ in range(self.depth))
        # MaPLe's deeper prompts and their projections are fp32 even in an fp16 CLIP (its `proj`
        # for the input prompts is .half()), rounded to fp16 where they are used
        self.fp32_parameters = ("deep_text.", *(f"couplings.{i}." for i in range(1, self.depth)))

    def encode_names(self, names: list[str], image_features: torch.Tensor | None = None) -> torch.Tensor:
        tokens = placeholder_tokens(self.clip, names, self.prefix)
        return encode_text(self.clip, tokens, self.ctx, list(self.deep_text))

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return encode_image(self.clip, images, [c(p) for c, p in zip(self.couplings, [self.ctx, *self.deep_text])])


class MaPLe:
    name = "maple"
    frozen_image_encoder = False

    def build(
        self, clip: ClipBundle, classnames: list[str], dataset: str, template: str, options: dict[str, Any]
    ) -> PromptModel:
        return MultiModalPromptModel(
            clip, options["n_ctx"], options["ctx_init"], options["prompt_depth"]
        ).in_clip_precision()
