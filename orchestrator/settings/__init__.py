"""The settings files: one YAML reader, the field types and checks both schemas share, the
benchmark schema (``benchmark.py``) and the sweep schema (``sweep.py``)."""
