"""The preflight of `dor-bench run` and `dor-bench tune`: every problem knowable before anything is
scheduled, all in one error, each line naming its field, file or folder; a refused command
leaves nothing behind. Real files, real readers, a real model load, a real local Ray and MLflow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray
import torch
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.benchmark.planning import plan
from orchestrator.cli import main
from orchestrator.preflight import (
    RUN_REFUSED,
    check_resources,
    folder_problems,
    model_problems,
    preflight,
    preflight_sweep,
    tracking_problems,
    unwritable,
    vocabulary_problems,
)
from orchestrator.settings.benchmark import load_benchmark
from orchestrator.settings.fields import Resources
from orchestrator.settings.sweep import load_sweep
from orchestrator.translate.sweeps import spec_from_sweep
from tests.helpers.fake_data import classname, make_split_json_dataset
from workers.datasets import SplitNeeds, load_trial_data
from workers.datasets.sampling import split_problems
from workers.errors import DorBenchError
from workers.models.clip import load_clip

GARBAGE = bytes(range(256)) * 16  # no weights file: torch cannot unpickle it (fixed bytes: the same error every run)


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def blocked(tmp_path: Path) -> tuple[Path, Path]:
    """A folder no file can be written into, and the path a message must name: a folder without
    write permission, or (as root, whom permissions do not stop) a folder below a regular file."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        return locked / "inner", locked / "inner"
    blocker = write(tmp_path / "blocker", "a file where a folder should be")
    return blocker / "inner", blocker


def everything_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


# --------------------------------------------------------------------------- word lists


def test_word_list_files_are_read_as_trials_read_them(tmp_path):
    good = write(tmp_path / "good.txt", "\n  apple \n\nriver\n")
    empty = write(tmp_path / "empty.txt", "\n   \n\n")
    latin = write(tmp_path / "latin.txt", "caf\xe9\n".encode("latin-1"))
    folder = tmp_path / "a-folder.txt"
    folder.mkdir()
    assert vocabulary_problems([str(good)]) == []
    problems = vocabulary_problems([str(empty), str(latin), str(folder), str(tmp_path / "nope.txt")])
    assert len(problems) == 4 and all(p.startswith("dor.vocabulary: ") for p in problems)
    by_file = {name: next(p for p in problems if f"/{name}'" in p) for name in ("empty.txt", "latin.txt", "nope.txt")}
    assert "has no words" in by_file["empty.txt"]
    assert "not UTF-8 text (byte 0xe9 at offset 3)" in by_file["latin.txt"]
    assert "does not exist" in by_file["nope.txt"] and "wordnet" in by_file["nope.txt"]
    assert any(f"'{folder}' is not a file" in p for p in problems)


# --------------------------------------------------------------------------- weights


def test_a_weights_file_that_is_no_checkpoint_is_named_not_a_traceback(tmp_path):
    garbage = write(tmp_path / "x.pt", GARBAGE)
    with pytest.raises(DorBenchError) as raised:
        load_clip("tiny-clip", str(garbage), device="cpu")
    assert f"The weights file '{garbage}' is not a checkpoint" in raised.value.message
    assert "UnpicklingError" in raised.value.message and "How to fix" in raised.value.message
    [problem] = model_problems("tiny-clip", str(garbage))
    assert problem.startswith(f"model.pretrained: The weights file '{garbage}' is not a checkpoint")


def test_a_checkpoint_of_other_weights_and_a_missing_file_are_told_apart(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"not.a.clip.weight": torch.zeros(2)}, other)
    [wrong] = model_problems("tiny-clip", str(other))
    assert f"'{other}' is a checkpoint, but not of a tiny-clip" in wrong and "Missing key(s)" in wrong
    [missing] = model_problems("tiny-clip", str(tmp_path / "gone" / "w.pt"))
    assert missing.startswith(f"model.pretrained: The weights file '{tmp_path / 'gone' / 'w.pt'}' does not exist")
    assert model_problems("tiny-clip", None) == []


# --------------------------------------------------------------------------- what the driver writes


def test_a_tracking_store_below_a_file_is_refused_by_name(tmp_path):
    blocker = write(tmp_path / "blocker", "a file")
    for uri in (f"sqlite:///{blocker}/mlflow.db", f"file://{blocker}/mlruns", f"{blocker}/mlruns"):
        [problem] = tracking_problems(uri)
        assert problem.startswith(f"tracking_uri '{uri}': '{blocker}' is a file, not a folder")
        assert "--tracking-uri" in problem
    (tmp_path / "db-folder.db").mkdir()
    [problem] = tracking_problems(f"sqlite:///{tmp_path / 'db-folder.db'}")
    assert f"the database '{tmp_path / 'db-folder.db'}' is a folder, not a file" in problem


