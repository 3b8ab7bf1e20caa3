"""Plain-text tables for the terminal."""

from __future__ import annotations

from workers.catalog import NAMES as SPLIT_METRICS


def format_metrics(metrics: dict[str, float]) -> str:
    """A split x metric table (base / new / avg rows) followed by HM."""
    splits = [s for s in ("base", "new", "all", "avg") if any(k.startswith(f"{s}/") for k in metrics)]
    cols = [m for m in SPLIT_METRICS if any(f"{s}/{m}" in metrics for s in splits)]
    widths = [max(11, len(c) + 2) for c in cols]  # a space between every two headers
    lines = [f"{'':6}" + "".join(f"{c:>{w}}" for c, w in zip(cols, widths))]
    for s in splits:
        cells = (
            f"{metrics[f'{s}/{c}']:{w}.2f}" if f"{s}/{c}" in metrics else f"{'-':>{w}}" for c, w in zip(cols, widths)
        )
        lines.append(f"{s:6}" + "".join(cells))
    if "hm" in metrics:
        lines.append(f"HM of base and new accuracy: {metrics['hm']:.2f}")
    return "\n".join(lines)
