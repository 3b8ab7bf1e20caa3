"""The CLI on bad input: a one-paragraph error naming what is wrong, a non-zero exit, no traceback."""

from __future__ import annotations

import pytest
import torch

from orchestrator.cli import main
from tests.helpers.fake_data import make_split_json_dataset, truncate


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_missing_root(capsys, tmp_path):
    code, _, err = run(capsys, "trial", "--dataset", "oxford_pets", "--root", str(tmp_path / "nope"))
    assert code == 2
    assert str(tmp_path / "nope") in err and "Traceback" not in err


def test_missing_dataset_folder_names_expected_folder(capsys, tmp_path):
    code, _, err = run(capsys, "trial", "--dataset", "oxford_pets", "--root", str(tmp_path))
    assert code == 2
    assert str(tmp_path / "oxford_pets") in err


def test_malformed_split_json_names_the_file(capsys, tmp_path):
    folder = tmp_path / "oxford_pets"
    (folder / "images").mkdir(parents=True)
    (folder / "split_zhou_OxfordPets.json").write_text("{not json")
    code, _, err = run(capsys, "trial", "--dataset", "oxford_pets", "--root", str(tmp_path))
    assert code == 2
    assert "split_zhou_OxfordPets.json" in err and "malformed" in err


def test_unknown_dataset_and_architecture_suggest_names(capsys):
    code, _, err = run(capsys, "trial", "--dataset", "oxford_pet")
    assert code == 2 and "Did you mean 'oxford_pets'" in err
    code, _, err = run(capsys, "trial", "--model", "ViT-B-61", "--dataset", "shapes")
    assert code == 2 and "Did you mean 'ViT-B-16'" in err
    code, _, err = run(capsys, "trial", "--method", "cop", "--dataset", "shapes")
    assert code == 2 and "Did you mean 'coop'" in err


def test_unreadable_image_is_named_by_data_check(capsys, tmp_path):
    make_split_json_dataset(tmp_path, "oxford_pets", num_classes=3)
    broken = sorted((tmp_path / "oxford_pets" / "images").rglob("*.*"))[0]
    truncate(broken)
    code, out, _ = run(capsys, "data", "check", "--root", str(tmp_path), "--dataset", "oxford_pets")
    assert code == 1
    assert broken.name in out


def test_invalid_trial_settings(capsys):
    code, _, err = run(capsys, "trial", "--dataset", "shapes", "--shots", "0")
    assert code == 2 and "shots" in err


def test_unknown_method_option(capsys):
    code, _, err = run(
        capsys,
        "trial",
        "--method",
        "coop",
        "--dataset",
        "shapes",
        "--model",
        "tiny-clip",
        "--pretrained",
        "none",
        "--option",
        "n_cxt=4",
    )
    assert code == 2 and "n_cxt" in err and "n_ctx" in err


def test_ls_lists_registries(capsys):
    assert run(capsys, "ls", "methods")[1].split() == ["cocoop", "coop", "kgcoop", "maple", "zeroshot"]
    datasets = run(capsys, "ls", "datasets")[1].split()
    assert len(datasets) == 18 and {"shapes", "shapes-split1", "shapes-split2", "imagenet_r"} <= set(datasets)
    assert "micro-clip" in run(capsys, "ls", "models")[1].split()


def test_pretrain_logit_scale_start_is_checked(capsys, tmp_path):
    code, _, err = run(
        capsys,
        "micro-clip",
        "pretrain",
        "--arch",
        "tiny-clip",
        "--out",
        str(tmp_path / "w.pt"),
        "--init-logit-scale",
        "250",
    )
    assert code == 2 and "init_logit_scale must lie in [1, 100] (got 250.0)" in err
    assert not (tmp_path / "w.pt").exists()


def test_progress_log_writes_a_line_only_when_the_counts_change(capsys):
    from orchestrator.console import ProgressLog

    show = ProgressLog()  # stderr is captured, so not a terminal: log lines
    show("[dor-bench] 1/9 done, 2 running, 0 failed, 6 queued, ETA 80s")
    show("[dor-bench] 1/9 done, 2 running, 0 failed, 6 queued, ETA 82s")
    show("[dor-bench] 2/9 done, 2 running, 0 failed, 5 queued, ETA 70s")
    show("[dor-bench] trial 'x' FAILED: boom")
    assert capsys.readouterr().err.splitlines() == [
        "[dor-bench] 1/9 done, 2 running, 0 failed, 6 queued, ETA 80s",
        "[dor-bench] 2/9 done, 2 running, 0 failed, 5 queued, ETA 70s",
        "[dor-bench] trial 'x' FAILED: boom",
    ]


# --- the error boundary: user mistakes print a message and exit 2; a bug shows its traceback ------


def test_a_binary_settings_file_is_a_message_not_a_traceback(tmp_path, capsys):
    path = tmp_path / "bench.yaml"
    path.write_bytes(b"\x00\xff\xfe binary")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"'{path}' is not UTF-8 text" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_message(capsys):
    assert main(["trial", "--device", "cuda", "--model", "tiny-clip", "--pretrained", "none", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "torch sees no CUDA device" in err and "--device cpu" in err and "Traceback" not in err


def test_an_unwritable_checkpoint_folder_names_the_path(tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the checkpoint folder should be")
    code = main(
        [
            "trial",
            "--method",
            "coop",
            "--model",
            "tiny-clip",
            "--pretrained",
            "none",
            "--shots",
            "1",
            "--epochs",
            "1",
            "--test-per-class",
            "1",
            "--quiet",
            "--checkpoint-dir",
            str(blocker / "ckpt"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and str(blocker) in err and "Traceback" not in err


def test_a_bug_shows_its_traceback_and_says_it_is_one(monkeypatch, capsys):
    from orchestrator import commands

    def broken(args):
        raise KeyError("internal")

    monkeypatch.setattr(commands, "ls", broken)
    assert main(["ls", "methods"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'internal'" in err and "this is a bug in dor-bench" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seed", "-1"], "--seed: Input should be greater than or equal to 0"),
        (["--seed", str(2**32)], "--seed: Input should be less than 4294967296"),
        (["--ece-bins", "0"], "--ece-bins: Input should be greater than 0"),
        (["--dor-lambda", "inf"], "--dor-lambda: Input should be a finite number"),
        (["--dor-lambda", "1", "--pool-size", "3", "--outliers-per-step", "5"], "--outliers-per-step: 5 outliers"),
    ],
)
def test_trial_flags_out_of_range_name_the_flag(capsys, flags, message):
    code, _, err = run(capsys, "trial", "--dataset", "shapes", "--model", "micro-clip", *flags)
    assert code == 2 and "Traceback" not in err
    assert f"error: Invalid trial flags: {message}" in err and "How to fix: correct the flags" in err
