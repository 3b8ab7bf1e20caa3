"""A headless Chromium for the tests that check what a person sees (the HTML report, the UI)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
#: The flags every headless page load runs with.
HEADLESS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr", "--v=0")


def chromium() -> str:
    """The Chromium binary, installed by scripts/ensure-chromium when missing; skips (saying
    why) only where it cannot be installed."""
    found = next((p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None)
    if found:
        return found
    setup = subprocess.run([str(ROOT / "scripts" / "ensure-chromium")], capture_output=True, text=True)
    found = next((p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None)
    if not found:
        pytest.skip(f"Chromium unavailable and could not be installed: {setup.stderr.strip()}")
    return found
