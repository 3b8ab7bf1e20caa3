"""CLIP-Adapter (Gao et al., 2021; IJCV 2024), its visual adapter: a bottleneck MLP on CLIP's image
features, blended with them, ``ratio * MLP(f) + (1 - ratio) * f``, against frozen hand-crafted text.

The MLP is CLIP-Adapter's ``Adapter(c_in, reduction=4)`` (``clip_adapter.py`` in
gaopengcuhk/CLIP-Adapter): Linear(d, d / reduction, no bias), ReLU, Linear(d / reduction, d, no
bias), ReLU, with d the image feature width. The image encoder stays frozen, so the adapter runs in
``adapt_images`` on cached and freshly encoded features alike.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from workers.errors import DorBenchError
from workers.methods.base import PromptModel, PromptModule
from workers.models.clip import ClipBundle, encode_text

#: The ``template`` option's ``photo``: the prompt VPT's trainer (MaPLe's, DAC's) and DAC's
#: CLIP-Adapter hard-code. Its ``dataset`` is the dataset's zero-shot template (CLIP-Adapter's
#: ``CUSTOM_TEMPLATES``, CoOp's).
PHOTO_TEMPLATE = "a photo of a {}."


def hand_crafted_template(option: str, dataset_template: str) -> str:
    """The text template of the ``template`` option: ``dataset`` or ``photo``."""
    return dataset_template if option == "dataset" else PHOTO_TEMPLATE


class FrozenTextModel(PromptModule):
    """A method that tunes the image side only: its class features are the frozen zero-shot features
    of ``template.format(name)``, encoded once per name (the training classes at build, any other
    name the first time it is asked for) and never again."""

    def __init__(self, clip: ClipBundle, template: str, classnames: list[str]):
        super().__init__(clip)
        self.template = template
        self._rows = {name: i for i, name in enumerate(dict.fromkeys(classnames))}
        # held, not registered: the kept prompt (state_dict) is what is learned, not these
        self._text = self._encode(list(self._rows))

    @torch.no_grad()
    def _encode(self, names: list[str]) -> torch.Tensor:
        tokens = self.clip.tokenizer([self.template.format(n) for n in names])
        return encode_text(self.clip, tokens)

    def encode_names(self, names: list[str], image_features: torch.Tensor | None = None) -> torch.Tensor:
        new = [n for n in dict.fromkeys(names) if n not in self._rows]
        if new:
            self._rows.update({n: i for i, n in enumerate(new, start=len(self._rows))})
            self._text = torch.cat([self._text, self._encode(new)])
        return self._text[[self._rows[n] for n in names]]


class AdapterModel(FrozenTextModel):
    """CLIP's frozen image features through a residual bottleneck adapter."""

    def __init__(self, clip: ClipBundle, template: str, classnames: list[str], ratio: float, reduction: int):
        super().__init__(clip, template, classnames)
        width = self._text.shape[-1]  # image and text features share the embedding width
        if width // reduction < 1:
            raise DorBenchError(
                f"reduction={reduction} leaves no hidden units in CLIP-Adapter's bottleneck (feature width {width}).",
                f"set reduction to at most {width}.",
            )
        hidden = width // reduction
        self.ratio = ratio
        self.adapter = nn.Sequential(
            nn.Linear(width, hidden, bias=False),
            nn.ReLU(),
            nn.Linear(hidden, width, bias=False),
            nn.ReLU(),
        ).to(clip.device)

    def adapt_images(self, features: torch.Tensor) -> torch.Tensor:
        features = features.to(next(self.adapter.parameters()).dtype)  # blended in the adapter's precision
        return self.ratio * self.adapter(features) + (1 - self.ratio) * features


class ClipAdapter:
    name = "clip_adapter"
    frozen_image_encoder = True

    def build(
        self, clip: ClipBundle, classnames: list[str], dataset: str, template: str, options: dict[str, Any]
    ) -> PromptModel:
        text = hand_crafted_template(options["template"], template)
        return AdapterModel(clip, text, classnames, options["ratio"], options["reduction"]).in_clip_precision()
