"""Figures shared by the jobs: a canvas that needs no display, atomic PNG writes, the confusion
matrix and the per-class bar chart (baseline and probe draw both).

Plots use matplotlib's Agg canvas directly (no global backend switch, no display).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from crossmodal.io.atomic import atomic_path


def new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: Path, dpi: int = 150) -> Path:
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


def plot_confusion(path: Path, confusion: np.ndarray, names: Sequence[str], title: str = "",
                   xlabel: str = "predicted category (muted top-1)") -> Path:
    """Row-normalised confusion matrix (each true class sums to 1), classes in category order.

    Up to 250 classes every class is labelled, with a font sized to the row spacing
    (about 3.7 pt for 205 classes), so a 205 × 205 matrix is readable when zoomed
    (the PNG is 200 dpi); beyond, every n-th class (n = ceil(C / 250)).
    """
    cm = np.asarray(confusion, dtype=np.float64)
    c = cm.shape[0]
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = float(np.clip(3 + 0.065 * c, 5, 17))
    fig = new_figure(size + 1.2, size)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    step = 1 if c <= 250 else math.ceil(c / 250)
    row_pt = size * 72 * 0.8 / max(c, 1) * step  # the axes take about 80 % of the figure
    font = float(np.clip(0.8 * row_pt, 3.0, 9))
    ticks = np.arange(0, c, step)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels([names[i] for i in ticks], rotation=90, fontsize=font)
    ax.set_yticklabels([names[i] for i in ticks], fontsize=font)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("true category")
    ax.set_title(title or f"Confusion matrix ({c} classes, rows normalised)", fontsize=10)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cbar.set_label("fraction of the true class's images")
    return save_png(fig, path, dpi=200 if c > 60 else 150)


def plot_per_class(path: Path, names: Sequence[str], accuracy: np.ndarray, images: np.ndarray,
                   overall: float | None = None, chance: float | None = None, n: int = 20,
                   title: str = "") -> Path:
    """Horizontal bars: the ``n`` best and ``n`` worst classes by top-1 accuracy (image counts noted);
    all classes in one panel when there are at most ``2 n``. The overall top-1 and chance are
    vertical lines drawn over the bars, chance on top (a random network's top-1 is chance)."""
    acc = np.asarray(accuracy, dtype=np.float64)
    idx = np.flatnonzero(~np.isnan(acc))
    order = idx[np.lexsort((np.asarray(names, dtype=object)[idx].astype(str), -acc[idx]))]
    if len(order) <= 2 * n:  # few classes: one panel with all of them
        panels = [(order, f"all {len(order)}")]
    else:
        panels = [(order[:n], f"best {n}"), (order[::-1][:n], f"worst {n}")]
    rows = max(max(len(sel) for sel, _ in panels), 1)
    fig = new_figure(6.5 * len(panels), max(3.0, 0.28 * rows + 1.5) + 0.25 * title.count("\n"))
    fig.set_layout_engine("constrained")  # the title above the panels' own titles, never on them
    for col, (sel, label) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), col + 1)
        y = np.arange(len(sel))
        ax.barh(y, 100 * acc[sel], color="#3b7dd8" if col == 0 else "#d8643b")
        ax.set_yticks(y)
        ax.set_yticklabels([f"{names[i]} ({int(images[i])})" for i in sel], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 102)
        ax.set_xlabel("top-1 accuracy (%)  — (n) = images")
        ax.set_title(f"{label} classes", fontsize=10)
        if overall is not None and not math.isnan(overall):
            ax.axvline(100 * overall, color="black", linestyle="--", linewidth=1.0, zorder=4,
                       label=f"overall top-1 ({100 * overall:.1f} %)")
        if chance is not None and not math.isnan(chance):
            ax.axvline(100 * chance, color="#c00000", linestyle=(0, (2, 2)), linewidth=1.6, zorder=5,
                       label=f"chance ({100 * chance:.1f} %)")
        ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=11)
    return save_png(fig, path)
