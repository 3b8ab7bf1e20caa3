"""TCP (Yao et al., 2024): CoOp's context plus class-aware tokens in a deeper text layer, made
from each class's hand-crafted text feature, and KgCoOp's pull toward those features.

From TCP's ``trainers/tcp.py``: the prompt is ``"X X X X {name}<dataset suffix>"`` (its
``CUSTOM_TEMPLATES``; the four X's are the learned context); a small network (Linear d -> d/4,
QuickGELU, Linear d/4 -> n_ctx * width) maps the class's hand-crafted feature (its
``CUSTOM_TEMPLATES_ori``, L2-normalised) to tokens that replace the context positions at the
input of text layer 8 (``layers=[8]`` in its ``clip_text/model.py``, mixing weight 1.0); the loss
adds ``8 * (1 - mean cos(tuned, hand-crafted))`` over the classes. Any other name (a new class, an
outlier word) gets its class-aware tokens from its own hand-crafted feature, as a class does.
"""

from __future__ import annotations

from typing import Any

import torch
from open_clip.transformer import QuickGELU
from torch import nn

from workers.methods.base import PromptModel
from workers.methods.coop import ContextPromptModel
from workers.methods.kgcoop import template_features
from workers.models.clip import ClipBundle, encode_text

#: What follows the context in TCP's prompts, by dor-bench dataset name (its ``CUSTOM_TEMPLATES``
#: without the four context words; UCF101's and ImageNet's templates learn "a photo of a" in
#: place); every other dataset: "{}.".
PROMPT_TEMPLATES = {
    "oxford_pets": "{}, a type of pet.",
    "oxford_flowers": "{}, a type of flower.",
    "fgvc_aircraft": "{}, a type of aircraft.",
    "dtd": "{} texture.",
    "stanford_cars": "{}, a type of car",  # no full stop in TCP's template
    "food101": "{}, a type of food.",
    "ucf101": "person doing {}.",
}
DEFAULT_PROMPT_TEMPLATE = "{}."

#: TCP's hand-crafted templates (``CUSTOM_TEMPLATES_ori``); every other dataset: "a photo of a {}.".
KNOWLEDGE_TEMPLATES = {
    "oxford_pets": "a photo of a {}, a type of pet.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "fgvc_aircraft": "a photo of an aircraft {}.",
    "dtd": "a photo of a {}, a type of texture.",
    "eurosat": "a centered satellite photo of {}.",
    "food101": "a photo of a {}, a type of food.",
    "ucf101": "a photo of a person doing {}.",
}
DEFAULT_KNOWLEDGE_TEMPLATE = "a photo of a {}."


class ClassAwarePromptModel(ContextPromptModel):
    """CoOp's context at the input; at the input of text layer ``layer``, tokens made from each
    name's hand-crafted feature replace the context positions."""

    def __init__(
        self,
        clip: ClipBundle,
        classnames: list[str],
        dataset: str,
        n_ctx: int,
        ctx_init: str | None,
        layer: int,
        kg_weight: float,
    ):
        knowledge_template = KNOWLEDGE_TEMPLATES.get(dataset, DEFAULT_KNOWLEDGE_TEMPLATE)
        anchor = template_features(clip, classnames, knowledge_template)
        super().__init__(clip, n_ctx, ctx_init, anchor, kg_weight)
        self.template = PROMPT_TEMPLATES.get(dataset, DEFAULT_PROMPT_TEMPLATE)
        self.knowledge_template = knowledge_template
        # a shallower tower than ViT-B/16's 12 layers takes the tokens at its last layer
        self.layer = max(1, min(layer, len(clip.model.transformer.resblocks) - 1))
        self.known = dict(zip(classnames, anchor))
        embed_dim, width = anchor.shape[-1], self.ctx.shape[-1]
        self.meta_net = nn.Sequential(
            nn.Linear(embed_dim, embed_dim // 4), QuickGELU(), nn.Linear(embed_dim // 4, self.ctx.shape[0] * width)
        ).to(clip.device)

    def knowledge(self, names: list[str]) -> torch.Tensor:
        """Each name's hand-crafted feature ``[len(names), D]``: the training classes' from the
        build, any other name's (new classes, outlier words) encoded now."""
        table = dict(self.known)
        fresh = [n for n in names if n not in table]
        if fresh:
            table.update(zip(fresh, template_features(self.clip, fresh, self.knowledge_template)))
        return torch.stack([table[n] for n in names])

    def prompt_tokens(self, names: list[str]) -> torch.Tensor:
        """Token ids ``[len(names), L]``: the context placeholders, then each name in the template."""
        return self.clip.tokenizer([f"{self.prefix} {self.template.format(n)}" for n in names])

    def encode_names(self, names: list[str], image_features: torch.Tensor | None = None) -> torch.Tensor:
        class_tokens = self.meta_net(self.knowledge(names).to(self.ctx.dtype)).view(len(names), *self.ctx.shape)
        deep: list[torch.Tensor | None] = [None] * (self.layer - 1)
        return encode_text(self.clip, self.prompt_tokens(names), self.ctx, [*deep, class_tokens])


class TCP:
    name = "tcp"
    frozen_image_encoder = True

    def build(
        self, clip: ClipBundle, classnames: list[str], dataset: str, template: str, options: dict[str, Any]
    ) -> PromptModel:
        return ClassAwarePromptModel(
            clip,
            classnames,
            dataset,
            options["n_ctx"],
            options["ctx_init"],
            options["class_token_layer"],
            options["kg_weight"],
        ).in_clip_precision()
