"""One trial, top to bottom: spec in, result out. No Ray here; the orchestrator calls this.

1. seed everything; 2. read the data (few-shot base-class training set, base and new tests);
3. load CLIP (kept warm across trials in one process); 4. build the method's model and, when
DOR is on, its outlier regulariser; 5. train (with a checkpoint per epoch, so a killed trial
resumes where it stopped); 6. score the test splits, from cached image features where the image
encoder is frozen; 7. compute calibration metrics.

In tuning mode (``spec.validation``, see ``workers/holdout.py``) step 2 holds out pseudo-new
classes from the base classes, step 5 scores the validation split after every epoch, and step 6
is skipped unless the spec is ``leaky``: the test split is never opened.
"""

from __future__ import annotations

import io
import math
import pickle
import platform
import random
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from workers.datasets import load_trial_data
from workers.datasets.base import Datum, TrialData
from workers.datasets.supply import Batches, training_images
from workers.datasets.transforms import ImageDataset, describe_transform, test_transform, train_transform
from workers.device_memory import gpu_memory_guard
from workers.dor import DynamicOutlierRegularizer, build_pool, vocabulary_words
from workers.dor.images import ImageOutlierPool, ImageOutlierRegularizer, build_image_pool
from workers.errors import DorBenchError
from workers.evaluation import Evaluation, SplitScores, add_target_average, evaluate, piece_setup, split_needs
from workers.features import cached_image_features
from workers.holdout import Holdout, hold_out, validation_metrics
from workers.identity import normalise
from workers.methods import METHODS
from workers.methods.base import PromptMethod, PromptModel, TrainStep
from workers.methods.training import coerce_option
from workers.metrics import proximity_scores
from workers.models.clip import ClipBundle, load_clip, resolve_device
from workers.outputs import keep
from workers.paths import atomic_write_bytes
from workers.progress import Progress
from workers.spec import RunOptions, TrialResult, TrialSpec

EpochCallback = Callable[[int, dict[str, float]], None]


class TrialError(DorBenchError):
    """A trial that cannot go on (e.g. a non-finite loss): recorded as failed, the grid goes on."""


def run_trial(
    spec: TrialSpec | dict[str, Any],
    options: RunOptions | dict[str, Any] | None = None,
    on_epoch: EpochCallback | None = None,
) -> TrialResult:
    """Run one trial and return its result. ``spec`` and ``options`` may be plain dicts (JSON).
    On a GPU it keeps to its share (``options.gpu_share``); running out of GPU memory is a
    ``GpuMemoryError`` that says how to give it more (``workers/device_memory.py``)."""
    options = RunOptions.model_validate(options or {})
    with gpu_memory_guard(resolve_device(options.device), options.gpu_share):
        return trial_steps(spec, options, on_epoch)


