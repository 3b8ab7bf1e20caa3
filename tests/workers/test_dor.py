"""DOR: WordNet vocabulary, outlier pool, sampler and loss, on real WordNet and a real tiny CLIP."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch

from workers.dor import (
    DynamicOutlierRegularizer,
    OutlierSampler,
    build_pool,
    dor_loss,
    encode_words,
    noun_vocabulary,
    wordnet_reader,
)
from workers.dor import vocabulary as vocabulary_module
from workers.errors import DorBenchError
from workers.models.clip import load_clip


@pytest.fixture(scope="module")
def cold_vocabulary(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], float, Path, object]:
    """The WordNet nouns derived from scratch in a private cache.

    Returns (words, seconds, cache root, the WordNet reader the derivation used).
    """
    root = tmp_path_factory.mktemp("vocab-cache")
    readers = []

    def recording_reader():
        readers.append(wordnet_reader())
        return readers[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOR_BENCH_CACHE", str(root))
        mp.setattr(vocabulary_module, "wordnet_reader", recording_reader)
        started = time.monotonic()
        words = noun_vocabulary()
        seconds = time.monotonic() - started
    assert len(readers) == 1
    return words, seconds, root, readers[0]


@pytest.fixture(scope="module")
def clip():
    return load_clip("tiny-clip", None)


@pytest.fixture(scope="module")
def small_vocabulary(cold_vocabulary) -> list[str]:
    """About 300 nouns spread over the whole vocabulary, plus words that equal base class names."""
    words = cold_vocabulary[0]
    return words[:: len(words) // 300] + ["dog", "Dog", "ice cream", "Ice  Cream", "ice_cream", "violin"]


# --- vocabulary ---------------------------------------------------------------------------------


def test_noun_vocabulary_is_all_wordnet_nouns_and_cached(cold_vocabulary, monkeypatch):
    words, cold_seconds, root, _ = cold_vocabulary
    assert len(words) > 80_000
    assert "dog" in words and "ice cream" in words
    assert not any("_" in w for w in words)
    assert len({w.casefold() for w in words}) == len(words)
    assert words == sorted(words, key=lambda w: (w.casefold(), w))

    monkeypatch.setenv("DOR_BENCH_CACHE", str(root))
    cached = vocabulary_module.vocabulary_path()
    mtime = cached.stat().st_mtime_ns

    def no_wordnet():
        raise AssertionError("the second call must not read WordNet")

    monkeypatch.setattr(vocabulary_module, "wordnet_reader", no_wordnet)
    started = time.monotonic()
    again = noun_vocabulary()
    warm_seconds = time.monotonic() - started
    assert again == words
    assert cached.stat().st_mtime_ns == mtime
    assert warm_seconds < 1.0 < cold_seconds


def test_lexnames_file_matches_the_man_page():
    lines = vocabulary_module.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3"
    assert lines[1] == "01\tadj.pert\t3"
    assert lines[2] == "02\tadv.all\t4"
    assert lines[3] == "03\tnoun.Tops\t1"
    assert lines[28] == "28\tnoun.time\t1"
    assert lines[29] == "29\tverb.body\t2"
    assert lines[43] == "43\tverb.weather\t2"
    assert lines[44] == "44\tadj.ppl\t3"


def test_wordnet_reader_reads_lexicographer_files(cold_vocabulary):
    reader = cold_vocabulary[3]
    assert reader.synset("dog.n.01").lexname() == "noun.animal"
    assert reader.synset("run.v.01").lexname() == "verb.motion"


def test_missing_wordnet_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DOR_BENCH_CACHE", str(tmp_path))
    monkeypatch.delenv("WNSEARCHDIR", raising=False)
    monkeypatch.delenv("WNHOME", raising=False)
    monkeypatch.setattr(vocabulary_module, "_find_nltk_wordnet", lambda: None)
    monkeypatch.setattr(vocabulary_module, "SYSTEM_WORDNET_DIRS", (str(tmp_path / "no-wordnet"),))
    with pytest.raises(DorBenchError) as err:
        noun_vocabulary()
    assert "python -m nltk.downloader wordnet" in err.value.message
    assert "apt-get install wordnet-base wordnet-sense-index" in err.value.message


# --- loss ---------------------------------------------------------------------------------------


def test_dor_loss_matches_hand_computation():
    tuned = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    zero_shot = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    # cos([1,0],[1,1]) = 1/sqrt(2); cos([3,4],[0,2]) = 8/(5*2) = 0.8
    expected = 1 - (1 / math.sqrt(2) + 0.8) / 2
    assert dor_loss(tuned, zero_shot).item() == pytest.approx(expected, abs=1e-6)


def test_dor_loss_broadcasts_image_conditioned_features():
    tuned = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 2.0], [0.0, 3.0, 0.0]]])  # [N=2, B=2, D=3]
    zero_shot = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    # image 1: cos = 1 and 1/sqrt(2); image 2: cos = 0 and 1/sqrt(2)
    expected = 1 - (1 + 1 / math.sqrt(2) + 0 + 1 / math.sqrt(2)) / 4
    assert dor_loss(tuned, zero_shot).item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(DorBenchError, match="shape"):
        dor_loss(tuned, zero_shot[:1])


def test_dor_gradient_reaches_only_tuned_outlier_features():
    torch.manual_seed(0)
    prompt = torch.randn(4, 8, requires_grad=True)  # stands in for the learned context
    base_classes = prompt[:2] * 2  # base-class features: not part of the DOR input
    tuned_outliers = prompt[2:] * 3
    zero_shot = torch.randn(2, 8, requires_grad=True)
    loss = dor_loss(tuned_outliers, zero_shot)
    grad_outliers, grad_base, grad_zs = torch.autograd.grad(
        loss, [tuned_outliers, base_classes, zero_shot], allow_unused=True, retain_graph=True
    )
    assert grad_outliers is not None and grad_outliers.abs().sum() > 0
    assert grad_base is None
    assert grad_zs is None
    loss.backward()
    assert prompt.grad[:2].abs().sum() == 0 and prompt.grad[2:].abs().sum() > 0


# --- sampler ------------------------------------------------------------------------------------


def test_sampler_draws_fresh_distinct_reproducible_and_resumable():
    sampler = OutlierSampler(pool_size=100, per_step=10, seed=3)
    first, second = sampler.draw(), sampler.draw()
    assert not torch.equal(first, second)
    for draw in (first, second):
        assert len(set(draw.tolist())) == 10 and 0 <= int(draw.min()) and int(draw.max()) < 100

    twin = OutlierSampler(pool_size=100, per_step=10, seed=3)
    assert torch.equal(twin.draw(), first) and torch.equal(twin.draw(), second)

    state = sampler.state_dict()
    expected = [sampler.draw() for _ in range(3)]
    resumed = OutlierSampler(pool_size=100, per_step=10, seed=999)
    resumed.load_state_dict(state)
    assert all(torch.equal(resumed.draw(), e) for e in expected)


def test_sampler_rejects_more_per_step_than_the_pool():
    with pytest.raises(DorBenchError, match="pool of 5 words"):
        OutlierSampler(pool_size=5, per_step=6, seed=0)
    with pytest.raises(DorBenchError, match="same pool size"):
        OutlierSampler(pool_size=10, per_step=2, seed=0).load_state_dict(
            OutlierSampler(pool_size=20, per_step=2, seed=0).state_dict()
        )


# --- pool ---------------------------------------------------------------------------------------

BASE = ["dog", "Dog", "ice cream", "violin", "airplane"]


def test_encode_words_is_normalised_float32(clip):
    features = encode_words(clip, ["dog", "cat", "ice cream"], batch_size=2, progress=False)
    assert features.shape == (3, 64) and features.dtype == torch.float32
    assert torch.allclose(features.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_pool_never_contains_a_base_class_name(clip, small_vocabulary, tmp_path, monkeypatch):
    monkeypatch.setenv("DOR_BENCH_CACHE", str(tmp_path))
    pool = build_pool(clip, BASE, "near", size=10_000, vocabulary=small_vocabulary, progress=False)
    banned = {"dog", "ice cream", "violin", "airplane"}
    assert not any(" ".join(w.replace("_", " ").split()).casefold() in banned for w in pool.words)
    kept = [w for w in small_vocabulary if " ".join(w.replace("_", " ").split()).casefold() not in banned]
    assert sorted(pool.words) == sorted(kept)
    assert len(pool) < pool.size and "fewer than the 10000" in pool.note


def test_strategies_differ_and_respect_the_size(clip, small_vocabulary, tmp_path, monkeypatch):
    monkeypatch.setenv("DOR_BENCH_CACHE", str(tmp_path))
    pools = {
        s: build_pool(clip, BASE, s, size=50, seed=1, vocabulary=small_vocabulary, progress=False)
        for s in ("near", "far", "random")
    }
    for strategy, pool in pools.items():
        assert len(pool) == 50 and len(pool.words) == len(set(pool.words)) and not pool.note
        assert pool.zero_shot.shape == (50, 64) and pool.zero_shot.dtype == torch.float32
        assert pool.strategy == strategy
    near, far, rand = (set(pools[s].words) for s in ("near", "far", "random"))
    assert near != far and near != rand and far != rand
    assert not near & far
    assert pools["near"].scores.mean() > pools["random"].scores.mean() > pools["far"].scores.mean()
    assert pools["near"].scores.min() >= pools["far"].scores.max()
    reseeded = build_pool(clip, BASE, "random", size=50, seed=2, vocabulary=small_vocabulary, progress=False)
    assert reseeded.words != pools["random"].words
    with pytest.raises(DorBenchError, match="Did you mean 'near'"):
        build_pool(clip, BASE, "nearr", vocabulary=small_vocabulary)


def test_zero_shot_features_are_computed_once_per_pool(clip, small_vocabulary, tmp_path, monkeypatch):
    monkeypatch.setenv("DOR_BENCH_CACHE", str(tmp_path))
    from workers.dor import pool as pool_module

    calls = []
    real_encode_text = pool_module.encode_text  # the pool's one way through CLIP's text tower

    def counting_encode_text(*args, **kwargs):
        calls.append(1)
        return real_encode_text(*args, **kwargs)

    monkeypatch.setattr(pool_module, "encode_text", counting_encode_text)
    pool = build_pool(clip, BASE, "near", size=40, vocabulary=small_vocabulary, progress=False)
    after_build = len(calls)
    assert after_build > 0

    regularizer = DynamicOutlierRegularizer(pool, lam=8.0, per_step=5, seed=0)
    draws = [regularizer.draw() for _ in range(5)]
    assert len(calls) == after_build
    words, zero_shot = draws[-1]
    assert len(words) == 5 and set(words) <= set(pool.words)
    rows = [pool.words.index(w) for w in words]
    assert torch.equal(zero_shot, pool.zero_shot[rows])

    tuned = (zero_shot + 0.1 * torch.randn_like(zero_shot)).requires_grad_(True)
    assert regularizer.loss(tuned).item() == pytest.approx(8.0 * dor_loss(tuned, zero_shot).item())

    again = build_pool(clip, BASE, "near", size=40, vocabulary=small_vocabulary, progress=False)
    assert len(calls) == after_build
    assert again.words == pool.words and torch.equal(again.zero_shot, pool.zero_shot)
