"""Ray Tune sweeps: the search (tune.py), the trainable run in Tune's actors, and the end-of-sweep summary."""
