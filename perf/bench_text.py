"""The text side of a CoOp+DOR training step at CLIP's full context against the truncated one,
and the host time of its prompts' token ids: tokenised afresh each step against kept.

One step's text work: n class prompts and B outlier prompts through the text tower in one pass,
then the backward pass to the learned context. ``full_text_context`` encodes every prompt at the
whole context (77 tokens for ViT-B/16, as the reference code does); the default cuts the batch
after its longest prompt. Both are timed in the same run, alternating step by step (machines are
noisy: compare the ratio, not the seconds). Random ViT-B/16 weights: the cost does not depend on them.

The token ids of a step (n class prompts and B outlier prompts drawn from a pool of K words) are
made on the CPU while the GPU waits for them: open_clip's tokenizer cleans every text with ftfy
and a regex each time, dor-bench's ``PromptTokenizer`` keeps each text's ids.

Usage: python perf/bench_text.py [--device cuda] [--steps 2] [--classes 50] [--outliers 50]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from dataclasses import replace

import torch

#: Caltech101's first 50 class names (as CoOp's split file writes them, underscores as spaces).
CALTECH_NAMES = (
    "face, leopard, motorbike, accordion, airplane, anchor, ant, barrel, bass, beaver, binocular, bonsai, brain, "
    "brontosaurus, buddha, butterfly, camera, cannon, car side, ceiling fan, cellphone, chair, chandelier, "
    "cougar body, cougar face, crab, crayfish, crocodile, crocodile head, cup, dalmatian, dollar bill, dolphin, "
    "dragonfly, electric guitar, elephant, emu, euphonium, ewer, ferry, flamingo, flamingo head, garfield, "
    "gerenuk, gramophone, grand piano, hawksbill, headphone, hedgehog, helicopter"
).split(", ")


def text_step_seconds(model, names: list[str], outliers: list[str], device: torch.device) -> float:
    """Seconds of one step's text side: classes and outliers encoded in one pass (in the model's
    precision, as a trial runs it), then backward."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    model.zero_grad(set_to_none=True)
    features = model.encode_names(names + outliers)
    features.float().sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def text_encoding_ratio(
    arch: str = "ViT-B-16", n_classes: int = 50, outliers: int = 50, steps: int = 2, device: str = "cpu"
) -> dict:
    """Median full-context and truncated step times of CoOp's text side and their ratio.

    Each step draws ``outliers`` fresh WordNet nouns, as DOR does, and both encoders run on the
    same draw. Returns ``{"full_s", "truncated_s", "ratio", "full_length", "truncated_length", ...}``.
    """
    from workers.dor import noun_vocabulary
    from workers.methods import METHODS
    from workers.models.clip import load_clip

    clip = load_clip(arch, None, device=device)
    full_clip = replace(clip, full_text_context=True)
    names = [CALTECH_NAMES[i % len(CALTECH_NAMES)] for i in range(n_classes)]
    card = METHODS.get("coop")
    models = {
        label: card.method().build(bundle, names, "caltech101", "", dict(card.defaults))
        for label, bundle in (("full", full_clip), ("truncated", clip))
    }
    vocabulary = noun_vocabulary()
    draws = random.Random(0)
    times: dict[str, list[float]] = {"full": [], "truncated": []}
    lengths: list[int] = []
    for step in range(steps + 1):  # the first step of each warms up and is not counted
        words = draws.sample(vocabulary, outliers)
        tokens = clip.tokenizer([f"{models['truncated'].prefix} {w}." for w in names + words])
        lengths.append(int(tokens.argmax(dim=-1).max()) + 1)
        for label, model in models.items():
            seconds = text_step_seconds(model, names, words, clip.device)
            if step:
                times[label].append(seconds)
    full, truncated = statistics.median(times["full"]), statistics.median(times["truncated"])
    return {
        "arch": arch,
        "device": str(clip.device),
        "prompts": n_classes + outliers,
        "steps": steps,
        "full_length": int(clip.model.positional_embedding.shape[0]),
        "truncated_length": max(lengths),
        "full_s": round(full, 4),
        "truncated_s": round(truncated, 4),
        "ratio": round(full / truncated, 2),
    }


def prompt_token_seconds(
    arch: str = "ViT-B-16", n_classes: int = 50, outliers: int = 50, pool: int = 5000, steps: int = 20
) -> dict:
    """Median host seconds to make one CoOp+DOR step's token ids (n class prompts, B outlier
    prompts drawn from ``pool`` WordNet nouns), with open_clip's tokenizer and with dor-bench's,
    which has seen the pool once (as it has after the first epochs of a trial)."""
    import open_clip

    from workers.dor import noun_vocabulary
    from workers.models.tokens import PromptTokenizer

    names = [
        f"{CALTECH_NAMES[i % len(CALTECH_NAMES)]} {i // len(CALTECH_NAMES) or ''}".strip() for i in range(n_classes)
    ]
    vocabulary = noun_vocabulary()
    words = random.Random(0).sample(vocabulary, min(pool, len(vocabulary)))
    prompt = lambda name: f"X X X X {name}."  # CoOp's placeholders (ctx_init "a photo of a")
    plain = open_clip.get_tokenizer(arch)
    kept = PromptTokenizer(plain)
    kept([prompt(n) for n in names + words])
    draws = random.Random(1)
    times: dict[str, list[float]] = {"open_clip": [], "kept": []}
    for _ in range(steps):
        texts = [prompt(n) for n in names + draws.sample(words, min(outliers, len(words)))]
        for label, tokenize in (("open_clip", plain), ("kept", kept)):
            start = time.perf_counter()
            tokenize(texts)
            times[label].append(time.perf_counter() - start)
    every, once = statistics.median(times["open_clip"]), statistics.median(times["kept"])
    return {
        "prompts": n_classes + outliers,
        "open_clip_ms": round(1000 * every, 2),
        "kept_ms": round(1000 * once, 2),
        "ratio": round(every / once, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--outliers", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"torch threads: {torch.get_num_threads()}")
    result = text_encoding_ratio(args.arch, args.classes, args.outliers, args.steps, args.device)
    for key, value in result.items():
        print(f"{key:>17}: {value}")
    for classes in (args.classes, 10 * args.classes):
        tokens = prompt_token_seconds(args.arch, classes, classes)
        print(
            f"token ids of {tokens['prompts']} prompts a step: {tokens['open_clip_ms']} ms with open_clip's tokenizer, "
            f"{tokens['kept_ms']} ms kept: {tokens['ratio']}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
