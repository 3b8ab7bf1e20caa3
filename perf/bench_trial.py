"""Trial-level speed ratios, measured in one run (machines are noisy: compare ratios, not seconds).

(a) CoOp+DOR training step / CoOp training step, against its floor (n + B) / n: with B outliers
    the tuned text batch grows from n to n + B prompts, so a text-bound step cannot cost less.
    Image features are precomputed so that the step is text-bound.
(b) A zero-shot + CoOp evaluation pass with the image-feature cache cold vs warm.

Usage: python perf/bench_trial.py [--models tiny-clip micro-clip] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F


def step_time(model, names, regularizer, image, labels, scale, steps) -> float:
    """Median seconds of one full optimisation step."""
    from workers.trial import class_logits

    optimizer = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        words, zero_shot = regularizer.draw() if regularizer else ([], None)
        text = model.encode_names(names + words, image)
        loss = F.cross_entropy(class_logits(scale, image, text[: len(names)]), labels)
        if regularizer:
            loss = loss + regularizer.loss(text[len(names) :], zero_shot)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def bench_dor_step(arch: str, steps: int) -> dict:
    from workers.datasets import load_trial_data
    from workers.dor import DynamicOutlierRegularizer, build_pool
    from workers.methods import METHODS
    from workers.models.clip import load_clip

    clip = load_clip(arch, None)
    data = load_trial_data("shapes", None, 16, 1)
    names = data.base_classnames
    n = len(names)
    vocabulary = [f"word{i}" for i in range(2000)]  # the pool's content does not change the cost
    pool = build_pool(clip, names, size=1000, vocabulary=vocabulary, progress=False)
    image = torch.randn(32, clip.model.text_projection.shape[-1])
    labels = torch.randint(n, (32,))
    rows = {}
    for b in (n // 2, n, 2 * n):
        torch.manual_seed(0)
        plain = METHODS.get("coop").method().build(clip, names, "shapes", "", {**METHODS.get("coop").defaults})
        torch.manual_seed(0)
        dor = METHODS.get("coop").method().build(clip, names, "shapes", "", {**METHODS.get("coop").defaults})
        reg = DynamicOutlierRegularizer(pool, 8.0, b, seed=0)
        t_plain = step_time(plain, names, None, image, labels, clip.logit_scale, steps)
        t_dor = step_time(dor, names, reg, image, labels, clip.logit_scale, steps)
        rows[b] = (t_plain, t_dor, (n + b) / n)
    return rows


def bench_eval_cache(arch: str) -> tuple[float, float]:
    from workers.trial import run_trial

    spec = {"method": "zeroshot", "dataset": "shapes", "model": arch, "pretrained": None}
    coop = {**spec, "method": "coop", "method_options": {"epochs": 0}}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["DOR_BENCH_CACHE"] = cache
        run_trial({**spec, "shots": 1, "test_per_class": 1}, {"progress": False})  # data + model warm
        start = time.perf_counter()
        run_trial(spec, {"progress": False})
        run_trial(coop, {"progress": False, "feature_cache": False})
        cold = time.perf_counter() - start
        start = time.perf_counter()
        run_trial(spec, {"progress": False})
        run_trial(coop, {"progress": False})
        warm = time.perf_counter() - start
    return cold, warm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny-clip", "micro-clip"])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"torch threads: {torch.get_num_threads()}")
    print("\n(a) CoOp+DOR step / CoOp step (n = 30 base classes, batch 32, cached image features)")
    print(f"{'model':12} {'B':>4} {'CoOp s':>9} {'+DOR s':>9} {'ratio':>7} {'floor':>7} {'ratio/floor':>12}")
    for arch in args.models:
        for b, (plain, dor, floor) in bench_dor_step(arch, args.steps).items():
            ratio = dor / plain
            print(f"{arch:12} {b:4d} {plain:9.4f} {dor:9.4f} {ratio:7.2f} {floor:7.2f} {ratio / floor:12.2f}")
    print("\n(b) zero-shot + CoOp evaluation pass on shapes (3,000 test + 120 val images)")
    print(f"{'model':12} {'cold s':>9} {'warm s':>9} {'cold/warm':>10}")
    for arch in args.models:
        cold, warm = bench_eval_cache(arch)
        print(f"{arch:12} {cold:9.2f} {warm:9.2f} {cold / warm:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
