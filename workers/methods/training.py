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
