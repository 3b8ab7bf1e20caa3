"""Prompt-tuning methods. Adding one: a new file that registers it, plus an import line here."""

from workers.methods import cocoop, coop, kgcoop, maple, zeroshot  # noqa: F401
from workers.methods.registry import METHODS

__all__ = ["METHODS"]
