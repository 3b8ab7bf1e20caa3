"""Training throughput of the paper's trials, the reference code's way against dor-bench's, in one run.

Per method (CoOp, CoOp+DOR, CoCoOp, KgCoOp, MaPLe) it measures real trials (``run_trial``, random
ViT-B/16 weights, no download) on synthetic JPEGs written in CoOp's ``oxford_pets`` layout:

- steps/s and images/s of the **reference-style** loop (77-token text, images loaded in the
  training process with PIL, one trial per GPU) against **dor-bench's** (its default
  ``RunOptions``, or ``--dor-options``: text cut to the batch's longest prompt, loader workers),
  at two base-class counts (text cost grows with the classes), with peak memory and GPU
  utilisation; and dor-bench's with the device image pipeline, at the fewer classes;
- the aggregate steps/s of k = 1, 2, 4 trials sharing the GPU (separate processes of this
  script), in the faster of dor-bench's two image styles, which sets the recommended fractional
  ``gpus`` (1/k);
- the GPU-hours of the paper's grid (``benchmarks.yaml``: 297 trials) both ways;
- on CPU: the image loader's images/s per core and the truncated-vs-full text-encoding ratio.

A trial is timed between the ends of its epochs (``on_epoch``): the first epoch is the warm-up
and is not counted, and the trial is stopped there, before its evaluation. Every phase is
guarded (a failure prints an ERROR line and the rest runs), a time budget shrinks the steps when
time runs short, and the JSON is rewritten after every phase, so a partial run is still useful.
Caches (few-shot draws, pools, features, decoded images) go to a temporary ``DOR_BENCH_CACHE``.
On a CPU shared with other work, set ``OMP_NUM_THREADS=1``: torch's spinning threads otherwise
measure the contention.

Usage:
  python perf/bench_gpu.py                          # on a GPU: ViT-B/16, 50 and 500 base classes, <= 420 s
  python perf/bench_gpu.py --device cpu --small     # the same on CPU at a small size
  python perf/bench_gpu.py --device cpu --small --arch tiny-clip --image-px 48   # smoke test
JSON: --json PATH, else $OUT/bench_gpu.json when OUT is set, else perf/results/.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: The measured rows: (method, DOR on). The grid's other +DOR trials are estimated from their
#: method's row (DOR adds B = n outlier prompts to the step's text batch; see ``project``).
ROWS: dict[str, tuple[str, bool]] = {
    "CoOp": ("coop", False),
    "CoOp+DOR": ("coop", True),
    "CoCoOp": ("cocoop", False),
    "KgCoOp": ("kgcoop", False),
    "MaPLe": ("maple", False),
}
#: The order rows run in within a class count: the slowest per epoch (CoCoOp, batch 1) last.
ORDER = ("CoOp", "KgCoOp", "CoOp+DOR", "MaPLe", "CoCoOp")
#: How the reference code (CoOp/Dassl, KgCoOp, MaPLe) runs: text at CLIP's full 77-token context,
#: images decoded and augmented with PIL in the training process, one trial per GPU.
REFERENCE = {"full_text_context": True, "loader_workers": 0}
#: The styles measured: the reference's, dor-bench's defaults (or --dor-options), and those with
#: the device image pipeline (decoded once, crops resampled on the device), at the few classes.
MAIN_STYLES = ("reference", "dor-bench")
DEVICE_STYLE = "dor-bench, device images"
#: The styles whose one-trial GPU-hours the projection gives.
PROJECTED = (*MAIN_STYLES, DEVICE_STYLE)
#: Classes per dataset (SPEC section 4); a base-to-new trial trains on the first ceil(n/2).
CLASSES = {
    "imagenet": 1000,
    "caltech101": 100,
    "oxford_pets": 37,
    "stanford_cars": 196,
    "oxford_flowers": 102,
    "food101": 101,
    "fgvc_aircraft": 100,
    "sun397": 397,
    "dtd": 47,
    "eurosat": 10,
    "ucf101": 101,
}
#: The synthetic data's reader: one split_zhou JSON beside one image folder.
DATASET, FOLDER, IMAGES, SPLIT_FILE = "oxford_pets", "oxford_pets", "images", "split_zhou_OxfordPets.json"
#: Words that make class names and outlier words of realistic token lengths (1-3 words each).
ADJECTIVES = (
    "red green blue small large northern southern spotted striped wild common golden black white "
    "giant dwarf royal silver brown grey long short curly smooth crested"
).split()
NOUNS = (
    "oak maple fern lily rose tulip orchid daisy heron eagle falcon sparrow finch owl terrier "
    "spaniel retriever shepherd collie beagle poodle tabby persian siamese bengal sedan coupe "
    "truck wagon canyon harbor meadow glacier desert lagoon volcano bridge tower castle cabin "
    "pasta curry salad noodle pizza waffle muffin texture fabric marble granite canvas pottery"
).split()


@dataclass
class Sizes:
    """What one run measures; GPU and small (CPU) runs differ only here and in the device."""

    arch: str
    classes: tuple[int, ...]  # base classes trained on (the text batch grows with them)
    epoch_steps: int  # steps aimed at per epoch (shots are chosen for it; at least 1 image a class)
    measure_steps: int  # steps timed after the warm-up epoch
    batch_cap: int | None  # small runs: batches capped below the published sizes
    concurrency: tuple[int, ...]  # trials sharing the device at once
    image_px: int  # short side of the synthetic JPEGs
    vocabulary: int  # outlier words written for DOR (the pool keeps half)
    photos: int  # photo-sized JPEGs of the CPU loader measurement
    small: bool


def gpu_sizes(arch: str) -> Sizes:
    return Sizes(arch, (50, 500), 25, 50, None, (1, 2, 4), 256, 2000, 256, small=False)


def small_sizes(arch: str) -> Sizes:
    return Sizes(arch, (4, 12), 2, 2, 4, (1, 2), 256, 64, 32, small=True)


class Measured(Exception):
    """Raised from ``on_epoch`` once a trial's timing is complete: it stops before the evaluation."""


