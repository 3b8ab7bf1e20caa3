"""TCP and PromptSRC against their references' definitions, each written here from what the
reference code does (TCP: htyao89/Textual-based_Class-aware_prompt_tuning, ``trainers/tcp.py``
and ``trainers/clip_text/model.py``; PromptSRC: muzairkhattak/PromptSRC, ``trainers/promptsrc.py``
and ``clip/model.py``), never copied. The deep-prompt oracles run a 12-layer tiny CLIP, so the
reference's layer numbers (TCP's layer 8, PromptSRC's depth 9) apply unclamped."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU

from tests.parity import oracle
from workers.methods import METHODS
from workers.methods.base import TrainStep
from workers.methods.promptsrc import TEACHER_TEMPLATES, gpa_weights
from workers.models.clip import ClipBundle
from workers.trial import run_trial

NAMES = ["great pyrenees", "pug", "zebra"]  # two classes and an outlier word: one path for all
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def deep(clip: ClipBundle) -> ClipBundle:
    """tiny-clip's widths with ViT-B/16's 12 layers in each tower (random, seeded)."""
    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=64,
        vision_cfg={"image_size": 32, "layers": 12, "width": 64, "head_width": 32, "patch_size": 8},
        text_cfg={"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 12},
    )
    return replace(clip, model=model.eval().requires_grad_(False))


def build(method: str, clip: ClipBundle, dataset: str, names: list[str] = NAMES[:2], **options):
    card = METHODS.get(method)
    return card.method().build(clip, names, dataset, "a photo of a {}.", {**card.defaults, **options})


def reference_text(clip: ClipBundle, tokens: torch.Tensor, ctx: torch.Tensor, layers: dict) -> torch.Tensor:
    """The references' prompted text encoder at the full context: ``ctx`` at positions 1..n, and
    at the input of each layer in ``layers`` those positions replaced by its tokens (shared
    ``[n, W]`` or per prompt ``[P, n, W]``); features at the EOT token, L2-normalised."""
    m = clip.model
    n = ctx.shape[-2]
    x = m.token_embedding(tokens)
    x = torch.cat([x[:, :1], ctx.expand(len(x), -1, -1), x[:, 1 + n :]], dim=1) + m.positional_embedding
    for counter, block in enumerate(m.transformer.resblocks):
        if counter in layers:
            x = torch.cat([x[:, :1], layers[counter].expand(len(x), -1, -1), x[:, 1 + n :]], dim=1)
        x = block(x, attn_mask=m.attn_mask)
    x = m.ln_final(x)[torch.arange(len(x)), tokens.argmax(dim=-1)] @ m.text_projection
    return F.normalize(x, dim=-1)


# --- TCP -----------------------------------------------------------------------------------------

#: TCP's CUSTOM_TEMPLATES (the learned prompt) and CUSTOM_TEMPLATES_ori (the hand-crafted one)
TCP_PROMPTS = {
    "oxford_pets": "X X X X {}, a type of pet.",
    "dtd": "X X X X {} texture.",
    "stanford_cars": "X X X X {}, a type of car",
    "ucf101": "a photo of a person doing {}.",
    "imagenet": "a photo of a {}.",
}
TCP_KNOWLEDGE = {
    "oxford_pets": "a photo of a {}, a type of pet.",
    "fgvc_aircraft": "a photo of an aircraft {}.",
    "food101": "a photo of a {}, a type of food.",
    "stanford_cars": "a photo of a {}.",
    "dtd": "a photo of a {}, a type of texture.",
}


@pytest.mark.parametrize("dataset", sorted(TCP_PROMPTS))
def test_tcp_prompts_are_tcps_templates_behind_the_context(clip, dataset):
    """TCP tokenises its template and puts the 4 context vectors over positions 1..4, whatever
    words are there ("X X X X", or UCF101's and ImageNet's "a photo of a")."""
    model = build("tcp", clip, dataset)
    tokens = model.prompt_tokens(NAMES)
    expected = oracle.tokenize([TCP_PROMPTS[dataset].format(n) for n in NAMES], 32)
    assert torch.equal(tokens[:, :1], expected[:, :1]) and torch.equal(tokens[:, 5:], expected[:, 5:])
    assert model.ctx.shape == (4, 64)


@pytest.mark.parametrize("dataset", sorted(TCP_KNOWLEDGE))
def test_tcp_hand_crafted_features_are_tcps_own_templates(clip, dataset):
    model = build("tcp", clip, dataset)
    names = NAMES[:2]
    expected = F.normalize(
        clip.model.encode_text(oracle.tokenize([TCP_KNOWLEDGE[dataset].format(n) for n in names], 32)), dim=-1
    )
    assert torch.allclose(model.anchor, expected, atol=1e-6)
    outlier = clip.model.encode_text(oracle.tokenize([TCP_KNOWLEDGE[dataset].format("zebra")], 32))
    assert torch.allclose(model.knowledge(["zebra"]), F.normalize(outlier, dim=-1), atol=1e-6)
    # its loss: CE + 8.0 * (1 - mean cos(tuned, hand-crafted)) over the classes
    tuned = F.normalize(expected + 0.5 * torch.randn(expected.shape, generator=torch.Generator().manual_seed(0)), -1)
    step = TrainStep(None, torch.zeros(1, 64), tuned, torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
    expected_loss = 8.0 * (1 - F.cosine_similarity(tuned, expected, dim=-1).mean())
    assert float(model.extra_loss(step)) == pytest.approx(float(expected_loss), rel=1e-5)


def test_tcp_class_aware_tokens_replace_the_context_at_text_layer_8(deep):
    """TCP's PromptLearner: class feature = meta_net(hand-crafted feature), meta_net = Linear(d,
    d/4), QuickGELU, Linear(d/4, 4 * width), reshaped to 4 tokens; its text encoder (``layers=[8]``,
    weight 1.0) sets positions 1..4 to ``1.0 * class tokens + 0.0 * themselves`` before block 8."""
    model = build("tcp", deep, "oxford_pets")
    net = model.meta_net
    assert [type(m) for m in net] == [torch.nn.Linear, QuickGELU, torch.nn.Linear]
    assert (net[0].in_features, net[0].out_features, net[2].out_features) == (64, 16, 4 * 64)
    knowledge = F.normalize(
        deep.model.encode_text(oracle.tokenize([TCP_KNOWLEDGE["oxford_pets"].format(n) for n in NAMES], 32)), dim=-1
    )
    with torch.no_grad():
        class_tokens = net(knowledge).reshape(len(NAMES), -1, 64)
        tokens = oracle.tokenize([TCP_PROMPTS["oxford_pets"].format(n) for n in NAMES], 32)
        feats = model.encode_names(NAMES)
        assert torch.allclose(feats, reference_text(deep, tokens, model.ctx, {8: class_tokens}), **TOL)
        # the oracle tells the layers apart
        assert not torch.allclose(feats, reference_text(deep, tokens, model.ctx, {7: class_tokens}), **TOL)


def test_tcp_trains_with_adam_as_its_config(tmp_path):
    """TCP's config: ``OPTIM.NAME: adam``, lr 0.002, Dassl's weight decay 5e-4 and betas; its
    README sets Adam's eps to 1e-3."""
    spec = {
        "method": "tcp",
        "dataset": "shapes",
        "model": "tiny-clip",
        "pretrained": None,
        "shots": 1,
        "test_per_class": 1,
        "method_options": {"epochs": 1, "batch_size": 16},
    }
    result = run_trial(spec, {"progress": False, "checkpoint_dir": str(tmp_path)})
    state = torch.load(tmp_path / f"{result.spec.key()}.pt", weights_only=True)["optimizer"]
    group = state["param_groups"][0]
    assert (group["eps"], tuple(group["betas"]), group["weight_decay"]) == (1e-3, (0.9, 0.999), 5e-4)
    assert group["initial_lr"] == 0.002 and all("exp_avg_sq" in s for s in state["state"].values())


