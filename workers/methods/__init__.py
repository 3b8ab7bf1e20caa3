"""Prompt-tuning methods: one file each, and a card in ``registry.py`` (torch-free) naming it."""

from workers.methods.registry import METHODS, MethodCard

__all__ = ["METHODS", "MethodCard"]
