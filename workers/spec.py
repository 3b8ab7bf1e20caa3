"""The contract between the planes: a serialisable trial spec in, a trial result out.

Both are plain pydantic models that round-trip through JSON, so a trial can be planned on one
machine (the orchestrator), run on another (a worker) and stored anywhere (MLflow, Parquet).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workers.vocabularies import VOCABULARIES

PoolStrategy = Literal["near", "far", "random"]
PoolExclude = Literal["base", "all"]
#: When DOR draws its B outliers: every step (the authors' code), once per epoch, or once per trial.
Resample = Literal["step", "epoch", "never"]

#: The protocol version: bumped by every change that alters what a trial computes. It is part of
#: every spec (and so of every run key), so results of an older protocol are never skipped as
#: done, resumed or averaged with newer ones. 1: before the parity fixes (no ``protocol`` field);
#: 2: the authors' computation (docs/fidelity.md); 3: the same, with each training image's crop
#: and flip drawn from its own seed (the same draws whatever the loader's worker count) and
#: prompts encoded at their length (equal within floating-point noise); 4: learned parameters in
#: CLIP's precision as the references hold them (fp16 on a GPU: no fp32 master copy, no autocast),
#: VPT's CLIP in fp32 and its prompts rounded through fp16.
PROTOCOL = 4
LEGACY_PROTOCOL = 1


#: A seed numpy accepts.
Seed = Annotated[int, Field(ge=0, lt=2**32)]
#: ECE bins: a confidence histogram, not an allocation (the literature uses 10, 15 or 20).
EceBins = Annotated[int, Field(gt=0, le=1000)]


class DorSpec(BaseModel):
    """Dynamic Outlier Regularization settings; ``None`` fields take the method's defaults."""

    model_config = ConfigDict(extra="forbid")

    lam: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="weight of the DOR term (default per method)"
    )
    pool_size: int = Field(5000, gt=0, description="K: outlier words kept in the pool")
    outliers_per_step: int | None = Field(
        None, gt=0, description="B: words drawn per step (default: number of base classes)"
    )
    pool_strategy: PoolStrategy = "near"
    exclude: PoolExclude = Field(
        "base",
        description="class names removed from the pool: the base classes', or 'all' the "
        "dataset's (the authors' choice is not public)",
    )
    vocabulary: str = Field(
        "wordnet",
        description="a built-in vocabulary ('wordnet': its nouns; 'clip-bpe': the whole words of CLIP's "
        "tokenizer), or a text file with one outlier word per line",
    )
    resample: Resample = Field(
        "step",
        description="when the B outliers are drawn: every step (the authors' code), once per epoch, or "
        "never again after one seeded draw",
    )
    image_source: str | None = Field(
        None,
        description="visual DOR (methods that tune the image side): the dataset the outlier images come "
        "from; default: 'imagenet', or 'shapes-outliers' for the built-in world",
    )

    @field_validator("vocabulary")
    @classmethod
    def _registered_name(cls, vocabulary: str) -> str:
        """A built-in vocabulary by its registered name (any case), so that it has one run key."""
        return VOCABULARIES.get(vocabulary).name if vocabulary in VOCABULARIES else vocabulary

    @model_validator(mode="after")
    def _outliers_fit_the_pool(self) -> DorSpec:
        if self.outliers_per_step is not None and self.outliers_per_step > self.pool_size:
            raise ValueError(
                f"{self.outliers_per_step} outliers per step cannot be drawn from a pool of {self.pool_size} "
                "words; set outliers_per_step (B) to at most pool_size (K)"
            )
        return self


#: DOR's defaults, read by the CLI and both settings schemas (their one home is DorSpec).
DOR_DEFAULTS: dict[str, Any] = {name: field.default for name, field in DorSpec.model_fields.items()}

#: DOR fields added after protocol 3 whose default is what every earlier trial did: left out of
#: the canonical spec while at that default, so every run key recorded before them stays the same.
LATER_DOR_DEFAULTS: dict[str, Any] = {"image_source": None, "resample": "step"}


class ValidationSpec(BaseModel):
    """Tuning mode: new classes are unknown, so score on validation data of held-out base classes.

    A seeded part of the base classes becomes *pseudo-new*: left out of training, scored with the
    *pseudo-base* classes on the validation split after every epoch (``val/pseudo_base/*``,
    ``val/pseudo_new/*``, ``val/avg/*``, ``val/hm``). The test split is never opened, unless
    ``leaky`` asks for the real base/new test metrics too (then the result is not an honest
    tuning signal).
    """

    model_config = ConfigDict(extra="forbid")

    pseudo_new: float = Field(0.5, gt=0, description="below 1: the share of base classes held out; 1 or more: how many")
    holdout_seed: Seed = Field(0, description="which base classes are held out")
    leaky: bool = Field(False, description="also score the real test splits (base/*, new/*)")

    @field_validator("pseudo_new")
    @classmethod
    def _fraction_or_count(cls, value: float) -> float:
        if value >= 1 and value != int(value):
            raise ValueError("must be a fraction below 1 or a whole number of classes")
        return value