# --- PromptSRC -----------------------------------------------------------------------------------


def reference_vision(clip: ClipBundle, images: torch.Tensor, prompts: list[torch.Tensor]) -> torch.Tensor:
    """IVLP's VisionTransformer: prompts[0] appended after the positional embedding, before
    ln_pre; at block i (1 <= i < depth) the last n tokens replaced by prompts[i]; ln_post on the
    class token, then the projection."""
    v = clip.model.visual
    n = prompts[0].shape[0]
    x = v.conv1(images).flatten(2).permute(0, 2, 1)
    x = torch.cat([v.class_embedding.expand(len(x), 1, -1), x], dim=1) + v.positional_embedding
    x = v.ln_pre(torch.cat([x, prompts[0].expand(len(x), -1, -1)], dim=1))
    for i, block in enumerate(v.transformer.resblocks):
        if 1 <= i < len(prompts):
            x = torch.cat([x[:, :-n], prompts[i].expand(len(x), -1, -1)], dim=1)
        x = block(x)
    return v.ln_post(x[:, 0]) @ v.proj


def test_promptsrc_deep_prompts_replace_the_previous_layers_in_both_towers(deep):
    """PROMPT_DEPTH 9 for text and vision: the input prompts plus fresh ones at blocks 1..8."""
    model = build("promptsrc", deep, "oxford_pets")
    assert len(model.deep_text) == 8 and len(model.vision_prompts) == 9
    assert model.vision_prompts[0].shape == (4, 64)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens = oracle.tokenize([f"a photo of a {n}." for n in NAMES], 32)
        text = reference_text(deep, tokens, model.ctx, {i + 1: p for i, p in enumerate(model.deep_text)})
        assert torch.allclose(model.encode_names(NAMES), text, **TOL)
        vision = reference_vision(deep, images, list(model.vision_prompts))
        assert torch.allclose(model.encode_images(images), vision, **TOL)


def test_promptsrc_context_is_its_inits_first_tokens(clip):
    model = build("promptsrc", clip, "oxford_pets")
    assert model.prefix == "a photo of a"
    with torch.no_grad():
        expected = clip.model.token_embedding(oracle.tokenize(["a photo of a"], 32))[0, 1:5]
    assert torch.equal(model.ctx.detach(), expected)


