"""Checks made before anything is scheduled, for ``dor-bench run`` and ``dor-bench tune`` alike:
every problem that would make trials fail for the same reason, all at once, in one error.

``preflight`` and ``preflight_sweep`` run before Ray starts or the MLflow store is opened: the
datasets (read, and counted against the shots and splits the trials use), the weights, the DOR
word list, the local tracking store and the folders the command writes. ``check_resources`` and
``check_nodes`` run once Ray is up, before any trial is scheduled or any MLflow run is created:
what one trial asks for against what the cluster has, and the data-plane inputs again on every
other node that can run trials (an offline worker without the weights or the data is refused
here, not trial by trial). The data-plane checks live beside what they check in ``workers/``;
this module gathers their answers.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from orchestrator.benchmark.planning import PlannedTrial
from orchestrator.places import file_store_path, sqlite_path
from orchestrator.secrets import redact
from orchestrator.settings.benchmark import Benchmark
from orchestrator.settings.fields import Resources
from workers.errors import DorBenchError
from workers.spec import TrialSpec

#: What a refused command says it did not do.
RUN_REFUSED = "nothing was scheduled"
SWEEP_REFUSED = "the sweep did not start"

#: The YAML field each dataset comes from, and its name: ``("datasets", "oxford_pets")``.
DatasetField = tuple[str, str]


def preflight(
    bench: Benchmark,
    trials: list[PlannedTrial],
    *,
    tracking_uri: str,
    checkpoint_dir: str | os.PathLike[str],
    report_dir: str | os.PathLike[str],
) -> None:
    """Everything that would make a benchmark's trials fail for the same reason, checked before
    Ray starts or the store is opened.

    Raises:
        DorBenchError: one line per problem, each naming its field, file or folder.
    """
    datasets = [("datasets", n) for n in bench.datasets] + [("targets", n) for n in bench.targets]
    specs = [t.spec for t in trials]
    refuse(
        [
            *input_problems(datasets, bench.data_root, specs, bench.model.arch, bench.model.pretrained),
            *tracking_problems(tracking_uri),
            *folder_problems(
                [
                    (Path(checkpoint_dir), "checkpoint folder", "--checkpoint-dir"),
                    (Path(report_dir), "report folder", "--report-dir"),
                ]
            ),
        ],
        RUN_REFUSED,
    )


def preflight_sweep(sweep: Any, spec: TrialSpec, *, tracking_uri: str, storage: str | os.PathLike[str]) -> None:
    """A sweep's preflight: its dataset reads and has what tuning needs, its model loads, its word
    list is usable, its tracking store and Tune storage folder (``storage``) can be written."""
    refuse(
        [
            *input_problems(
                [("dataset", sweep.dataset)], sweep.data_root, [spec], sweep.model.arch, sweep.model.pretrained
            ),
            *tracking_problems(tracking_uri),
            *folder_problems([(Path(storage), "Tune storage folder", "--storage")]),
        ],
        SWEEP_REFUSED,
    )


def check_resources(asked: Sequence[Resources], consequence: str) -> None:
    """Refuse trials that ask for more CPUs, GPUs or memory than any node of the running Ray
    cluster has (call with Ray started, before anything is scheduled)."""
    from orchestrator.cluster import resource_problems

    shapes = {r.model_dump_json(): r for r in asked}.values()
    refuse([p for r in shapes for p in resource_problems(r.cpus, r.gpus, r.memory_gb)], consequence)


def check_nodes(bench: Benchmark, trials: list[PlannedTrial], consequence: str) -> None:
    """The trials' inputs, the cache folder and (for trials with GPUs) CUDA checked on every node
    of the cluster besides the driver's that can run one of them (call with Ray started)."""
    from orchestrator.cluster import on_other_nodes

    datasets = [("datasets", n) for n in bench.datasets] + [("targets", n) for n in bench.targets]
    args = (datasets, bench.data_root, [t.spec for t in trials], bench.model.arch, bench.model.pretrained)
    shapes = list({r.model_dump_json(): r for r in (t.resources for t in trials)}.values())
    answers = on_other_nodes(node_problems, shapes, *args)
    refuse([f"on node {where}: {problem}" for where, problems in answers.items() for problem in problems], consequence)


def node_problems(
    datasets: Sequence[DatasetField],
    data_root: str | None,
    specs: Sequence[TrialSpec],
    arch: str,
    pretrained: str | None,
    gpus: bool,
) -> list[str]:
    """What ``check_nodes`` runs on a node: the inputs as the driver checks them, the cache
    folder written, CUDA seen where the trials get GPUs."""
    from workers.paths import cache_dir

    try:  # first: the built-in data and the features are written there
        why = unwritable(cache_dir())
    except OSError as err:
        why = f"cannot be made ({err.strerror or err})"
    if why:
        return [f"the cache folder ($DOR_BENCH_CACHE) {why}: point it to a folder this node can write"]
    problems = input_problems(datasets, data_root, specs, arch, pretrained)
    if gpus:
        import torch

        if not torch.cuda.is_available():
            problems.append(
                f"the trials ask for GPUs and this node has them in Ray, but torch {torch.__version__} sees no "
                "CUDA device: install a torch build for its CUDA driver (docker/README.md), or set resources.gpus: 0"
            )
    return problems


