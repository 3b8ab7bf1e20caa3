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
    methods = ["clip_adapter", "cocoop", "coop", "kgcoop", "maple", "promptsrc", "tcp", "vpt", "zeroshot"]
    assert run(capsys, "ls", "methods")[1].split() == methods
    datasets = run(capsys, "ls", "datasets")[1].split()
    assert len(datasets) == 19 and {"shapes", "shapes-split1", "shapes-split2", "shapes-outliers", "imagenet_r"} <= set(
        datasets
    )
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


def test_grid_display_in_a_log_file_writes_changes_only(capsys, monkeypatch):
    from orchestrator import console

    now = [1000.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: now[0])
    show = console.GridDisplay()  # stderr is captured, so not a terminal: log lines
    show.grid("[dor-bench] 0/9 done, 1 running, 0 failed, 8 queued, ETA ?")
    show.grid("[dor-bench] 0/9 done, 1 running, 0 failed, 8 queued, ETA 81s")  # same counts, same time
    show.started("coop/dtd/seed1", epochs=4, attempt=1)
    for epoch in (1, 2, 3, 4):  # 20 s apart: the first, then only after 30 s (3), and the last
        now[0] += 20
        show.epoch("coop/dtd/seed1", epoch, {"train/loss": 2.0 / epoch})
    show.ended("coop/dtd/seed1", {"hm": 70.0}, None)
    show.ended("kgcoop/dtd/seed1", None, "RuntimeError: boom\ntraceback")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "[dor-bench] 0/9 done, 1 running, 0 failed, 8 queued, ETA ?"
    assert lines[1] == "[dor-bench] started coop/dtd/seed1"
    epochs = [line for line in lines if ": epoch " in line]
    assert [e.split(": epoch ")[1].split(",")[0] for e in epochs] == ["1/4", "3/4", "4/4"]
    assert epochs[0] == "[dor-bench] coop/dtd/seed1: epoch 1/4, loss 2, 20s, ETA 60s"
    assert lines[-2:] == [
        "[dor-bench] finished coop/dtd/seed1",
        "[dor-bench] trial 'kgcoop/dtd/seed1' FAILED: RuntimeError: boom",
    ]
    assert sum("ETA 81s" in line for line in lines) == 0


def test_grid_display_on_a_terminal_redraws_its_block_in_place(capsys):
    from orchestrator.console import GridDisplay

    show = GridDisplay()
    show.tty = True  # what a terminal gets: the block is erased and drawn again on every event
    show.grid("[dor-bench] 0/2 done, 2 running, 0 failed, 0 queued, ETA ?")
    show.started("a", epochs=10, attempt=1)
    show.started("b", epochs=0, attempt=1)
    show.epoch("a", 5, {"train/loss": 0.5})
    err = capsys.readouterr().err
    last = err.rsplit("\x1b[J", 1)[1].splitlines()  # what is on screen after the last redraw
    assert "\x1b[2F\x1b[J" in err and "\x1b[3F\x1b[J" in err  # the block grew from 2 to 3 lines
    assert last[0] == "[dor-bench] 0/2 done, 2 running, 0 failed, 0 queued, ETA ?"
    assert last[1].startswith("  a: epoch 5/10, loss 0.5,") and last[2].startswith("  b: scoring,")


def test_grid_display_json_events_go_to_stdout(capsys):
    import json

    from orchestrator.console import GridDisplay

    show = GridDisplay("json")
    show.grid("[dor-bench] 0/1 done, 1 running, 0 failed, 0 queued, ETA ?")
    show.started("a", epochs=2, attempt=1)
    show.epoch("a", 1, {"train/loss": 0.5})
    show.ended("a", {"hm": 70.0}, None)
    out = capsys.readouterr()
    events = [json.loads(line) for line in out.out.splitlines()]
    assert [(e["event"], e["trial"]) for e in events] == [
        ("trial_started", "a"),
        ("epoch", "a"),
        ("trial_finished", "a"),
    ]
    assert (
        events[1]["metrics"] == {"train/loss": 0.5}
        and events[1]["epochs"] == 2
        and events[2]["metrics"] == {"hm": 70.0}
    )
    assert "0/1 done" in out.err and "{" not in out.err


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
