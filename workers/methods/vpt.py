"""VPT (Jia et al., 2022) on CLIP, as the CoOp-family code runs it (the ``VPT`` trainer of MaPLe's
repository, the same in DAC's): learned tokens in CLIP's vision transformer, frozen hand-crafted text.

``n_ctx`` tokens, each N(0, 0.02), are appended to the image sequence after the positional
embedding; with ``prompt_depth`` d > 1 (deep VPT) layers 1..d-1 each replace them with tokens of
their own, and the tower pools without them. ``prompt_depth: 1`` is shallow VPT (input tokens
only). The text side is the frozen zero-shot feature of "a photo of a {name}." (``template``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workers.errors import DorBenchError
from workers.methods.base import PromptModel
from workers.methods.clip_adapter import FrozenTextModel, hand_crafted_template
from workers.models.clip import ClipBundle, encode_image


class VisualPromptModel(FrozenTextModel):
    """Learned vision prompts in the first ``depth`` layers of CLIP's vision transformer."""

    # fp32 prompts, rounded to fp16 where they are used (the reference's .half()), whatever the
    # precision CLIP runs in (the reference's VPT runs an fp32 CLIP)
    fp32_parameters = ("prompts.",)

    def __init__(self, clip: ClipBundle, template: str, classnames: list[str], n_ctx: int, depth: int):
        super().__init__(clip, template, classnames)
        visual = clip.model.visual
        if not hasattr(visual, "transformer"):
            raise DorBenchError(
                f"VPT prompts a vision transformer, and {clip.arch}'s image tower is not one.",
                "use a ViT architecture (e.g. ViT-B-16), or another method.",
            )
        width, layers = visual.conv1.out_channels, len(visual.transformer.resblocks)
        # as the reference, which builds prompts only for the layers there are
        self.depth = min(depth, layers)
        self.prompts = nn.ParameterList(
            nn.Parameter(torch.randn(n_ctx, width, device=clip.device) * 0.02) for _ in range(self.depth)
        )

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return encode_image(self.clip, images, [p.half() for p in self.prompts])


class VPT:
    name = "vpt"
    frozen_image_encoder = False

    def build(
        self, clip: ClipBundle, classnames: list[str], dataset: str, template: str, options: dict[str, Any]
    ) -> PromptModel:
        text = hand_crafted_template(options["template"], template)
        return VisualPromptModel(clip, text, classnames, options["n_ctx"], options["prompt_depth"]).in_clip_precision()
