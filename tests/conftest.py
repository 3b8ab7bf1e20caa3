"""Shared test set-up: an isolated dor-bench cache for the whole session, offline hub."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """Every test writes caches (features, few-shot draws, generated data) under one temp folder,
    unless it points DOR_BENCH_CACHE elsewhere itself."""
    path = tmp_path_factory.mktemp("dor-bench-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOR_BENCH_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def dor_words(tmp_path_factory) -> str:
    """A file of ~600 real WordNet nouns (every 200th), so trials never encode all 118k."""
    from workers.dor import noun_vocabulary

    path = tmp_path_factory.mktemp("vocabulary") / "nouns.txt"
    path.write_text("\n".join(noun_vocabulary()[::200]))
    return str(path)