def refuse(problems: Sequence[str], consequence: str) -> None:
    """One DorBenchError listing every problem (repeats once), or nothing when there are none."""
    if problems:
        lines = list(dict.fromkeys(problems))
        raise DorBenchError(f"Preflight found problems; {consequence}:\n  - " + "\n  - ".join(lines))


# --------------------------------------------------------------------------- data plane inputs


def input_problems(
    datasets: Sequence[DatasetField],
    data_root: str | None,
    specs: Sequence[TrialSpec],
    arch: str,
    pretrained: str | None,
) -> list[str]:
    """The data-plane inputs the trials share: datasets (visual DOR's image sources too), model
    weights, DOR vocabulary."""
    vocabularies = {s.dor.vocabulary for s in specs if s.dor is not None}
    sources = [("dor.image_source", s.dor.image_source) for s in specs if s.dor is not None and s.dor.image_source]
    return [
        *dataset_problems([*datasets, *sources], data_root, specs),
        *model_problems(arch, pretrained),
        *vocabulary_problems(vocabularies),
    ]


def dataset_problems(datasets: Sequence[DatasetField], data_root: str | None, specs: Sequence[TrialSpec]) -> list[str]:
    """Read each dataset's split lists once (no image is opened) and count them against every
    (shots, subsample, what the trial reads) its trials use."""
    from workers.datasets import DATASETS, trained_labels
    from workers.datasets.sampling import split_problems
    from workers.evaluation import split_needs

    uses = {(s.dataset, s.shots, s.subsample, split_needs(s)) for s in specs}
    problems = []
    for field, name in dict.fromkeys(datasets):
        reader = DATASETS.get(name)
        try:
            splits = reader.read(Path(data_root).expanduser() if data_root and not reader.builtin else None)
        except DorBenchError as err:
            problems.append(f"{field}: {err.message}")
            continue
        for dataset, shots, subsample, needs in sorted(uses, key=repr):
            if dataset == name:
                labels = trained_labels(len(splits.classnames), subsample)
                problems += [f"{field}: {p}" for p in split_problems(splits, shots, labels, needs)]
    return problems


def model_problems(arch: str, pretrained: str | None) -> list[str]:
    """Load the model once on the CPU: the architecture, the tag or the weights file."""
    from workers.models.clip import load_clip
    from workers.models.names import names_a_file

    try:
        load_clip(arch, pretrained, device="cpu")
    except DorBenchError as err:
        names_file = pretrained is not None and (names_a_file(pretrained) or os.path.exists(pretrained))
        return [f"{'model.pretrained' if names_file else 'model'}: {err.message}"]
    return []


def vocabulary_problems(vocabularies: Iterable[str]) -> list[str]:
    """Each DOR vocabulary read as the trials read it: a word-list file, WordNet found, CLIP's BPE file."""
    from workers.dor import vocabulary_words

    problems = []
    for vocabulary in sorted(set(vocabularies)):
        try:
            vocabulary_words(vocabulary)
        except DorBenchError as err:
            problems.append(f"dor.vocabulary: {err.message}")
    return problems


# --------------------------------------------------------------------------- what the driver writes


def tracking_problems(tracking_uri: str) -> list[str]:
    """A local tracking store (an sqlite file, a file-store folder) that cannot be written; a
    server is not checked here."""
    shown = f"tracking_uri '{redact(tracking_uri)}'"
    fix = "set tracking_uri (in the file, or --tracking-uri) to a store you can write, e.g. sqlite:///mlflow.db"
    database = sqlite_path(tracking_uri)
    if database is not None:
        if database.is_dir():
            return [f"{shown}: the database '{database}' is a folder, not a file: {fix}"]
        if database.exists() and not os.access(database, os.R_OK | os.W_OK):
            return [f"{shown}: the database '{database}' cannot be written (permissions): {fix}"]
        # the runs' artifacts go in mlruns/ beside the database (tracking.artifact_location)
        reason = unwritable(database.parent) or unwritable(database.parent / "mlruns")
        return [f"{shown}: {reason}: {fix}"] if reason else []
    folder = file_store_path(tracking_uri)
    reason = unwritable(folder) if folder is not None else None
    return [f"{shown}: {reason}: {fix}"] if reason else []


def folder_problems(folders: Iterable[tuple[Path, str, str]]) -> list[str]:
    """Each ``(folder, what it is, the flag that sets it)`` that cannot be written."""
    problems = []
    for folder, what, flag in folders:
        reason = unwritable(folder)
        if reason:
            problems.append(f"{what} '{folder}' ({flag}): {reason}: pass {flag} with a folder you can write to")
    return problems


def unwritable(folder: Path) -> str | None:
    """Why no file can be written into ``folder``, or None. Tried for real: the folder is created
    when missing and a file is written and removed in it; every folder it created is removed again,
    so a refused command leaves nothing behind."""
    folder = folder.expanduser().absolute()
    chain = [folder, *folder.parents]
    existing = next(p for p in chain if p.exists())
    if not existing.is_dir():
        return f"'{existing}' is a file, not a folder"
    created = [p for p in chain if not p.exists()]  # deepest first: the order to remove them in
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".dor-bench-preflight-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        return f"cannot write into '{folder}' ({err.strerror or err})"
    finally:
        for path in created:
            with contextlib.suppress(OSError):  # another process may have put something there
                path.rmdir()
    return None
