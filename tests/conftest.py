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
