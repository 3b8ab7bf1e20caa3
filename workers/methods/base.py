"""The seams between the trial loop and a prompt-tuning method."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from workers.models.clip import ClipBundle


class PromptModel(Protocol):
    """A method's model for one trial: CLIP plus whatever prompt it learns.

    ``encode_names`` puts each name where the class name goes in the method's prompt and
    encodes all of them in one text-encoder pass; it returns L2-normalised features,
    ``[len(names), D]``, or ``[N, len(names), D]`` for image-conditioned prompts.
    """

    image_conditioned: bool  # True when encode_names needs the image features (one prompt per image)

    def encode_names(self, names: list[str], image_features: torch.Tensor | None = None) -> torch.Tensor: ...

    def encode_images(self, images: torch.Tensor) -> torch.Tensor: ...

    def extra_loss(self, class_features: torch.Tensor) -> torch.Tensor | None:
        """A method's own term added to cross-entropy (KgCoOp's), or None."""

    # the nn.Module side the trial loop uses (train/eval mode, the learnable state)
    def parameters(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state_dict: Any) -> Any: ...


class PromptMethod(Protocol):
    """A method's builder (its card in ``registry.py`` holds its defaults)."""

    name: str
    frozen_image_encoder: bool  # True when test image features can come from the cache

    def build(
        self, clip: ClipBundle, classnames: list[str], dataset: str, template: str, options: dict[str, Any]
    ) -> PromptModel:
        """The model for one trial; ``classnames`` are the training (base) classes (as text),
        ``dataset`` the registry name and ``template`` its zero-shot template."""