class TrialSpec(BaseModel):
    """Everything that decides one trial's result. Equal specs give equal results."""

    model_config = ConfigDict(extra="forbid")

    method: str = "zeroshot"
    dataset: str = "shapes"
    root: str | None = Field(None, description="data root in CoOp layout (unused by built-in data)")
    model: str = "ViT-B-16"
    pretrained: str | None = "openai"
    seed: Seed = 1
    shots: int = Field(16, gt=0)
    subsample: Literal["base2new", "all"] = "base2new"
    method_options: dict[str, Any] = Field(default_factory=dict)
    dor: DorSpec | None = None
    ece_bins: EceBins = 10
    targets: list[str] = Field(
        default_factory=list,
        description="domain shift: datasets whose test split is also scored (their own classes)",
    )
    test_per_class: int | None = Field(
        None, gt=0, description="at most this many test images per class (quick runs); None = all"
    )
    validation: ValidationSpec | None = Field(
        None, description="tuning mode (pseudo-new classes from the base classes); None = a normal trial"
    )
    protocol: int = Field(PROTOCOL, description="the protocol version the trial is computed with")

    @field_validator("protocol")
    @classmethod
    def _current_protocol(cls, value: int) -> int:
        if value != PROTOCOL:
            raise ValueError(
                f"this dor-bench computes protocol {PROTOCOL}, not {value}; an older "
                "result cannot be recomputed as it was"
            )
        return value

    @field_validator("pretrained")
    @classmethod
    def _none_means_random_init(cls, value: str | None) -> str | None:
        return None if value is None or value.lower() == "none" else value

    def canonical_dict(self) -> dict[str, Any]:
        """The spec as JSON data; fields added later are left out while unset (None), DOR's at
        their ``LATER_DOR_DEFAULTS``, so the key of every spec written before they existed stays
        the same."""
        data = self.model_dump(mode="json", exclude={"validation"} if self.validation is None else None)
        if data["dor"] is not None:
            data["dor"] = {k: v for k, v in data["dor"].items() if LATER_DOR_DEFAULTS.get(k, ...) != v}
        return data

    def canonical_json(self) -> str:
        """Key-sorted JSON of the spec: the same trial always gives the same text."""
        return json.dumps(self.canonical_dict(), sort_keys=True, separators=(",", ":"))

    def key(self) -> str:
        """A short stable hash of the canonical spec (the trial's identity)."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]


class RunOptions(BaseModel):
    """How to run a trial; these never change its result, so they are not part of its key."""

    model_config = ConfigDict(extra="forbid")

    device: str = "auto"
    checkpoint_dir: str | None = None
    keep_dir: str | None = Field(
        None, description="where the learned prompt and per-sample outputs go (<keep_dir>/<run key>/); None: not kept"
    )
    feature_cache: bool = True
    progress: bool = True
    full_text_context: bool = Field(
        False,
        description="encode at CLIP's full 77-token context as the reference code does; default: truncated "
        "to each prompt batch's longest prompt (equal within floating-point noise, faster)",
    )
    loader_workers: int | None = Field(
        None,
        ge=0,
        description="processes decoding and augmenting training images; 0: in the trial's process; None: "
        "one per CPU the trial may use but one, at most 8. The same seed draws the same batches "
        "with any count",
    )
    gpu_share: float | None = Field(
        None,
        gt=0,
        le=1,
        description="the share of one GPU the trial has when it shares the GPU with other trials (Ray's "
        "fractional `resources: gpus`, set by the orchestrator through `gpu_share`): on CUDA its memory is "
        "capped at that share of the GPU's, and running out of it is a clear error "
        "(workers/device_memory.py). None: the whole GPU",
    )


def gpu_share(gpus: float) -> float | None:
    """``RunOptions.gpu_share`` of a trial that Ray schedules with ``gpus`` GPUs: that fraction
    when the trial shares one GPU with others (0 < gpus < 1); None for none, one or more."""
    return gpus if 0 < gpus < 1 else None


class ClassStat(BaseModel):
    """Per-class test statistics of one split."""

    split: str  # "base", "new", or "target/<dataset>"
    label: int
    classname: str
    n: int
    acc: float
    confidence: float


class ReliabilityBins(BaseModel):
    """Per-bin data of a reliability diagram (equal-width confidence bins)."""

    edges: list[float]
    count: list[int]
    accuracy: list[float]
    confidence: list[float]


class TrialResult(BaseModel):
    """What a trial hands back: flat final metrics plus the data behind them."""

    spec: TrialSpec
    metrics: dict[str, float]
    per_class: list[ClassStat] = Field(default_factory=list)
    reliability: dict[str, ReliabilityBins] = Field(default_factory=dict)
    history: list[dict[str, float]] = Field(default_factory=list)
    info: dict[str, Any] = Field(default_factory=dict)
