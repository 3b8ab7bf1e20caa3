"""A name -> object registry with "did you mean" errors (datasets, methods, models)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from workers.errors import NotFoundError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Holds named entries of one kind; lookups are case-insensitive."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def add(obj: T) -> T:
            key = name.lower()
            if key in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[key] = obj
            return obj

        return add

    def alias(self, alias: str, name: str) -> None:
        """Let ``alias`` stand for the registered ``name``."""
        self._aliases[alias.lower()] = name.lower()

    def get(self, name: str) -> T:
        key = self._aliases.get(name.lower(), name.lower())
        try:
            return self._entries[key]
        except KeyError:
            known = [*self._entries, *self._aliases]
            raise NotFoundError(
                f"Unknown {self.kind} '{name}'.{did_you_mean(name, known)}",
                f"choose one of: {', '.join(sorted(self._entries))} (`dor-bench ls` lists them).",
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return self._aliases.get(name.lower(), name.lower()) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