class EpochClock:
    """A trial's ``on_epoch``: stamps each epoch's end; stops after ``epochs`` epochs, once
    ``measure_steps`` steps after the warm-up epoch are timed, when another epoch would end after
    ``deadline`` (once one epoch is timed) or after ``hard_deadline`` (the budget's end)."""

    def __init__(self, epochs: int, steps_per_epoch: int, measure_steps: float, deadline: float, hard_deadline: float):
        self.epochs, self.steps_per_epoch, self.measure_steps = epochs, steps_per_epoch, measure_steps
        self.deadline, self.hard_deadline = deadline, hard_deadline
        self.started = time.time()
        self.marks: list[float] = []

    def __call__(self, epoch: int, row: dict[str, float]) -> None:
        now = time.time()
        last = now - (self.marks[-1] if self.marks else self.started)  # the first includes the set-up
        self.marks.append(now)
        timed = (len(self.marks) - 1) * self.steps_per_epoch
        late = now + last > (self.deadline if timed else self.hard_deadline)
        if epoch >= self.epochs or timed >= self.measure_steps or late:
            raise Measured


def run_measured(spec: dict, options: dict, clock: EpochClock) -> dict[str, Any]:
    """Run one trial under ``clock``; its epoch marks and the device's peak memory (MiB)."""
    import torch

    from workers.trial import run_trial

    cuda = options.get("device", "cpu").startswith("cuda")
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    clock.started = time.time()
    try:
        run_trial(spec, {**options, "progress": False}, on_epoch=clock)
    except Measured:
        return {
            "started": clock.started,
            "marks": clock.marks,
            "steps_per_epoch": clock.steps_per_epoch,
            "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        }
    raise RuntimeError("the trial ended before its clock stopped it (its epochs option was not applied)")


def batches(images: int, batch: int) -> int:
    """Steps an epoch: Dassl drops the last incomplete batch when there is a full one."""
    return images // batch if images >= batch else 1


def timing(record: dict[str, Any]) -> tuple[int, float, bool]:
    """(timed steps, seconds, warm-up included) of a measured trial."""
    marks = record["marks"]
    if len(marks) >= 2:
        return (len(marks) - 1) * record["steps_per_epoch"], marks[-1] - marks[0], False
    # only the first epoch ended in time: its time includes the trial's set-up and warm-up
    return record["steps_per_epoch"], marks[0] - record["started"], True


# ---------------------------------------------------------------------------------- synthetic data


def jpeg_blobs(px: int, count: int = 16, seed: int = 0) -> list[bytes]:
    """``count`` JPEGs of about ``px`` pixels a side (smooth colour fields plus grain, quality 90,
    so they decode like photos rather than flat colour)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    shapes = [(px, px), (px * 5 // 4, px), (px, px * 5 // 4), (px * 9 // 8, px * 9 // 8)]
    blobs = []
    for i in range(count):
        w, h = shapes[i % len(shapes)]
        coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        grain = rng.normal(0, 12, (h, w, 3))
        pixels = np.clip(np.asarray(coarse, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
        buffer = BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        blobs.append(buffer.getvalue())
    return blobs


def class_names(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct names of 2-3 words (CoOp's split files spell them with underscores)."""
    rng = random.Random(seed)
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        words = [rng.choice(ADJECTIVES), rng.choice(NOUNS)] + ([rng.choice(NOUNS)] if rng.random() < 0.3 else [])
        name = "_".join(words)
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def outlier_words(count: int, seed: int = 1) -> list[str]:
    """``count`` distinct outlier words of 1-3 words (WordNet nouns' lengths), sorted."""
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < count:
        length = rng.choices((1, 2, 3), weights=(2, 6, 2))[0]
        words.add(" ".join([*(rng.choice(ADJECTIVES) for _ in range(length - 1)), rng.choice(NOUNS)]))
    return sorted(words)


def write_dataset(root: Path, base: int, train_per_class: int, blobs: list[bytes]) -> Path:
    """``root/oxford_pets`` with ``2 * base`` classes, ``train_per_class`` train images each, one
    val image of class 0 (PIECE's reference needs one) and two test images (the trials stop
    before their evaluation)."""
    folder = root / FOLDER
    names = class_names(2 * base)
    split: dict[str, list[list[Any]]] = {"train": [], "val": [], "test": []}
    counts = {
        "train": {label: train_per_class for label in range(2 * base)},
        "val": {0: 1},
        "test": {0: 1, 2 * base - 1: 1},
    }
    n = 0
    for part, per_label in counts.items():
        for label, count in per_label.items():
            for i in range(count):
                relpath = f"c{label:04d}/{part}_{i}.jpg"
                path = folder / IMAGES / relpath
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(blobs[n % len(blobs)])
                n += 1
                split[part].append([relpath, label, names[label]])
    (folder / SPLIT_FILE).write_text(json.dumps(split))
    return root


# ---------------------------------------------------------------------------------- GPU sampling


class GpuSampler:
    """GPU utilisation (%) and memory used (MiB) every 200 ms, with wall-clock stamps: from
    ``nvidia-smi -lms 200`` in a background process, else pynvml; nothing on CPU."""

    def __init__(self, gpu: str | None):
        self.samples: list[tuple[float, float, float]] = []
        self.source = "none"
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        if gpu is None:
            return
        if shutil.which("nvidia-smi"):
            self._proc = subprocess.Popen(
                [
                    "nvidia-smi",
                    "-i",
                    gpu,
                    "--query-gpu=utilization.gpu,memory.used",
                    "--format=csv,noheader,nounits",
                    "-lms",
                    "200",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            self.source = "nvidia-smi"
            threading.Thread(target=self._read_smi, daemon=True).start()
        else:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(gpu))
            self.source = "pynvml"
            threading.Thread(target=self._poll_nvml, args=(pynvml, handle), daemon=True).start()

    def _read_smi(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                util, used = (float(v) for v in line.strip().split(","))
            except ValueError:
                continue  # "[N/A]" on some GPUs
            self.samples.append((time.time(), util, used))

    def _poll_nvml(self, pynvml: Any, handle: Any) -> None:
        while not self._stop.wait(0.2):
            util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            used = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
            self.samples.append((time.time(), float(util), float(used)))

    def window(self, start: float, end: float) -> tuple[float | None, float | None]:
        """Mean utilisation and the most memory used between ``start`` and ``end``."""
        inside = [(u, m) for t, u, m in list(self.samples) if start <= t <= end]
        if not inside:
            return None, None
        return sum(u for u, _ in inside) / len(inside), max(m for _, m in inside)

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)


# ---------------------------------------------------------------------------------- the benchmark


class Bench:
    """One run: the phases in order, each guarded, under one time budget."""

    def __init__(self, args: argparse.Namespace, device: str, sizes: Sizes, json_path: Path):
        self.args, self.device, self.sizes, self.json_path = args, device, sizes, json_path
        self.t0 = time.time()
        self.end = self.t0 + args.budget_s
        self.work = Path(tempfile.mkdtemp(prefix="dor-bench-gpu-"))
        self.user_cache = os.environ.get("DOR_BENCH_CACHE") or str(Path.home() / ".cache" / "dor-bench")
        os.environ["DOR_BENCH_CACHE"] = str(self.work / "cache")  # caches of this run alone
        self.dor_options: dict[str, Any] = json.loads(args.dor_options)
        self.roots: dict[int, Path] = {}
        self.vocabulary = self.work / "outliers.txt"
        self.words = max(sizes.vocabulary, 4 * max(sizes.classes))  # the pool keeps half: B <= K
        self.single: dict[tuple[str, str, int], dict[str, Any]] = {}  # (row, style, classes) -> record
        self.concurrent: dict[int, dict[str, dict[str, Any]]] = {}  # k -> row -> record
        self.shared_style = "dor-bench"  # the style of the trials sharing the device: the faster one
        self.sampler = GpuSampler(None)
        self.children: list[subprocess.Popen] = []  # concurrent trial processes, stopped by the watchdog
        self.results: dict[str, Any] = {"errors": [], "notes": []}

    # -- plumbing

    def log(self, message: str) -> None:
        print(f"[{datetime.now():%H:%M:%S} +{time.time() - self.t0:6.1f}s] {message}", flush=True)

    def guarded(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args)``; any failure becomes an ERROR line and an entry of the JSON's errors."""
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # one phase's failure must not cost the others
            self.log(f"ERROR {name}: {type(err).__name__}: {str(err).strip()[:500]}")
            self.results["errors"].append(
                {"phase": name, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(limit=8)}
            )
            return None

    def left(self, until: float | None = None) -> float:
        return min(self.end if until is None else until, self.end) - time.time()

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.time() - self.t0, 1)
        self.results["single"] = [
            {"row": r, "style": s, "classes": c, **rec} for (r, s, c), rec in sorted(self.single.items())
        ]
        self.results["concurrent"] = {str(k): rows for k, rows in self.concurrent.items()}
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        self.json_path.write_text(json.dumps(self.results, indent=1, default=str))

    # -- sizes

    def batch(self, row: str) -> int:
        from workers.methods import METHODS

        published = int(METHODS.get(ROWS[row][0]).defaults["batch_size"])
        return min(published, self.sizes.batch_cap) if self.sizes.batch_cap else published

    def shots(self, row: str, classes: int) -> int:
        """Shots that give about ``epoch_steps`` steps an epoch (1 to 16)."""
        return max(1, min(16, round(self.sizes.epoch_steps * self.batch(row) / classes)))

    def steps_per_epoch(self, row: str, classes: int, shots: int) -> int:
        return batches(classes * shots, self.batch(row))

    def options(self, style: str) -> dict[str, Any]:
        styles = {
            "reference": REFERENCE,
            "dor-bench": self.dor_options,
            DEVICE_STYLE: self.dor_options,
        }
        return {**styles[style], "device": self.device}

    @staticmethod
    def method_options(style: str) -> dict[str, Any]:
        """The image pipeline is a method option (it changes the pixels, so a trial's identity)."""
        return {"image_pipeline": "device"} if style == DEVICE_STYLE else {}

    def spec(self, row: str, style: str, classes: int, shots: int, epochs: int) -> dict[str, Any]:
        method, dor = ROWS[row]
        method_options: dict[str, Any] = {"epochs": epochs, **self.method_options(style)}
        if self.sizes.batch_cap:
            method_options["batch_size"] = self.batch(row)
        spec: dict[str, Any] = {
            "method": method,
            "dataset": DATASET,
            "root": str(self.roots[classes]),
            "model": self.sizes.arch,
            "pretrained": None,
            "seed": 1,
            "shots": shots,
            "method_options": method_options,
            "test_per_class": 1,
        }
        if dor:  # the pool's words do not change a step's cost; B = the base classes does
            spec["dor"] = {"pool_size": self.words // 2, "vocabulary": str(self.vocabulary)}
        return spec

    def step_estimate(self, row: str, style: str, classes: int) -> float | None:
        """Seconds a step, guessed from this row's measurements so far (scaled up with classes)."""
        for (r, _, c), rec in sorted(self.single.items(), key=lambda item: item[0][1] != style):
            if r == row and rec.get("step_s"):
                return rec["step_s"] * max(1.0, classes / c)
        return None

    # -- phases

    def setup(self) -> bool:
        import torch

        from workers.models.precision import DEFAULT_PRECISION, weights_precision

        cuda = self.device.startswith("cuda")
        self.results["meta"] = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name(self.device)
            if cuda
            else f"CPU ({platform.processor() or platform.machine()})",
            "device_kind": "cuda" if cuda else "cpu",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "commit": git_commit(),
            "budget_s": self.args.budget_s,
            "sizes": asdict(self.sizes),
            "dataset_layout": f"{FOLDER}/ ({DATASET} reader), synthetic JPEGs of about {self.sizes.image_px} px",
            "styles": {style: self.run_options(style) for style in (*MAIN_STYLES, DEVICE_STYLE)},
            "precision": weights_precision(DEFAULT_PRECISION, torch.device(self.device)),  # the methods' default
        }
        if self.sizes.small:
            self.results["notes"].append(
                f"SMALL RUN on {self.device}: {self.sizes.classes} base classes, batches capped at "
                f"{self.sizes.batch_cap}, ~{self.sizes.epoch_steps} steps an epoch: the numbers show the "
                "code paths work and their ratios on this machine, not GPU throughput."
            )
        self.log(f"device {self.results['meta']['device']}, torch {torch.__version__}, arch {self.sizes.arch}")
        if cuda:
            index = torch.device(self.device).index or 0
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
            gpu = visible[index] if len(visible) > index and visible[index] else str(index)
            self.sampler = self.guarded("GPU sampler", GpuSampler, gpu) or self.sampler
            self.results["meta"]["gpu_sampler"] = self.sampler.source
        blobs = jpeg_blobs(self.sizes.image_px)
        self.vocabulary.write_text("\n".join(outlier_words(self.words)) + "\n")
        for classes in self.sizes.classes:
            per_class = max(self.shots(row, classes) for row in ROWS)
            self.roots[classes] = write_dataset(self.work / f"data-{classes}", classes, per_class, blobs)
            self.log(f"wrote {DATASET} layout: {2 * classes} classes x {per_class} train JPEGs")
        from workers.trial import warm_clip

        start = time.time()
        warm_clip(self.sizes.arch, None, self.device, DEFAULT_PRECISION)
        self.results["meta"]["model_load_s"] = round(time.time() - start, 2)
        self.log(f"loaded {self.sizes.arch} (random init) in {time.time() - start:.1f}s")
        return True

    def run_options(self, style: str) -> dict[str, Any]:
        from workers.spec import RunOptions

        return RunOptions.model_validate(self.options(style)).model_dump()

    def measure_single(self, row: str, style: str, classes: int, phase_end: float, left_in_phase: int) -> None:
        """One trial alone on the device, timed over ``measure_steps`` steps after its warm-up
        epoch (fewer shots, or fewer steps, when the phase's time runs short)."""
        from workers.datasets.supply import loader_workers

        allowance = self.left(phase_end) / max(left_in_phase, 1)
        shots = self.shots(row, classes)
        estimate = self.step_estimate(row, style, classes)  # an upper bound when scaled up
        if estimate:
            epoch_s = self.steps_per_epoch(row, classes, shots) * estimate
            if 2 * epoch_s > allowance:  # two epochs (warm-up + one timed) should fit
                shots = max(1, math.floor(shots * allowance / (2 * epoch_s)))
            if self.steps_per_epoch(row, classes, shots) * estimate > self.left():
                self.log(f"SKIP {row} {style} at {classes} classes: one epoch (~{epoch_s:.0f}s) exceeds the time left")
                self.results["notes"].append(f"{row} {style} at {classes} base classes not measured: out of time")
                return
        spe = self.steps_per_epoch(row, classes, shots)
        epochs = 1 + max(1, math.ceil(self.sizes.measure_steps / spe))
        self.log(f"{row:9} {style:9} {classes:4d} classes: shots {shots}, batch {self.batch(row)}, {spe} steps/epoch")
        clock = EpochClock(epochs, spe, self.sizes.measure_steps, time.time() + allowance, self.end)
        record = run_measured(self.spec(row, style, classes, shots, epochs), self.options(style), clock)
        steps, seconds, warm = timing(record)
        util, used = self.sampler.window(record["marks"][0] if not warm else record["started"], record["marks"][-1])
        record.update(
            loader_workers=loader_workers(self.options(style).get("loader_workers"), spe),
            shots=shots,
            batch=self.batch(row),
            timed_steps=steps,
            seconds=seconds,
            step_s=seconds / steps,
            steps_per_s=steps / seconds,
            images_per_s=steps * self.batch(row) / seconds,
            warmup_included=warm,
            gpu_util=util,
            gpu_mem_used_mib=used,
        )
        self.single[(row, style, classes)] = record
        peak = f", peak {record['peak_mib']:.0f} MiB" if record["peak_mib"] else ""
        gpu = f", GPU {util:.0f}%" if util is not None else ""
        self.log(
            f"{row:9} {style:9} {classes:4d} classes: {record['steps_per_s']:.2f} steps/s, "
            f"{record['images_per_s']:.1f} images/s over {steps} steps{peak}{gpu}"
            + (" (warm-up included)" if warm else "")
        )

    def single_phase(self, classes: int, styles: tuple[str, ...], phase_end: float) -> None:
        jobs = [(row, style) for row in ORDER for style in styles]
        for i, (row, style) in enumerate(jobs):
            if self.left() < 5:
                self.log(f"out of time: {row} {style} at {classes} classes not run")
                continue
            self.guarded(f"{row} {style} {classes}", self.measure_single, row, style, classes, phase_end, len(jobs) - i)
        self.save()

    def concurrency_phase(self, k: int, classes: int, phase_end: float) -> None:
        """k dor-bench trials of each row at once, as k processes of this script, each given an
        equal share of the CPUs (as Ray gives ``cpus``; loader workers follow it). Aggregate
        steps/s = all timed steps / (last timed epoch end - first timed epoch start)."""
        from workers.datasets.supply import usable_cpus

        style = self.shared_style
        trials = self.concurrent_plan(k, classes, self.left(phase_end) - (30 if self.device.startswith("cuda") else 10))
        if not trials:
            self.log(f"k={k}: nothing fits the time left; skipped")
            return
        folder = self.work / f"k{k}"
        (folder / "barrier").mkdir(parents=True)
        cpus = max(1, usable_cpus() // k)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(cpus),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        started, procs = time.time(), []
        for index in range(k):
            job = {"arch": self.sizes.arch, "device": self.device, "k": k, "index": index, "trials": trials}
            job.update(barrier=str(folder / "barrier"), out=str(folder / f"out{index}.jsonl"))
            (folder / f"job{index}.json").write_text(json.dumps(job))
            with open(folder / f"worker{index}.log", "w") as log:  # the child holds its own copy
                command = [sys.executable, __file__, "--worker", str(folder / f"job{index}.json")]
                procs.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
        self.children = procs
        self.log(f"k={k}: {k} processes of {cpus} CPUs each, {style}, rows {', '.join(t['row'] for t in trials)}")
        deadline = min(max(phase_end, time.time() + 20) + 15, self.end)
        for index, proc in enumerate(procs):
            try:
                proc.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                self.log(f"k={k}: worker {index} still running at its deadline; stopped")
                proc.kill()
                proc.wait()
            if proc.returncode:
                tail = (folder / f"worker{index}.log").read_text().strip()[-600:]
                self.log(f"k={k}: worker {index} exited with {proc.returncode}: ...{tail}")
        outputs = [read_jsonl(folder / f"out{index}.jsonl") for index in range(k)]
        self.concurrent[k] = {}
        for trial in trials:
            self.guarded(f"k={k} {trial['row']}", self.aggregate, k, classes, trial, outputs)
        ready = [r["ready"] - started for out in outputs for r in out if "ready" in r]
        self.results.setdefault("concurrency_meta", {})[str(k)] = {
            "classes": classes,
            "style": style,
            "cpus_per_trial": cpus,
            "process_ready_s": [round(r, 1) for r in ready],
            "k=1": "the single-trial dor-bench measurement (in the main process, all CPUs)",
        }
        self.save()

    def concurrent_plan(self, k: int, classes: int, budget: float) -> list[dict[str, Any]]:
        """Each row's trial as its single measurement in the shared style ran it, with fewer timed
        epochs (then fewer rows) when k of them, with no gain from sharing, would not fit ``budget``."""
        plan, style = [], self.shared_style
        for row in ORDER:
            alone = self.single.get((row, style, classes))
            if alone is None:
                self.log(f"k={k}: {row} has no single-trial measurement at {classes} classes; left out")
                continue
            timed = max(1, math.ceil(self.sizes.measure_steps / alone["steps_per_epoch"]))
            plan.append([row, alone, timed])
        cost = lambda: sum((1 + timed) * alone["step_s"] * alone["steps_per_epoch"] * k for _, alone, timed in plan)
        while cost() > budget and any(timed > 1 for *_, timed in plan):
            plan = [[row, alone, max(1, timed // 2)] for row, alone, timed in plan]
        while plan and cost() > budget:
            self.log(f"k={k}: {plan.pop()[0]} left out (out of time)")
        return [
            {
                "row": row,
                "spec": self.spec(row, style, classes, alone["shots"], 1 + timed),
                "options": {**self.options(style), "gpu_share": 1 / k},  # as Ray's gpus 1/k: capped memory
                "epochs": 1 + timed,
                "steps_per_epoch": alone["steps_per_epoch"],
                "batch": alone["batch"],
            }
            for row, alone, timed in plan
        ]

    def aggregate(self, k: int, classes: int, trial: dict[str, Any], outputs: list[list[dict[str, Any]]]) -> None:
        """One row's k concurrent trials as one aggregate rate (all k must have timed epochs)."""
        records = [r for out in outputs for r in out if r.get("row") == trial["row"]]
        for record in records:
            if record.get("error"):
                self.log(f"k={k}: {trial['row']}: ERROR {record['error'][:300]}")
        whole = [r for r in records if not r.get("error") and len(r["marks"]) >= 2]
        if len(whole) < k:
            raise RuntimeError(f"{len(whole)} of {k} concurrent trials timed an epoch after their warm-up")
        start, stop = min(r["marks"][0] for r in whole), max(r["marks"][-1] for r in whole)
        steps = sum((len(r["marks"]) - 1) * r["steps_per_epoch"] for r in whole)
        util, used = self.sampler.window(start, stop)
        alone = self.single[(trial["row"], self.shared_style, classes)]["steps_per_s"]
        self.concurrent[k][trial["row"]] = record = {
            "timed_steps": steps,
            "seconds": stop - start,
            "steps_per_s": steps / (stop - start),
            "images_per_s": steps * trial["batch"] / (stop - start),
            "speedup": steps / (stop - start) / alone,
            "per_trial_steps_per_s": [
                (len(r["marks"]) - 1) * r["steps_per_epoch"] / (r["marks"][-1] - r["marks"][0]) for r in whole
            ],
            "peak_mib_per_trial": max((r["peak_mib"] or 0) for r in whole) or None,
            "gpu_util": util,
            "gpu_mem_used_mib": used,
        }
        self.log(
            f"k={k}: {trial['row']:9} {record['steps_per_s']:.2f} steps/s together ({record['speedup']:.2f}x one alone)"
        )

    def choose_shared_style(self, classes: int) -> None:
        """The trials sharing the device run in the faster of dor-bench's image styles (PIL loader
        workers, or decoded images cropped on the device): the geometric mean of its steps/s over
        the rows measured both ways, alone, at ``classes``."""
        both = [
            (
                self.single[(row, "dor-bench", classes)]["steps_per_s"],
                self.single[(row, DEVICE_STYLE, classes)]["steps_per_s"],
            )
            for row in ROWS
            if (row, "dor-bench", classes) in self.single and (row, DEVICE_STYLE, classes) in self.single
        ]
        if both and math.prod(device / pil for pil, device in both) > 1:
            self.shared_style = DEVICE_STYLE
        self.results["meta"]["shared_style"] = self.shared_style
        self.log(f"trials sharing the device run as '{self.shared_style}'")

    def cpu_phase(self) -> None:
        """On CPU, whatever the device: the training-image loader's images/s per core (PIL, in the
        trial's process and in N loader workers; ``perf/bench_images.py``'s 500 x 375 photos) and
        the truncated-vs-full text-encoding ratio and the host time of a step's token ids
        (``perf/bench_text.py``)."""
        from perf.bench_images import image_supply_rate, write_photos
        from perf.bench_text import prompt_token_seconds, text_encoding_ratio
        from workers.datasets.supply import usable_cpus

        cpu = self.results["cpu"] = {}
        root = write_photos(self.work / "photos", self.sizes.photos)
        for workers in (0, max(1, min(usable_cpus() - 1, 8))):
            rate = self.guarded(f"image supply, {workers} workers", image_supply_rate, "pil", workers, root=root)
            if rate:
                cpu[f"images_pil_{workers}_workers"] = rate
                self.log(f"CPU: PIL loader, {workers} workers: {rate['images_per_s_per_core']:.1f} images/s per core")
        classes = min(self.sizes.classes)
        steps = 1 if self.sizes.small else 3
        os.environ["DOR_BENCH_CACHE"] = self.user_cache  # its WordNet nouns: the list the user has derived
        try:
            text = self.guarded("text encoding ratio", text_encoding_ratio, self.sizes.arch, classes, classes, steps)
            for n in self.sizes.classes:
                tokens = self.guarded(f"token ids, {n} classes", prompt_token_seconds, self.sizes.arch, n, n)
                if tokens:
                    cpu.setdefault("tokens", []).append(tokens)
                    self.log(f"CPU: token ids of {tokens['prompts']} prompts: {tokens['ratio']}x faster kept")
        finally:
            os.environ["DOR_BENCH_CACHE"] = str(self.work / "cache")
        if text:
            cpu["text"] = text
            self.log(
                f"CPU: text step at {text['full_length']} tokens / at {text['truncated_length']}: {text['ratio']}x"
            )
        self.save()

    def projection_phase(self) -> None:
        self.results["projection"] = project(self)
        self.save()

    def run(self) -> None:
        budget = f"budget {self.args.budget_s:.0f}s"
        self.log(f"dor-bench bench_gpu: {self.sizes.arch} on {self.device}, {budget}, work folder {self.work}")
        self.watchdog()
        try:
            if not self.guarded("setup", self.setup):
                return
            small, large = min(self.sizes.classes), max(self.sizes.classes)
            share = lambda fraction: self.t0 + fraction * self.args.budget_s
            styles = (*MAIN_STYLES, DEVICE_STYLE)
            self.guarded("one trial alone, few classes", self.single_phase, small, styles, share(0.32))
            self.guarded("the shared style", self.choose_shared_style, small)
            for k in (k for k in self.sizes.concurrency if k > 1):
                self.guarded(f"{k} trials at once", self.concurrency_phase, k, small, share(0.42 if k <= 2 else 0.54))
            if large != small:
                self.guarded("one trial alone, many classes", self.single_phase, large, MAIN_STYLES, share(0.88))
            self.guarded("projection", self.projection_phase)
            if self.left() > 10:
                self.guarded("CPU measurements", self.cpu_phase)
            else:
                self.log("out of time: the CPU measurements not run")
        finally:
            self.finish()

    def finish(self) -> None:
        """Stop the sampler, write the JSON and the Markdown, print the report."""
        self.sampler.stop()
        self.save()
        text = render(self.results)
        print(text, flush=True)
        self.json_path.with_suffix(".md").write_text(text)
        self.log(f"wrote {self.json_path} and {self.json_path.with_suffix('.md')}")
        shutil.rmtree(self.work, ignore_errors=True)

    def watchdog(self, grace: float = 60) -> None:
        """Past the budget by ``grace`` seconds (a hung trial): report what was measured and exit."""

        def expire() -> None:
            self.log(f"ERROR: {grace:.0f}s past the budget; stopping with what was measured")
            self.results["errors"].append({"phase": "watchdog", "error": "the run outlasted its budget"})
            for proc in self.children:
                proc.kill()
            try:
                self.finish()
            finally:
                os._exit(3)

        timer = threading.Timer(self.end - time.time() + grace, expire)
        timer.daemon = True
        timer.start()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# ---------------------------------------------------------------------------------- worker process


def worker(job_path: Path) -> int:
    """One of k concurrent trial processes: load CLIP, then each row's trial after all k are ready."""
    job = json.loads(job_path.read_text())
    from workers.models.precision import DEFAULT_PRECISION
    from workers.trial import warm_clip

    out = Path(job["out"])

    def append(record: dict[str, Any]) -> None:
        with out.open("a") as f:
            f.write(json.dumps(record) + "\n")

    barrier = Path(job["barrier"])
    try:
        warm_clip(job["arch"], None, job["device"], DEFAULT_PRECISION)
    except BaseException:
        for i in range(len(job["trials"])):  # the others need not wait for this one
            (barrier / f"{i}-{job['index']}").touch()
        raise
    append({"ready": time.time()})
    for i, trial in enumerate(job["trials"]):
        (barrier / f"{i}-{job['index']}").touch()
        waited = time.time()
        while len(list(barrier.glob(f"{i}-*"))) < job["k"] and time.time() - waited < 60:
            time.sleep(0.05)
        clock = EpochClock(trial["epochs"], trial["steps_per_epoch"], math.inf, math.inf, math.inf)
        try:
            append({"row": trial["row"], **run_measured(trial["spec"], trial["options"], clock)})
        except Exception as err:  # the other rows still run
            append({"row": trial["row"], "error": f"{type(err).__name__}: {err}"})
    return 0


# ---------------------------------------------------------------------------------- projection


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Seconds a step as ``a + b * classes`` through the measured (classes, seconds) points:
    the text batch grows linearly with the classes, the image side does not."""
    if len(points) == 1:
        return points[0][1], 0.0
    (n1, t1), (n2, t2) = min(points), max(points)
    b = max(0.0, (t2 - t1) / (n2 - n1))
    a = t1 - b * n1
    if a < 0:  # noise: proportional through the larger point
        return 0.0, t2 / n2
    return a, b


def project(bench: Bench) -> dict[str, Any]:
    """GPU-hours of the paper's grid both ways, from the fitted seconds a step."""
    from orchestrator.benchmark.planning import plan
    from orchestrator.settings.benchmark import load_benchmark
    from workers.methods import METHODS

    grid = plan(load_benchmark(bench.args.grid, [f"data_root={bench.work}"]))
    rows_of = {measured: row for row, measured in ROWS.items()}
    fits: dict[tuple[str, str], tuple[float, float]] = {}
    for row in ROWS:
        counts = {style: {c for (r, s, c) in bench.single if r == row and s == style} for style in MAIN_STYLES}
        both = set.intersection(*counts.values())  # both styles fitted through the same counts, if any
        for style in MAIN_STYLES:
            points = [(c, bench.single[(row, style, c)]["step_s"]) for c in sorted(both or counts[style])]
            if points:
                fits[(row, style)] = fit(points)
        device = [(c, rec["step_s"]) for (r, s, c), rec in bench.single.items() if r == row and s == DEVICE_STYLE]
        if device and (row, "dor-bench") in fits:  # the same text work: dor-bench's slope per class
            (c, t), slope = min(device), fits[(row, "dor-bench")][1]
            fits[(row, DEVICE_STYLE)] = (t - slope * c, slope) if t >= slope * c else (0.0, t / c)
    speedups = {k: {row: rec["speedup"] for row, rec in rows.items()} for k, rows in bench.concurrent.items()}
    ks = [1] + sorted(speedups)
    per_config: dict[str, dict[str, Any]] = {}
    missing: set[str] = set()
    for trial in grid:
        spec = trial.spec
        card = METHODS.get(spec.method)
        if not card.trains:
            continue
        config = f"{spec.method}{'+dor' if spec.dor else ''}"
        measured = (spec.method, spec.dor is not None) in rows_of
        row = rows_of[(spec.method, spec.dor is not None) if measured else (spec.method, False)]
        options = {**card.defaults, **spec.method_options}
        base = CLASSES[spec.dataset] if spec.subsample == "all" else math.ceil(CLASSES[spec.dataset] / 2)
        steps = card.epochs(spec.method_options) * batches(spec.shots * base, options["batch_size"])
        # DOR adds B outlier prompts (B = the base classes unless set) to the step's text batch
        extra = 0 if measured or spec.dor is None else spec.dor.outliers_per_step or base
        entry = per_config.setdefault(config, {"trials": 0, "steps": 0, "row": row, "dor_estimated": not measured})
        entry["trials"] += 1
        entry["steps"] += steps
        for style in PROJECTED:
            if (row, style) not in fits:
                missing.add(f"{row} {style}")
                continue
            a, b = fits[(row, style)]
            hours = steps * (a + b * (base + extra)) / 3600
            entry[f"{style}_h"] = entry.get(f"{style}_h", 0.0) + hours
    totals: dict[str, Any] = {}
    for entry in per_config.values():
        for k in ks:  # k trials of the shared style at once
            gain = 1.0 if k == 1 else speedups[k].get(entry["row"])
            if gain is not None and f"{bench.shared_style}_h" in entry:
                entry[f"shared_k{k}_h"] = entry[f"{bench.shared_style}_h"] / gain
    for key in [f"{style}_h" for style in PROJECTED] + [f"shared_k{k}_h" for k in ks]:
        if all(key in e for e in per_config.values()):
            totals[key] = sum(e[key] for e in per_config.values())
    best = min((k for k in ks if f"shared_k{k}_h" in totals), key=lambda k: totals[f"shared_k{k}_h"], default=None)
    return {
        "grid": str(bench.args.grid),
        "trials": len(grid),
        "trained_trials": sum(e["trials"] for e in per_config.values()),
        "per_config": per_config,
        "fits_s_per_step": {f"{r} {s}": {"a": a, "b_per_class": b} for (r, s), (a, b) in fits.items()},
        "speedup_vs_one": speedups,
        "shared_style": bench.shared_style,
        "totals": totals,
        "best_k": best,
        "recommended_gpus": None if best is None else round(1 / best, 3),
        "missing": sorted(missing),
        "assumptions": [
            "training steps only: evaluation (test-image features, cached after the first trial of a "
            "dataset) and data preparation are left out",
            "steps = epochs x floor(16 shots x base classes / batch) with the published epochs and batch "
            "of each method (workers/methods/registry.py), base classes = ceil(classes / 2) (SPEC section 4)",
            "seconds a step = a + b x classes in the text batch, fitted through the two measured class counts "
            "(random ViT-B/16 weights, synthetic JPEGs: the same shapes and work as OpenAI's weights and real "
            "photos, but real images are larger and decode slower than these)",
            "CoCoOp+DOR, KgCoOp+DOR and MaPLe+DOR: their method's fit with B = base-class outlier prompts "
            "added to the text batch (CoOp+DOR is measured)",
            "device images: measured at the smaller class count only; the slope per class is dor-bench's "
            "(the same text work), the intercept through that point",
            f"k trials per GPU ('{bench.shared_style}', the faster dor-bench style alone): its one-trial hours "
            "divided by the aggregate speed-up measured at the smaller class count; reference: one trial per GPU",
        ],
    }


# ---------------------------------------------------------------------------------- report


def fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def render(results: dict[str, Any]) -> str:
    """The run as Markdown: the set-up, the tables, the projection, the errors."""
    meta = results.get("meta", {})
    sizes = meta.get("sizes", {})
    lines = [
        f"## dor-bench training throughput: {meta.get('device', '?')}",
        "",
        f"{meta.get('date', '?')}; torch {meta.get('torch', '?')} (CUDA {meta.get('cuda')}); {sizes.get('arch')} "
        f"random init, {meta.get('precision', '?')} (both styles); {meta.get('dataset_layout', '')}; "
        f"commit {meta.get('commit')}; "
        f"run took {results.get('elapsed_s')}s.",
        "",
        "reference = 77-token text, images loaded in the training process (PIL), one trial per GPU; "
        "dor-bench = its default RunOptions: "
        + json.dumps({k: v for k, v in meta.get("styles", {}).get("dor-bench", {}).items() if k in REFERENCE}),
        "",
    ]
    single = {(r["row"], r["style"], r["classes"]): r for r in results.get("single", [])}
    workers = sorted({r["loader_workers"] for (_, style, _), r in single.items() if style == "dor-bench"})
    lines += [f"dor-bench's loader workers here: {', '.join(map(str, workers)) or '-'}.", ""]
    lines += [f"**Note:** {note}" for note in results.get("notes", [])]
    lines += [
        "",
        "### One trial alone",
        "",
        "| method | base classes | batch | ref steps/s | dor-bench steps/s | ratio | device images steps/s "
        "| ref img/s | dor-bench img/s | peak MiB ref / dor | GPU util % ref / dor |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    get = lambda rec, key: None if rec is None else rec.get(key)
    for classes in sizes.get("classes", []):
        for row in ROWS:
            ref, dor = single.get((row, "reference", classes)), single.get((row, "dor-bench", classes))
            device = single.get((row, DEVICE_STYLE, classes))
            if not ref and not dor:
                continue
            ratio = get(dor, "steps_per_s") / get(ref, "steps_per_s") if ref and dor else None
            warm = " (warm-up incl.)" if any(get(r, "warmup_included") for r in (ref, dor)) else ""
            lines.append(
                f"| {row}{warm} | {classes} | {get(ref or dor, 'batch')} | {fmt(get(ref, 'steps_per_s'))} "
                f"| {fmt(get(dor, 'steps_per_s'))} | {fmt(ratio)} | {fmt(get(device, 'steps_per_s'))} "
                f"| {fmt(get(ref, 'images_per_s'), '.1f')} | {fmt(get(dor, 'images_per_s'), '.1f')} "
                f"| {fmt(get(ref, 'peak_mib'), '.0f')} / {fmt(get(dor, 'peak_mib'), '.0f')} "
                f"| {fmt(get(ref, 'gpu_util'), '.0f')} / {fmt(get(dor, 'gpu_util'), '.0f')} |"
            )
    concurrent = results.get("concurrent", {})
    if concurrent:
        ks = sorted(int(k) for k in concurrent)
        classes = min(sizes.get("classes", [0]))
        shared = meta.get("shared_style", "dor-bench")
        lines += [
            "",
            f"### {shared}, k trials sharing the device ({classes} base classes)",
            "",
            "Each cell: aggregate steps/s (x one trial alone), peak MiB per trial, GPU util %.",
            "",
            "| method | k=1 | " + " | ".join(f"k={k}" for k in ks) + " |",
            "|---|---|" + "---|" * len(ks),
        ]
        for row in ROWS:
            alone = single.get((row, shared, classes))
            if not alone:
                continue
            cells = []
            for k in ks:
                rec = concurrent[str(k)].get(row)
                cells.append(
                    "-"
                    if rec is None
                    else f"{rec['steps_per_s']:.2f} (x{rec['speedup']:.2f}), "
                    f"{fmt(rec['peak_mib_per_trial'], '.0f')} MiB, {fmt(rec['gpu_util'], '.0f')}%"
                )
            first = f"{alone['steps_per_s']:.2f}, {fmt(alone['peak_mib'], '.0f')} MiB, {fmt(alone['gpu_util'], '.0f')}%"
            lines.append(f"| {row} | {first} | " + " | ".join(cells) + " |")
    projection = results.get("projection")
    if projection:
        unit = "GPU-hours" if meta.get("device_kind") == "cuda" else "CPU-hours (small sizes: not a real projection)"
        ks = sorted(int(k) for k in projection.get("speedup_vs_one", {}))
        trials = f"{projection['trials']} trials, {projection['trained_trials']} trained"
        shared = projection.get("shared_style", "dor-bench")
        keys = [f"{style}_h" for style in PROJECTED] + [f"shared_k{k}_h" for k in ks]
        lines += [
            "",
            f"### Projection: the paper's grid ({trials}), {unit}",
            "",
            f"One trial per GPU in each style, then k trials per GPU in the faster dor-bench style ('{shared}').",
            "",
            "| trials | n | steps | reference | dor-bench | device images | " + " | ".join(f"k={k}" for k in ks) + " |",
            "|---|---|---|---|---|---|" + "---|" * len(ks),
        ]
        for config, e in projection["per_config"].items():
            est = " (est.)" if e["dor_estimated"] else ""
            lines.append(
                f"| {config}{est} | {e['trials']} | {e['steps']:,} | "
                + " | ".join(fmt(e.get(key), ".1f") for key in keys)
                + " |"
            )
        t = projection["totals"]
        lines.append("| **total** | | | " + " | ".join(fmt(t.get(key), ".1f") for key in keys) + " |")
        if projection.get("best_k") and t.get("reference_h"):
            best = projection["best_k"]
            lines += [
                "",
                f"Recommended `resources: gpus: {projection['recommended_gpus']}` ({best} trials per GPU, "
                f"'{shared}'): {t[f'shared_k{best}_h']:.1f} h against the reference's {t['reference_h']:.1f} h "
                f"({t['reference_h'] / t[f'shared_k{best}_h']:.1f}x).",
            ]
        if projection.get("missing"):
            lines.append(f"Not measured (left out of the totals): {', '.join(projection['missing'])}.")
        lines += ["", "Assumptions:"] + [f"- {a}" for a in projection["assumptions"]]
    cpu = results.get("cpu")
    if cpu:
        lines += ["", "### On CPU", ""]
        for key, rate in cpu.items():
            if key.startswith("images_"):
                lines.append(
                    f"- PIL loader, {rate['workers']} workers (500 x 375 JPEGs to 224 crops): "
                    f"{rate['images_per_s_per_core']:.1f} images/s per core ({rate['images_per_s']:.1f} images/s)"
                )
        text = cpu.get("text")
        if text:
            lines.append(
                f"- CoOp's text step ({text['prompts']} prompts, {text['arch']}, forward + backward): "
                f"{text['full_s']}s at {text['full_length']} tokens, {text['truncated_s']}s truncated to "
                f"{text['truncated_length']}: {text['ratio']}x"
            )
        for tokens in cpu.get("tokens", []):
            lines.append(
                f"- Token ids of a CoOp+DOR step ({tokens['prompts']} prompts, on the host): "
                f"{tokens['open_clip_ms']} ms tokenised afresh (open_clip), "
                f"{tokens['kept_ms']} ms kept: {tokens['ratio']}x"
            )
    if results.get("errors"):
        lines += ["", "### Errors", ""] + [f"- {e['phase']}: {e['error'][:300]}" for e in results["errors"]]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu or cuda[:i]")
    parser.add_argument("--small", action="store_true", help="the small sizes (always on CPU)")
    parser.add_argument("--arch", default="ViT-B-16", help="open_clip architecture (tiny-clip for a smoke test)")
    parser.add_argument("--budget-s", type=float, default=None, help="hard time budget (default 420 on GPU, 900 small)")
    parser.add_argument("--classes", type=int, nargs="+", help="base-class counts (default 50 500; small 4 12)")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", help="trials sharing the device (default 1 2 4; small 1 2)"
    )
    parser.add_argument("--steps", type=int, help="steps timed per trial after its warm-up epoch")
    parser.add_argument("--image-px", type=int, help="side of the synthetic JPEGs (default 256)")
    parser.add_argument(
        "--dor-options", default="{}", help="RunOptions of the dor-bench side as JSON (default: its defaults)"
    )
    parser.add_argument("--grid", default=str(REPO / "benchmarks.yaml"), help="the benchmark file projected")
    parser.add_argument("--json", help="where the JSON goes (default $OUT/bench_gpu.json, else perf/results/)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: random weights
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if args.worker:
        return worker(Path(args.worker))

    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    small = args.small or not device.startswith("cuda")
    sizes = (small_sizes if small else gpu_sizes)(args.arch)
    sizes.classes = tuple(args.classes or sizes.classes)
    sizes.concurrency = tuple(args.concurrency or sizes.concurrency)
    sizes.measure_steps = args.steps or sizes.measure_steps
    sizes.image_px = args.image_px or sizes.image_px
    args.budget_s = args.budget_s or (900.0 if small else 420.0)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.json:
        json_path = Path(args.json)
    elif os.environ.get("OUT"):
        json_path = Path(os.environ["OUT"]) / "bench_gpu.json"
    else:
        json_path = REPO / "perf" / "results" / f"bench_gpu-{'small' if small else 'gpu'}-{stamp}.json"
    Bench(args, device, sizes, json_path).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
