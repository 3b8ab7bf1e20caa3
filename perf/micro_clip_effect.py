"""Does the built-in demo show the paper's effect? Zero-shot vs CoOp vs CoOp+DOR on micro-CLIP.

For a micro-CLIP weights file and a CoOp recipe, runs zero-shot, CoOp and CoOp+DOR (near-OOD
WordNet pool, K=5000, B = number of base classes, lambda 8 unless told otherwise) on the built-in
``shapes`` dataset (30 base = seen classes, 30 new = held-out classes) for each seed and prints:

    new acc, new ECE, new confidence - accuracy, base acc, base ECE, HM,
    new-cos  (mean pairwise cosine of the 30 new-class text features, x100),
    new-div  (1 - mean cos(tuned new-class feature, zero-shot new-class feature), x100),
    train acc of the last epoch,

per seed and as mean +- std over the seeds, plus a verdict: does CoOp raise new-class ECE over
zero-shot and does DOR bring it back down, in every seed?

Each trial goes through the same steps as ``workers.trial.run_trial`` (same seeding order, so the
metrics are identical), but keeps the tuned model so its text features can be measured.

Usage (always with ``HF_HUB_OFFLINE=1``; set ``DOR_BENCH_CACHE`` to keep caches apart)::

    python perf/micro_clip_effect.py --weights shapes --epochs 100 --lr 0.002 \
        --augment-views 8 --min-crop-scale 1.0 --seeds 1 2 3
    python perf/micro_clip_effect.py --weights /tmp/mc/micro-clip-250.pt --lr 0.02 --methods coop

``--weights``: a shipped tag (``shapes``) or a path to a ``micro-clip`` weights file.
``--test-per-class 20`` for quick exploration; leave it unset (all 50 test images) for final numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)  # the machine is shared: one thread, one experiment at a time

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.datasets import load_trial_data  # noqa: E402
from workers.evaluation import evaluate  # noqa: E402
from workers.identity import normalise  # noqa: E402
from workers.methods import METHODS  # noqa: E402
from workers.spec import DorSpec, RunOptions, TrialSpec  # noqa: E402
from workers.trial import FeatureSource, make_regularizer, score_tests, seed_everything, train, warm_clip  # noqa: E402

COLUMNS = [  # (key, header, format)
    ("new/acc", "new acc", "{:6.2f}"),
    ("new/ece", "new ECE", "{:6.2f}"),
    ("new/gap", "new c-a", "{:6.2f}"),
    ("base/acc", "base acc", "{:6.2f}"),
    ("base/ece", "base ECE", "{:6.2f}"),
    ("hm", "HM", "{:6.2f}"),
    ("new/cos", "new-cos", "{:6.1f}"),
    ("new/div", "new-div", "{:6.2f}"),
    ("train/acc", "train acc", "{:6.1f}"),
]


def mean_pairwise_cosine(features: torch.Tensor) -> float:
    """Mean cosine (x100) over distinct pairs of L2-normalised rows."""
    f = torch.nn.functional.normalize(features.float(), dim=-1)
    sim = f @ f.T
    n = len(f)
    return 100.0 * float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def run_one(
    method_name: str,
    seed: int,
    weights: str,
    method_options: dict,
    dor: dict | None,
    shots: int,
    test_per_class: int | None,
    zs_new: torch.Tensor | None,
) -> dict:
    """One trial (as ``run_trial`` does it); returns its metrics plus text-feature measurements."""
    spec = normalise(
        TrialSpec(
            method=method_name,
            dataset="shapes",
            model="micro-clip",
            pretrained=weights,
            seed=seed,
            shots=shots,
            method_options=method_options,
            dor=None if dor is None else DorSpec(**dor),
            test_per_class=test_per_class,
        )
    )  # as run_trial: the DOR weight resolved
    options = RunOptions(device="cpu", progress=False)
    started = time.monotonic()
    seed_everything(spec.seed)
    card = METHODS.get(spec.method)
    method = card.method()
    config = {**card.defaults, **spec.method_options}
    data = load_trial_data(spec.dataset, spec.root, spec.shots, spec.seed, spec.subsample, spec.test_per_class)
    clip = warm_clip(spec.model, spec.pretrained, options.device, config["precision"])
    model = method.build(clip, data.base_classnames, data.name, data.template, config)
    features = FeatureSource(clip, data.name, options)
    history = []
    if card.trains:
        regularizer = make_regularizer(spec, clip, data, data.base_classnames + data.new_classnames)
        history = train(model, method, config, data, clip, features, regularizer, spec.seed, None, None, False)
    model.eval()
    scores = score_tests(model, method, data, clip, features)
    metrics = dict(evaluate(scores, n_bins=spec.ece_bins).metrics)
    with torch.no_grad():
        new_text = model.encode_names(data.new_classnames)
    metrics["new/gap"] = metrics["new/confidence"] - metrics["new/acc"]
    metrics["base/gap"] = metrics["base/confidence"] - metrics["base/acc"]
    metrics["new/cos"] = mean_pairwise_cosine(new_text)
    ref = new_text if zs_new is None else zs_new
    metrics["new/div"] = 100.0 * (1 - float((new_text * ref).sum(-1).mean()))
    metrics["train/acc"] = history[-1]["train/acc"] if history else float("nan")
    metrics["train/loss"] = history[-1]["train/loss"] if history else float("nan")
    metrics["seconds"] = time.monotonic() - started
    metrics["_new_text"] = new_text
    return metrics


def fmt_row(label: str, values: dict) -> str:
    return f"{label:<22}" + " ".join(f.format(values[k]).rjust(len(h) + 1) for k, h, f in COLUMNS)


def fmt_mean(label: str, rows: list[dict]) -> str:
    cells = []
    for key, header, _ in COLUMNS:
        xs = [r[key] for r in rows if r[key] == r[key]]  # drop NaN (zero-shot has no train acc)
        if not xs:
            cells.append("-".rjust(len(header) + 6))
            continue
        mean = statistics.fmean(xs)
        std = statistics.stdev(xs) if len(xs) > 1 else 0.0
        cells.append(f"{mean:.2f}+-{std:.2f}".rjust(len(header) + 6))
    return f"{label:<22}" + " ".join(cells)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="shapes", help="shipped tag or micro-clip weights file")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--shots", type=int, default=16)
    p.add_argument(
        "--methods", nargs="+", default=["zeroshot", "coop", "coop+dor"], choices=["zeroshot", "coop", "coop+dor"]
    )
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-ctx", type=int, default=16)
    p.add_argument("--ctx-init", default=None, help='e.g. "a photo of a" (default: random)')
    p.add_argument("--augment-views", type=int, default=8, help="0 = online augmentation")
    p.add_argument("--min-crop-scale", type=float, default=1.0)
    p.add_argument("--dor-lambda", type=float, default=8.0)
    p.add_argument("--dor-pool-size", type=int, default=5000)
    p.add_argument("--dor-per-step", type=int, default=None, help="B (default: number of base classes)")
    p.add_argument("--dor-strategy", default="near", choices=["near", "far", "random"])
    p.add_argument("--test-per-class", type=int, default=None)
    p.add_argument("--json", default=None, help="also write all metrics to this JSON file")
    args = p.parse_args(argv)

    coop = {
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "n_ctx": args.n_ctx,
        "ctx_init": args.ctx_init,
        "augment_views": args.augment_views,
        "min_crop_scale": args.min_crop_scale,
    }
    dor = {
        "lam": args.dor_lambda,
        "pool_size": args.dor_pool_size,
        "outliers_per_step": args.dor_per_step,
        "pool_strategy": args.dor_strategy,
    }
    print(
        f"weights {args.weights} | shots {args.shots} | CoOp {json.dumps(coop)} | DOR {json.dumps(dor)}"
        f" | test_per_class {args.test_per_class}",
        flush=True,
    )
    results: dict[str, dict[int, dict]] = {m: {} for m in args.methods}
    zs_cache: dict[int, torch.Tensor] = {}
    print(f"{'':<22}" + " ".join(h.rjust(len(h) + 1) for _, h, _ in COLUMNS), flush=True)
    for seed in args.seeds:
        zs = run_one("zeroshot", seed, args.weights, {}, None, args.shots, args.test_per_class, None)
        zs_new = zs["_new_text"]
        zs_cache[seed] = zs_new
        for m in args.methods:
            if m == "zeroshot":
                r = zs
            elif m == "coop":
                r = run_one("coop", seed, args.weights, coop, None, args.shots, args.test_per_class, zs_new)
            else:
                r = run_one("coop", seed, args.weights, coop, dor, args.shots, args.test_per_class, zs_new)
            results[m][seed] = r
            print(
                fmt_row(f"{m} s{seed}", r) + f"   ({r['seconds']:.0f}s, train loss {r['train/loss']:.3f})", flush=True
            )
    print("\nmean +- std over seeds " + " ".join(map(str, args.seeds)))
    for m in args.methods:
        print(fmt_mean(m, list(results[m].values())))
    if {"zeroshot", "coop", "coop+dor"} <= set(args.methods):
        ok_up = all(results["coop"][s]["new/ece"] > results["zeroshot"][s]["new/ece"] for s in args.seeds)
        ok_over = all(results["coop"][s]["new/gap"] > 0 for s in args.seeds)
        ok_down = all(results["coop+dor"][s]["new/ece"] < results["coop"][s]["new/ece"] for s in args.seeds)
        margins = [results["coop"][s]["new/ece"] - results["coop+dor"][s]["new/ece"] for s in args.seeds]
        print(
            f"\nverdict: CoOp new ECE > zero-shot in every seed: {ok_up}; CoOp overconfident on new "
            f"(conf > acc) in every seed: {ok_over}; DOR lowers new ECE in every seed: {ok_down} "
            f"(margins CoOp - DOR: {', '.join(f'{x:.2f}' for x in margins)})"
        )
    if args.json:
        clean = {
            m: {s: {k: v for k, v in r.items() if not k.startswith("_")} for s, r in rs.items()}
            for m, rs in results.items()
        }
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": clean}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