def trial_steps(spec: TrialSpec | dict[str, Any], options: RunOptions, on_epoch: EpochCallback | None) -> TrialResult:
    """``run_trial``'s steps, as this module's docstring numbers them."""
    spec = normalise(TrialSpec.model_validate(spec))
    started = time.monotonic()
    seed_everything(spec.seed)

    card = METHODS.get(spec.method)
    config = {**card.defaults, **spec.method_options}
    unknown = sorted(set(spec.method_options) - set(card.defaults))
    if unknown:
        raise DorBenchError(
            f"Unknown option(s) {unknown} for method '{spec.method}'.",
            f"{spec.method} takes: {', '.join(sorted(card.defaults)) or 'no options'}.",
        )
    wrong = []
    for key, value in spec.method_options.items():
        try:
            config[key] = coerce_option(key, value, card.defaults[key])
        except ValueError as err:
            wrong.append(f"{key} {err}")
    if wrong:
        raise DorBenchError(f"Method option(s) not valid: {'; '.join(wrong)}.", "correct the option values.")
    data = load_trial_data(
        spec.dataset, spec.root, spec.shots, spec.seed, spec.subsample, spec.test_per_class, split_needs(spec)
    )
    holdout = hold_out(data, spec.validation) if spec.validation else None
    trained_on = holdout.training if holdout else data  # tuning mode: the pseudo-base classes
    clip = replace(
        warm_clip(spec.model, spec.pretrained, options.device, config["precision"]),
        full_text_context=options.full_text_context,
    )
    if clip.device.type == "cuda":  # the peak this trial reaches, not an earlier trial's
        torch.cuda.reset_peak_memory_stats(clip.device)
    method = card.method()
    model = method.build(clip, trained_on.base_classnames, data.name, data.template, config)
    features = FeatureSource(clip, data.name, options)
    score_epoch = epoch_scorer(spec, model, method, clip, features, data, holdout)

    info: dict[str, Any] = {
        "device": str(clip.device),
        "precision": str(clip.dtype).removeprefix("torch."),
        "logit_scale": clip.logit_scale,
        "activation": clip.activation,
    }
    if holdout:
        info["pseudo_new_classes"] = holdout.pseudo_new_classnames
    history: list[dict[str, float]] = []
    if card.trains:
        every_class = data.base_classnames + data.new_classnames
        regularizer = (
            make_image_regularizer(spec, clip, trained_on, every_class, options)
            if card.dor_outliers == "image"
            else make_regularizer(spec, clip, trained_on, every_class=every_class)
        )
        info["dor"] = (
            None
            if regularizer is None
            else {
                "lambda": regularizer.lam,
                "outliers": card.dor_outliers,
                "outliers_per_step": regularizer.sampler.per_step,
                "pool_size": len(regularizer.pool),
                "pool_strategy": regularizer.pool.strategy,
            }
        )
        info["augmentation"] = (
            "online: images encoded each step"
            if not config["augment_views"] or not method.frozen_image_encoder
            else f"{config['augment_views']} cached augmented views per image"
        )
        checkpoint = Path(options.checkpoint_dir) / f"{spec.key()}.pt" if options.checkpoint_dir else None
        ran: list[int] = []  # the epochs trained in this process: a resumed trial skips its checkpoint's

        def count_epoch(epoch: int, row: dict[str, float]) -> None:
            ran.append(epoch)
            if on_epoch is not None:
                on_epoch(epoch, row)

        training = time.monotonic()
        history = train(
            model,
            method,
            config,
            trained_on,
            clip,
            features,
            regularizer,
            spec.seed,
            checkpoint,
            count_epoch,
            options.progress,
            score_epoch,
        )
        info["train_seconds"] = round(time.monotonic() - training, 3)
        info["train_epochs_run"] = len(ran)

    model.eval()
    ev = Evaluation()
    if holdout is None or holdout.leaky:
        scores = score_tests(model, method, data, clip, features)
        scores += score_targets(spec, model, method, clip, options)
        ev = evaluate(scores, n_bins=spec.ece_bins)
        add_target_average(ev.metrics, spec.targets)
        if options.keep_dir:  # what the trial learned and its outputs, for later questions
            folder = Path(options.keep_dir) / spec.key()
            val = score_val(model, method, data, clip, features)
            keep(folder, model.state_dict(), scores + val, class_text_features(model, clip, data))
            info["kept"] = str(folder)
    if score_epoch is not None:  # tuning mode: the validation metrics of the final model
        last = history[-1] if history else score_epoch()
        ev.metrics.update({k: v for k, v in last.items() if k.startswith("val/")})
    info["seconds"] = round(time.monotonic() - started, 3)
    info["feature_cache_hits"] = features.hits
    info.update(device_record(clip.device))
    return TrialResult(
        spec=spec, metrics=ev.metrics, per_class=ev.per_class, reliability=ev.reliability, history=history, info=info
    )


