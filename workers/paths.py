"""Where dor-bench keeps what it derives (never inside the user's dataset folders)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache folder (``$DOR_BENCH_CACHE``, default ``~/.cache/dor-bench``), sub-folder created."""
    root = Path(os.environ.get("DOR_BENCH_CACHE") or Path.home() / ".cache" / "dor-bench")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
