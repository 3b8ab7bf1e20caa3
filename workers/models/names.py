"""Model names without torch: every architecture open_clip and dor-bench know (read from their
JSON configs, as open_clip itself does), the weights dor-bench ships, and pretrained tags. Settings
files are checked against these before anything imports torch; only a tag open_clip must look up
(not shipped, not a file) imports it."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs"
WEIGHTS_DIR = Path(__file__).parent / "weights"

#: Weights shipped inside the package: architecture -> {tag: file}. The first tag is the default.
SHIPPED_WEIGHTS: dict[str, dict[str, Path]] = {
    "micro-clip": {"shapes": WEIGHTS_DIR / "micro-clip-shapes.pt"},
}


#: Endings of weight files: a pretrained value with one (or with a folder in it) names a file.
WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")


def names_a_file(pretrained: str) -> bool:
    """Whether a ``pretrained`` value is a weights file's path rather than a tag."""
    return "/" in pretrained or os.sep in pretrained or pretrained.lower().endswith(WEIGHT_FILE_SUFFIXES)


def architectures() -> list[str]:
    """Every architecture name ``load_clip`` accepts: open_clip's model configs and ours, in
    open_clip's (natural) order. Finds open_clip's config folder without importing it."""
    found = importlib.util.find_spec("open_clip")
    folders = [CONFIG_DIR]
    if found is not None and found.submodule_search_locations:
        folders.append(Path(next(iter(found.submodule_search_locations))) / "model_configs")
    names = {p.stem for folder in folders for p in folder.glob("*.json")}
    return sorted(names, key=lambda s: [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)])


def pretrained_tags(arch: str) -> list[str]:
    """The tags ``arch`` can load by name (imports open_clip unless the weights are shipped)."""
    import open_clip

    return [*open_clip.list_pretrained_tags_by_model(arch), *SHIPPED_WEIGHTS.get(arch, {})]


def default_pretrained(arch: str) -> str | None:
    """The pretrained tag used when none is given: shipped weights, else ``openai`` where
    open_clip has it, else None (random init)."""
    if arch in SHIPPED_WEIGHTS:
        return next(iter(SHIPPED_WEIGHTS[arch]))
    return "openai" if "openai" in pretrained_tags(arch) else None


def tuning_recipe(arch: str, pretrained: str | None, method: str) -> dict:
    """The recommended ``{"shots": ..., "options": {...}}`` for tuning ``method`` on shipped
    weights (from the ``.recipe.json`` beside them); ``{}`` for any other weights."""
    path = SHIPPED_WEIGHTS.get(arch, {}).get(pretrained or "")
    recipe_file = path.with_suffix(".recipe.json") if path else None
    if recipe_file is None or not recipe_file.is_file():
        return {}
    recipe = json.loads(recipe_file.read_text())
    return {
        "shots": recipe["shots"],
        "options": {**recipe.get("options", {}), **recipe.get("methods", {}).get(method, {})},
    }