def device_record(device: torch.device) -> dict[str, Any]:
    """What the trial ran on and its peak memory: on a GPU, the device's name and the most memory
    tensors held since the trial began; on a CPU, the machine's processor and the worker process's
    peak resident memory (every trial it has run so far)."""
    if device.type == "cuda":
        return {
            "device_name": torch.cuda.get_device_name(device),
            "peak_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
        }
    return {
        "device_name": platform.processor() or platform.machine(),
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10, 1),  # KiB on Linux
    }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@lru_cache(maxsize=2)
def warm_clip(arch: str, pretrained: str | None, device: str, precision: str) -> ClipBundle:
    """``load_clip`` memoised per process, so a worker keeps its model across trials (every
    argument given, so that equal calls share the cache)."""
    return load_clip(arch, pretrained, device=device, precision=precision)


class FeatureSource:
    """Frozen image features of a dataset's splits, through the on-disk cache."""

    def __init__(self, clip: ClipBundle, dataset: str, options: RunOptions):
        self.clip, self.dataset, self.options = clip, dataset, options
        self.hits: dict[str, bool] = {}

    def get(
        self, items: list[Datum], split: str, train_view: int | None = None, min_crop_scale: float = 0.08
    ) -> torch.Tensor:
        """Test-transform features, or (``train_view`` = v) the v-th seeded augmented view."""
        size = self.clip.image_size
        if train_view is None:
            transform, tid = test_transform(size), describe_transform("test", size)
        else:
            transform = train_transform(size, min_crop_scale)
            tid = f"{describe_transform('train', size, min_crop_scale)}|view={train_view}"
        with torch.random.fork_rng(devices=[]):  # a view's augmentations never touch the trial's RNG
            torch.manual_seed(train_view or 0)
            feats, hit = cached_image_features(
                self.clip,
                items,
                transform,
                tid,
                dataset=self.dataset,
                split=split,
                use_cache=self.options.feature_cache,
                progress=self.options.progress,
            )
        self.hits[split if train_view is None else f"{split}-view{train_view}"] = hit
        return feats


def make_regularizer(
    spec: TrialSpec, clip: ClipBundle, data: TrialData, every_class: list[str]
) -> DynamicOutlierRegularizer | None:
    """DOR for this trial, or None when it is off or its weight is 0 (then the plain method).
    The pool leaves out the base class names, or with ``dor.exclude: all`` ``every_class``."""
    if spec.dor is None or not spec.dor.lam:  # normalise() resolved a null weight
        return None
    lam = spec.dor.lam
    pool = build_pool(
        clip,
        data.base_classnames,
        strategy=spec.dor.pool_strategy,
        size=spec.dor.pool_size,
        seed=spec.seed,
        vocabulary=vocabulary_words(spec.dor.vocabulary),
        exclude=every_class if spec.dor.exclude == "all" else data.base_classnames,
    )
    per_step = spec.dor.outliers_per_step or len(data.base_classnames)
    return DynamicOutlierRegularizer(
        pool, lam, per_step, seed=spec.seed, device=clip.device, resample=spec.dor.resample
    )


def make_image_regularizer(
    spec: TrialSpec, clip: ClipBundle, data: TrialData, every_class: list[str], options: RunOptions
) -> ImageOutlierRegularizer | None:
    """Visual DOR for a method that tunes the image side, or None when DOR is off or its weight
    is 0. Outlier images of classes named like the base classes (``dor.exclude: all``: any of
    ``every_class``) are left out of the pool."""
    if spec.dor is None or not spec.dor.lam or spec.dor.image_source is None:  # normalise() set the source
        return None
    pool = build_image_pool(
        clip,
        spec.dor.image_source,
        spec.root,
        data.base_classnames,
        exclude=every_class if spec.dor.exclude == "all" else data.base_classnames,
        strategy=spec.dor.pool_strategy,
        size=spec.dor.pool_size,
        seed=spec.seed,
        use_cache=options.feature_cache,
        progress=options.progress,
    )
    per_step = spec.dor.outliers_per_step or len(data.base_classnames)
    return ImageOutlierRegularizer(
        pool, spec.dor.lam, per_step, seed=spec.seed, device=clip.device, resample=spec.dor.resample
    )


