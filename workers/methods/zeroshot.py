"""Zero-shot CLIP: the dataset's hand-written template, no training."""

from __future__ import annotations

from typing import Any

import torch

from workers.methods.base import PromptModel, PromptModule
from workers.models.clip import ClipBundle, encode_text


class ZeroShotModel(PromptModule):
    """Encodes ``template.format(name)`` with the frozen text encoder."""

    def __init__(self, clip: ClipBundle, template: str):
        super().__init__(clip)
        self.template = template

    @torch.no_grad()
    def encode_names(self, names: list[str], image_features: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.clip.tokenizer([self.template.format(n) for n in names])
        return encode_text(self.clip, tokens)


class ZeroShot:
    name = "zeroshot"
    frozen_image_encoder = True

    def build(
        self, clip: ClipBundle, classnames: list[str], dataset: str, template: str, options: dict[str, Any]
    ) -> PromptModel:
        return ZeroShotModel(clip, template)
