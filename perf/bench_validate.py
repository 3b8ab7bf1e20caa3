"""How fast ``dor-bench validate`` refuses a bad file, against ``dor-bench --help`` (measured in one run).

A missing, binary or malformed file is refused before the schemas are imported; the schemas
themselves import no torch (method cards and model names are torch-free), so a file with schema
problems is refused as fast. Only a file that passes and names an open_clip tag imports open_clip.

Usage: python perf/bench_validate.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path


def seconds(*args: str, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, check=False)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "binary.yaml").write_bytes(b"\x00\xff\xfe binary")
        (folder / "syntax.yaml").write_text("name: [unclosed\n")
        (folder / "schema.yaml").write_text("name: x\ndatasets: [shapes]\nmethods: [coopp]\n")
        (folder / "values.yaml").write_text("name: ../x\ndatasets: [shapes]\nmethods: [coop]\nseeds: [1, 1]\n")
        (folder / "large.yaml").write_text("# comment\n" * 200_000)
        help_s = seconds("--help")
        print(f"{'dor-bench --help':40} {help_s:6.2f} s")
        for kind in ("binary", "syntax", "large", "schema", "values"):
            s = seconds("validate", str(folder / f"{kind}.yaml"))
            print(f"{f'validate: {kind} problem':40} {s:6.2f} s  ({s / help_s:.1f}x --help)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
