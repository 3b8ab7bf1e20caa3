"""Methods and DOR inside the trial loop, on the shapes data with a tiny random-init CLIP."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.trials import killed_then_resumed
from workers.errors import DorBenchError
from workers.methods import METHODS
from workers.methods.base import TrainStep
from workers.methods.kgcoop import template_features
from workers.models.clip import load_clip
from workers.trial import run_trial

QUICK = {"dataset": "shapes", "model": "tiny-clip", "pretrained": None, "shots": 2, "seed": 3, "test_per_class": 5}


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    """A small outlier vocabulary file, so these tests never encode all of WordNet."""
    path = tmp_path_factory.mktemp("vocab") / "words.txt"
    path.write_text(
        "\n".join(
            [
                "apple",
                "bicycle",
                "cloud",
                "dragon",
                "engine",
                "forest",
                "guitar",
                "harbor",
                "island",
                "jacket",
                "kettle",
                "ladder",
                "mountain",
                "needle",
                "orchard",
                "pencil",
                "quilt",
                "river",
                "saddle",
                "tunnel",
                "umbrella",
                "violin",
                "wagon",
                "yacht",
                "zebra",
                "Red Star",
                "anchor",
                "bridge",
                "candle",
                "desert",
                "feather",
                "garden",
                "hammer",
                "igloo",
                "jungle",
                "kite",
                "lantern",
                "meadow",
                "nest",
                "ocean",
                "pillow",
            ]
        )
    )
    return str(path)


def coop(epochs: int = 2, **dor) -> dict:
    spec = {**QUICK, "method": "coop", "method_options": {"epochs": epochs, "batch_size": 16}}
    if dor:
        spec["dor"] = dor
    return spec


@pytest.fixture(scope="module")
def clip():
    return load_clip("tiny-clip", None)


@pytest.mark.parametrize("method", ["coop", "tcp", "promptsrc"])
def test_lambda_zero_is_the_plain_method_bit_for_bit(method, words):
    def trial(**dor):
        return run_trial({**coop(**dor), "method": method}, {"progress": False})

    plain = trial()
    zero = trial(lam=0.0, vocabulary=words, outliers_per_step=8)
    with_dor = trial(lam=8.0, vocabulary=words, outliers_per_step=8)
    assert zero.metrics == plain.metrics
    assert zero.history == plain.history
    assert with_dor.history[-1]["train/dor"] > 0
    assert with_dor.history[-1]["train/loss"] != plain.history[-1]["train/loss"]
    assert with_dor.info["dor"]["outliers_per_step"] == 8


def test_default_outliers_per_step_is_number_of_base_classes(words):
    result = run_trial(coop(epochs=1, lam=8.0, vocabulary=words), {"progress": False})
    assert result.info["dor"]["outliers_per_step"] == 30
    # "Red Star" is a base class of the shapes data (any case): never an outlier
    assert result.info["dor"]["pool_size"] == 40


# PromptSRC: its GPA aggregate resumes too; in fp16, with its fp32 deep prompts beside fp16 ones
@pytest.mark.parametrize("method, precision", [("coop", "auto"), ("promptsrc", "auto"), ("promptsrc", "fp16")])
def test_kill_and_resume_gives_the_same_result(tmp_path, words, method, precision):
    spec = {**coop(epochs=3, lam=4.0, vocabulary=words, outliers_per_step=6), "method": method}
    spec["method_options"] = {**spec["method_options"], "precision": precision}
    reference = run_trial(spec, {"progress": False})
    resumed, seen = killed_then_resumed(spec, tmp_path, after_epoch=2)
    assert seen == [3]  # epochs 1 and 2 came from the checkpoint
    assert resumed.metrics == reference.metrics
    assert resumed.history == reference.history


def test_non_finite_loss_names_epoch_and_step():
    spec = {**coop(epochs=2), "method_options": {"epochs": 2, "batch_size": 16, "lr": 1e30}}
    with pytest.raises(DorBenchError, match=r"epoch \d+, step \d+"):
        run_trial(spec, {"progress": False})


def test_kgcoop_loss_matches_its_formula(clip):
    model = (
        METHODS.get("kgcoop")
        .method()
        .build(clip, ["red circle", "blue star"], "shapes", "a photo of a {}.", {**METHODS.get("kgcoop").defaults})
    )
    anchor = model.anchor
    tuned = F.normalize(anchor + 0.3 * torch.randn(anchor.shape, generator=torch.Generator().manual_seed(0)), dim=-1)
    expected = 8.0 * (1 - sum(float(tuned[i] @ anchor[i]) for i in range(2)) / 2)
    step = TrainStep(None, torch.zeros(1, anchor.shape[1]), tuned, torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
    assert float(model.extra_loss(step)) == pytest.approx(expected, rel=1e-5)
    # the hand-crafted anchor is the zero-shot feature of KgCoOp's template ("a photo of a {}." here)
    tokens = clip.tokenizer(["a photo of a red circle."])
    assert torch.allclose(anchor[0], F.normalize(clip.model.encode_text(tokens), dim=-1)[0], atol=1e-6)


def test_cocoop_outlier_prompts_are_image_conditioned(clip):
    model = (
        METHODS.get("cocoop").method().build(clip, ["red circle"], "shapes", "{}", {**METHODS.get("cocoop").defaults})
    )
    torch.nn.init.normal_(model.meta_net[2].weight, std=0.5)
    images = torch.randn(2, 64, generator=torch.Generator().manual_seed(1))
    feats = model.encode_names(["red circle", "zebra", "violin"], images)
    assert feats.shape == (2, 3, 64)
    assert not torch.allclose(feats[0, 1:], feats[1, 1:])  # outliers differ per image
    # the batched pass equals encoding each image's prompts on its own
    alone = model.encode_names(["red circle", "zebra", "violin"], images[1:])
    assert torch.allclose(alone[0], feats[1], atol=1e-5)


def test_coop_context_replaces_placeholders_and_only_context_learns(clip):
    model = METHODS.get("coop").method().build(clip, ["red circle"], "shapes", "{}", {**METHODS.get("coop").defaults})
    assert [n for n, p in model.named_parameters()] == ["ctx"]
    assert model.ctx.shape == (16, 64)
    feats = model.encode_names(["red circle", "zebra"])
    feats.sum().backward()
    assert model.ctx.grad is not None and model.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.model.parameters())


def test_maple_changes_the_image_encoder(clip):
    model = METHODS.get("maple").method().build(clip, ["red circle"], "shapes", "{}", {**METHODS.get("maple").defaults})
    assert model.depth == 2  # tiny-clip has 2 layers: depth 9 is clamped
    images = torch.randn(2, 3, 32, 32)
    plain = clip.model.encode_image(images)
    prompted = model.encode_images(images)
    assert prompted.shape == plain.shape and not torch.allclose(prompted, plain)
    prompted.sum().backward()
    assert model.couplings[0].weight.grad is not None


@pytest.mark.parametrize("method", ["kgcoop", "cocoop", "maple"])
def test_every_method_runs_a_trial_with_dor(method, words):
    options = {"epochs": 1, "batch_size": 8 if method != "cocoop" else 4}
    spec = {
        **QUICK,
        "shots": 1,
        "method": method,
        "method_options": options,
        "dor": {"lam": 2.0, "vocabulary": words, "outliers_per_step": 4},
    }
    result = run_trial(spec, {"progress": False})
    assert result.history[-1]["train/dor"] > 0
    assert 0 <= result.metrics["new/ece"] <= 100
    # MaPLe changes the image encoder, so its test features never come from the cache
    assert ("test-base" in result.info["feature_cache_hits"]) == (method != "maple")


def test_tcp_outlier_words_get_class_aware_tokens_from_their_own_knowledge(clip):
    card = METHODS.get("tcp")
    model = card.method().build(clip, ["red circle", "blue star"], "shapes", "a photo of a {}.", dict(card.defaults))
    knowledge = model.knowledge(["blue star", "zebra"])
    assert torch.equal(knowledge[0], model.anchor[1])  # a class's: computed once, at the build
    assert torch.allclose(knowledge[1], template_features(clip, ["zebra"], "a photo of a {}.")[0], atol=1e-6)
    feats = model.encode_names(["red circle", "zebra", "violin"])
    # an outlier's feature is its own prompt's, whatever it is encoded with
    assert torch.allclose(feats[1:], model.encode_names(["zebra", "violin"]), atol=1e-5)
    feats[1:].sum().backward()
    assert model.meta_net[0].weight.grad.abs().sum() > 0 and model.ctx.grad.abs().sum() > 0


def test_promptsrc_learns_prompts_in_both_encoders(clip):
    card = METHODS.get("promptsrc")
    model = card.method().build(clip, ["red circle"], "shapes", "a photo of a {}.", dict(card.defaults))
    # tiny-clip's 2 layers: depth 9 is clamped to 2 prompts per tower
    assert {n for n, _ in model.named_parameters()} == {"ctx", "deep_text.0", "vision_prompts.0", "vision_prompts.1"}
    images = torch.randn(2, 3, 32, 32)
    prompted = model.encode_images(images)
    assert prompted.shape == (2, 64) and not torch.allclose(prompted, clip.model.encode_image(images))
    (prompted.sum() + model.encode_names(["red circle", "zebra"]).sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
