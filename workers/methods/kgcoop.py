"""KgCoOp (Yao et al., 2023): CoOp plus a pull of the tuned class features toward the
hand-crafted zero-shot ones, ``weight * (1 - mean cos)``.

The hand-crafted prompt is KgCoOp's own per-dataset template (``CUSTOM_TEMPLATES`` in KgCoOp's
``trainers/kgcoop.py``, the same in DAC's code), one prompt per class. It equals the zero-shot
template except for DTD ("a photo of a {}, a type of texture." against zero-shot's "{} texture.").
"""

from __future__ import annotations

from typing import Any

import torch

from workers.methods.base import PromptModel
from workers.methods.coop import ContextPromptModel
from workers.models.clip import ClipBundle, encode_text

#: KgCoOp's templates by dor-bench dataset name; every other dataset: "a photo of a {}.".
ANCHOR_TEMPLATES = {
    "oxford_pets": "a photo of a {}, a type of pet.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "dtd": "a photo of a {}, a type of texture.",
    "eurosat": "a centered satellite photo of {}.",
    "food101": "a photo of {}, a type of food.",
    "ucf101": "a photo of a person doing {}.",
}
DEFAULT_ANCHOR_TEMPLATE = "a photo of a {}."


@torch.no_grad()
def template_features(clip: ClipBundle, classnames: list[str], template: str) -> torch.Tensor:
    """Frozen zero-shot features of ``template.format(name)``, L2-normalised."""
    tokens = clip.tokenizer([template.format(n) for n in classnames])
    return encode_text(clip, tokens)


class KgCoOp:
    name = "kgcoop"
    frozen_image_encoder = True

    def build(
        self, clip: ClipBundle, classnames: list[str], dataset: str, template: str, options: dict[str, Any]
    ) -> PromptModel:
        anchor = template_features(clip, classnames, ANCHOR_TEMPLATES.get(dataset, DEFAULT_ANCHOR_TEMPLATE))
        return ContextPromptModel(
            clip, options["n_ctx"], options["ctx_init"], anchor, options["kg_weight"]
        ).in_clip_precision()