def test_a_store_in_a_new_folder_passes_and_the_folder_is_not_left_behind(tmp_path):
    assert tracking_problems(f"sqlite:///{tmp_path / 'new' / 'deeper' / 'mlflow.db'}") == []
    assert tracking_problems(f"file://{tmp_path / 'store'}") == []
    assert tracking_problems("https://user:secret@mlflow.example.org") == []  # a server: not checked here
    assert everything_under(tmp_path) == set()


def test_unwritable_folders_are_named_with_the_flag_that_sets_them(tmp_path):
    folder, named = blocked(tmp_path)
    before = everything_under(tmp_path)
    [problem] = folder_problems([(folder, "checkpoint folder", "--checkpoint-dir"), (tmp_path / "ok", "x", "--x")])
    assert problem.startswith(f"checkpoint folder '{folder}' (--checkpoint-dir): ")
    assert f"'{named}'" in problem and problem.endswith("pass --checkpoint-dir with a folder you can write to")
    assert everything_under(tmp_path) == before  # 'ok' was created to try it, then removed


def test_a_writable_folder_is_tried_for_real_and_left_as_it_was(tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()
    assert unwritable(existing) is None and unwritable(existing / "a" / "b") is None
    assert everything_under(tmp_path) == {existing}  # no probe file, no created folder


# --------------------------------------------------------------------------- datasets


def test_a_trained_class_without_train_images_is_named_with_its_split(tmp_path):
    make_split_json_dataset(tmp_path, "oxford_pets", 4, train=[0, 2, 2, 0], val=1, test=1)
    needs = SplitNeeds(train=True, validation="none")
    with pytest.raises(DorBenchError) as raised:
        load_trial_data("oxford_pets", tmp_path, 1, 1, "base2new", require=needs)
    assert raised.value.message.startswith(
        f"Dataset 'oxford_pets': the train split has no image of class '{classname('oxford_pets', 0)}', "
        "which the trials train on"
    )  # class 3 has no train image either, but it is a new class: never trained on
    data = load_trial_data("oxford_pets", tmp_path, 1, 1, "base2new")  # a scoring-only read is not refused
    assert data.base_classnames and data.new_classnames


def test_validation_images_are_counted_as_the_few_shot_draw_takes_them(tmp_path):
    make_split_json_dataset(tmp_path, "oxford_pets", 4, train=[3, 2, 2, 2], val=0, test=1)
    from workers.datasets import DATASETS

    splits = DATASETS.get("oxford_pets").read(tmp_path)
    each = SplitNeeds(train=True, validation="each")
    # no val split: validation images are the train images the draw leaves (3 - 2 for class 0 only)
    [tuning] = split_problems(splits, 2, [0, 1], each)
    assert f"no validation image of class '{classname('oxford_pets', 1)}'" in tuning
    assert "left over by the 2-shot draw (no val split)" in tuning and "lower shots" in tuning
    assert split_problems(splits, 1, [0, 1], each) == []
    [piece] = split_problems(splits, 3, [0, 1], SplitNeeds(train=True, validation="some"))
    assert "no validation image of any base class" in piece and "PIECE" in piece
    assert split_problems(splits, 3, [0, 1], SplitNeeds(train=True, validation="none")) == []


# --------------------------------------------------------------------------- whole commands


def write_benchmark(folder: Path, **changes: object) -> Path:
    config = {
        "name": "pre",
        "data_root": str(folder / "data"),
        "datasets": ["oxford_pets"],
        "model": {"arch": "tiny-clip", "pretrained": "none"},
        "shots": 1,
        "seeds": [1],
        "test_per_class": 1,
        "methods": ["zeroshot", {"name": "coop", "options": {"epochs": 1}, "dor": [True]}],
        "dor": {"lam": 1, "outliers_per_step": 2, "pool_size": 2, "vocabulary": "words.txt"},
        **changes,
    }
    write(folder / "words.txt", "apple\nriver\nhammer\n")
    return write(folder / "bench.yaml", yaml.safe_dump(config))


def test_preflight_lists_every_problem_at_once_and_leaves_nothing_behind(tmp_path):
    make_split_json_dataset(tmp_path / "data", "oxford_pets", 4, train=[0, 1, 1, 1], val=1, test=1)
    write(tmp_path / "x.pt", GARBAGE)
    write(tmp_path / "empty.txt", "\n")
    blocker = write(tmp_path / "blocker", "a file")
    path = write_benchmark(
        tmp_path,
        model={"arch": "tiny-clip", "pretrained": str(tmp_path / "x.pt")},
        dor={"lam": 1, "outliers_per_step": 2, "pool_size": 2, "vocabulary": "empty.txt"},
    )
    bench = load_benchmark(path)
    before = everything_under(tmp_path)
    with pytest.raises(DorBenchError) as raised:
        preflight(
            bench,
            plan(bench),
            tracking_uri=f"sqlite:///{blocker}/mlflow.db",
            checkpoint_dir=blocker / "ckpt",
            report_dir=tmp_path / "reports" / "new",
        )
    head, *lines = raised.value.message.split("\n  - ")
    assert head == f"Preflight found problems; {RUN_REFUSED}:"
    starts = ("datasets: ", "model.pretrained: ", "dor.vocabulary: ", "tracking_uri 'sqlite", "checkpoint folder '")
    assert len(lines) == len(starts) and all(line.startswith(s) for line, s in zip(lines, starts))
    assert f"class '{classname('oxford_pets', 0)}'" in lines[0] and "train split" in lines[0]
    assert "x.pt' is not a checkpoint" in lines[1] and "empty.txt' has no words" in lines[2]
    assert all(f"'{blocker}' is a file, not a folder" in line for line in lines[3:])
    assert everything_under(tmp_path) == before  # the report folder was tried, then removed


def test_preflight_of_a_sweep_names_its_word_list_and_storage(tmp_path):
    (tmp_path / "words.txt").write_text("")
    blocker = write(tmp_path / "blocker", "a file")
    make_split_json_dataset(tmp_path / "data", "oxford_pets", 4, train=2, val=1, test=1)
    sweep_file = write(
        tmp_path / "sweep.yaml",
        yaml.safe_dump(
            {
                "name": "pre-sweep",
                "model": {"arch": "tiny-clip", "pretrained": "none"},
                "dataset": "oxford_pets",
                "data_root": "data",
                "method": {"name": "coop", "options": {"epochs": 1}},
                "shots": 1,
                "seeds": [1],
                "dor": {"vocabulary": "words.txt", "pool_size": 2},
                "space": {"lam": [0, 8]},
            }
        ),
    )
    sweep = load_sweep(sweep_file)
    with pytest.raises(DorBenchError) as raised:
        preflight_sweep(
            sweep, spec_from_sweep(sweep), tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", storage=blocker / "tune"
        )
    message = raised.value.message
    assert message.startswith("Preflight found problems; the sweep did not start:\n  - dor.vocabulary: ")
    assert f"'{tmp_path / 'words.txt'}' has no words" in message
    assert f"Tune storage folder '{blocker / 'tune'}' (--storage): '{blocker}' is a file, not a folder" in message
    assert message.count("\n  - ") == 2 and not (tmp_path / "mlflow.db").exists()


@pytest.fixture(scope="module")
def one_cpu_ray():
    """A local Ray of 1 CPU and no GPU (whatever this machine has), as test_run.py starts it."""
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_trials_asking_more_than_the_cluster_has_are_refused_before_any_run(tmp_path, capsys, one_cpu_ray):
    check_resources([Resources(cpus=1, gpus=0)], RUN_REFUSED)
    with pytest.raises(DorBenchError) as raised:
        check_resources([Resources(cpus=1), Resources(cpus=2, gpus=0.5), Resources(cpus=2, gpus=0.5)], RUN_REFUSED)
    assert raised.value.message == (
        f"Preflight found problems; {RUN_REFUSED}:\n"
        "  - resources.cpus: each trial asks for 2 CPUs; the cluster has 1 CPU: set resources.cpus: 1 or start "
        "Ray with more (`ray start --num-cpus N`) or connect to a larger cluster with --address\n"
        "  - resources.gpus: each trial asks for 0.5 GPUs; the cluster has 0 GPUs: set resources.gpus: 0 or start "
        "Ray on a machine with GPUs, or connect to a cluster that has them with --address"
    )
    with pytest.raises(DorBenchError) as raised:  # a method's own memory, larger than any node
        check_resources([Resources(memory_gb=10**6)], RUN_REFUSED)
    assert "resources.memory_gb: each trial asks for 1e+06 GB of memory; the cluster has " in raised.value.message

    make_split_json_dataset(tmp_path / "data", "oxford_pets", 4, train=2, val=1, test=1)
    path = write_benchmark(tmp_path, resources={"cpus": 1, "gpus": 1})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["run", str(path), "--tracking-uri", uri, "--checkpoint-dir", str(tmp_path / "ckpt")]
    assert main([*argv, "--report-dir", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert "resources.gpus: each trial asks for 1 GPU; the cluster has 0 GPUs: set resources.gpus: 0" in err
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("pre")
    assert experiment is not None and client.search_runs([experiment.experiment_id]) == []
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "report").exists()
