"""Check the datasets under a data root: layout, class and split counts, and every image file."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from PIL import Image

from workers.datasets.registry import DATASETS
from workers.datasets.sampling import base_new_labels
from workers.errors import DorBenchError, NotFoundError
from workers.progress import Progress

CHUNK = 64  # images per task handed to the checking threads


@dataclass
class DatasetReport:
    """What the check found for one dataset. ``requested``: named by the user (so must exist)."""

    name: str
    folder: Path
    layout: str
    requested: bool
    found: bool = False
    error: str | None = None
    num_classes: int = 0
    sizes: dict[str, int] = field(default_factory=dict)
    num_base: int = 0
    num_new: int = 0
    images_checked: int = 0
    bad_files: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def problem(self) -> bool:
        """True when the dataset is unusable or has bad files (missing counts when requested)."""
        return self.error is not None or bool(self.bad_files) or (self.requested and not self.found)


def has_problems(reports: list[DatasetReport]) -> bool:
    """True when any report marks a problem (the CLI then exits non-zero)."""
    return any(report.problem for report in reports)


def image_problem(path: str) -> str | None:
    """Why the image at ``path`` cannot be used ("missing", "unreadable: ..."), or None."""
    if not os.path.isfile(path):
        return "missing"
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))  # JPEG: decode at reduced scale, still reads all data
            image.load()
    except (OSError, SyntaxError, ValueError) as err:
        return f"unreadable: {type(err).__name__}: {err}"
    return None


def _check_chunk(paths: list[str]) -> list[tuple[str, str]]:
    return [(path, reason) for path in paths if (reason := image_problem(path)) is not None]


def check_images(paths: list[str], label: str, stream: TextIO | None) -> list[tuple[str, str]]:
    """(path, reason) for every missing or unreadable image, checked on a few threads."""
    progress = Progress(len(paths), label, enabled=stream is not None, stream=stream, unit="images")
    bad: list[tuple[str, str]] = []
    done = 0
    chunks = [paths[start : start + CHUNK] for start in range(0, len(paths), CHUNK)]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for chunk, found in zip(chunks, pool.map(_check_chunk, chunks)):
            done += len(chunk)
            bad += found
            progress.set(done, f"{len(bad)} bad")
    progress.close()
    return bad


def check_dataset(root: Path, name: str, requested: bool, stream: TextIO | None) -> DatasetReport:
    """Read one dataset through its reader, count it, and open every image it lists."""
    reader = DATASETS.get(name)
    layout = getattr(reader, "layout", "CoOp's DATASETS.md describes")
    report = DatasetReport(reader.name, root / reader.folder, layout, requested)
    if not report.folder.is_dir():
        return report
    report.found = True
    try:
        splits = reader.read(root)
    except DorBenchError as err:
        report.error = err.message
        return report
    report.num_classes = len(splits.classnames)
    report.sizes = {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)}
    base, new = base_new_labels(report.num_classes)
    report.num_base, report.num_new = len(base), len(new)
    paths = sorted({d.path for d in splits.train + splits.val + splits.test})
    report.images_checked = len(paths)
    report.bad_files = check_images(paths, f"checking {reader.name}", stream)
    return report


def check_datasets(root: Path, names: list[str] | None, stream: TextIO | None) -> list[DatasetReport]:
    """Check ``names`` (all non-built-in datasets when None) under ``root``; progress to ``stream``.

    With ``names`` None a dataset whose folder is absent is listed as missing, not a problem.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise NotFoundError(
            f"Data root '{root}' does not exist or is not a folder.",
            "pass --root pointing at the folder that holds the CoOp-style dataset folders.",
        )
    requested = names is not None
    if names is None:
        names = [n for n in DATASETS.names() if not DATASETS.get(n).builtin]
    else:
        for name in names:  # unknown names fail before any slow scan
            if DATASETS.get(name).builtin:
                raise DorBenchError(
                    f"Dataset '{name}' is built in: it has no folder under a data root to check.",
                    "name only datasets read from --root (`dor-bench ls` lists them).",
                )
    return [check_dataset(root, name, requested, stream) for name in names]


def format_report(reports: list[DatasetReport], max_bad: int = 20) -> str:
    """A readable summary, one block per dataset, listing up to ``max_bad`` bad files each."""
    lines = []
    for r in reports:
        if not r.found:
            status = "MISSING" if r.requested else "not found"
            lines += [f"{r.name}: {status}: expected '{r.folder}'", f"  layout: {r.layout}"]
            continue
        if r.error is not None:
            lines += [f"{r.name}: ERROR in '{r.folder}'", *(f"  {x}" for x in r.error.splitlines())]
            continue
        sizes = " / ".join(f"{r.sizes[s]} {s}" for s in ("train", "val", "test"))
        if r.sizes["train"] == 0:
            sizes += " (test only)"
        elif r.sizes["val"] == 0:
            sizes += " (val is drawn from train)"
        status = f"{len(r.bad_files)} BAD FILE(S)" if r.bad_files else "ok"
        lines += [
            f"{r.name}: {status} ({r.folder})",
            f"  {r.num_classes} classes ({r.num_base} base / {r.num_new} new); "
            f"images: {sizes}; {r.images_checked} files checked",
        ]
        lines += [f"  bad: {path} ({reason})" for path, reason in r.bad_files[:max_bad]]
        if len(r.bad_files) > max_bad:
            lines.append(f"  ... and {len(r.bad_files) - max_bad} more bad files")
    found = sum(r.found for r in reports)
    problems = sum(r.problem for r in reports)
    lines.append(f"{found}/{len(reports)} datasets found, {problems} with problems.")
    return "\n".join(lines)
