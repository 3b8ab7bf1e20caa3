"""CoOp (Zhou et al., 2022): a learned context shared by all classes, class token at the end."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workers.methods.base import PromptModel, PromptModule, TrainStep
from workers.methods.prompting import (
    context_setup,
    init_context,
    placeholder_tokens,
    prompt_prefix,
)
from workers.models.clip import ClipBundle, encode_text


class ContextPromptModel(PromptModule):
    """Learned context vectors before each name; the CLIP weights stay frozen (and unregistered)."""

    def __init__(
        self,
        clip: ClipBundle,
        n_ctx: int,
        ctx_init: str | None,
        anchor: torch.Tensor | None = None,
        anchor_weight: float = 0.0,
    ):
        """``anchor`` (optional): fixed features the class features are pulled toward with
        ``anchor_weight * (1 - mean cos)`` (KgCoOp's knowledge-guided term)."""
        super().__init__(clip)
        n_ctx, ctx_init = context_setup(n_ctx, ctx_init, length_from_init=True)
        self.prefix = prompt_prefix(n_ctx, ctx_init)
        self.ctx = nn.Parameter(init_context(clip, n_ctx, ctx_init).to(clip.device))
        self.anchor, self.anchor_weight = anchor, anchor_weight

    def encode_names(self, names: list[str], image_features: torch.Tensor | None = None) -> torch.Tensor:
        return encode_text(self.clip, placeholder_tokens(self.clip, names, self.prefix), self.ctx)

    def extra_loss(self, step: TrainStep) -> torch.Tensor | None:
        if self.anchor is None or self.anchor_weight == 0:
            return None
        cos = torch.nn.functional.cosine_similarity(step.class_features, self.anchor, dim=-1)
        return self.anchor_weight * (1 - cos.mean())


class CoOp:
    name = "coop"
    frozen_image_encoder = True

    def build(
        self, clip: ClipBundle, classnames: list[str], dataset: str, template: str, options: dict[str, Any]
    ) -> PromptModel:
        return ContextPromptModel(clip, options["n_ctx"], options["ctx_init"]).in_clip_precision()
