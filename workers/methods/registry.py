"""The method registry: one card per method, torch-free, so that settings files are checked
without importing the methods. A card holds what the settings need (whether the method trains,
its published defaults: SPEC section 3) and names the class in the method's file that builds it.

Adding a method: its file (a ``PromptMethod`` class) and its card here."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workers.methods.training import TRAINING_DEFAULTS
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
    MethodCard("zeroshot", "zeroshot:ZeroShot", trains=False, defaults={}),
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
):
    METHODS.register(_card.name)(_card)
