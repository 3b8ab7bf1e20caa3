"""CLIP loading: any open_clip architecture, plus dor-bench's own small ones."""

from workers.models.clip import ClipBundle, list_models, load_clip

__all__ = ["ClipBundle", "list_models", "load_clip"]
