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

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def add(obj: T) -> T:
            key = name.lower()
            if key in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[key] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name.lower()]
        except KeyError:
            raise NotFoundError(
                f"Unknown {self.kind} '{name}'.{did_you_mean(name, self._entries)}",
                f"choose one of: {', '.join(sorted(self._entries))}"
                " (`dor-bench ls` lists them).",
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