def draw_outliers(
    regularizer: DynamicOutlierRegularizer | ImageOutlierRegularizer | None,
) -> tuple[list[str], list[int], torch.Tensor | None]:
    """This step's outliers: words to encode with the class names (text DOR) or pool indices of
    images (visual DOR), and their zero-shot features; nothing without DOR."""
    if regularizer is None:
        return [], [], None
    if isinstance(regularizer, ImageOutlierRegularizer):
        index, zero_shot = regularizer.draw_index()
        return [], index, zero_shot
    words, zero_shot = regularizer.draw()
    return words, [], zero_shot


def outlier_image_features(
    model: PromptModel, method: PromptMethod, pool: ImageOutlierPool, index: list[int], clip: ClipBundle
) -> torch.Tensor:
    """``f_tuned`` of the drawn outlier images: the method's image side on their pixels, or, when
    its encoder is frozen, its ``adapt_images`` on their cached zero-shot features."""
    if method.frozen_image_encoder:
        return model.adapt_images(pool.features[index].to(clip.device))
    return model.adapt_images(model.encode_images(pool.pixels(index).to(clip.device)))


class EpochSums:
    """An epoch's training loss, DOR loss, correct predictions and images, summed on the device
    and read once the epoch ends: reading a GPU value each step would make the host wait for the
    GPU instead of queueing the next step's work."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)
        self.steps = 0
        self.first_bad = torch.zeros((), dtype=torch.int64, device=device)  # 1-based step; 0: none

    @torch.no_grad()
    def add(self, loss: torch.Tensor, dor: torch.Tensor | None, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.steps += 1
        bad = ~torch.isfinite(loss) & (self.first_bad == 0)
        self.first_bad = torch.where(bad, self.steps, self.first_bad)
        self.sums[0] += loss.double() * len(labels)
        if dor is not None:
            self.sums[1] += dor.double() * len(labels)
        self.sums[2] += (logits.argmax(-1) == labels).sum()
        self.sums[3] += len(labels)

    def means(self, epoch: int) -> tuple[float, float, float]:
        """The epoch's mean loss, accuracy (%) and mean DOR loss; a loss that was not finite at
        any step of it is an error."""
        loss, dor, correct, seen = self.sums.tolist()
        if bad := int(self.first_bad):
            raise TrialError(
                f"Training diverged: the loss is not finite at epoch {epoch + 1}, step {bad}.",
                "lower the learning rate (method_options.lr) or the DOR weight, or check the data.",
            )
        return loss / seen, 100 * correct / seen, dor / seen


def train(
    model: PromptModel,
    method: PromptMethod,
    config: dict[str, Any],
    data: TrialData,
    clip: ClipBundle,
    features: FeatureSource,
    regularizer: DynamicOutlierRegularizer | ImageOutlierRegularizer | None,
    seed: int,
    checkpoint: Path | None,
    on_epoch: EpochCallback | None,
    progress: bool,
    score_epoch: Callable[[], dict[str, float]] | None = None,
) -> list[dict[str, float]]:
    """Fine-tune ``model``'s learnable prompt on the base classes; returns per-epoch metrics
    (with ``score_epoch()``'s metrics of the model after each epoch, in tuning mode)."""
    epochs, names = int(config["epochs"]), data.base_classnames
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer
    if config.get("optimizer") == "adam":  # TCP's config; its README sets Adam's eps to 1e-3
        optimizer = torch.optim.Adam(params, lr=config["lr"], weight_decay=config["weight_decay"], eps=1e-3)
    else:
        optimizer = torch.optim.SGD(
            params, lr=config["lr"], momentum=config["momentum"], weight_decay=config["weight_decay"]
        )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(epochs, config["warmup_epochs"], config["warmup_lr"] / config["lr"])
    )
    loader = training_batches(method, config, data, clip, features, seed)
    history: list[dict[str, float]] = []
    start = 0
    if checkpoint is not None and checkpoint.is_file():
        start, history = load_checkpoint(checkpoint, model, optimizer, scheduler, regularizer)
    bar = Progress(epochs, "training epochs", enabled=progress)
    bar.update(start)
    for epoch in range(start, epochs):
        model.train()
        if regularizer is not None:
            regularizer.next_epoch()
        sums = EpochSums(clip.device)
        lr = optimizer.param_groups[0]["lr"]  # this epoch's
        for inputs, labels in loader():  # already on the device
            # no autocast: CLIP and the learned parameters run in the trial's precision, as the
            # references' PREC (fp16 on a GPU by default); features and losses come out in fp32
            image = model.adapt_images(inputs if inputs.dim() == 2 else model.encode_images(inputs))
            words, drawn, zero_shot = draw_outliers(regularizer)
            text = model.encode_names(names + words, image)  # one pass: classes + outliers
            class_text, outlier_text = text[..., : len(names), :], text[..., len(names) :, :]
            logits = class_logits(clip.logit_scale, image, class_text)
            loss = F.cross_entropy(logits.float(), labels)
            pixels = None if inputs.dim() == 2 else inputs
            extra = model.extra_loss(TrainStep(pixels, image, class_text, logits, labels))
            if extra is not None:
                loss = loss + extra
            tuned = outlier_text
            if isinstance(regularizer, ImageOutlierRegularizer):
                tuned = outlier_image_features(model, method, regularizer.pool, drawn, clip)
            dor = regularizer.loss(tuned, zero_shot) if regularizer else None
            if dor is not None:
                loss = loss + dor
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums.add(loss, dor, logits, labels)
        loss_mean, acc, dor_mean = sums.means(epoch)
        row = {"epoch": float(epoch + 1), "train/loss": loss_mean, "train/acc": acc, "lr": lr}
        if regularizer:
            row["train/dor"] = dor_mean
        scheduler.step()
        model.end_epoch(epoch + 1, epochs)
        if score_epoch is not None:
            model.eval()
            row.update(score_epoch())
        history.append(row)
        if checkpoint is not None:
            save_checkpoint(checkpoint, epoch + 1, history, model, optimizer, scheduler, regularizer)
        if on_epoch is not None:
            on_epoch(epoch + 1, row)
        bar.update()
    return history


