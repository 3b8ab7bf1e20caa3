"""Figures for MLflow artifacts and reports (matplotlib, no display needed)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from workers.spec import ReliabilityBins


def reliability_figure(bins: dict[str, ReliabilityBins], title: str = "") -> Figure:
    """One reliability diagram per split: per-bin accuracy bars against the diagonal."""
    fig, axes = plt.subplots(1, len(bins), figsize=(4 * len(bins), 4), squeeze=False)
    for ax, (split, b) in zip(axes[0], bins.items()):
        width = [hi - lo for lo, hi in zip(b.edges[:-1], b.edges[1:])]
        ax.bar(
            b.edges[:-1], b.accuracy, width=width, align="edge", edgecolor="black", color="tab:blue", label="accuracy"
        )
        ax.bar(
            b.edges[:-1],
            [c - a if n else 0 for a, c, n in zip(b.accuracy, b.confidence, b.count)],
            bottom=b.accuracy,
            width=width,
            align="edge",
            color="tab:red",
            alpha=0.3,
            label="gap",
        )
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=split)
        ax.legend(loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def reliability_png(bins: dict[str, ReliabilityBins], title: str = "", dpi: float | None = None) -> bytes:
    """``reliability_figure`` as PNG bytes (the figure closed): what a run's artifact holds, drawn
    where the trial ran so that the driver only writes it."""
    fig = reliability_figure(bins, title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi or "figure")
    plt.close(fig)
    return buffer.getvalue()
