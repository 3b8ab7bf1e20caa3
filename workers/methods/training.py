"""Training settings every tuned method shares (SPEC section 3); each method overrides some.

The optimiser is SGD, as in every reference config (Dassl's ``OPTIM.NAME: sgd``): not a knob."""

from typing import Any

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
}

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
    "dor_lambda": (0.0, True),
}


def option_problem(key: str, value: Any) -> str | None:
    """What is wrong with a method option's value (not finite, below its range), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return f"must be a finite number, not {value!r}"
    low, inclusive = OPTION_RANGES.get(key, (float("-inf"), True))
    if value < low or (value == low and not inclusive):
        return f"must be {'>=' if inclusive else '>'} {low:g}, not {value!r}"
    return None