def epoch_scorer(
    spec: TrialSpec,
    model: PromptModel,
    method: PromptMethod,
    clip: ClipBundle,
    features: FeatureSource,
    data: TrialData,
    holdout: Holdout | None,
) -> Callable[[], dict[str, float]] | None:
    """Tuning mode: what is scored after each epoch (validation metrics of the pseudo-base and
    pseudo-new classes; with ``leaky``, the real test splits' metrics too); None otherwise."""
    if holdout is None:
        return None

    def logits(model: PromptModel, items: list[Datum], split: str, names: list[str]) -> torch.Tensor:
        return scoring_logits(model, clip, scoring_features(model, method, clip, features, items, split), names).cpu()

    def score() -> dict[str, float]:
        metrics = validation_metrics(model, holdout, logits, spec.ece_bins)
        if holdout.leaky:
            metrics.update(evaluate(score_tests(model, method, data, clip, features), spec.ece_bins).metrics)
        return metrics

    return score


def warmup_cosine(epochs: int, warmup: int, warmup_factor: float) -> Callable[[int], float]:
    """Dassl's schedule as an lr factor per epoch: constant ``warmup_factor`` for the warm-up
    epochs, then ``CosineAnnealingLR(T_max=epochs)`` started after them (``WARMUP_RECOUNT: True``,
    the CoOp-family configs): epoch e >= warmup runs at ``(1 + cos(pi * (e - warmup) / epochs)) / 2``,
    so the first epoch after the warm-up runs at the full lr."""

    def factor(epoch: int) -> float:
        if epoch < warmup:
            return warmup_factor
        return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / epochs))

    return factor


