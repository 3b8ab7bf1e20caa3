"""The seams between the trial loop and a fine-tuning method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Self

import torch
from torch import nn

from workers.methods.prompting import frozen_image_features
from workers.models.clip import ClipBundle


@dataclass
class TrainStep:
    """One training step's tensors, as a method's own loss term sees them."""

    images: torch.Tensor | None  # the batch's pixels; None when it came as cached image features
    image_features: torch.Tensor  # [N, D] after ``adapt_images``, not normalised
    class_features: torch.Tensor  # [C, D], or [N, C, D] for image-conditioned prompts
    logits: torch.Tensor  # [N, C]
    labels: torch.Tensor  # [N]


class PromptModel(Protocol):
    """A method's model for one trial: CLIP plus whatever it learns (prompts, an adapter).

    ``encode_names`` puts each name where the class name goes in the method's prompt and
    encodes all of them in one text-encoder pass; it returns L2-normalised features,
    ``[len(names), D]``, or ``[N, len(names), D]`` for image-conditioned prompts.
    """

    image_conditioned: bool  # True when encode_names needs the image features (one prompt per image)

    def encode_names(self, names: list[str], image_features: torch.Tensor | None = None) -> torch.Tensor: ...

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Image features ``[N, D]`` from the (possibly prompted) image encoder."""

    def adapt_images(self, features: torch.Tensor) -> torch.Tensor:
        """A learned map on the image encoder's features (CLIP-Adapter's); identity for the rest.
        It also applies to cached features, so a frozen encoder's cache stays usable."""

    def extra_loss(self, step: TrainStep) -> torch.Tensor | None:
        """A method's own term added to cross-entropy (KgCoOp's), or None."""

    def end_epoch(self, epoch: int, epochs: int) -> None:
        """Called after each training epoch (1-based) with the epoch count."""

    # the nn.Module side the trial loop uses (train/eval mode, the learnable state)
    def parameters(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state_dict: Any) -> Any: ...


class PromptModule(nn.Module):
    """The defaults of a ``PromptModel``: CLIP's frozen image encoder, no adapter, no extra loss,
    nothing at the end of an epoch. CLIP is held, not registered: ``state_dict`` is what is learned."""

    image_conditioned = False
    #: Learned parameters the reference keeps in fp32 while CLIP runs in fp16, and rounds to fp16
    #: where it uses them (names, or prefixes ending in "."); docs/fidelity.md, Precision.
    fp32_parameters: tuple[str, ...] = ()

    def __init__(self, clip: ClipBundle):
        super().__init__()
        self.clip = clip

    def in_clip_precision(self) -> Self:
        """Every learned parameter but ``fp32_parameters`` in CLIP's precision, as the references
        create them (``dtype=clip_model.dtype``, ``.half()``): in fp16, SGD then updates fp16
        values and keeps fp16 momentum, with no fp32 master copy."""
        for name, param in self.named_parameters():
            if not name.startswith(self.fp32_parameters):
                param.data = param.data.to(self.clip.dtype)
        return self

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return frozen_image_features(self.clip, images)

    def adapt_images(self, features: torch.Tensor) -> torch.Tensor:
        return features

    def extra_loss(self, step: TrainStep) -> torch.Tensor | None:
        return None

    def end_epoch(self, epoch: int, epochs: int) -> None:
        return None


class PromptMethod(Protocol):
    """A method's builder (its card in ``registry.py`` holds its defaults)."""

    name: str
    frozen_image_encoder: bool  # True when image features can come from the cache (before adapt_images)

    def build(
        self, clip: ClipBundle, classnames: list[str], dataset: str, template: str, options: dict[str, Any]
    ) -> PromptModel:
        """The model for one trial; ``classnames`` are the training (base) classes (as text),
        ``dataset`` the registry name and ``template`` its zero-shot template."""
