"""Micro-CLIP pretraining on the shapes world, checked on a tiny run (tiny-clip, 30 steps, batch 32)."""

from __future__ import annotations

import copy
import json
import math
from collections import Counter

import open_clip
import pytest
import torch

from pretraining import micro_clip as pt
from workers.datasets import shapes_world
from workers.errors import DorBenchError
from workers.models.clip import load_clip

CONFIG = pt.PretrainConfig(arch="tiny-clip", steps=30, batch_size=32, warmup_steps=5, threads=1)


class Interrupted(Exception):
    pass


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One uninterrupted run (A), the same recipe trained again in memory, and a run (C)
    interrupted at step 15 (after its step-10 checkpoint) and then resumed."""
    root = tmp_path_factory.mktemp("pretrain")
    a_path = root / "a" / "w.pt"
    record_a = pt.pretrain(CONFIG, a_path, checkpoint_every=10, progress=False, command="test")
    model_mem, stats_mem = pt.train(CONFIG, progress=False)

    c_path = root / "c" / "w.pt"
    real_make_batch = pt.make_batch

    def failing(config, index, tokenizer):
        if index == 15:
            raise Interrupted
        return real_make_batch(config, index, tokenizer)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pt, "make_batch", failing)
        with pytest.raises(Interrupted):
            pt.pretrain(CONFIG, c_path, checkpoint_every=10, progress=False)
    ckpt = torch.load(pt.checkpoint_path(c_path), map_location="cpu", weights_only=True)
    assert not c_path.exists()
    # A checkpoint of another recipe is refused, not silently reused.
    other = pt.PretrainConfig(**{**vars(CONFIG), "lr": 2e-3})
    with pytest.raises(DorBenchError, match="different pretraining recipe"):
        pt.pretrain(other, c_path, checkpoint_every=10, progress=False)
    record_c = pt.pretrain(CONFIG, c_path, checkpoint_every=10, progress=False)
    return {
        "a_path": a_path,
        "record_a": record_a,
        "model_mem": model_mem,
        "stats_mem": stats_mem,
        "c_path": c_path,
        "record_c": record_c,
        "ckpt_step": ckpt["step"],
    }


def test_logit_scale_starts_at_50():
    model = pt.build_model(CONFIG)
    assert float(model.logit_scale.detach().exp()) == pytest.approx(50.0, rel=1e-6)
    # ... and the build is seeded: the same config gives the same initial weights.
    _assert_same(model.state_dict(), pt.build_model(CONFIG).state_dict())


def test_logit_scale_is_clamped_at_100():
    config = pt.PretrainConfig(
        arch="tiny-clip", steps=3, batch_size=8, warmup_steps=0, lr=0.05, init_logit_scale=100.0, threads=1
    )
    model, stats = pt.train(config, progress=False)
    assert max(stats["logit_scales"]) <= 100.0 + 1e-3
    assert float(model.logit_scale.detach().exp()) <= 100.0 + 1e-3


def test_batches_are_regenerated_from_seed_and_index():
    tok = open_clip.get_tokenizer("tiny-clip")
    x1, t1 = pt.make_batch(CONFIG, 7, tok)
    x2, t2 = pt.make_batch(CONFIG, 7, tok)
    x3, _ = pt.make_batch(CONFIG, 8, tok)
    assert torch.equal(x1, x2) and torch.equal(t1, t2) and not torch.equal(x1, x3)
    assert x1.shape == (32, 3, 32, 32) and t1.shape == (32, 32)
    assert pt.batch_seed(CONFIG, 7) == 7


def test_lr_schedule_warms_up_then_decays():
    lrs = [pt.lr_at(CONFIG, s) for s in range(CONFIG.steps)]
    assert lrs[0] == pytest.approx(CONFIG.lr / 5) and lrs[4] == pytest.approx(CONFIG.lr)
    assert all(b <= a for a, b in zip(lrs[4:], lrs[5:])) and lrs[-1] < 0.01 * CONFIG.lr


def test_training_is_deterministic(runs):
    # The in-memory retrain, rounded to fp16, is bit-identical to run A's saved weights.
    mem = {k: v.half() if v.is_floating_point() else v for k, v in runs["model_mem"].state_dict().items()}
    _assert_same(mem, _weights(runs["a_path"]))
    assert runs["stats_mem"]["losses"][-1] == runs["record_a"]["final_loss"]


def test_loss_decreases(runs):
    losses = runs["stats_mem"]["losses"]
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5


def test_resume_gives_identical_weights(runs):
    assert runs["ckpt_step"] == 10
    assert runs["record_c"]["resumed_from_step"] == 10
    _assert_same(_weights(runs["c_path"]), _weights(runs["a_path"]))
    assert runs["record_c"]["final_loss"] == runs["record_a"]["final_loss"]
    assert not pt.checkpoint_path(runs["c_path"]).exists()  # removed once the weights are saved


def test_saved_fp16_weights_load_and_match(runs):
    saved = _weights(runs["a_path"])
    assert all(v.dtype == torch.float16 for v in saved.values() if v.is_floating_point())
    bundle = load_clip("tiny-clip", str(runs["a_path"]), device="cpu")
    model, mem = bundle.model, runs["model_mem"]
    assert next(model.parameters()).dtype == torch.float32
    tok = bundle.tokenizer
    items = list(shapes_world.sample(16, seed=123, classes=shapes_world.class_names()))
    images = pt.images_to_tensor([img for img, _, _ in items])
    texts = tok([f"a photo of a {c}." for c in shapes_world.held_out_classes()])
    with torch.no_grad():

        def logits(m):
            return m.logit_scale.exp() * m.encode_image(images, normalize=True) @ m.encode_text(texts, normalize=True).T

        got, want = logits(model), logits(mem)
        assert float(model.logit_scale.exp()) == pytest.approx(float(mem.logit_scale.exp()), rel=1e-3)
        assert torch.allclose(got, want, atol=0.05 * float(want.abs().max()) + 0.05)
        # Exactly the in-memory model with its weights rounded to fp16.
        mem = copy.deepcopy(mem)
        mem.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in mem.state_dict().items()})
        assert torch.allclose(got, logits(mem), atol=1e-4)


def test_record(runs):
    record = runs["record_a"]
    on_disk = json.loads(pt.record_path(runs["a_path"]).read_text())
    assert on_disk == json.loads(json.dumps(record))
    assert pt.record_path(runs["a_path"]).name == "w.json"
    assert record["config"]["arch"] == "tiny-clip" and record["steps"] == 30 and record["command"] == "test"
    assert {"torch", "open_clip"} <= set(record["versions"])
    assert record["weights"]["bytes"] == runs["a_path"].stat().st_size
    assert record["initial_logit_scale"] == 50.0 and 40 < record["final_logit_scale"] <= 100
    zs = record["zero_shot"]
    for key, n_classes in (("held_out_30way", 30), ("all_100way_on_held_out", 100), ("seen_30way", 30)):
        assert zs[key]["n"] == 1500 and zs[key]["n_classes"] == n_classes
        assert 0 <= zs[key]["accuracy"] <= 100 and 0 <= zs[key]["ece"] <= 100
    # A finished run is not redone: the same recipe returns the stored record.
    assert pt.pretrain(CONFIG, runs["a_path"], progress=False) == on_disk


def test_seen_eval_classes_are_balanced():
    seen = pt.seen_eval_classes()
    assert len(seen) == 30 and not set(seen) & set(shapes_world.held_out_classes())
    assert set(Counter(c.split()[0] for c in seen).values()) == {3}
    assert set(Counter(c.split()[1] for c in seen).values()) == {3}


def test_zero_shot_report_accepts_a_model(runs):
    report = pt.zero_shot_report(runs["model_mem"], arch="tiny-clip", n_per_class=4)
    assert report["held_out_30way"]["n"] == 120 and report["all_100way_on_held_out"]["n_classes"] == 100
    assert report["template"] == "a photo of a {}."
    assert not runs["model_mem"].training
