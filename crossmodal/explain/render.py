"""Files of ``explain``: the incremental ``cams.npz``, overlay PNGs, figures, the Markdown gallery.

Images are ``(H, W, 3)`` uint8 (the network's input crop); maps ``(H, W)`` float32 in
[0, 1]. Every file is written to a temporary sibling and renamed into place.
"""
from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from crossmodal.reports.figures import new_figure, save_png
from crossmodal.reports.text import decoding_title

COLORMAP = "jet"
ALPHA = 0.45


def safe_name(text: str) -> str:
    """A label or stem as a file-name part: ``/b/bedroom`` → ``b_bedroom``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


class NpzWriter:
    """Writes ``name → array`` entries into an ``.npz`` one at a time (nothing held in
    memory), to a temporary sibling renamed onto ``path`` by :meth:`commit`; an
    uncommitted file is removed on :meth:`close`. ``numpy.load`` reads the result."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.zf = zipfile.ZipFile(self.tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self.keys: set[str] = set()

    def unique(self, stem: str) -> str:
        """``stem``, or ``stem~2``, ``stem~3`` … when taken (same stem in two folders)."""
        key, n = stem, 1
        while key in self.keys:
            n += 1
            key = f"{stem}~{n}"
        return key

    def add(self, key: str, array: np.ndarray) -> None:
        self.keys.add(key)
        with self.zf.open(key + ".npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)

    def commit(self) -> Path:
        self.zf.close()
        os.replace(self.tmp, self.path)
        return self.path

    def close(self) -> None:
        try:
            self.zf.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def draw_overlay(ax, image: np.ndarray, cam: np.ndarray, title: str = "", color: str = "black",
                 fontsize: float = 9) -> None:
    ax.imshow(blend(image, cam), interpolation="nearest")
    ax.set_title(title, fontsize=fontsize, color=color)
    ax.set_axis_off()


def blend(image: np.ndarray, cam: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """The image ``(H, W, 3)`` uint8 under the map coloured with :data:`COLORMAP` → uint8."""
    from matplotlib import colormaps
    colour = colormaps[COLORMAP](np.clip(cam, 0.0, 1.0))[..., :3] * 255.0
    return np.clip((1 - alpha) * image + alpha * colour, 0, 255).round().astype(np.uint8)


def _wrap(text: str, font, width: int, draw) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels."""
    words, lines, line = text.split(" "), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def overlay_png(path: Path, image: np.ndarray, cam: np.ndarray, title: str) -> Path:
    """The input crop and the map over it, side by side (each at least 224 px: small inputs are
    enlarged, nearest neighbour), a colour bar labelled 0 to 1 (colour map ``jet``: 0 blue, 1 red),
    ``title`` above (the class and its probability; lines before the last, the random-weights banner
    of :func:`crossmodal.ir.identity.titled` or a decoding note, in red), wrapped to the picture's
    width. Drawn with PIL (≈ 10 ms, not matplotlib's ≈ 150 ms per figure)."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw, ImageFont

    from crossmodal.io.atomic import atomic_path
    h, w = cam.shape
    scale = max(1.0, 224 / min(h, w))
    size = (round(w * scale), round(h * scale))
    left = Image.fromarray(np.asarray(image, np.uint8)).resize(size, Image.Resampling.NEAREST)
    right = Image.fromarray(blend(image, cam)).resize(size, Image.Resampling.NEAREST)
    try:
        font, small = ImageFont.load_default(size=14), ImageFont.load_default(size=12)
    except TypeError:  # Pillow without FreeType sizes
        font = small = ImageFont.load_default()
    gap, bar_w, ticks_w, pad = 10, 14, 34, 8
    width = pad + 2 * size[0] + gap + gap + bar_w + ticks_w
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    parts = title.split("\n")
    lines = [(line, "#c00000") for part in parts[:-1] for line in _wrap(part, font, width - 2 * pad, probe)]
    lines += [(line, "black") for line in _wrap(parts[-1], font, width - 2 * pad, probe)]
    line_h, caption_h = 19, 18
    top = pad + line_h * len(lines) + 4
    canvas = Image.new("RGB", (width, top + size[1] + caption_h + pad), "white")
    canvas.paste(left, (pad, top))
    canvas.paste(right, (pad + size[0] + gap, top))
    bar_x = pad + 2 * size[0] + 2 * gap
    ramp = (colormaps[COLORMAP](np.linspace(1.0, 0.0, size[1]))[:, :3] * 255).astype(np.uint8)
    canvas.paste(Image.fromarray(np.repeat(ramp[:, None, :], bar_w, axis=1)), (bar_x, top))
    draw = ImageDraw.Draw(canvas)
    for i, (line, colour) in enumerate(lines):
        draw.text((pad, pad + line_h * i), line, fill=colour, font=font)
    for value in (1.0, 0.5, 0.0):  # the colour bar's scale: a map is min-max normalised to [0, 1]
        y = top + round((1.0 - value) * (size[1] - 1))
        draw.line([(bar_x + bar_w, y), (bar_x + bar_w + 3, y)], fill="black")
        draw.text((bar_x + bar_w + 5, min(max(y - 7, top), top + size[1] - 14)), f"{value:g}", fill="black", font=small)
    captions = (("input (the crop the network saw)", pad), ("map over the input, 0 to 1", pad + size[0] + gap))
    for text, x in captions:
        draw.text((x, top + size[1] + 3), text, fill="#444444", font=small)
    with atomic_path(Path(path)) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)


def category_png(path: Path, category: str, rows: Sequence[tuple[str, Sequence[dict]]], per_class: int,
                 banner: str | None = None, draft: bool = False) -> Path:
    """One figure per category: ``rows`` = ``(row title, cells)``; a cell is ``{image, cam,
    title, correct}``; correct cells titled green, wrong ones red; empty slots blank."""
    n = max(1, len(rows))
    fig = new_figure(2.1 * per_class + 1.2, 2.3 * n)
    fig.suptitle((f"{banner.upper()}\n" if banner else "")
                 + decoding_title(f"{category}: where the network looks (green: correct, red: wrong)", draft),
                 fontsize=11)
    for r, (label, cells) in enumerate(rows):
        for c in range(per_class):
            ax = fig.add_subplot(n, per_class, r * per_class + c + 1)
            if c < len(cells):
                cell = cells[c]
                draw_overlay(ax, cell["image"], cell["cam"], cell["title"],
                             "green" if cell["correct"] else "red", fontsize=7)
            else:
                ax.set_axis_off()
                if c == 0 and not cells:  # no image of this kind: said, not left out
                    ax.text(0.5, 0.5, "none", transform=ax.transAxes, ha="center", va="center", fontsize=9,
                            color="#666666")
            if c == 0:
                ax.text(-0.08, 0.5, label, transform=ax.transAxes, rotation=90, va="center", ha="right",
                        fontsize=8)
    return save_png(fig, path, dpi=90)


def mean_maps_png(path: Path, means: dict[str, tuple[np.ndarray, int]], banner: str | None = None,
                  draft: bool = False) -> Path:
    """Mean map per modality (``name → (mean (H, W), images)``), one panel each, same scale."""
    n = max(1, len(means))
    fig = new_figure(3.0 * n + 0.8, 3.3)
    fig.suptitle((f"{banner.upper()}\n" if banner else "")
                 + decoding_title("Mean map per modality: where attention sits on average", draft), fontsize=11)
    vmax = max([float(m.max()) for m, _ in means.values()] + [1e-6])
    im = None
    for i, (name, (mean, count)) in enumerate(means.items()):
        ax = fig.add_subplot(1, n, i + 1)
        im = ax.imshow(mean, cmap=COLORMAP, vmin=0.0, vmax=vmax)
        ax.set_title(f"{name} ({count} maps)", fontsize=9)
        ax.set_axis_off()
    if im is not None:
        bar = fig.colorbar(im, ax=fig.axes, fraction=0.03)
        bar.set_label("mean map (each map scaled to 0 – 1 first)", fontsize=8)
    return save_png(fig, path, dpi=100)


def md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def gallery_markdown(summary: dict, rows: Sequence[dict], failures: Sequence[tuple[str, str]],
                     max_rows: int = 2000) -> str:
    """``explain.md``: settings, the gallery table (image, class, probability, overlay), the
    files that did not decode and the run that made it (``summary["run"]``)."""
    s = summary
    lines = ["# crossmodal explain", "", *s.get("weights_lines", []),
             f"Model `{s['model']}`, method **{s['method']}** on layer `{s['layer']}` "
             f"(grid {s['grid'][0]} × {s['grid'][1]}, upsampled bilinearly to {s['crop'][0]} × {s['crop'][1]}, "
             "each map min-max normalised to [0, 1]).", "",
             f"{s['images']} images explained, {len(failures)} skipped (did not decode). "
             f"Maps: `cams.npz` (keys: file stems).", ""]
    if rows:
        lines += ["| image | class | rank | probability | overlay |", "|---|---|---|---|---|"]
        for r in rows[:max_rows]:
            overlay = f"![{md_escape(r['key'])}]({r['png']})" if r["png"] else "–"
            lines.append(f"| `{md_escape(r['path'])}` | {md_escape(r['label'])} | {r['rank']} | "
                         f"{r['prob']:.3f} | {overlay} |")
        if len(rows) > max_rows:
            lines.append(f"\n… and {len(rows) - max_rows} more overlays in `overlays/`.")
    if failures:
        lines += ["", "## Skipped (did not decode)", ""]
        lines += [f"- `{md_escape(p)}`: {md_escape(reason)}" for p, reason in failures]
    from crossmodal.reports.text import run_lines
    lines += ["", *run_lines(s.get("run"))]
    return "\n".join(lines) + "\n"
