"""DOR's named vocabularies (wordnet, clip-bpe, a word-list file) and its resampling modes (step,
epoch, never): the words, the sampler, and both inside real trials on a tiny random-init CLIP."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer

from orchestrator.preflight import vocabulary_problems
from tests.helpers.trials import killed_then_resumed
from workers.dor import OutlierSampler, build_pool, clip_bpe_vocabulary, read_word_file, vocabulary_words
from workers.dor.regularizer import RESAMPLE
from workers.errors import DorBenchError, NotFoundError
from workers.models.clip import load_clip
from workers.trial import run_trial
from workers.vocabularies import VOCABULARIES

WORDS = str(Path(__file__).parents[2] / "examples" / "words.txt")
QUICK = {"dataset": "shapes", "model": "tiny-clip", "pretrained": None, "shots": 2, "seed": 3, "test_per_class": 5}
BASE = ["red circle", "blue star", "green square"]


def coop(epochs: int, **dor) -> dict:
    return {**QUICK, "method": "coop", "method_options": {"epochs": epochs, "batch_size": 16}, "dor": dor}


@pytest.fixture(scope="module")
def bpe_words() -> list[str]:
    return clip_bpe_vocabulary()


@pytest.fixture(scope="module")
def bpe_pool(bpe_words):
    """A pool from the whole clip-bpe vocabulary: its word features land in the session cache,
    where the clip-bpe trial below finds them (the same tiny CLIP)."""
    return build_pool(load_clip("tiny-clip", None), BASE, "near", size=50, vocabulary=bpe_words, progress=False)


# --- vocabularies -------------------------------------------------------------------------------


def test_clip_bpe_vocabulary_is_clips_whole_alphabetic_words(bpe_words):
    assert 25_000 < len(bpe_words) < 40_000  # 32,230 from open_clip's (OpenAI's) BPE file
    assert bpe_words == sorted(set(bpe_words))
    assert all(w.isascii() and w.isalpha() and w.islower() and len(w) >= 3 for w in bpe_words)
    assert not any("</w>" in w for w in bpe_words)
    assert {"dog", "cat", "car", "tree", "guitar", "mountain"} <= set(bpe_words)
    assert not {"a", "of", "to"} & set(bpe_words)  # shorter than 3 letters
    # CLIP's own tokenizer reads each word as one word-final token: a whole word of its vocabulary
    tokenizer = SimpleTokenizer()
    for word in bpe_words[::97]:
        (token,) = tokenizer.encode(word)
        assert tokenizer.decoder[token] == f"{word}</w>"


def test_vocabularies_by_name_or_file(bpe_words):
    assert VOCABULARIES.names() == ["clip-bpe", "wordnet"]
    assert vocabulary_words("clip-bpe") == vocabulary_words("CLIP-BPE") == bpe_words
    assert vocabulary_words(WORDS) == read_word_file(WORDS) and "apple" in vocabulary_words(WORDS)
    with pytest.raises(NotFoundError, match="clip-bep' does not exist"):
        vocabulary_words("clip-bep")
    assert vocabulary_problems(["clip-bpe", WORDS]) == []  # preflight reads them as the trials do


def test_pool_cache_keeps_vocabularies_apart(bpe_pool, bpe_words):
    """Same encoder, base classes, strategy and K: a cache key without the words would hand the
    second vocabulary the first one's pool."""
    clip = load_clip("tiny-clip", None)
    listed = build_pool(clip, BASE, "near", size=50, vocabulary=read_word_file(WORDS), progress=False)
    assert set(bpe_pool.words) <= set(bpe_words) and len(bpe_pool) == 50
    assert set(listed.words) <= set(read_word_file(WORDS)) and not set(listed.words) & set(bpe_pool.words)
    again = build_pool(clip, BASE, "near", size=50, vocabulary=bpe_words, progress=False)
    assert again.words == bpe_pool.words


def test_a_trial_trains_with_clip_bpe_outliers(bpe_pool):
    result = run_trial(coop(1, lam=8.0, vocabulary="clip-bpe", pool_size=50, outliers_per_step=4), {"progress": False})
    assert result.spec.dor.vocabulary == "clip-bpe"
    assert result.info["dor"]["pool_size"] == 50 and result.history[-1]["train/dor"] > 0


# --- the sampler --------------------------------------------------------------------------------