def test_promptsrc_frozen_text_features_average_60_templates(clip):
    """``fixed_embeddings``: frozen CLIP's unnormalised features of each IMAGENET_TEMPLATES
    prompt, averaged over the templates, normalised where the losses use them."""
    assert len(set(TEACHER_TEMPLATES)) == 60 and all(t.count("{}") == 1 for t in TEACHER_TEMPLATES)
    assert TEACHER_TEMPLATES[0] == "a photo of a {}." and TEACHER_TEMPLATES[-1] == "itap of the {}."
    model = build("promptsrc", clip, "oxford_pets")
    with torch.no_grad():
        per_template = [
            clip.model.encode_text(oracle.tokenize([t.format(n) for n in NAMES[:2]], 32)) for t in TEACHER_TEMPLATES
        ]
    expected = F.normalize(torch.stack(per_template, dim=1).mean(dim=1), dim=-1)
    assert torch.allclose(model.teacher, expected, atol=1e-5)


def test_promptsrc_losses_are_its_formulas(clip):
    """L_SCL: ``25 * L1(text, fixed)`` + ``10 * L1(image, zero-shot image)`` (normalised
    features, mean over elements) + ``KL(p_zs || p) `` summed and divided by the logit count."""
    model = build("promptsrc", clip, "oxford_pets")
    g = torch.Generator().manual_seed(2)
    images = torch.randn(3, 3, 32, 32, generator=g)
    image_features = torch.randn(3, 64, generator=g)
    class_features = F.normalize(torch.randn(2, 64, generator=g), dim=-1)
    logits = 10 * torch.randn(3, 2, generator=g)
    step = TrainStep(images, image_features, class_features, logits, torch.tensor([0, 1, 0]))
    with torch.no_grad():
        frozen = F.normalize(clip.model.encode_image(images), dim=-1)
    teacher = model.teacher
    p_zs = torch.softmax(clip.logit_scale * frozen @ teacher.T, dim=1)
    kl = (p_zs * (p_zs.log() - torch.log_softmax(logits, dim=1))).sum() / logits.numel()
    text = 25 * (class_features - teacher).abs().mean()
    image = 10 * (F.normalize(image_features, dim=-1) - frozen).abs().mean()
    assert float(model.extra_loss(step)) == pytest.approx(float(text + image + kl), rel=1e-5)


def test_gpa_weights_are_the_references_gaussian():
    """PromptSRC's ``get_gauss(GPA_MEAN, GPA_STD)`` at epochs 1..MAX_EPOCH, divided by their sum."""
    gauss = lambda x, mu, sigma: (1 / (sigma * np.sqrt(2 * np.pi))) * np.exp(-0.5 * ((x - mu) / sigma) ** 2)
    for epochs, mean, std in ((20, 15.0, 1.0), (2, 15.0, 1.0), (50, 45.0, 5.0)):
        expected = np.array([gauss(a, mean, std) for a in range(1, epochs + 1)])
        assert gpa_weights(epochs, mean, std) == pytest.approx(list(expected / expected.sum()), rel=1e-9, abs=1e-300)
    assert gpa_weights(20, 15.0, 1.0)[14] == max(gpa_weights(20, 15.0, 1.0))


def test_gpa_gives_the_last_epoch_the_weighted_prompts_and_lives_in_the_state_dict(clip):
    model = build("promptsrc", clip, "oxford_pets", gpa_mean=2.0, gpa_std=1.0)
    weights = gpa_weights(3, 2.0, 1.0)
    for epoch in (1, 2, 3):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(epoch))
        if epoch == 2:  # a resumed trial: the aggregate so far comes back with the state dict
            state = model.state_dict()
            model = build("promptsrc", clip, "oxford_pets", gpa_mean=2.0, gpa_std=1.0)
            model.load_state_dict(state)
        model.end_epoch(epoch, 3)
        if epoch < 3:  # training goes on with the epoch's own prompts
            assert all(torch.all(p == epoch) for p in model.parameters())
    expected = sum(w * e for w, e in zip(weights, (1, 2, 3)))
    assert all(torch.allclose(p, torch.full_like(p, expected)) for p in model.parameters())


# --- both: prompts encoded at their length --------------------------------------------------------


@pytest.mark.parametrize("method", ["tcp", "promptsrc"])
def test_prompts_at_their_length_give_the_full_contexts_features_and_gradients(clip, method):
    outliers = ["the long winding river that runs through the old quiet town"]
    short = build(method, clip, "oxford_pets")
    long = build(method, replace(clip, full_text_context=True), "oxford_pets")
    long.load_state_dict(short.state_dict())
    results = []
    for model in (short, long):
        feats = model.encode_names(NAMES + outliers)
        (feats * torch.randn(feats.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
        results.append((feats.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (feats, grads), (full_feats, full_grads) = results
    assert torch.allclose(feats, full_feats, **TOL) and grads.keys() == full_grads.keys() and grads
    for name in grads:
        assert torch.allclose(grads[name], full_grads[name], **TOL), name
