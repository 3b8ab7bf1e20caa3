"""User-facing errors: one paragraph that says what is wrong and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DorBenchError(Exception):
    """A mistake in the user's input or environment, reported without a stack trace.

    ``what`` says what is wrong (naming the file, field or path); ``fix`` says what to do.
    """

    def __init__(self, what: str, fix: str | None = None):
        self.what = what
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return self.what if not self.fix else f"{self.what}\n  How to fix: {self.fix}"


class NotFoundError(DorBenchError):
    """A name that is not in a registry, or a file or folder that is not there."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' Did you mean X?' suffix for ``name`` among ``choices``, or '' when nothing is close."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f" Did you mean '{lowered[close[0]]}'?" if close else ""
