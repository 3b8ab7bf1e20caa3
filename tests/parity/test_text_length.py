"""Prompts encoded up to the batch's last EOT token against the reference's full context.

CLIP's text tower is causal and reads each prompt at its EOT token, so cutting a batch after its
longest prompt must change no feature and no gradient beyond floating-point noise; the full
context (``full_text_context``, the reference's way) is the oracle, and open_clip's own
``encode_text`` is the oracle of the full context.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from workers.dor import encode_words
from workers.methods import METHODS
from workers.methods.kgcoop import template_features
from workers.models.clip import ClipBundle
from workers.trial import run_trial, warm_clip

NAMES = ["red circle", "blue star", "green triangle"]
# outliers as a DOR step draws them: one much longer than any class name, so the batch's
# length is set by an outlier
OUTLIERS = ["kite", "ice cream", "the long winding river that runs through the old quiet town"]
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def full(clip: ClipBundle) -> ClipBundle:
    return replace(clip, full_text_context=True)


@contextmanager
def text_lengths(clip: ClipBundle):
    """The sequence length each text-tower layer runs at, recorded by forward hooks."""
    seen: list[int] = []
    hooks = [
        block.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[1]))
        for block in clip.model.transformer.resblocks
    ]
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()


def twin_models(method: str, clip: ClipBundle, full: ClipBundle):
    """The method's model on the truncating and on the full-context encoder, same parameters."""
    card = METHODS.get(method)
    short = card.method().build(clip, NAMES, "shapes", "a photo of a {}.", dict(card.defaults))
    long = card.method().build(full, NAMES, "shapes", "a photo of a {}.", dict(card.defaults))
    long.load_state_dict(short.state_dict())
    return short, long


def features_and_grads(model, image: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Features of the classes and outliers in one pass, and the gradients of a loss on them."""
    model.zero_grad(set_to_none=True)
    feats = model.encode_names(NAMES + OUTLIERS, image)
    weights = torch.randn(feats.shape, generator=torch.Generator().manual_seed(0))
    (feats * weights).sum().backward()
    return feats.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method", ["coop", "cocoop", "kgcoop", "maple"])
def test_truncated_prompts_give_the_full_contexts_features_and_gradients(method, clip, full):
    short, long = twin_models(method, clip, full)
    image = torch.randn(2, clip.model.text_projection.shape[-1]) if short.image_conditioned else None
    with text_lengths(clip) as lengths:
        feats, grads = features_and_grads(short, image)
    full_feats, full_grads = features_and_grads(long, image)
    assert torch.allclose(feats, full_feats, **TOL)
    learned = {"ctx"} | ({"meta_net.0.weight"} if method == "cocoop" else set())
    learned |= {f"deep_text.{i}" for i in range(short.depth - 1)} if method == "maple" else set()
    assert learned <= set(grads) and set(grads) == set(full_grads)
    for name in grads:
        assert grads[name].abs().max() > 0, name  # MaPLe's deep prompts reach the features
        assert torch.allclose(grads[name], full_grads[name], **TOL), name
    context = clip.model.positional_embedding.shape[0]
    longest = int(clip.tokenizer([f"{short.prefix} {OUTLIERS[-1]}."]).argmax())
    assert set(lengths) == {longest + 1} and longest + 1 < context


def test_full_text_context_runs_every_layer_at_the_whole_context(clip, full):
    _, long = twin_models("maple", clip, full)
    with text_lengths(full) as lengths, torch.no_grad():
        long.encode_names(NAMES)
    assert lengths and set(lengths) == {clip.model.positional_embedding.shape[0]}


def test_zero_shot_and_dor_anchors_are_the_full_contexts(clip, full):
    template = "a photo of a {}."
    words = NAMES + OUTLIERS
    reference = F.normalize(clip.model.encode_text(clip.tokenizer([template.format(w) for w in words])), dim=-1)
    zeroshot = METHODS.get("zeroshot").method()
    with text_lengths(clip) as lengths, torch.no_grad():
        encoded = {
            "zero-shot classes": zeroshot.build(clip, words, "shapes", template, {}).encode_names(words),
            "KgCoOp anchors": template_features(clip, words, template),
            "DOR pool": encode_words(clip, words, progress=False),
        }
    for what, feats in encoded.items():
        assert torch.allclose(feats, reference, **TOL), what
    assert torch.allclose(encode_words(full, words, progress=False), reference, **TOL)
    assert max(lengths) < clip.model.positional_embedding.shape[0]


def test_a_trial_scores_the_same_with_the_full_context(tmp_path, monkeypatch, dor_words):
    spec = {
        "dataset": "shapes",
        "model": "tiny-clip",
        "pretrained": None,
        "shots": 2,
        "seed": 3,
        "test_per_class": 5,
        "method": "coop",
        "method_options": {"epochs": 2, "batch_size": 16},
        "dor": {"lam": 8.0, "vocabulary": dor_words, "outliers_per_step": 8, "pool_size": 50},
    }
    model = warm_clip("tiny-clip", None, "auto", "auto")  # the encoder run_trial uses
    monkeypatch.setenv("DOR_BENCH_CACHE", str(tmp_path))
    results, lengths = {}, {}
    for full_context in (False, True):
        for encoded in ("pools", "word-features"):  # each run encodes its own outlier pool
            shutil.rmtree(tmp_path / encoded, ignore_errors=True)
        with text_lengths(model) as seen:
            results[full_context] = run_trial(spec, {"progress": False, "full_text_context": full_context}).metrics
        lengths[full_context] = set(seen)
    context = model.model.positional_embedding.shape[0]
    assert lengths[True] == {context} and max(lengths[False]) < context
    assert results[False].keys() == results[True].keys()
    for key, value in results[False].items():
        assert value == pytest.approx(results[True][key], abs=1e-4), key
