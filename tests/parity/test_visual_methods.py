"""CLIP-Adapter and VPT against the references' definitions, each written here from the reference's
behaviour, never copied: CLIP-Adapter's ``clip_adapter.py`` (gaopengcuhk/CLIP-Adapter) with DAC's
``configs/trainers/CLIP_Adapter`` config; the ``VPT`` trainer of MaPLe's repository
(``trainers/vpt.py``, ``configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml``) and its vision
transformer (``clip/model.py``: ``VisionTransformer`` with ``ResidualAttentionBlock_IVLP``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.parity import oracle
from workers.datasets import DATASETS
from workers.methods import METHODS
from workers.methods import clip_adapter as clip_adapter_file

#: CLIP-Adapter's CUSTOM_TEMPLATES, by dor-bench dataset name.
CLIP_ADAPTER_TEMPLATES = {
    "oxford_pets": "a photo of a {}, a type of pet.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "stanford_cars": "a photo of a {}.",
    "food101": "a photo of {}, a type of food.",
    "sun397": "a photo of a {}.",
    "caltech101": "a photo of a {}.",
    "ucf101": "a photo of a person doing {}.",
    "imagenet": "a photo of a {}.",
    "imagenet_sketch": "a photo of a {}.",
    "imagenetv2": "a photo of a {}.",
    "imagenet_a": "a photo of a {}.",
    "imagenet_r": "a photo of a {}.",
}

#: The reference configs' training settings (Dassl's SGD defaults under them: momentum 0.9,
#: weight decay 5e-4; one constant warm-up epoch at 1e-5, then cosine).
PUBLISHED = {
    "clip_adapter": {"epochs": 200, "batch_size": 32, "lr": 0.002, "ratio": 0.2, "reduction": 4},
    "vpt": {"epochs": 5, "batch_size": 4, "lr": 0.0025, "n_ctx": 8, "prompt_depth": 12},
}


def build(clip, method: str, names: list[str], dataset: str = "shapes", **options):
    card = METHODS.get(method)
    template = DATASETS.get(dataset).template
    return card.method().build(clip, names, dataset, template, {**card.defaults, **options})


def zero_shot(clip, prompts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(clip.model.encode_text(oracle.tokenize(prompts, 32)), dim=-1)


@pytest.mark.parametrize("method", sorted(PUBLISHED))
def test_cards_hold_the_published_settings(method):
    card = METHODS.get(method)
    assert {k: card.defaults[k] for k in PUBLISHED[method]} == PUBLISHED[method]
    assert (card.defaults["momentum"], card.defaults["weight_decay"]) == (0.9, 5e-4)
    assert (card.defaults["warmup_epochs"], card.defaults["warmup_lr"]) == (1, 1e-5)
    assert card.dor_outliers == "image" and card.trains


def test_clip_adapters_templates_are_the_dataset_templates():
    assert {name: DATASETS.get(name).template for name in CLIP_ADAPTER_TEMPLATES} == CLIP_ADAPTER_TEMPLATES


@pytest.mark.parametrize("ratio,reduction", [(0.2, 4), (0.6, 2)])
def test_clip_adapter_blends_a_bias_free_bottleneck_with_the_features(clip, ratio, reduction):
    """``Adapter(c_in, reduction)``: Linear(c_in, c_in // reduction, bias=False), ReLU,
    Linear(c_in // reduction, c_in, bias=False), ReLU; ``ratio * adapter(f) + (1 - ratio) * f``."""
    model = build(clip, "clip_adapter", ["red circle"], ratio=ratio, reduction=reduction)
    weights = [p for _, p in sorted(model.named_parameters())]
    assert [tuple(w.shape) for w in weights] == [(64 // reduction, 64), (64, 64 // reduction)]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for w in weights:
            w.copy_(torch.randn(w.shape, generator=generator))
    features = 3 * torch.randn(5, 64, generator=generator)
    down, up = weights
    expected = ratio * torch.relu(torch.relu(features @ down.T) @ up.T) + (1 - ratio) * features
    assert torch.allclose(model.adapt_images(features), expected, atol=1e-5)
    # its image encoder is CLIP's own, frozen
    images = torch.randn(2, 3, 32, 32, generator=generator)
    assert torch.equal(model.encode_images(images), clip.model.encode_image(images))


@pytest.mark.parametrize(
    "method,dataset,options,template",
    [
        ("clip_adapter", "dtd", {}, "{} texture."),
        ("clip_adapter", "eurosat", {}, "a centered satellite photo of {}."),
        ("clip_adapter", "dtd", {"template": "photo"}, "a photo of a {}."),  # DAC's CLIP-Adapter
        ("vpt", "dtd", {}, "a photo of a {}."),  # VPT's fixed "a photo of a" prefix, every dataset
        ("vpt", "ucf101", {"template": "dataset"}, "a photo of a person doing {}."),
    ],
)
def test_text_is_the_frozen_hand_crafted_zero_shot_feature(clip, method, dataset, options, template):
    model = build(clip, method, ["banded", "Apply Eye Makeup"], dataset, **options)
    names = ["Apply Eye Makeup", "zigzagged", "banded"]  # "zigzagged" was not seen at build
    expected = zero_shot(clip, [template.format(n) for n in names])
    assert torch.allclose(model.encode_names(names), expected, atol=1e-6)


def test_text_is_encoded_once_per_name(clip, monkeypatch):
    calls: list[int] = []
    encode = clip_adapter_file.encode_text

    def counted(bundle, tokens, *args, **kwargs):
        calls.append(len(tokens))
        return encode(bundle, tokens, *args, **kwargs)

    monkeypatch.setattr(clip_adapter_file, "encode_text", counted)
    for method in ("clip_adapter", "vpt"):
        calls.clear()
        model = build(clip, method, ["red circle", "blue star", "red circle"])
        assert calls == [2]  # at build, each training class once
        base = model.encode_names(["blue star", "red circle"])
        assert calls == [2] and not base.requires_grad  # a training step encodes nothing
        names = ["zebra", "red circle", "violin", "blue star", "zebra"]
        both = model.encode_names(names)
        assert calls == [2, 2]  # new names, once
        assert torch.equal(model.encode_names(["violin", "zebra"]), both[[2, 0]]) and calls == [2, 2]
        assert torch.equal(both[[1, 3]], base.flip(0))
        assert torch.allclose(both, zero_shot(clip, [f"a photo of a {n}." for n in names]), atol=1e-6)
        assert "zebra" not in str(list(model.state_dict()))  # the kept prompt holds what is learned only


def ivlp_image_features(visual, images: torch.Tensor, prompts: list[torch.Tensor]) -> torch.Tensor:
    """MaPLe's ``VisionTransformer`` for the VPT trainer: patches, class token, positional
    embedding, then the ``n_ctx`` input prompts appended at the end; ``ln_pre``; block ``i`` (i >= 1,
    ``i < PROMPT_DEPTH_VISION``) drops the last ``n_ctx`` tokens and appends its own before running
    ``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))``; the output is ``ln_post`` of the class token,
    projected. Batch-first here (open_clip's attention), sequence-first in the reference."""
    n, n_ctx = len(images), prompts[0].shape[0]
    x = visual.conv1(images).flatten(2).transpose(1, 2)  # [N, grid**2, W]
    x = torch.cat([visual.class_embedding.expand(n, 1, -1), x], dim=1) + visual.positional_embedding
    x = torch.cat([x, prompts[0].expand(n, -1, -1)], dim=1)
    x = visual.ln_pre(x)
    for i, block in enumerate(visual.transformer.resblocks):
        if 0 < i < len(prompts):
            x = torch.cat([x[:, : x.shape[1] - n_ctx], prompts[i].expand(n, -1, -1)], dim=1)
        h = block.ln_1(x)
        x = x + block.attn(h, h, h, need_weights=False)[0]
        x = x + block.mlp(block.ln_2(x))
    return visual.ln_post(x[:, 0]) @ visual.proj


@pytest.mark.parametrize("depth", [1, 2])
def test_vpt_inserts_and_replaces_tokens_as_the_reference(clip, depth):
    model = build(clip, "vpt", ["red circle"], n_ctx=3, prompt_depth=depth)
    assert len(model.prompts) == depth and all(p.shape == (3, 64) for p in model.prompts)
    generator = torch.Generator().manual_seed(depth)
    with torch.no_grad():
        for p in model.prompts:
            p.copy_(torch.randn(p.shape, generator=generator))
    images = torch.randn(4, 3, 32, 32, generator=generator)
    prompted = model.encode_images(images)
    with torch.no_grad():
        # the reference's prompts enter as .half() (an fp32 tower promotes them back)
        expected = ivlp_image_features(clip.model.visual, images, [p.detach().half().float() for p in model.prompts])
    assert torch.allclose(prompted, expected, atol=1e-5)
    assert not torch.allclose(prompted, clip.model.encode_image(images), atol=1e-3)
    if depth == 2:  # the layer-1 tokens replace the input ones, which reach layer 0 alone
        shallow = build(clip, "vpt", ["red circle"], n_ctx=3, prompt_depth=1)
        with torch.no_grad():
            shallow.prompts[0].copy_(model.prompts[0])
        assert not torch.allclose(shallow.encode_images(images), prompted, atol=1e-3)


def test_vpt_prompts_are_initialised_as_the_reference(clip):
    """N(0, 0.02) tokens of the vision width; prompts for layers up to the depth, the tiny model's
    2 layers here for the published depth 12 (the reference builds them only for layers there are)."""
    torch.manual_seed(0)
    model = build(clip, "vpt", ["red circle"])
    values = torch.cat([p.detach().flatten() for p in model.prompts])
    assert len(model.prompts) == 2 and model.prompts[0].shape == (8, 64)
    assert 0.018 < float(values.std()) < 0.022 and abs(float(values.mean())) < 0.002
    assert [n for n, _ in model.named_parameters()] == ["prompts.0", "prompts.1"]
