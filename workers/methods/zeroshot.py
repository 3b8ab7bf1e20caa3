"""Zero-shot CLIP: the dataset's hand-written template, no training."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workers.methods.base import PromptModel
from workers.methods.prompting import frozen_image_features
from workers.models.clip import ClipBundle, encode_text


class ZeroShotModel(nn.Module):
    """Encodes ``template.format(name)`` with the frozen text encoder."""

    image_conditioned = False

    def __init__(self, clip: ClipBundle, template: str):
        super().__init__()
        self.clip, self.template = clip, template

    @torch.no_grad()
    def encode_names(self, names: list[str], image_features: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.clip.tokenizer([self.template.format(n) for n in names]).to(self.clip.device)
        return encode_text(self.clip, tokens)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return frozen_image_features(self.clip, images)

    def extra_loss(self, class_features: torch.Tensor) -> torch.Tensor | None:
        return None


class ZeroShot:
    name = "zeroshot"
    frozen_image_encoder = True

    def build(
        self, clip: ClipBundle, classnames: list[str], dataset: str, template: str, options: dict[str, Any]
    ) -> PromptModel:
        return ZeroShotModel(clip, template)
