"""The PNGs of ``crossmodal units``, drawn with PIL (hundreds of tiles: far faster than matplotlib).

* :func:`unit_png` — one unit: a row per modality, its top-K receptive-field patches with value and
  category under each, and the activation-maximisation image at the row's end when there is one;
* :func:`overview_png` — the drawn units side by side: a column of the most agreeing units and one
  of the least agreeing, each unit a strip of its best patches per modality;
* :func:`agreement_png` (matplotlib) — the layer's agreement scores against chance.

Every title carries the random-weights banner when it applies (:func:`crossmodal.ir.identity.titled`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from crossmodal.io.atomic import atomic_path

BG, INK, MUTED = (255, 255, 255), (20, 20, 20), (110, 110, 110)


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _save(img, path: Path) -> Path:
    with atomic_path(Path(path)) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def unit_png(path: Path, title: str, rows: Mapping[str, Sequence[tuple]], maximized=None, size: int = 96) -> Path:
    """``rows``: modality → ``[(tile PIL image, value, category)]``; ``maximized``: a PIL image or None."""
    from PIL import Image, ImageDraw

    k = max([len(r) for r in rows.values()] + [1])
    label_w, cap, pad = 80, 28, 4
    head = 16 * (title.count("\n") + 1) + 8
    cols = k + (1 if maximized is not None else 0)
    width = label_w + cols * (size + pad) + (8 if maximized is not None else 0)
    height = head + len(rows) * (size + cap + pad)
    img = Image.new("RGB", (width, height), BG)
    d = ImageDraw.Draw(img)
    d.multiline_text((4, 2), title, fill=INK, font=_font(13), spacing=3)
    small = _font(10)
    for r, (modality, entries) in enumerate(rows.items()):
        y = head + r * (size + cap + pad)
        d.text((4, y + size // 2 - 6), modality, fill=INK, font=_font(12))
        if not entries:
            d.text((label_w, y + size // 2 - 6), "no images", fill=MUTED, font=small)
        for c, (tile, value, category) in enumerate(entries):
            x = label_w + c * (size + pad)
            img.paste(tile, (x, y))
            d.text((x, y + size + 1), f"{value:.3g}", fill=INK, font=small)
            d.text((x, y + size + 13), _short(category, 16), fill=MUTED, font=small)
        if maximized is not None and r == 0:
            x = label_w + k * (size + pad) + 8
            img.paste(maximized.resize((size, size)), (x, y))
            d.text((x, y + size + 1), "maximised", fill=INK, font=small)
    return _save(img, path)


def overview_png(path: Path, title: str, columns: Mapping[str, Sequence[tuple]], per_modality: int = 3,
                 size: int = 40) -> Path:
    """``columns``: heading → ``[(unit, score, {modality: [tile, …]})]``; each unit one strip."""
    from PIL import Image, ImageDraw

    mods = max((len(t) for col in columns.values() for _, _, t in col), default=1)
    strip = 70 + mods * (per_modality * size + 6)
    head = 16 * (title.count("\n") + 1) + 30
    rows = max((len(c) for c in columns.values()), default=1)
    img = Image.new("RGB", (max(1, len(columns)) * (strip + 16), head + rows * (size + 4)), BG)
    d = ImageDraw.Draw(img)
    d.multiline_text((4, 2), title, fill=INK, font=_font(13), spacing=3)
    small = _font(10)
    for c, (heading, units) in enumerate(columns.items()):
        x0 = c * (strip + 16)
        d.text((x0 + 4, head - 18), heading, fill=INK, font=_font(12))
        for m, modality in enumerate(units[0][2] if units else ()):
            d.text((x0 + 70 + m * (per_modality * size + 6), head - 14), modality, fill=MUTED, font=small)
        for r, (unit, score, tiles) in enumerate(units):
            y = head + r * (size + 4)
            d.text((x0 + 4, y + size // 2 - 12), f"unit {unit}", fill=INK, font=small)
            d.text((x0 + 4, y + size // 2), f"{score:.2f}", fill=MUTED, font=small)
            for m, (modality, ts) in enumerate(tiles.items()):
                for t, tile in enumerate(ts[:per_modality]):
                    img.paste(tile.resize((size, size)), (x0 + 70 + m * (per_modality * size + 6) + t * size, y))
    return _save(img, path)


def agreement_png(path: Path, title: str, scores: np.ndarray, chance_score: float | None, consistent: int,
                  chance_consistent: float | None, units: int) -> Path:
    """Histogram of the units' agreement scores with the chance mean, and consistent units vs chance."""
    from crossmodal.reports.figures import new_figure, save_png

    fig = new_figure(9, 3.6)
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
    ax1.hist(scores, bins=np.linspace(0, 1, 21), color="#4c72b0", edgecolor="white")
    if chance_score is not None:
        ax1.axvline(chance_score, color="#c44e52", ls="--", label=f"chance mean {chance_score:.2f}")
        ax1.legend(loc="upper right", fontsize=8)
    ax1.set_xlabel("agreement score (share of top images in the unit's majority category)")
    ax1.set_ylabel("units")
    vals = [consistent, chance_consistent or 0.0]
    bars = ax2.bar(["observed", "chance"], vals, color=["#4c72b0", "#c44e52"])
    for b, v in zip(bars, vals):
        ax2.text(b.get_x() + b.get_width() / 2, v, f"{v:.1f}" if isinstance(v, float) else f"{v}",
                 ha="center", va="bottom", fontsize=8)
    ax2.set_ylabel(f"units with one concept\nin every modality (of {units})")
    ax2.set_ylim(0, max(vals + [1]) * 1.2)
    from matplotlib.ticker import MaxNLocator
    ax1.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)
