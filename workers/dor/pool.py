"""The outlier pool: K vocabulary words with their frozen zero-shot text features.

Built once per (text-encoder weights, dataset base classes). The zero-shot features of the whole
vocabulary are cached on disk per text encoder (float16), so pools for any base classes,
strategy or K are quick afterwards; each finished pool is cached too.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from workers.dor.vocabulary import noun_vocabulary
from workers.errors import DorBenchError, did_you_mean
from workers.models.clip import ClipBundle, encode_text
from workers.paths import atomic_write_bytes, cache_dir
from workers.progress import Progress

#: The fixed zero-shot template of psi_zs (SPEC section 2), not the dataset's template.
ZS_TEMPLATE = "a photo of a {}."
STRATEGIES = ("near", "far", "random")
#: Bump when features or pools are derived differently: cache keys carry it.
POOL_VERSION = "dor-pool-v2"


@dataclass
class OutlierPool:
    """The outlier words and their zero-shot features (row i belongs to ``words[i]``)."""

    words: list[str]
    zero_shot: torch.Tensor  # [K, D] float32, L2-normalised, on the CPU
    scores: torch.Tensor  # [K] mean cosine similarity of each word to the base class names
    strategy: str
    size: int  # the K asked for; len(words) is smaller only when ``note`` says why
    note: str = ""

    def __len__(self) -> int:
        return len(self.words)


@torch.no_grad()
def encode_words(
    clip: ClipBundle,
    words: Sequence[str],
    template: str = ZS_TEMPLATE,
    batch_size: int = 512,
    progress: bool = True,
) -> torch.Tensor:
    """Frozen zero-shot text features of ``template.format(word)``: [N, D], normalised, float32, CPU."""
    if not words:
        raise DorBenchError("No words to encode.", "pass at least one word.")
    bar = Progress(len(words), f"encoding {len(words)} words", enabled=progress)
    chunks = []
    for start in range(0, len(words), batch_size):
        batch = words[start : start + batch_size]
        tokens = clip.tokenizer([template.format(w) for w in batch])
        chunks.append(encode_text(clip, tokens).cpu())
        bar.update(len(batch))
    return torch.cat(chunks)


def vocabulary_features(clip: ClipBundle, words: Sequence[str], progress: bool = True) -> torch.Tensor:
    """Zero-shot features of every word, from the on-disk cache when this text encoder has them.

    Always rounded through float16 (the cached precision), so a fresh and a cached result agree.
    """
    path = cache_dir("word-features") / f"{_key(clip, _hash_words(words))}.pt"
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True).float()
    features = encode_words(clip, words, progress=progress).half()
    _save(path, features)
    return features.float()


def build_pool(
    clip: ClipBundle,
    base_classnames: Sequence[str],
    strategy: str = "near",
    size: int = 5000,
    seed: int = 0,
    vocabulary: Sequence[str] | None = None,
    progress: bool = True,
    exclude: Sequence[str] | None = None,
) -> OutlierPool:
    """The outlier pool for a dataset's base classes (cached).

    Words equal to a name in ``exclude`` (default: the base class names; ignoring case, spacing
    and underscores) are removed; each
    remaining word is scored by its mean cosine similarity to the base class names' zero-shot
    features. ``near`` keeps the top ``size``, ``far`` the bottom ``size``, ``random`` a uniform
    sample drawn with ``seed``. ``vocabulary`` replaces the WordNet nouns (used as given).

    Raises:
        DorBenchError: unknown strategy, ``size`` < 1, or no base class names.
    """
    check_strategy(strategy)
    if size < 1:
        raise DorBenchError(
            f"The outlier pool size must be at least 1, got {size}.",
            "set the pool size (K) to a positive number, e.g. 5000.",
        )
    if not base_classnames:
        raise DorBenchError(
            "An outlier pool needs the dataset's base class names; none were given.",
            "pass the base-class names of the dataset split.",
        )
    words = list(vocabulary) if vocabulary is not None else noun_vocabulary()
    exclude = list(base_classnames if exclude is None else exclude)
    path = cache_dir("pools") / f"{_pool_key(clip, words, base_classnames, exclude, strategy, size, seed)}.pt"
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return OutlierPool(**{**saved, "zero_shot": saved["zero_shot"].float()})
    pool = _select(clip, words, base_classnames, exclude, strategy, size, seed, progress)
    _save(path, {**vars(pool), "zero_shot": pool.zero_shot.half()})
    return pool


def _select(
    clip: ClipBundle,
    words: list[str],
    base_classnames: Sequence[str],
    exclude: Sequence[str],
    strategy: str,
    size: int,
    seed: int,
    progress: bool,
) -> OutlierPool:
    features = vocabulary_features(clip, words, progress)
    banned = {normalise_name(name) for name in exclude}
    keep = torch.tensor([i for i, w in enumerate(words) if normalise_name(w) not in banned], dtype=torch.long)
    if len(keep) == 0:
        raise DorBenchError(
            "No outlier words remain after removing the class names.",
            "use the WordNet vocabulary (vocabulary=None) or pass more words.",
        )
    base = encode_words(clip, list(base_classnames), progress=False)
    scores = (features[keep] @ base.T).mean(dim=1)
    order = pick(scores, strategy, size, seed)
    note = (
        ""
        if len(order) == size
        else (
            f"only {len(keep)} words remain after removing the class names, fewer than the "
            f"{size} asked for; the pool keeps all of them"
        )
    )
    chosen = keep[order]
    return OutlierPool(
        words=[words[i] for i in chosen.tolist()],
        zero_shot=features[chosen],
        scores=scores[order],
        strategy=strategy,
        size=size,
        note=note,
    )


def check_strategy(strategy: str) -> None:
    """A DorBenchError with did-you-mean unless ``strategy`` is one of ``STRATEGIES``."""
    if strategy not in STRATEGIES:
        raise DorBenchError(
            f"Unknown outlier-pool strategy '{strategy}'.{did_you_mean(strategy, STRATEGIES)}",
            f"use one of: {', '.join(STRATEGIES)}.",
        )


def pick(scores: torch.Tensor, strategy: str, size: int, seed: int) -> torch.Tensor:
    """The indices of a pool's members among scored candidates: the ``size`` highest scores
    (``near``), the lowest (``far``) or a uniform draw with ``seed`` (``random``); all when fewer."""
    k = min(size, len(scores))
    if strategy == "random":
        return torch.randperm(len(scores), generator=torch.Generator().manual_seed(seed))[:k]
    return scores.topk(k, largest=strategy == "near").indices


def normalise_name(name: str) -> str:
    """A name as compared for exclusion: case, spacing and underscores ignored."""
    return " ".join(name.replace("_", " ").split()).casefold()


def _hash_words(words: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()


def _key(clip: ClipBundle, *parts: str) -> str:
    """A cache key over the text encoder's weights and precision plus ``parts``."""
    digest = hashlib.sha256()
    for part in (POOL_VERSION, clip.text_fingerprint, str(clip.dtype), ZS_TEMPLATE, *parts):
        digest.update(part.encode("utf-8") + b"\0")
    return digest.hexdigest()[:24]


def _pool_key(
    clip: ClipBundle,
    words: list[str],
    base_classnames: Sequence[str],
    exclude: Sequence[str],
    strategy: str,
    size: int,
    seed: int,
) -> str:
    bases = hashlib.sha256("\n".join(sorted(base_classnames)).encode("utf-8")).hexdigest()
    banned = hashlib.sha256("\n".join(sorted(exclude)).encode("utf-8")).hexdigest()
    rng = str(seed) if strategy == "random" else ""
    return _key(clip, _hash_words(words), bases, banned, strategy, str(size), rng)


def _save(path: Path, obj: object) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())
