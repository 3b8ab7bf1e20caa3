"""The method registry: each method file registers one PromptMethod here."""

from workers.methods.base import PromptMethod
from workers.registry import Registry

METHODS: Registry[PromptMethod] = Registry("method")
