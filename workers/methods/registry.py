"""The method registry: one card per method, torch-free, so that settings files are checked
without importing the methods. A card holds what the settings need (whether the method trains,
its published defaults: SPEC section 3) and names the class in the method's file that builds it.

Adding a method: its file (a ``PromptMethod`` class) and its card here."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workers.methods.training import TRAINING_DEFAULTS
from workers.models.precision import DEFAULT_PRECISION
from workers.registry import Registry

if TYPE_CHECKING:
    from workers.methods.base import PromptMethod


@dataclass(frozen=True)
class MethodCard:
    name: str
    builder: str  # "module:Class" under workers.methods
    trains: bool  # False for zero-shot
    defaults: dict[str, Any]
    #: what DOR regularises for this method: "text" (outlier words through its prompt) or "image"
    #: (outlier images through its image side, for methods whose text side is frozen)
    dor_outliers: str = "text"

    def epochs(self, options: dict[str, Any]) -> int:
        """How many epochs a trial with these option overrides trains (0 for zero-shot)."""
        return int({**self.defaults, **options}["epochs"]) if self.trains else 0

    def method(self) -> PromptMethod:
        """The method's builder (imports its file, and with it torch)."""
        module, _, cls = self.builder.partition(":")
        built: PromptMethod = getattr(importlib.import_module(f"workers.methods.{module}"), cls)()
        return built


METHODS: Registry[MethodCard] = Registry("method")

for _card in (
    # precision only: the references' zero-shot CLIP runs fp16 on a GPU; fp32 to compare with fp32 trials
    MethodCard("zeroshot", "zeroshot:ZeroShot", trains=False, defaults={"precision": DEFAULT_PRECISION}),
    MethodCard(
        "coop",
        "coop:CoOp",
        trains=True,
        defaults={
            **TRAINING_DEFAULTS,
            "epochs": 200,
            "batch_size": 32,
            "lr": 0.002,
            "n_ctx": 16,
            "ctx_init": None,
            "dor_lambda": 8.0,
        },
    ),
    # "a photo of a" is 4 tokens: KgCoOp learns those 4 (its context length follows the init).
    MethodCard(
        "kgcoop",
        "kgcoop:KgCoOp",
        trains=True,
        defaults={
            **TRAINING_DEFAULTS,
            "epochs": 200,
            "batch_size": 32,
            "lr": 0.002,
            "n_ctx": 4,
            "ctx_init": "a photo of a",
            "kg_weight": 8.0,
            "dor_lambda": 2.0,
        },
    ),
    MethodCard(
        "cocoop",
        "cocoop:CoCoOp",
        trains=True,
        defaults={
            **TRAINING_DEFAULTS,
            "epochs": 10,
            "batch_size": 1,
            "lr": 0.002,
            "n_ctx": 4,
            "ctx_init": "a photo of a",
            "dor_lambda": 2.0,
        },
    ),
    MethodCard(
        "maple",
        "maple:MaPLe",
        trains=True,
        defaults={
            **TRAINING_DEFAULTS,
            "epochs": 5,
            "batch_size": 4,
            "lr": 0.0035,
            "n_ctx": 2,
            "ctx_init": "a photo of a",
            "prompt_depth": 9,
            "dor_lambda": 2.0,
        },
    ),
    # TCP's configs/trainers/TCP/vit_b16_ep100_ctxv1.yaml (Adam, CTX_INIT False) and
    # scripts/base2new_train.sh (NCTX=4); layer 8 and weight 8.0 are fixed in its code.
    MethodCard(
        "tcp",
        "tcp:TCP",
        trains=True,
        defaults={
            **TRAINING_DEFAULTS,
            "epochs": 50,
            "batch_size": 32,
            "lr": 0.002,
            "optimizer": "adam",
            "n_ctx": 4,
            "ctx_init": None,
            "class_token_layer": 8,
            "kg_weight": 8.0,
            "dor_lambda": 2.0,
        },
    ),
    # PromptSRC's configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml
    MethodCard(
        "promptsrc",
        "promptsrc:PromptSRC",
        trains=True,
        defaults={
            **TRAINING_DEFAULTS,
            "epochs": 20,
            "batch_size": 4,
            "lr": 0.0025,
            "n_ctx": 4,
            "ctx_init": "a photo of a",
            "n_ctx_vision": 4,
            "prompt_depth": 9,
            "prompt_depth_vision": 9,
            "text_loss_weight": 25.0,
            "image_loss_weight": 10.0,
            "gpa_mean": 15.0,
            "gpa_std": 1.0,
            "dor_lambda": 2.0,
        },
    ),
    # DAC's configs/trainers/CLIP_Adapter/vit_b16_c4_ep200_batch32.yaml (CLIP-Adapter's own repository
    # ships no config); ratio 0.2, reduction 4 and the dataset templates: CLIP-Adapter's clip_adapter.py.
    # The image side is tuned, so DOR regularises outlier images; its weight is not published.
    MethodCard(
        "clip_adapter",
        "clip_adapter:ClipAdapter",
        trains=True,
        defaults={
            **TRAINING_DEFAULTS,
            "epochs": 200,
            "batch_size": 32,
            "lr": 0.002,
            "ratio": 0.2,
            "reduction": 4,
            "template": "dataset",
            "dor_lambda": 1.0,
        },
        dor_outliers="image",
    ),
    # MaPLe's configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml (deep VPT, the same in DAC's);
    # prompt_depth 1 is shallow VPT. DOR on outlier images; its weight is not published.
    MethodCard(
        "vpt",
        "vpt:VPT",
        trains=True,
        defaults={
            **TRAINING_DEFAULTS,
            "epochs": 5,
            "batch_size": 4,
            "lr": 0.0025,
            "n_ctx": 8,
            "prompt_depth": 12,
            "template": "photo",
            "dor_lambda": 1.0,
            "precision": "fp32",  # its load_clip_to_cpu returns model.float(), whatever PREC says
        },
        dor_outliers="image",
    ),
):
    METHODS.register(_card.name)(_card)
