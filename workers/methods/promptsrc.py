"""PromptSRC (Khattak et al., 2023): independent deep prompts on both encoders (IVLP),
regulated toward frozen CLIP, and the epochs' prompts averaged with Gaussian weights (GPA).

From PromptSRC's ``trainers/promptsrc.py`` and ``clip/model.py``: text context learned from the
first ``n_ctx`` tokens of "a photo of a" and replaced by fresh learned tokens at layers
1..depth-1; vision prompts appended to the image sequence and replaced likewise. The loss adds
``TEXT_LOSS_WEIGHT * L1(tuned class features, frozen ones)`` (the frozen ones: each class's
features averaged over 60 templates, then normalised), ``IMAGE_LOSS_WEIGHT * L1(prompted image
features, frozen ones)`` (both normalised) and ``KL(zero-shot logits || prompted logits)`` summed
over the batch and divided by its logit count. After epoch e the prompts are added to the
aggregate with weight ``N(e; mean, std)`` normalised over the epochs; the last epoch's model is
that aggregate.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workers.methods.base import PromptModel, PromptModule, TrainStep
from workers.methods.prompting import (
    context_setup,
    frozen_image_features,
    init_context,
    placeholder_tokens,
    prompt_prefix,
)
from workers.models.clip import ClipBundle, encode_image, encode_text

#: The templates of the frozen text features (PromptSRC's ``IMAGENET_TEMPLATES``: 60 of the
#: ImageNet templates of OpenAI's prompt-engineering notebook).
TEACHER_TEMPLATES = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
)


@torch.no_grad()
def teacher_features(clip: ClipBundle, classnames: list[str]) -> torch.Tensor:
    """Frozen CLIP's class features ``[C, D]``: the mean over ``TEACHER_TEMPLATES`` of the
    unnormalised features, then L2-normalised."""
    per_template = [
        encode_text(clip, clip.tokenizer([t.format(n) for n in classnames]), normalize=False) for t in TEACHER_TEMPLATES
    ]
    return F.normalize(torch.stack(per_template).mean(dim=0), dim=-1)


def gpa_weights(epochs: int, mean: float, std: float) -> list[float]:
    """Each epoch's (1..epochs) weight in the aggregate: a Gaussian density at the epoch,
    normalised to sum 1 (computed from its log, so far-off epochs never make it 0/0)."""
    logs = [-0.5 * ((e - mean) / std) ** 2 for e in range(1, epochs + 1)]
    raw = [math.exp(v - max(logs)) for v in logs]
    return [r / sum(raw) for r in raw]


class SelfRegulatingPromptModel(PromptModule):
    """Deep text and vision prompts, the self-regulating losses, and GPA over the epochs. The
    aggregate is a buffer (``gpa_sum``), so a checkpoint resumes it exactly."""

    gpa_sum: torch.Tensor
    # IVLP's deeper text prompts and its vision prompts are fp32 even in an fp16 CLIP, rounded at use
    fp32_parameters = ("deep_text.", "vision_prompts.")

    def __init__(self, clip: ClipBundle, classnames: list[str], options: dict[str, Any]):
        super().__init__(clip)
        visual = clip.model.visual
        text_depth = max(1, min(options["prompt_depth"], len(clip.model.transformer.resblocks)))
        vision_depth = max(1, min(options["prompt_depth_vision"], len(visual.transformer.resblocks)))
        n_ctx, ctx_init = context_setup(options["n_ctx"], options["ctx_init"], length_from_init=False)
        self.prefix = prompt_prefix(n_ctx, ctx_init)
        self.ctx = nn.Parameter(init_context(clip, n_ctx, ctx_init).to(clip.device))
        text_width, vision_width = self.ctx.shape[-1], visual.conv1.out_channels
        self.deep_text = nn.ParameterList(
            nn.Parameter(torch.randn(n_ctx, text_width, device=clip.device) * 0.02) for _ in range(text_depth - 1)
        )
        self.vision_prompts = nn.ParameterList(
            nn.Parameter(torch.randn(options["n_ctx_vision"], vision_width, device=clip.device) * 0.02)
            for _ in range(vision_depth)
        )
        self.teacher = teacher_features(clip, classnames)
        self.text_weight, self.image_weight = options["text_loss_weight"], options["image_loss_weight"]
        self.gpa_mean, self.gpa_std = options["gpa_mean"], options["gpa_std"]
        size = sum(p.numel() for p in self.parameters())
        self.register_buffer("gpa_sum", torch.zeros(size, device=clip.device))

    def encode_names(self, names: list[str], image_features: torch.Tensor | None = None) -> torch.Tensor:
        tokens = placeholder_tokens(self.clip, names, self.prefix)
        return encode_text(self.clip, tokens, self.ctx, list(self.deep_text))

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return encode_image(self.clip, images, list(self.vision_prompts))

    def extra_loss(self, step: TrainStep) -> torch.Tensor | None:
        if step.images is None:
            raise ValueError("PromptSRC's image loss needs the batch's pixels")
        frozen = F.normalize(frozen_image_features(self.clip, step.images), dim=-1)
        zero_shot_logits = self.clip.logit_scale * frozen @ self.teacher.T
        text = F.l1_loss(step.class_features.float(), self.teacher) * self.text_weight
        image = F.l1_loss(F.normalize(step.image_features.float(), dim=-1), frozen) * self.image_weight
        kl = F.kl_div(
            F.log_softmax(step.logits.float(), dim=1),
            F.log_softmax(zero_shot_logits, dim=1),
            reduction="sum",
            log_target=True,
        )
        return text + image + kl / step.logits.numel()

    @torch.no_grad()
    def end_epoch(self, epoch: int, epochs: int) -> None:
        params = list(self.parameters())
        flat = torch.cat([p.reshape(-1).float() for p in params])
        self.gpa_sum += gpa_weights(epochs, self.gpa_mean, self.gpa_std)[epoch - 1] * flat
        if epoch == epochs:
            for p, average in zip(params, self.gpa_sum.split([p.numel() for p in params])):
                p.copy_(average.view_as(p))


class PromptSRC:
    name = "promptsrc"
    frozen_image_encoder = False

    def build(
        self, clip: ClipBundle, classnames: list[str], dataset: str, template: str, options: dict[str, Any]
    ) -> PromptModel:
        return SelfRegulatingPromptModel(clip, classnames, options).in_clip_precision()
