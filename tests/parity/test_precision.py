"""Precision against the references (docs/fidelity.md, Precision). Their PREC is fp16 on a GPU:
CLIP as OpenAI's ``build_model`` converts it, the learned parameters created in its dtype (or
``.half()``), no autocast, and Dassl's SGD stepping those fp16 tensors with no fp32 master copy.
The CPU runs the same computation when a trial asks for ``precision: fp16``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workers.methods import METHODS
from workers.models.clip import ClipBundle, encode_image, load_clip
from workers.models.precision import weights_precision
from workers.trial import run_trial

#: Which learned parameters each reference holds in fp16 under PREC fp16 (prefix -> fp16?):
#: CoOp/KgCoOp `ctx_vectors = torch.empty(..., dtype=clip_model.dtype)`; CoCoOp and TCP
#: `self.meta_net.half()`; MaPLe `self.proj.half()` but `compound_prompts_text` and
#: `compound_prompt_projections` plain fp32; IVLP/PromptSRC deep text and vision prompts fp32;
#: DAC's CLIP-Adapter `Adapter(...).to(clip_model.dtype)`; VPT's prompts fp32.
REFERENCE_FP16: dict[str, dict[str, bool]] = {
    "coop": {"ctx": True},
    "kgcoop": {"ctx": True},
    "cocoop": {"ctx": True, "meta_net.": True},
    "tcp": {"ctx": True, "meta_net.": True},
    "maple": {"ctx": True, "couplings.0.": True, "couplings.1.": False, "deep_text.": False},
    "promptsrc": {"ctx": True, "deep_text.": False, "vision_prompts.": False},
    "clip_adapter": {"adapter.": True},
    "vpt": {"prompts.": False},
}


@pytest.fixture(scope="module")
def fp16_clip() -> ClipBundle:
    return load_clip("tiny-clip", None, device="cpu", precision="fp16")


def build(method: str, clip: ClipBundle):
    card = METHODS.get(method)
    return card.method().build(clip, ["red circle", "blue star"], "shapes", "a photo of a {}.", dict(card.defaults))


def expected_dtype(method: str, name: str) -> torch.dtype:
    rules = REFERENCE_FP16[method]
    matches = [prefix for prefix in rules if name.startswith(prefix)]
    assert matches, f"{method}'s parameter {name} is not in the reference table"
    return torch.float16 if rules[max(matches, key=len)] else torch.float32


def test_every_training_method_is_in_the_table():
    assert set(REFERENCE_FP16) == {name for name in METHODS.names() if METHODS.get(name).trains}


@pytest.mark.parametrize("method", sorted(REFERENCE_FP16))
def test_learned_parameters_are_held_as_the_reference_holds_them(fp16_clip, method):
    model = build(method, fp16_clip)
    params = dict(model.named_parameters())
    assert params
    for name, param in params.items():
        assert param.dtype == expected_dtype(method, name), name
    # in an fp32 CLIP every learned parameter is fp32
    assert all(p.dtype == torch.float32 for p in build(method, load_clip("tiny-clip", None, device="cpu")).parameters())


@pytest.mark.parametrize("method", ["coop", "maple"])
def test_sgd_steps_the_fp16_parameters_themselves(tmp_path: Path, method):
    """The optimiser's momentum lives in each parameter's own precision: fp16 values stepped in
    fp16, as Dassl's SGD on the reference's fp16 parameters (no fp32 master copy, no scaler)."""
    spec = {
        "method": method,
        "dataset": "shapes",
        "model": "tiny-clip",
        "pretrained": None,
        "shots": 2,
        "method_options": {"epochs": 2, "precision": "fp16"},
        "test_per_class": 3,
    }
    result = run_trial(spec, {"progress": False, "checkpoint_dir": str(tmp_path)})
    assert result.info["precision"] == "float16"
    state = torch.load(next(tmp_path.glob("*.pt")), weights_only=True)
    names = list(state["params"])
    momentum = state["optimizer"]["state"]
    assert len(momentum) == len(names)
    for index, name in enumerate(names):  # the optimiser's parameter order is the model's
        dtype = expected_dtype(method, name)
        assert state["params"][name].dtype == dtype, name
        assert momentum[index]["momentum_buffer"].dtype == dtype, name
        assert momentum[index]["momentum_buffer"].abs().sum() > 0, name
    assert all(torch.isfinite(torch.tensor(row["train/loss"])) for row in result.history)


def test_vpt_runs_an_fp32_clip_and_rounds_its_prompts_through_fp16():
    """The reference's VPT loads CLIP with ``model.float()`` whatever PREC says, and uses its fp32
    prompts as ``.half()`` in the fp32 tower."""
    assert METHODS.get("vpt").defaults["precision"] == "fp32"
    clip = load_clip("tiny-clip", None, device="cpu", precision="fp32")
    model = build("vpt", clip)
    with torch.no_grad():
        for p in model.prompts:
            p.add_(1e-4 * torch.arange(p.numel()).view_as(p))  # values fp16 cannot hold
        images = torch.randn(2, 3, clip.image_size, clip.image_size, generator=torch.Generator().manual_seed(0))
        rounded = encode_image(clip, images, [p.half().float() for p in model.prompts])
        unrounded = encode_image(clip, images, list(model.prompts))
        assert torch.equal(model.encode_images(images), rounded)
    assert not torch.equal(rounded, unrounded)


def test_auto_is_fp16_on_a_gpu_and_fp32_on_a_cpu():
    assert weights_precision("auto", torch.device("cuda", 0)) == "fp16"
    assert weights_precision("auto", torch.device("cpu")) == "fp32"
    assert weights_precision("fp16", torch.device("cpu")) == "fp16"
    assert all(METHODS.get(m).defaults["precision"] == "auto" for m in REFERENCE_FP16 if m != "vpt")


def test_zero_shot_runs_in_the_precision_asked():
    """The references' zero-shot CLIP is fp16 on a GPU (``auto``); ``fp32`` scores it as fp32 trials run."""
    spec = {"method": "zeroshot", "dataset": "shapes", "model": "tiny-clip", "pretrained": None, "test_per_class": 3}
    results = {
        precision: run_trial({**spec, "method_options": {"precision": precision}}, {"progress": False})
        for precision in ("fp16", "fp32")
    }
    assert {p: r.info["precision"] for p, r in results.items()} == {"fp16": "float16", "fp32": "float32"}
    assert results["fp16"].metrics["base/ece"] != results["fp32"].metrics["base/ece"]
