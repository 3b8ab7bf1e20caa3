"""How robust is the demo's effect? 3 pretraining seeds x 3 logit-scale starts x 3 base/new splits.

For every micro-CLIP pretraining (seed 0, 1, 2; the learnable logit scale started at 1/0.07, 50
or 100; 400 steps, everything else as shipped), and every base/new split of the built-in world
(``shapes``, ``shapes-split1``, ``shapes-split2``: three balanced choices of 30 seen base
classes, new = the 30 classes held out of pretraining), it runs the demo's three trials
(``examples/demo.yaml``: zero-shot, CoOp, CoOp+DOR; trial seed 1) and asks:

* **up**: is CoOp's new-class ECE above zero-shot's?
* **down**: is CoOp+DOR's new-class ECE below CoOp's?

The effect *holds* in a cell when both do. The recipe is read from ``examples/demo.yaml`` so
this study measures exactly what the demo runs. Seed 0 with start 50 is the shipped model.

Everything is resumable: weights are written once into ``OUT/weights`` (pretraining resumes from
its own checkpoints), and each finished trial is appended to ``OUT/results.jsonl``; run the same
command again to continue. The Markdown report goes to ``OUT/robustness.md`` (and is printed).

Usage (about 40 CPU-minutes of pretraining and 30 of trials on one thread)::

    HF_HUB_OFFLINE=1 python perf/micro_clip_robustness.py --out robustness-study
    python perf/micro_clip_robustness.py --out robustness-study --report-only
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.benchmark.planning import validate_file
from pretraining.micro_clip import PretrainConfig, pretrain
from workers.spec import RunOptions, TrialSpec
from workers.trial import run_trial

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
SCALES = {"1/0.07": 1 / 0.07, "50": 50.0, "100": 100.0}
SPLITS = ("shapes", "shapes-split1", "shapes-split2")
VARIANTS = ("zeroshot", "coop", "coop+dor")


def weights_for(out: Path, seed: int, scale: str, pretrain_missing: bool = True) -> str | None:
    """The weights of one pretraining: the shipped file for (0, 50), else trained on demand
    (or None when missing and ``pretrain_missing`` is off)."""
    if seed == 0 and scale == "50":
        return "shapes"  # the shipped tag
    path = out / "weights" / f"micro-clip-s{seed}-ls{SCALES[scale]:.4g}.pt"
    if not path.is_file():
        if not pretrain_missing:
            return None
        started = time.monotonic()
        config = PretrainConfig(seed=seed, init_logit_scale=SCALES[scale], threads=1)
        record = pretrain(
            config, path, progress=False, command=f"perf/micro_clip_robustness.py (seed {seed}, logit start {scale})"
        )
        print(
            f"pretrained {path.name} in {time.monotonic() - started:.0f}s: "
            f"final logit scale {record.get('final_logit_scale', float('nan')):.1f}",
            flush=True,
        )
    return str(path)


def demo_specs() -> dict[str, TrialSpec]:
    """The demo's zero-shot, CoOp and CoOp+DOR specs for trial seed 1."""
    _, trials, _ = validate_file(ROOT / "examples" / "demo.yaml")
    specs = {}
    for t in trials:
        if t.spec.seed != 1:
            continue
        name = t.spec.method + ("+dor" if t.spec.dor is not None else "")
        specs[name] = t.spec
    assert set(specs) == set(VARIANTS), specs.keys()
    return specs


def cell_order() -> list[tuple[int, str, str]]:
    """Every (pretrain seed, logit start, split), most informative first: all pretrainings on the
    demo split, then the other splits under the shipped start (50), then the rest."""
    cells = [(seed, scale, split) for split in SPLITS for scale in SCALES for seed in SEEDS]
    return sorted(cells, key=lambda c: (c[2] != "shapes", c[1] != "50"))


