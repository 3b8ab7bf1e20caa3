"""The training and scoring protocol against the reference code's definitions (Dassl, CoOp,
CoCoOp, KgCoOp, MaPLe, DAC), each written here from the reference's behaviour, never copied.
Every test here fails on dor-bench's computation before protocol 2 (docs/fidelity.md)."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers.fake_data import make_imagenet, make_split_json_dataset, write_image
from tests.parity import oracle
from workers.datasets import DATASETS, load_trial_data
from workers.datasets.sampling import fewshot
from workers.errors import DorBenchError
from workers.methods import METHODS
from workers.metrics import mce_weighted
from workers.spec import RunOptions
from workers.trial import FeatureSource, run_trial, score_tests, training_batches

PETS = ["american_bulldog", "Abyssinian", "great_pyrenees", "yorkshire_terrier", "Bengal", "pug"]


@pytest.fixture(scope="module")
def pets_root(tmp_path_factory) -> Path:
    """An OxfordPets split file as CoOp ships them: underscored names, labels interleaved (the
    file lists images, not classes, in order)."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "oxford_pets"
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    for name, count in (("train", 9), ("val", 5), ("test", 2)):
        for i in range(count):
            for label in (3, 1, 5, 0, 4, 2):  # the order labels first appear: not sorted
                relpath = f"{PETS[label]}_{name}{i}.jpg"
                write_image(folder / "images" / relpath)
                split[name].append([relpath, label, PETS[label]])
    (folder / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    return root


# --- Dassl's few-shot draw --------------------------------------------------------------------


def dassl_fewshot(items: list, shots: int) -> list:
    """Dassl's ``generate_fewshot_dataset`` (repeat=False) on the global ``random``: labels walked
    as ``split_dataset_by_label`` fills its dict, K items drawn per label, all when fewer."""
    tracker: dict[int, list] = defaultdict(list)
    for item in items:
        tracker[item.label].append(item)
    out = []
    for group in tracker.values():
        out += random.sample(group, shots) if len(group) >= shots else group
    return out


@pytest.mark.parametrize("shots,seed", [(4, 1), (2, 3), (16, 2)])
def test_fewshot_draws_the_images_coop_draws(pets_root, shots, seed):
    splits = DATASETS.get("oxford_pets").read(pets_root)
    random.seed(seed)  # Dassl's set_random_seed(cfg.SEED), before the dataset is built
    expected_train = dassl_fewshot(splits.train, shots)
    expected_val = dassl_fewshot(splits.val, min(shots, 4))
    train, val = fewshot(splits, shots, seed)
    assert [d.path for d in train] == [d.path for d in expected_train]
    assert [d.path for d in val] == [d.path for d in expected_val]


# --- class names as text ------------------------------------------------------------------------


def test_class_names_are_written_with_spaces_everywhere(pets_root, clip):
    data = load_trial_data("oxford_pets", pets_root, shots=1, seed=1)
    assert data.base_classnames == ["american bulldog", "Abyssinian", "great pyrenees"]
    assert data.new_classnames == ["yorkshire terrier", "Bengal", "pug"]
    assert {d.classname for d in data.train} == set(data.base_classnames)
    # zero-shot prompts: the dataset template on the name as text
    zs = METHODS.get("zeroshot").method().build(clip, data.base_classnames, data.name, data.template, {})
    expected = F.normalize(
        clip.model.encode_text(
            oracle.tokenize([f"a photo of a {n.replace('_', ' ')}, a type of pet." for n in PETS[:3]], 32)
        ),
        dim=-1,
    )
    assert torch.allclose(zs.encode_names(data.base_classnames), expected, atol=1e-6)


# --- prompt construction (CoOp, CoCoOp, KgCoOp, MaPLe) ---------------------------------------------


def embedded(clip, text: str) -> torch.Tensor:
    with torch.no_grad():
        return clip.model.token_embedding(oracle.tokenize([text], 32))[0]


@pytest.mark.parametrize("method", ["coop", "cocoop", "kgcoop"])
def test_coop_family_context_length_follows_ctx_init(clip, method):
    """CoOp's PromptLearner: ``n_ctx = len(ctx_init.split(" "))``, ctx = the init's embeddings,
    prompts ``"{ctx_init} {name}."``; n_ctx is not read."""
    options = {**METHODS.get(method).defaults, "n_ctx": 16, "ctx_init": "a_photo of a"}
    model = METHODS.get(method).method().build(clip, ["great pyrenees"], "oxford_pets", "", options)
    assert model.ctx.shape == (4, 64)
    assert torch.equal(model.ctx.detach(), embedded(clip, "a photo of a")[1:5])
    assert model.prefix == "a photo of a"
    images = torch.randn(1, 64)
    feats = model.encode_names(["great pyrenees", "pug"], images).reshape(-1, 2, 64)[0]
    assert float(feats[0].detach() @ feats[1].detach()) < 0.999  # the class names survive (before: cosine 1.0)


def test_coop_random_context_prompt_tokens(clip):
    model = METHODS.get("coop").method().build(clip, ["x"], "oxford_pets", "", METHODS.get("coop").defaults)
    from workers.methods.prompting import placeholder_tokens

    tokens = placeholder_tokens(clip, ["great pyrenees"], model.prefix)
    assert torch.equal(tokens, oracle.tokenize([" ".join(["X"] * 16) + " great pyrenees."], 32))


def test_maple_learns_the_first_n_ctx_tokens_of_its_init(clip):
    """MaPLe: n_ctx=2 with "a photo of a": the prompt is "a photo of a {name}.", "a photo" is
    learned, "of a" stays; an n_ctx longer than the init is refused (it would erase the name)."""
    options = dict(METHODS.get("maple").defaults)
    model = METHODS.get("maple").method().build(clip, ["pug"], "oxford_pets", "", options)
    assert model.prefix == "a photo of a" and model.ctx.shape == (2, 64)
    assert torch.equal(model.ctx.detach(), embedded(clip, "a photo of a")[1:3])
    with pytest.raises(DorBenchError, match="n_ctx=6 .* overwrite the class name"):
        METHODS.get("maple").method().build(clip, ["pug"], "oxford_pets", "", {**options, "n_ctx": 6})
    random_init = METHODS.get("maple").method().build(clip, ["pug"], "oxford_pets", "", {**options, "ctx_init": None})
    assert random_init.prefix == "X X"  # DAC's MaPLe config (CTX_INIT: "")


@pytest.mark.parametrize(
    "dataset,template",
    [
        ("dtd", "a photo of a {}, a type of texture."),
        ("eurosat", "a centered satellite photo of {}."),
        ("imagenet", "a photo of a {}."),
    ],
)
def test_kgcoop_anchor_is_kgcoops_own_template(clip, dataset, template):
    zero_shot_template = DATASETS.get(dataset).template
    model = (
        METHODS.get("kgcoop")
        .method()
        .build(clip, ["banded", "lined"], dataset, zero_shot_template, METHODS.get("kgcoop").defaults)
    )
    expected = F.normalize(
        clip.model.encode_text(oracle.tokenize([template.format(n) for n in ("banded", "lined")], 32)), dim=-1
    )
    assert torch.allclose(model.anchor, expected, atol=1e-6)


# --- Dassl's schedule and loader -----------------------------------------------------------------


def dassl_lrs(lr: float, epochs: int, warmup_lr: float) -> list[float]:
    """The lr of each epoch under Dassl's ConstantWarmupScheduler (1 epoch, WARMUP_RECOUNT) in
    front of torch's own CosineAnnealingLR(T_max=epochs), stepped once per epoch."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    lrs = [warmup_lr]
    for epoch in range(1, epochs):
        if epoch > 1:  # the successor steps from the second epoch after the switch on
            successor.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


@pytest.mark.parametrize("method,epochs", [("coop", 5), ("maple", 5)])
def test_each_epoch_trains_at_dassls_lr(method, epochs):
    spec = {
        "method": method,
        "dataset": "shapes",
        "model": "tiny-clip",
        "pretrained": None,
        "shots": 1,
        "test_per_class": 1,
        "method_options": {"epochs": epochs, "batch_size": 16, "lr": 0.0035},
    }
    history = run_trial(spec, {"progress": False}).history
    expected = dassl_lrs(0.0035, epochs, 1e-5)
    assert [row["lr"] for row in history] == pytest.approx(expected, rel=1e-9)
    assert sum(expected[1:]) / (0.0035 * (epochs - 1)) > 0.55  # before: MaPLe got 69% of this


@pytest.mark.parametrize("views", [0, 2])
def test_last_incomplete_batch_is_dropped(clip, views):
    """Dassl's train loader: ``drop_last = len(data) >= batch_size``; 30 images in batches of 8
    give 3 steps (before: 4), and 30 images in batches of 64 still give one."""
    data = load_trial_data("shapes", None, shots=1, seed=1)
    method = METHODS.get("coop").method()
    features = FeatureSource(clip, data.name, RunOptions(progress=False))
    for batch, steps in ((8, 3), (64, 1)):
        config = {**METHODS.get("coop").defaults, "batch_size": batch, "augment_views": views}
        loader = training_batches(method, config, data, clip, features, seed=1)
        sizes = [len(labels) for _, labels in loader()]
        assert len(sizes) == steps and sizes == [min(batch, 30)] * steps


# --- metrics as DAC defines them -----------------------------------------------------------------


def test_weighted_mce_is_dacs_mce():
    """DAC's tools/metrics.py: 10 equal-width bins, max over bins of |acc - conf| * count / N."""
    g = torch.Generator().manual_seed(3)
    conf = torch.rand(500, generator=g) * 0.9 + 0.05
    correct = torch.rand(500, generator=g) < conf
    c, k = conf.numpy().astype(np.float64), correct.numpy()
    index = np.digitize(c, np.linspace(0, 1, 11)[1:-1])
    gaps = [
        abs(k[index == b].mean() - c[index == b].mean()) * (index == b).sum() / len(c)
        for b in range(10)
        if (index == b).any()
    ]
    assert mce_weighted(conf, correct) == pytest.approx(100 * max(gaps), rel=1e-6)


def test_dor_loss_is_one_minus_mean_cosine(clip):
    """DOR's term: ``lam * (1 - mean_b cos(psi_tuned(o_b), psi_zs(o_b)))``, psi_zs from "a photo of a {o}."."""
    from workers.dor import DynamicOutlierRegularizer, build_pool

    words = ["violin", "zebra", "teapot", "glacier", "cactus", "anchor"]
    pool = build_pool(clip, ["pug"], size=6, vocabulary=words, progress=False)
    reg = DynamicOutlierRegularizer(pool, 2.0, 3, seed=1)
    drawn, zero_shot = reg.draw()
    expected_zs = F.normalize(
        clip.model.encode_text(oracle.tokenize([f"a photo of a {w}." for w in drawn], 32)), dim=-1
    )
    assert torch.allclose(zero_shot, expected_zs, atol=2e-3)  # the pool caches features in fp16
    tuned = F.normalize(torch.randn(3, 64, generator=torch.Generator().manual_seed(0)), dim=-1)
    expected = 2.0 * (1 - F.cosine_similarity(tuned, zero_shot, dim=-1).mean())
    assert float(reg.loss(tuned, zero_shot)) == pytest.approx(float(expected), rel=1e-6)
    assert len(set(drawn)) == 3  # without replacement


def dac_proximity(test: torch.Tensor, reference: torch.Tensor, k: int) -> torch.Tensor:
    """DAC's ``get_knn_dists`` + ``exp(-mean)``: L2 distances on normalised features, k smallest."""
    test, reference = F.normalize(test, dim=-1), F.normalize(reference, dim=-1)
    dists = torch.stack([torch.norm(reference - row, dim=1) for row in test])
    return torch.exp(-dists.topk(k, dim=1, largest=False).values.mean(dim=1))


@pytest.mark.parametrize("dataset,k,reference", [("imagenet", 10, "test-base"), ("dtd", 5, "val")])
def test_piece_proximity_as_dac(tmp_path, clip, dataset, k, reference):
    """DAC: k = 5 nearest base-class validation images; ImageNet: k = 10 and its val is its test
    set (CoOp's imagenet.py: val=test), so the base test images are the reference."""
    if dataset == "imagenet":
        make_imagenet(tmp_path, num_classes=4, train=6, val=8)
    else:
        make_split_json_dataset(tmp_path, dataset, num_classes=4, train=6, val=6, test=8)
    data = load_trial_data(dataset, tmp_path, shots=4, seed=1)
    method = METHODS.get("zeroshot").method()
    model = method.build(clip, data.base_classnames, data.name, data.template, {})
    features = FeatureSource(clip, data.name, RunOptions(progress=False))
    scores = {s.split: s for s in score_tests(model, method, data, clip, features)}
    ref = features.get(data.val if reference == "val" else data.test_base, reference)
    for split, items in (("base", data.test_base), ("new", data.test_new)):
        expected = dac_proximity(features.get(items, f"test-{split}"), ref, k)
        assert torch.allclose(scores[split].proximity, expected, atol=1e-5)


def test_pool_exclusion_base_or_every_class(clip):
    words = ["pug", "Bengal", "great_pyrenees", "violin", "zebra", "teapot"]
    base, new = ["great pyrenees", "pug"], ["Bengal"]
    from workers.dor import build_pool

    assert set(build_pool(clip, base, size=10, vocabulary=words, progress=False).words) == {
        "Bengal",
        "violin",
        "zebra",
        "teapot",
    }
    assert set(build_pool(clip, base, size=10, vocabulary=words, progress=False, exclude=base + new).words) == {
        "violin",
        "zebra",
        "teapot",
    }


def test_optimizer_is_not_a_knob():
    """Every reference config trains with SGD; an ``optimizer`` option would be a knob that does nothing."""
    with pytest.raises(DorBenchError, match=r"Unknown option\(s\) \['optimizer'\]"):
        run_trial(
            {
                "method": "coop",
                "dataset": "shapes",
                "model": "tiny-clip",
                "pretrained": None,
                "method_options": {"optimizer": "adam"},
            },
            {"progress": False},
        )


def test_the_evaluated_model_is_the_last_epochs(tmp_path):
    """Dassl's ``TEST.FINAL_MODEL: last_step``: the model scored is the one the last epoch left
    (no best-validation pick), the prompt the trial keeps is that one, and it differs from an
    earlier epoch's."""
    from workers.outputs import PROMPT_FILE

    spec = {
        "method": "coop",
        "dataset": "shapes",
        "model": "tiny-clip",
        "pretrained": None,
        "shots": 2,
        "method_options": {"epochs": 3},
        "test_per_class": 3,
    }
    states = {}

    def after(epoch: int, row: dict[str, float]) -> None:
        states[epoch] = torch.load(next((tmp_path / "ckpt").glob("*.pt")), weights_only=True)["params"]

    options = {"progress": False, "checkpoint_dir": str(tmp_path / "ckpt"), "keep_dir": str(tmp_path / "keep")}
    result = run_trial(spec, options, on_epoch=after)
    kept = torch.load(tmp_path / "keep" / result.spec.key() / PROMPT_FILE, weights_only=True)
    assert sorted(states) == [1, 2, 3] and kept.keys() == states[3].keys() == {"ctx"}
    assert torch.equal(kept["ctx"], states[3]["ctx"])
    assert not torch.equal(kept["ctx"], states[2]["ctx"])
