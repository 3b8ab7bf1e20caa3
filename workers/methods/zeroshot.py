"""Zero-shot CLIP: the dataset's hand-written template, no training."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workers.methods.base import PromptModel
from workers.methods.prompting import frozen_image_features
from workers.models.clip import ClipBundle


class ZeroShotModel(nn.Module):
    """Encodes ``template.format(name)`` with the frozen text encoder."""

    image_conditioned = False

    def __init__(self, clip: ClipBundle, template: str):
        super().__init__()
        self.clip, self.template = clip, template

    @torch.no_grad()
    def encode_names(self, names: list[str], image_features: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.clip.tokenizer([self.template.format(n) for n in names]).to(self.clip.device)
        return F.normalize(self.clip.model.encode_text(tokens).float(), dim=-1)

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