def run_cells(out: Path, pretrain_missing: bool = True, reverse: bool = False) -> list[dict]:
    """Run every missing trial; returns all rows of ``results.jsonl``. Without
    ``pretrain_missing``, cells wait for another process to write their weights."""
    results = out / "results.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    done = {(r["seed"], r["scale"], r["split"], r["variant"]) for r in rows}
    specs = demo_specs()
    todo = [(*cell, v) for cell in cell_order()[:: -1 if reverse else 1] for v in VARIANTS if (*cell, v) not in done]
    total = len(SEEDS) * len(SCALES) * len(SPLITS) * len(VARIANTS)
    while todo:
        ready = todo if pretrain_missing else [t for t in todo if weights_for(out, t[0], t[1], False)]
        if not ready:
            time.sleep(30)
            continue
        seed, scale, split, variant = ready[0]
        todo.remove(ready[0])
        spec = specs[variant].model_copy(update={"pretrained": weights_for(out, seed, scale), "dataset": split})
        started = time.monotonic()
        result = run_trial(spec, RunOptions(device="cpu", progress=False))
        row = {
            "seed": seed,
            "scale": scale,
            "split": split,
            "variant": variant,
            "seconds": round(time.monotonic() - started, 1),
            **{k: result.metrics[k] for k in ("new/ece", "new/acc", "new/confidence", "base/acc", "base/ece", "hm")},
        }
        rows.append(row)
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(
            f"[{len(rows)}/{total}] seed {seed} start {scale} {split} {variant}: "
            f"new ECE {row['new/ece']:.2f}, new acc {row['new/acc']:.1f} "
            f"({row['seconds']:.0f}s)",
            flush=True,
        )
    return rows


def report(rows: list[dict]) -> str:
    """The Markdown report: one line per cell, then the verdict per logit-scale start."""
    cells: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        cells.setdefault((r["scale"], r["seed"], r["split"]), {})[r["variant"]] = r
    lines = [
        "| logit start | pretrain seed | split | zero-shot new ECE | CoOp new ECE (conf - acc) "
        "| CoOp+DOR new ECE | zs / CoOp / DOR new acc | holds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    verdict: dict[str, list[bool]] = {}
    deltas: dict[str, list[tuple[float, float]]] = {}
    for (scale, seed, split), v in sorted(
        cells.items(), key=lambda kv: (list(SCALES).index(kv[0][0]), kv[0][1], kv[0][2])
    ):
        if set(v) != set(VARIANTS):
            continue
        zs, coop, dor = (v[name] for name in VARIANTS)
        up, down = coop["new/ece"] > zs["new/ece"], dor["new/ece"] < coop["new/ece"]
        verdict.setdefault(scale, []).append(up and down)
        deltas.setdefault(scale, []).append((coop["new/ece"] - zs["new/ece"], coop["new/ece"] - dor["new/ece"]))
        gap = coop["new/confidence"] - coop["new/acc"]
        holds = "yes" if up and down else "no" + (" (up)" if not up else "") + (" (down)" if not down else "")
        lines.append(
            f"| {scale} | {seed} | {split} | {zs['new/ece']:.2f} | {coop['new/ece']:.2f} ({gap:+.1f}) "
            f"| {dor['new/ece']:.2f} | {zs['new/acc']:.1f} / {coop['new/acc']:.1f} / "
            f"{dor['new/acc']:.1f} | {holds} |"
        )
    lines += [
        "",
        "| logit start | cells where the effect holds | CoOp - zero-shot new ECE | CoOp - DOR new ECE |",
        "|---|---|---|---|",
    ]
    for scale in SCALES:
        if scale not in verdict:
            continue
        ups, downs = zip(*deltas[scale])
        spread = lambda xs: f"{statistics.fmean(xs):+.2f} (min {min(xs):+.2f})"
        lines.append(f"| {scale} | {sum(verdict[scale])} of {len(verdict[scale])} | {spread(ups)} | {spread(downs)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("robustness-study"))
    p.add_argument("--report-only", action="store_true", help="only print the report of what is done")
    p.add_argument(
        "--wait-for-weights", action="store_true", help="another process pretrains: run cells as their weights appear"
    )
    p.add_argument(
        "--reverse", action="store_true", help="take the cells in reverse order (a second process on a second core)"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    if args.report_only:
        rows = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    else:
        rows = run_cells(args.out, pretrain_missing=not args.wait_for_weights, reverse=args.reverse)
    text = report(rows)
    (args.out / "robustness.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
