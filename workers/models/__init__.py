"""CLIP loading (``clip.py``): any open_clip architecture, plus dor-bench's own small ones; their
names without torch (``names.py``)."""
