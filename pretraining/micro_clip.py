"""Pretrain a small CLIP (``micro-clip``) on the synthetic coloured-shapes world, on a CPU.

Training is the usual CLIP recipe, scaled down: a symmetric contrastive (InfoNCE) loss over the
image/caption pairs of a batch, AdamW (weight decay only on matrices, never on biases, layer
norms, embeddings or the logit scale), a linear warm-up followed by a cosine decay of the learning
rate, and a learnable logit scale clamped at 100.

The logit scale starts at 50 (not CLIP's usual 1/0.07 ~ 14.3): started low, it stays low (it ends
near 21 after 1,000 steps) and the over-confidence that prompt tuning has to repair never
appears; started at 50 it ends near 47, close to the 100 of real CLIPs.

Every batch is rendered fresh from the world and depends only on the seed and its index (batch
``i`` is ``shapes_world.sample(batch_size, seed=config.seed * 1_000_003 + i)``), so a run is
deterministic and can resume from a checkpoint exactly where it stopped: an interrupted and
resumed run ends with the same weights, bit for bit, as an uninterrupted one (with the same
number of threads).

Files written for ``out_path`` (e.g. ``micro-clip-shapes.pt``):

* ``out_path``: the final weights, a plain fp16 ``state_dict``; ``load_clip("micro-clip", out_path)``
  (or ``open_clip.create_model("micro-clip", pretrained=out_path)``) loads it (in fp32 on CPU);
* ``record_path(out_path)`` (``micro-clip-shapes.json``): the config, command, versions, losses,
  final logit scale and the zero-shot report of the saved weights;
* ``checkpoint_path(out_path)`` (``micro-clip-shapes.pt.ckpt``): the resumable training state
  (model, optimiser, step), rewritten atomically every ``checkpoint_every`` steps and removed once
  the final weights and record are written.

Run it: ``dor-bench micro-clip pretrain --out PATH [--steps N] [--seed S] [--threads T]``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from workers.datasets import shapes_world
from workers.errors import DorBenchError
from workers.metrics import ece
from workers.models.clip import ClipBundle, load_clip  # also registers dor-bench's model configs
from workers.paths import atomic_write_bytes
from workers.progress import Progress

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "EVAL_SEED",
    "PretrainConfig",
    "batch_seed",
    "build_model",
    "checkpoint_path",
    "contrastive_loss",
    "images_to_tensor",
    "lr_at",
    "make_batch",
    "pretrain",
    "record_path",
    "save_half",
    "seen_eval_classes",
    "train",
    "zero_shot_report",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_LOGIT_SCALE = 100.0
CHECKPOINT_FORMAT = 1
#: Base seed of the zero-shot evaluation images (class ``k`` of ``class_names()`` uses
#: ``EVAL_SEED + k``); far from the training seeds ``seed * 1_000_003 + i``.
EVAL_SEED = 987_654_321_000


@dataclasses.dataclass
class PretrainConfig:
    """How to pretrain. ``threads`` (torch CPU threads, None = torch's default) changes speed only,
    not the recipe; every other field is part of the recipe and must match to resume."""

    arch: str = "micro-clip"
    steps: int = 400
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    init_logit_scale: float = 50.0
    seed: int = 0
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    #: Images: plain to-tensor + CLIP normalisation at the world's size (no augmentation).
    image_size: int = 32
    threads: int | None = None

    def recipe(self) -> dict:
        """The fields that determine the weights (all but ``threads``)."""
        d = dataclasses.asdict(self)
        d.pop("threads")
        return d

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise DorBenchError(
                f"Pretraining needs steps >= 1 and batch_size >= 2 (got {self.steps}, {self.batch_size}).",
                "pass a positive --steps and a batch size of at least 2.",
            )
        if not 0 <= self.warmup_steps <= self.steps:
            raise DorBenchError(
                f"warmup_steps must lie in [0, steps] (got {self.warmup_steps} for {self.steps} steps).",
                f"pass --steps {self.warmup_steps} or more (the recipe warms up for {self.warmup_steps} steps), "
                "or give fewer warm-up steps.",
            )
        if not 1.0 <= self.init_logit_scale <= MAX_LOGIT_SCALE:
            raise DorBenchError(
                f"init_logit_scale must lie in [1, {MAX_LOGIT_SCALE:g}] (got {self.init_logit_scale}).",
                "use the default 50.",
            )


# --- paths ---------------------------------------------------------------------------------------


def record_path(out_path: str | Path) -> Path:
    """The JSON record beside the weights: ``micro-clip-shapes.pt`` -> ``micro-clip-shapes.json``."""
    return Path(out_path).with_suffix(".json")


def checkpoint_path(out_path: str | Path) -> Path:
    """The resumable checkpoint beside the weights: ``<out>.ckpt``."""
    out = Path(out_path)
    return out.with_name(out.name + ".ckpt")


# --- data ----------------------------------------------------------------------------------------


def batch_seed(config: PretrainConfig, index: int) -> int:
    """The world seed of training batch ``index`` (0-based)."""
    return config.seed * 1_000_003 + index


def images_to_tensor(images: Sequence) -> torch.Tensor:
    """PIL RGB images -> a float32 (N, 3, H, W) tensor: /255, then CLIP mean/std normalisation."""
    arr = np.stack([np.asarray(img.convert("RGB"), dtype=np.uint8) for img in images])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def make_batch(config: PretrainConfig, index: int, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Training batch ``index``: (images (B, 3, S, S), caption tokens (B, context))."""
    items = list(shapes_world.sample(config.batch_size, seed=batch_seed(config, index), size=config.image_size))
    images = images_to_tensor([img for img, _, _ in items])
    tokens = tokenizer([cap for _, cap, _ in items])
    return images, tokens


# --- optimisation --------------------------------------------------------------------------------


def lr_at(config: PretrainConfig, step: int) -> float:
    """Learning rate for 0-based ``step``: linear warm-up to ``lr``, then cosine decay to 0."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(config.steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay on weight matrices only; none on biases, norms, embeddings and the logit scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim >= 2 and "embedding" not in name and "logit_scale" not in name:
            decay.append(p)
        else:
            no_decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of L2-normalised features: the mean of the image->text and
    text->image cross-entropies, the i-th caption being the positive of the i-th image."""
    logits = logit_scale * image_features @ text_features.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def build_model(config: PretrainConfig) -> open_clip.CLIP:
    """A fresh fp32 ``config.arch`` on CPU, initialised from ``config.seed`` (without touching the
    global RNG), with the logit scale set to ``config.init_logit_scale``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = open_clip.create_model(config.arch, pretrained=None, device="cpu", precision="fp32")
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    if size != config.image_size:
        raise DorBenchError(
            f"Model '{config.arch}' takes {size}px images but the config renders {config.image_size}px.",
            f"use image_size={size} or an architecture with {config.image_size}px input.",
        )
    with torch.no_grad():
        model.logit_scale.fill_(math.log(config.init_logit_scale))
    return model


def _to_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _load_checkpoint(path: Path, config: PretrainConfig) -> dict | None:
    if not path.is_file():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("recipe") != config.recipe():
        raise DorBenchError(
            f"The checkpoint {path} was written by a different pretraining recipe "
            f"({ckpt.get('recipe')}) than the one asked for ({config.recipe()}).",
            "rerun with the checkpoint's settings to resume it, delete the checkpoint, or pass "
            "--no-resume to start over.",
        )
    return ckpt


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_half(model: nn.Module, path: str | Path) -> None:
    """Save ``model``'s weights as a plain fp16 ``state_dict`` (atomically); ``load_clip(arch, path)``
    and ``open_clip.create_model(arch, pretrained=path)`` load it (converting to fp32 on CPU)."""
    half = {
        k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous()
        for k, v in model.state_dict().items()
    }
    atomic_write_bytes(Path(path), _to_bytes(half))


def train(
    config: PretrainConfig,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 100,
    progress: bool = True,
    resume: bool = True,
) -> tuple[nn.Module, dict]:
    """Run the training loop; return the trained fp32 model (in eval mode) and its statistics.

    Args:
        config: the recipe; ``config.threads`` (if set) is used while training.
        checkpoint: the resumable checkpoint file (None: no checkpoints); written atomically every
            ``checkpoint_every`` steps (not after the last step; ``pretrain`` removes it at the end).
        progress: print progress (steps, rate, ETA, loss, logit scale) to stderr.
        resume: continue from ``checkpoint`` if it exists (it must come from the same recipe).

    Returns:
        ``(model, stats)`` with stats ``{"start_step", "losses", "logit_scales", "train_seconds"}``
        (``losses``/``logit_scales``: one value per step, the scale after the step's update).

    Raises:
        DorBenchError: an invalid config, or a checkpoint from a different recipe.
    """
    config.validate()
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train_loop(config, None if checkpoint is None else Path(checkpoint), checkpoint_every, progress, resume)
    finally:
        torch.set_num_threads(old_threads)


def _log(enabled: bool):
    return (lambda msg: print(msg, file=sys.stderr, flush=True)) if enabled else (lambda msg: None)


def _train_loop(config, ckpt_path, checkpoint_every, progress, resume) -> tuple[nn.Module, dict]:
    log = _log(progress)
    model = build_model(config)
    tokenizer = open_clip.get_tokenizer(config.arch)
    optimizer = torch.optim.AdamW(
        _param_groups(model, config.weight_decay), lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps
    )
    start, losses, scales = 0, [], []
    ckpt = _load_checkpoint(ckpt_path, config) if (resume and ckpt_path is not None) else None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start, losses, scales = int(ckpt["step"]), list(ckpt["losses"]), list(ckpt["logit_scales"])
        log(f"resuming {config.arch} pretraining from {ckpt_path} at step {start}/{config.steps}")

    model.train()
    label = f"pretrain {config.arch}" + (f" (resumed at step {start})" if start else "")
    bar = Progress(config.steps - start, label, enabled=progress)
    t0 = time.monotonic()
    log_max = math.log(MAX_LOGIT_SCALE)
    for step in range(start, config.steps):
        images, tokens = make_batch(config, step, tokenizer)
        lr = lr_at(config, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        image_features = model.encode_image(images, normalize=True)
        text_features = model.encode_text(tokens, normalize=True)
        loss = contrastive_loss(image_features, text_features, model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, log_max)
        losses.append(float(loss.detach()))
        scales.append(float(model.logit_scale.detach().exp()))
        done = step + 1
        bar.desc = f"{label} [loss {losses[-1]:.3f}, logit scale {scales[-1]:.1f}]"
        bar.update()
        if ckpt_path is not None and checkpoint_every and done % checkpoint_every == 0 and done < config.steps:
            state = {
                "format": CHECKPOINT_FORMAT,
                "recipe": config.recipe(),
                "step": done,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "losses": losses,
                "logit_scales": scales,
            }
            atomic_write_bytes(ckpt_path, _to_bytes(state))
            elapsed = time.monotonic() - t0
            eta = elapsed / (done - start) * (config.steps - done)
            recent = losses[-checkpoint_every:]
            log(
                f"\nstep {done}/{config.steps}: loss {sum(recent) / len(recent):.4f} (mean of last "
                f"{len(recent)}), logit scale {scales[-1]:.2f}, lr {lr:.2e}, elapsed {_fmt_s(elapsed)}, "
                f"ETA {_fmt_s(eta)}; checkpoint {ckpt_path}"
            )
    model.eval()
    stats = {
        "start_step": start,
        "losses": losses,
        "logit_scales": scales,
        "train_seconds": time.monotonic() - t0,
        "threads": torch.get_num_threads(),
    }
    return model, stats


def pretrain(
    config: PretrainConfig,
    out_path: str | Path,
    checkpoint_every: int = 100,
    progress: bool = True,
    resume: bool = True,
    command: str | None = None,
) -> dict:
    """Pretrain ``config.arch`` on the shapes world; save fp16 weights to ``out_path``.

    Args:
        config: the recipe (see ``PretrainConfig``).
        out_path: where the final fp16 ``state_dict`` goes; the record and the checkpoint go beside
            it (``record_path``, ``checkpoint_path``).
        checkpoint_every: write the resumable checkpoint every this many steps (0: never).
        progress: print progress (steps, rate, ETA, loss, logit scale) to stderr.
        resume: continue from an existing checkpoint of the same recipe; and if ``out_path`` and
            its record already exist for the same recipe, return that record without training.
            With ``resume=False`` training always starts from step 0.
        command: the command line to put in the record (default: this process's ``sys.argv``).

    Returns:
        The record (also written as JSON to ``record_path(out_path)``).

    Raises:
        DorBenchError: an invalid config, or a checkpoint from a different recipe.
    """
    config.validate()
    out_path = Path(out_path)
    ckpt_path, rec_path = checkpoint_path(out_path), record_path(out_path)
    if resume and out_path.is_file() and rec_path.is_file():
        try:
            record = json.loads(rec_path.read_text())
        except (OSError, json.JSONDecodeError):
            record = None
        if record and record.get("recipe") == config.recipe():
            return record

    log = _log(progress)
    model, stats = train(config, ckpt_path, checkpoint_every=checkpoint_every, progress=progress, resume=resume)
    losses, scales = stats["losses"], stats["logit_scales"]
    save_half(model, out_path)
    log(f"saved fp16 weights to {out_path} ({out_path.stat().st_size / 1e6:.1f} MB); zero-shot evaluation ...")
    report = zero_shot_report(out_path, arch=config.arch)  # of the saved (fp16-rounded) weights

    tail = losses[-min(50, len(losses)) :]
    record = {
        "arch": config.arch,
        "config": dataclasses.asdict(config),
        "recipe": config.recipe(),
        "command": command if command is not None else shlex.join(sys.argv),
        "versions": {
            "torch": torch.__version__,
            "open_clip": open_clip.__version__,
            "python": sys.version.split()[0],
            "shapes_world": shapes_world.WORLD_VERSION,
        },
        "steps": config.steps,
        "resumed_from_step": stats["start_step"],
        "train_seconds_this_run": round(stats["train_seconds"], 1),
        "threads": stats["threads"],
        "initial_logit_scale": config.init_logit_scale,
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "final_loss_mean_last_50": sum(tail) / len(tail),
        "final_logit_scale": scales[-1],
        "loss_curve_every_10": [round(x, 4) for x in losses[9::10]],
        "logit_scale_curve_every_10": [round(x, 3) for x in scales[9::10]],
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "weights": {
            "path": str(out_path),
            "dtype": "float16",
            "bytes": out_path.stat().st_size,
            "sha256": _sha256(out_path),
        },
        "zero_shot": report,
    }
    atomic_write_bytes(rec_path, (json.dumps(record, indent=2) + "\n").encode())
    if ckpt_path.exists():
        ckpt_path.unlink()
    held, all100, seen = (report[k] for k in ("held_out_30way", "all_100way_on_held_out", "seen_30way"))
    log(
        f"done: loss {record['final_loss_mean_last_50']:.4f} (mean of last {len(tail)}), logit scale "
        f"{scales[-1]:.2f}; zero-shot held-out 30-way {held['accuracy']:.1f}% (ECE {held['ece']:.1f}), "
        f"100-way {all100['accuracy']:.1f}% (ECE {all100['ece']:.1f}), seen 30-way {seen['accuracy']:.1f}% "
        f"(ECE {seen['ece']:.1f}); record {rec_path}"
    )
    return record


# --- zero-shot evaluation --------------------------------------------------------------------------


def seen_eval_classes(n_per_colour: int = 3) -> list[str]:
    """30 seen classes with every colour and every shape exactly ``n_per_colour`` times (like the
    held-out set), in ``class_names()`` order; deterministic.

    The seen combinations form a 7-regular bipartite colour-shape graph; taking out ``n`` perfect
    matchings one after another (each found by augmenting paths, trying shapes in order) leaves a
    ``n``-regular selection.
    """
    return shapes_world.balanced_subset(shapes_world.seen_classes(), n_per_colour)


def _eval_images(classes: Sequence[str], n_per_class: int, seed: int, size: int) -> tuple[torch.Tensor, list[str]]:
    """``n_per_class`` images of each class; class k of ``class_names()`` always gets seed ``seed + k``."""
    index = {c: k for k, c in enumerate(shapes_world.class_names())}
    images, labels = [], []
    for c in classes:
        for img, _, name in shapes_world.sample(n_per_class, seed=seed + index[c], classes=[c], size=size):
            images.append(img)
            labels.append(name)
    return images_to_tensor(images), labels


def _score(logits: torch.Tensor, labels: torch.Tensor, n_bins: int) -> dict:
    probs = logits.double().softmax(dim=1)
    conf, pred = probs.max(dim=1)
    correct = pred == labels
    return {
        "accuracy": 100.0 * float(correct.double().mean()),
        "ece": ece(conf, correct, n_bins=n_bins),
        "mean_confidence": 100.0 * float(conf.mean()),
        "n": int(labels.numel()),
        "n_classes": int(logits.shape[1]),
    }


@torch.no_grad()
def zero_shot_report(
    model_or_path: nn.Module | ClipBundle | str | Path,
    arch: str = "micro-clip",
    *,
    n_per_class: int = 50,
    seed: int = EVAL_SEED,
    template: str = "a photo of a {}.",
    n_bins: int = 10,
    batch_size: int = 500,
) -> dict:
    """Zero-shot accuracy and ECE (``n_bins`` equal-width bins, in %) of a shapes-world CLIP.

    Three evaluations, each on ``n_per_class`` fixed images per class (class k of ``class_names()``
    uses world seed ``seed + k``), with one text prompt per class (``template``):

    * ``held_out_30way``: images of the 30 held-out classes, classified among those 30;
    * ``all_100way_on_held_out``: the same images, classified among all 100 classes;
    * ``seen_30way``: images of 30 seen classes (``seen_eval_classes()``), among those 30.

    Args:
        model_or_path: an open_clip CLIP, a ``ClipBundle``, or a weights file (loaded on CPU with
            ``load_clip(arch, path)``).
        arch: the architecture (for loading a path, and for its tokenizer).

    Returns:
        ``{"template", "n_per_class", "seed", "n_bins", "logit_scale", "held_out_30way",
        "all_100way_on_held_out", "seen_30way", "seen_classes"}``; each evaluation is
        ``{"accuracy", "ece", "mean_confidence", "n", "n_classes"}``.
    """
    if isinstance(model_or_path, (str, Path)):
        model = load_clip(arch, str(model_or_path), device="cpu").model
    elif isinstance(model_or_path, ClipBundle):
        model, arch = model_or_path.model, model_or_path.arch
    else:
        model = model_or_path
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
        tokenizer = open_clip.get_tokenizer(arch)
        context = getattr(model, "context_length", None)
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else int(size)

        def encode_texts(classes: Sequence[str]) -> torch.Tensor:
            tokens = tokenizer([template.format(c) for c in classes], context_length=context).to(device)
            return model.encode_text(tokens, normalize=True).float()

        def encode_images(x: torch.Tensor) -> torch.Tensor:
            return torch.cat(
                [
                    model.encode_image(x[i : i + batch_size].to(device, dtype), normalize=True).float()
                    for i in range(0, len(x), batch_size)
                ]
            )

        scale = float(model.logit_scale.exp())
        all_classes = shapes_world.class_names()
        held, seen = shapes_world.held_out_classes(), seen_eval_classes()
        all_text = encode_texts(all_classes)

        x_held, y_held = _eval_images(held, n_per_class, seed, size)
        f_held = encode_images(x_held)
        x_seen, y_seen = _eval_images(seen, n_per_class, seed, size)
        f_seen = encode_images(x_seen)

        def evaluate(features: torch.Tensor, names: list[str], classes: list[str]) -> dict:
            text = all_text[[all_classes.index(c) for c in classes]]
            logits = scale * features @ text.T
            labels = torch.tensor([classes.index(n) for n in names], device=logits.device)
            return _score(logits.cpu(), labels.cpu(), n_bins)

        return {
            "template": template,
            "n_per_class": n_per_class,
            "seed": seed,
            "n_bins": n_bins,
            "logit_scale": scale,
            "held_out_30way": evaluate(f_held, y_held, held),
            "all_100way_on_held_out": evaluate(f_held, y_held, all_classes),
            "seen_30way": evaluate(f_seen, y_seen, seen),
            "seen_classes": seen,
        }
    finally:
        model.train(was_training)
