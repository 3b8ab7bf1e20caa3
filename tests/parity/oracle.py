"""OpenAI's own CLIP code (the ``clip-anytorch`` package, a dev dependency) as a test oracle.

The package's ``__init__`` imports ``pkg_resources``, which current setuptools no longer ships, so
its two plain modules (the model and the tokenizer) are loaded by path; neither imports the other
or anything outside the standard library, numpy, torch, ftfy and regex.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import torch


def _package_dir() -> Path:
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the oracle needs OpenAI's clip code: pip install clip-anytorch (make setup)")
    return Path(next(iter(spec.submodule_search_locations)))


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"openai_clip_{name}", _package_dir() / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


model = _load("model")  # build_model(state_dict), CLIP, QuickGELU
simple_tokenizer = _load("simple_tokenizer")
_tokenizer = simple_tokenizer.SimpleTokenizer()


def tokenize(texts: list[str], context_length: int = 77) -> torch.Tensor:
    """OpenAI's ``clip.tokenize``: [SOT] + BPE + [EOT], zero-padded (the definition, for one-line texts)."""
    sot, eot = _tokenizer.encoder["<|startoftext|>"], _tokenizer.encoder["<|endoftext|>"]
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [sot, *_tokenizer.encode(text), eot]
        out[i, : len(ids)] = torch.tensor(ids)
    return out


def random_vit_b16(seed: int = 0, mlp_gain: float = 6.0) -> dict[str, torch.Tensor]:
    """An OpenAI-format ViT-B/16 state dict with random weights (OpenAI's own init), fp16 as in
    OpenAI's files. The MLP input weights are scaled by ``mlp_gain`` so that pre-activations reach
    the range where QuickGELU and GELU differ (at CLIP's init they are too small to tell)."""
    torch.manual_seed(seed)
    net = model.CLIP(
        embed_dim=512,
        image_resolution=224,
        vision_layers=12,
        vision_width=768,
        vision_patch_size=16,
        context_length=77,
        vocab_size=49408,
        transformer_width=512,
        transformer_heads=8,
        transformer_layers=12,
    )
    state = net.state_dict()
    for name in state:
        if name.endswith("mlp.c_fc.weight"):
            state[name] = state[name] * mlp_gain
    return {k: v.half() for k, v in state.items()}


@torch.no_grad()
def features(
    state: dict[str, torch.Tensor], images: torch.Tensor, texts: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenAI's image and text features (fp32, not normalised) of ``state``, as ``clip.load`` on a
    CPU builds them (``build_model`` then ``float()``)."""
    net = model.build_model(dict(state)).float().eval()
    return net.encode_image(images), net.encode_text(tokenize(texts))
