"""Plots of an audit: per-case Dice scatter (A vs B) and Dice histograms, as PNGs written atomically.

Figures use matplotlib's object API with the Agg renderer: no global pyplot state, safe in any thread,
no display needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from segops.outputs.atomic import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure


def new_figure(width: float, height: float) -> MplFigure:
    """A figure of ``width`` × ``height`` inches at 100 dpi, laid out by matplotlib."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_figure(fig: MplFigure, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (atomically); returns ``path``."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def plot_scatter(paired: pd.DataFrame, labels: tuple[str, str], path: Path, highlight: int = 0) -> Path:
    """Per-case Dice, A on x and B on y, with the diagonal; the first ``highlight`` rows (the largest
    drops) ringed and numbered as their overlays are."""
    fig = new_figure(5.6, 5.6)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="no change")
    ax.scatter(paired["dice_a"], paired["dice_b"], s=22, alpha=0.75, color="#4c4c9d", label=f"{len(paired)} cases")
    top = paired.head(highlight)
    if len(top):
        ax.scatter(top["dice_a"], top["dice_b"], s=90, facecolors="none", edgecolors="#d62728", label="largest drops")
        for rank, (x, y) in enumerate(zip(top["dice_a"], top["dice_b"]), start=1):
            ax.annotate(str(rank), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8, color="#d62728")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel=f"Dice A: {labels[0]}", ylabel=f"Dice B: {labels[1]}")
    ax.set_aspect("equal")
    ax.set_title("per-case Dice (above the line: better in B)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def plot_histograms(series: list[tuple[str, pd.Series, str]], path: Path, title: str = "Dice per case") -> Path:
    """Dice histograms on the same 20 bins over [0, 1]; ``series``: (label, values, colour)."""
    fig = new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    bins = np.linspace(0.0, 1.0, 21)
    for label, values, colour in series:
        values = pd.to_numeric(values, errors="coerce").dropna()
        ax.hist(
            values, bins=bins, alpha=0.45, color=colour, label=f"{label} (n={len(values)}, mean {values.mean():.3f})"
        )
        ax.hist(values, bins=bins, histtype="step", color=colour, linewidth=1.2)
    ax.set(xlim=(0, 1), xlabel="Dice", ylabel="cases")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path)
