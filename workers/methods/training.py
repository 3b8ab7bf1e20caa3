"""Training settings every tuned method shares (SPEC section 3); each method overrides some.

The optimiser is SGD, as in every reference config (Dassl's ``OPTIM.NAME: sgd``), except TCP's
Adam: an ``optimizer`` option of TCP's card alone."""

import math
from typing import Any

from workers.models.precision import DEFAULT_PRECISION, PRECISIONS

TRAINING_DEFAULTS: dict[str, Any] = {
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "warmup_epochs": 1,
    "warmup_lr": 1e-5,
    # 0: encode freshly augmented images every step; N > 0: N cached augmented views per image
    # (frozen image encoders only), drawn at random each epoch.
    "augment_views": 0,
    # smallest crop area of the training random-resized crop (CoOp: 0.08); >= 1: no crop, flip only
    "min_crop_scale": 0.08,
    # "pil": crop and resize each image with PIL (torchvision's computation, as the references);
    # "device": decode once into a cache, resize the same crops on the trial's device (float32
    # resampling: a documented difference, docs/fidelity.md)
    "image_pipeline": "pil",
    # CLIP's and the learned parameters' precision (the references' PREC, fp16 on their GPUs): "auto"
    # is fp16 on a GPU and fp32 on a CPU, as OpenAI's clip.load (docs/fidelity.md, Precision)
    "precision": DEFAULT_PRECISION,
}

#: The allowed values of each string method option that has a fixed set.
OPTION_CHOICES: dict[str, tuple[str, ...]] = {
    "image_pipeline": ("pil", "device"),
    "precision": PRECISIONS,
    "optimizer": ("adam", "sgd"),
    # the text side of the image-side methods: the dataset's zero-shot template or "a photo of a {}."
    "template": ("dataset", "photo"),
}

#: Text options that may also be null (``ctx_init: null``: random context vectors, not the init's words).
NULLABLE_TEXT: tuple[str, ...] = ("ctx_init",)

#: The range of each numeric method option: (lowest allowed, whether the lowest itself is allowed).
OPTION_RANGES: dict[str, tuple[float, bool]] = {
    "epochs": (1, True),
    "batch_size": (1, True),
    "lr": (0.0, False),
    "momentum": (0.0, True),
    "weight_decay": (0.0, True),
    "warmup_epochs": (0, True),
    "warmup_lr": (0.0, False),
    "augment_views": (0, True),
    "min_crop_scale": (0.0, False),
    "n_ctx": (1, True),
    "prompt_depth": (1, True),
    "kg_weight": (0.0, True),
    "class_token_layer": (1, True),
    "n_ctx_vision": (1, True),
    "prompt_depth_vision": (1, True),
    "text_loss_weight": (0.0, True),
    "image_loss_weight": (0.0, True),
    "gpa_std": (0.0, False),
    "ratio": (0.0, True),
    "reduction": (1, True),
    "dor_lambda": (0.0, True),
}


def _range_problem(key: str, value: Any) -> str | None:
    """What is wrong with a method option's value (not finite, below its range), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return f"must be a finite number, not {value!r}"
    low, inclusive = OPTION_RANGES.get(key, (float("-inf"), True))
    if value < low or (value == low and not inclusive):
        return f"must be {'>=' if inclusive else '>'} {low:g}, not {value!r}"
    return None


def coerce_option(key: str, value: Any, default: Any) -> Any:
    """``value`` in the type of the method's default (so ``lr: 1`` and ``lr: 1.0`` are one trial),
    within its range; a ValueError says what is wrong. The one check of an option's value, for
    the settings files, ``dor-bench trial`` and ``run_trial`` alike."""
    if key in NULLABLE_TEXT:
        if value is not None and not isinstance(value, str):
            raise ValueError(f"must be text (e.g. a photo of a) or null, not {value!r}")
        return value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and not math.isfinite(value):
        raise ValueError(f"must be a finite number, not {value!r}")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {value!r}")
    elif isinstance(default, int):
        if not number or float(value) != int(value):
            raise ValueError(f"must be an integer, not {value!r}")
        value = int(value)
    elif isinstance(default, float):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"must be a number, not {value!r}") from None
        elif not number:
            raise ValueError(f"must be a number, not {value!r}")
        value = float(value)
    elif isinstance(default, str) and not isinstance(value, str):
        raise ValueError(f"must be a string, not {value!r}")
    if key in OPTION_CHOICES and value not in OPTION_CHOICES[key]:
        raise ValueError(f"must be one of {', '.join(OPTION_CHOICES[key])}, not {value!r}")
    if problem := _range_problem(key, value):
        raise ValueError(problem)
    return value
