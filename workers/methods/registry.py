"""The method registry: each method file registers one PromptMethod class here."""

from workers.methods.base import PromptMethod
from workers.registry import Registry

METHODS: Registry[type[PromptMethod]] = Registry("method")