def class_logits(scale: float, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``scale * cos(image, text)``; text is ``[C, D]`` or per-image ``[N, C, D]``."""
    image = F.normalize(image.float(), dim=-1)
    if text.dim() == 3:
        return scale * torch.einsum("nd,ncd->nc", image, text.float())
    return scale * image @ text.float().T


def training_batches(
    method: PromptMethod,
    config: dict[str, Any],
    data: TrialData,
    clip: ClipBundle,
    features: FeatureSource,
    seed: int,
) -> Batches:
    """A factory of one epoch's shuffled batches on the trial's device: (images or cached
    features, labels). As Dassl's training loader, the last incomplete batch is dropped when there
    is at least one full batch. Images come through ``workers/datasets/supply.py`` with the
    loader workers and image pipeline of the trial's RunOptions (which ``features`` carries)."""
    labels = torch.tensor([d.label for d in data.train])
    views = int(config["augment_views"])
    batch = int(config["batch_size"])
    drop_last = len(labels) >= batch
    if views and method.frozen_image_encoder:
        bank = torch.stack(
            [features.get(data.train, "train", seed * 1000 + v, config["min_crop_scale"]) for v in range(views)]
        )  # [V, N, D]

        def cached() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            pick = torch.randint(views, (len(labels),))
            chosen = bank[pick, torch.arange(len(labels))]
            loader = DataLoader(TensorDataset(chosen, labels), batch_size=batch, shuffle=True, drop_last=drop_last)
            for inputs, targets in loader:
                yield inputs.to(clip.device), targets.to(clip.device)

        return cached
    options = features.options
    return training_images(
        data.train,
        train_transform(clip.image_size, config["min_crop_scale"]),
        dataset=data.name,
        batch_size=batch,
        drop_last=drop_last,
        device=clip.device,
        pipeline=config["image_pipeline"],
        workers=options.loader_workers,
    )


def scoring_features(
    model: PromptModel, method: PromptMethod, clip: ClipBundle, features: FeatureSource, items: list[Datum], split: str
) -> torch.Tensor:
    """Test-transform image features (from the cache when the image encoder is frozen), through
    the method's ``adapt_images``."""
    if method.frozen_image_encoder:
        return model.adapt_images(features.get(items, split).to(clip.device))
    loader = DataLoader(ImageDataset(items, test_transform(clip.image_size)), batch_size=128)
    return torch.cat([model.adapt_images(model.encode_images(x.to(clip.device))) for x, _, _ in loader])


def scoring_logits(model: PromptModel, clip: ClipBundle, image: torch.Tensor, names: list[str]) -> torch.Tensor:
    """Logits of ``image`` against ``names``; image-conditioned prompts are encoded per chunk."""
    if model.image_conditioned:
        return torch.cat(
            [class_logits(clip.logit_scale, chunk, model.encode_names(names, chunk)) for chunk in image.split(64)]
        )
    return class_logits(clip.logit_scale, image, model.encode_names(names))


@torch.no_grad()
def score_tests(
    model: PromptModel, method: PromptMethod, data: TrialData, clip: ClipBundle, features: FeatureSource
) -> list[SplitScores]:
    """Logits on the base and new test splits, with PIECE's proximity as DAC computes it: to the
    ``k`` nearest base-class validation images (ImageNet: its test images, CoOp's val = test)."""
    k, source = piece_setup(data.name)
    images = {
        f"test-{split}": scoring_features(model, method, clip, features, items, f"test-{split}")
        for split, items in (("base", data.test_base), ("new", data.test_new))
        if items
    }
    val = images["test-base"] if source == "test" else scoring_features(model, method, clip, features, data.val, "val")
    reference = F.normalize(val.float().cpu(), dim=-1)
    out = []
    for split, items, names in (
        ("base", data.test_base, data.base_classnames),
        ("new", data.test_new, data.new_classnames),
    ):
        if not items:
            continue
        image = images[f"test-{split}"]
        labels = torch.tensor([d.label for d in items])
        normed = F.normalize(image.float().cpu(), dim=-1)
        out.append(
            SplitScores(
                split,
                scoring_logits(model, clip, image, names).cpu(),
                labels,
                names,
                proximity=proximity_scores(normed, reference, k=min(k, len(reference))),
            )
        )
    return out


@torch.no_grad()
def class_text_features(model: PromptModel, clip: ClipBundle, data: TrialData) -> dict[str, torch.Tensor]:
    """Each class's normalised text feature, tuned and zero-shot (what DAC compares); none for
    an image-conditioned method, whose class features differ per image."""
    if model.image_conditioned:
        return {}
    zeroshot = METHODS.get("zeroshot").method().build(clip, data.base_classnames, data.name, data.template, {})
    out = {}
    for split, names in (("base", data.base_classnames), ("new", data.new_classnames)):
        if names:
            out[f"{split}/tuned"] = F.normalize(model.encode_names(names).float(), dim=-1).cpu()
            out[f"{split}/zeroshot"] = zeroshot.encode_names(names).cpu()
    return out


@torch.no_grad()
def score_val(
    model: PromptModel, method: PromptMethod, data: TrialData, clip: ClipBundle, features: FeatureSource
) -> list[SplitScores]:
    """Logits on the base classes' validation images (what a post-hoc calibrator is fitted on)."""
    if not data.val:
        return []
    image = scoring_features(model, method, clip, features, data.val, "val")
    labels = torch.tensor([d.label for d in data.val])
    return [
        SplitScores("val", scoring_logits(model, clip, image, data.base_classnames).cpu(), labels, data.base_classnames)
    ]


@torch.no_grad()
def score_targets(
    spec: TrialSpec, model: PromptModel, method: PromptMethod, clip: ClipBundle, options: RunOptions
) -> list[SplitScores]:
    """Domain shift: the tuned model on each target dataset's test split, with its own classes."""
    out = []
    for target in spec.targets:
        data = load_trial_data(target, spec.root, 1, spec.seed, "all", spec.test_per_class)
        source = FeatureSource(clip, data.name, options)
        image = scoring_features(model, method, clip, source, data.test_base, "test")
        labels = torch.tensor([d.label for d in data.test_base])
        logits = scoring_logits(model, clip, image, data.base_classnames)
        out.append(SplitScores(f"target/{target}", logits.cpu(), labels, data.base_classnames))
    return out


def save_checkpoint(path: Path, epoch: int, history, model, optimizer, scheduler, regularizer) -> None:
    """Only what training changes: learnable parameters, optimizer, schedule, sampler and RNGs,
    as tensors and plain values only, so that it loads with ``weights_only=True``."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "epoch": epoch,
        "history": history,
        "params": model.state_dict(),  # CLIP is not a submodule: this is the prompt alone
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "regularizer": regularizer.state_dict() if regularizer else None,
        "rng": {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": [name, np.asarray(keys).tolist(), pos, has_gauss, cached],
        },
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path, model, optimizer, scheduler, regularizer) -> tuple[int, list]:
    """Resume from a checkpoint written by ``save_checkpoint``. It is read as data only
    (``weights_only=True``): a checkpoint folder on shared storage can never run code here."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise TrialError(
            f"The checkpoint '{path}' is not a dor-bench checkpoint of tensors and plain values; it "
            f"was not loaded ({type(err).__name__}: {str(err).splitlines()[0][:200]}).",
            "delete it (the trial then starts again from epoch 1); never put files from elsewhere in "
            "the checkpoint folder.",
        ) from None
    model.load_state_dict(state["params"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if regularizer is not None and state["regularizer"] is not None:
        regularizer.load_state_dict(state["regularizer"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    name, keys, pos, has_gauss, cached = state["rng"]["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    return state["epoch"], state["history"]
