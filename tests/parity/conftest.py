"""The parity tests' model: the random-init tiny CLIP on the CPU, one per test module."""

import pytest

from workers.models.clip import ClipBundle, load_clip


@pytest.fixture(scope="module")
def clip() -> ClipBundle:
    return load_clip("tiny-clip", None, device="cpu")
