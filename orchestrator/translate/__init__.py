"""Every translation of a trial spec, in one package, each checked as a round trip
(``tests/orchestrator/test_translate.py``):

- ``params``: MLflow params (``params_from_spec``, nested fields joined with dots, and
  ``spec_from_params``); torch-free, for reports;
- ``flags``: ``dor-bench trial`` flags (``spec_from_flags``, and ``flags_from_spec``: a spec as the
  command that reruns it exactly);
- ``sweeps``: ``spec_from_sweep`` (the spec every Tune trial starts from) and ``spec_from_tune``
  (one Tune config and seed).

Benchmark files are grids, not single specs: ``benchmark/planning.py`` expands them through the
same ``normalise``, and a test checks that one trial has one run key from every entry point.
"""
