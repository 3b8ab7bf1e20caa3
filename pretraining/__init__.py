"""Pretraining the micro-CLIP on the shapes world: an application of its own, beside the data plane
(``workers``, which it uses) and the control plane (``orchestrator``, whose ``dor-bench micro-clip
pretrain`` is its one command line)."""