def epochs_of_draws(sampler: OutlierSampler, epochs: int, steps: int = 3) -> list[list[list[int]]]:
    """What the trial loop draws: ``next_epoch`` before each epoch, one draw per step."""
    out = []
    for _ in range(epochs):
        sampler.next_epoch()
        out.append([sampler.draw().tolist() for _ in range(steps)])
    return out


def test_step_resampling_draws_as_before():
    """The default draws what the sampler drew before ``resample`` existed: a fresh permutation
    of its seeded generator at every step, epochs or not."""
    legacy = torch.Generator().manual_seed(3)
    expected = [[torch.randperm(100, generator=legacy)[:10].tolist() for _ in range(3)] for _ in range(2)]
    assert epochs_of_draws(OutlierSampler(100, 10, seed=3), 2) == expected


def test_epoch_resampling_holds_one_draw_per_epoch():
    epochs = epochs_of_draws(OutlierSampler(100, 10, seed=3, resample="epoch"), 3)
    assert all(steps == [steps[0]] * 3 for steps in epochs)  # every step of an epoch: the same outliers
    assert len({tuple(steps[0]) for steps in epochs}) == 3  # each epoch: new ones
    assert epochs[0][0] == OutlierSampler(100, 10, seed=3).draw().tolist()  # the seed's first draw


def test_never_resampling_keeps_one_seeded_draw_for_all_training():
    epochs = epochs_of_draws(OutlierSampler(100, 10, seed=3, resample="never"), 3)
    first = epochs[0][0]
    assert all(draw == first for steps in epochs for draw in steps) and len(set(first)) == 10
    assert first == OutlierSampler(100, 10, seed=3).draw().tolist()
    assert first != OutlierSampler(100, 10, seed=4, resample="never").draw().tolist()


@pytest.mark.parametrize("resample", RESAMPLE)
def test_a_resumed_sampler_draws_what_an_uninterrupted_one_does(resample, tmp_path):
    sampler = OutlierSampler(50, 5, seed=7, resample=resample)
    epochs_of_draws(sampler, 2)
    torch.save(sampler.state_dict(), tmp_path / "state.pt")  # as a checkpoint holds it
    expected = epochs_of_draws(sampler, 2)
    resumed = OutlierSampler(50, 5, seed=0, resample=resample)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert epochs_of_draws(resumed, 2) == expected


def test_sampler_refuses_unknown_or_other_resampling():
    with pytest.raises(DorBenchError, match="Did you mean 'epoch'"):
        OutlierSampler(10, 2, seed=0, resample="epoc")
    with pytest.raises(DorBenchError, match="same dor.resample"):
        OutlierSampler(10, 2, seed=0, resample="never").load_state_dict(OutlierSampler(10, 2, seed=0).state_dict())
    older = OutlierSampler(10, 2, seed=0).state_dict()  # a checkpoint written before dor.resample
    del older["resample"], older["held"]
    sampler = OutlierSampler(10, 2, seed=5)
    sampler.load_state_dict(older)
    assert sampler.draw().tolist() == OutlierSampler(10, 2, seed=0).draw().tolist()


# --- in the trial loop --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted() -> dict:
    """A 2-epoch CoOp + DOR trial per resampling mode (4 steps an epoch, B = 4 of 60 words)."""
    return {
        mode: run_trial(coop(2, lam=8.0, vocabulary=WORDS, outliers_per_step=4, resample=mode), {"progress": False})
        for mode in RESAMPLE
    }


def test_the_trial_loop_resamples_as_asked(uninterrupted):
    step, epoch, never = (uninterrupted[m].history for m in ("step", "epoch", "never"))
    assert epoch[0] == never[0]  # epoch 1: both train every step on the seed's first draw
    assert epoch[1]["train/dor"] != never[1]["train/dor"]  # epoch 2: "epoch" drew new outliers
    assert step[0]["train/dor"] != never[0]["train/dor"]  # "step" drew new ones at every step
    assert uninterrupted["step"].spec.key() != uninterrupted["epoch"].spec.key()


@pytest.mark.parametrize("resample", ["epoch", "never"])
def test_kill_and_resume_gives_the_same_result(resample, uninterrupted, tmp_path):
    spec = coop(2, lam=8.0, vocabulary=WORDS, outliers_per_step=4, resample=resample)
    resumed, seen = killed_then_resumed(spec, tmp_path, after_epoch=1)
    assert seen == [2]  # epoch 1 came from the checkpoint; epoch 2 ("epoch": a new draw) ran here
    assert resumed.history == uninterrupted[resample].history
    assert resumed.metrics == uninterrupted[resample].metrics
