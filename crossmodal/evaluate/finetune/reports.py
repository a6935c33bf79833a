"""Fine-tuning reports: ``history.csv`` (a row as each epoch ends), ``curves.png``, TensorBoard scalars,
the augmentation preview, ``finetune.md`` and ``finetune.json``.

Everything is drawn from the results dictionary that becomes ``finetune.json``; the weights' identity
heads ``finetune.md`` and, on random weights, every chart title.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from crossmodal.ir import identity
from crossmodal.reports.figures import new_figure, save_png
from crossmodal.reports.text import json_safe, pct, run_lines, write_csv, write_json, weights_lines
from crossmodal.io.atomic import write_text_atomic

HISTORY_COLUMNS = ("epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr", "seconds",
                   "images_per_s")


def history_header(modalities: Sequence[str]) -> list[str]:
    """The columns of ``history.csv``; with several modalities, each one's val top-1 after them."""
    return list(HISTORY_COLUMNS) + ([f"val_top1_{m}" for m in modalities] if len(modalities) > 1 else [])


def write_history(path: Path, rows: list[dict], modalities: Sequence[str]) -> Path:
    header = history_header(modalities)

    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.6g}"
        return v
    return write_csv(path, header, [[cell(r.get(k, "")) for k in header] for r in rows])


def plot_curves(path: Path, rows: list[dict], title: str, baseline: float | None = None,
                unfreeze_at: int | None = None) -> Path:
    """Loss and top-1 per epoch, train and val (the transfer-learning guide's history plots); the
    unadjusted network's muted top-1 dashed; the unfreezing epoch marked."""
    from matplotlib.ticker import MaxNLocator
    fig = new_figure(10, 3.8)
    epochs = [r["epoch"] for r in rows]
    for col, (key, label) in enumerate((("loss", "loss"), ("top1", "top-1 (%)"))):
        ax = fig.add_subplot(1, 2, col + 1)
        scale = 100 if key == "top1" else 1
        ax.plot(epochs, [scale * r[f"train_{key}"] for r in rows], "o-", label="train", color="#3b7dd8")
        ax.plot(epochs, [scale * r[f"val_{key}"] for r in rows], "s-", label="val", color="#d8643b")
        if key == "top1" and baseline is not None:
            ax.axhline(100 * baseline, color="grey", linestyle="--", linewidth=0.8, label="unadjusted (muted)")
        if unfreeze_at is not None:
            ax.axvline(unfreeze_at + 0.5, color="black", linestyle=":", linewidth=0.8, label="unfrozen")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_png(fig, path)


def preview(path: Path, images: np.ndarray, spec, title: str, cols: int = 8) -> Path:
    """A grid of preprocessed samples ``(N, C, H, W)``, mean and std undone for display."""
    mean = np.asarray(spec.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(-1, 1, 1)
    rows = int(math.ceil(len(images) / cols))
    fig = new_figure(1.6 * cols, 1.6 * rows + 0.6)
    for i, x in enumerate(images):
        img = x * std + mean
        if spec.value_range == "0-255":
            img = img / 255.0
        if spec.channel_order == "BGR":
            img = img[::-1]
        img = np.clip(img.transpose(1, 2, 0), 0, 1)
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return save_png(fig, path)


class Board:
    """TensorBoard scalars under ``OUT/tb/`` when tensorboard is installed (else nothing)."""

    def __init__(self, folder: Path, enabled: bool = True) -> None:
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return
            self.writer = SummaryWriter(str(folder))

    def epoch(self, row: dict) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key.replace("val_", "val/").replace("train_", "train/"), value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _table(rows: list[list], header: list[str]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""]


def markdown(r: dict) -> str:
    s = r["settings"]
    lines = [f"# Fine-tuning {r['model']['name']} on {', '.join(r['modalities'])}", ""] + weights_lines(r)
    lines += [f"Trained from **{r['train_from']}** ({', '.join(r['trainable_layers']) or 'nothing'}), head "
              f"{s['head']}, {r['epochs_run']} epochs ({s['optimizer']}, lr {s['lr']:g}, {s['sched']} schedule"
              + (f", unfrozen at epoch {s['unfreeze_at']}" if s.get("unfreeze_at") else "")
              + f"), augmentation {s['augment']}, {r['precision']} on {r['device']}, world size "
              f"{r['world_size']}, global batch {r['global_batch']}.", ""]
    lines += [f"Exported weights: the **{s['keep']}** epoch ({r['best_epoch'] if s['keep'] == 'best' else r['epochs_run']})"
              f" → {', '.join(m['dir'] for m in r['models'].values())}.", ""]
    lines += _table([["chance", pct(r["chance_top1"]), "–"],
                     ["unadjusted network (muted)", pct(r["baseline_top1"]), "–"],
                     ["epoch 0 (before training)", pct(r["epoch0_top1"]), pct(r["epoch0_top5"])],
                     ["fine-tuned", pct(r["val_top1"]), pct(r["val_top5"])]],
                    ["val (" + ", ".join(r["modalities"]) + ")", "top-1", "top-5"])
    lines += ["## Per modality", ""]
    lines += _table([[m, v["images"], pct(v["baseline_top1"]), pct(v["val_top1"]), pct(v["val_top5"])]
                     for m, v in r["per_modality"].items()],
                    ["modality", "val images", "unadjusted (muted)", "top-1", "top-5"])
    p = r["params"]
    lines += [f"Parameters: {p['trainable_params']:,} trainable, {p['frozen_params']:,} frozen"
              + ("; per tower " + ", ".join(f"{m} {n:,}" for m, n in p["tower_params"].items())
                 + f", shared {p['shared_params']:,}" if p["tower_params"] else "") + ". "
              f"Training speed {r['images_per_s']:.1f} images/s.", ""]
    if r.get("against"):
        a = r["against"]
        lines += [f"## Against {a['run']} ({a['towers']})", ""]
        lines += _table([[m, pct(v["this_top1"]), pct(v["other_top1"]), pct(v["this_top5"]), pct(v["other_top5"])]
                         for m, v in a["per_modality"].items()],
                        ["modality", f"top-1 {r['towers']}", f"top-1 {a['towers']}", f"top-5 {r['towers']}",
                         f"top-5 {a['towers']}"])
        lines += [f"Parameters: {p['trainable_params'] + p['frozen_params']:,} here, {a['params_total']:,} there; "
                  f"{r['images_per_s']:.1f} vs {a['images_per_s']:.1f} images/s.", ""]
    lines += ["## History", ""]
    lines += _table([[h["epoch"], f"{h['train_loss']:.4f}", pct(h["train_top1"]), f"{h['val_loss']:.4f}",
                      pct(h["val_top1"]), pct(h["val_top5"]), f"{h['lr']:.3g}"] for h in r["history"]],
                    ["epoch", "train loss", "train top-1", "val loss", "val top-1", "val top-5", "lr"])
    if r.get("search"):
        lines += ["## Search", "", f"{r['search']['trials']} trials ({r['search']['sampler']} sampler, median "
                  f"pruning); best: trial {r['search']['best_trial']}, val top-1 {pct(r['search']['best_value'])}.",
                  "", "```", r["search"]["command"], "```", ""]
    if r.get("failed_images"):
        lines += [f"{len(r['failed_images'])} images failed to decode and were skipped (finetune.json lists them).", ""]
    return "\n".join(lines + run_lines(r.get("run")))


def write_reports(stage: Path, results: dict) -> dict[str, Path]:
    """``curves.png``, ``history.csv``, ``finetune.md``, then ``finetune.json`` (last) into ``stage``."""
    title = identity.titled(f"Fine-tuning on {', '.join(results['modalities'])}: from {results['train_from']}",
                            results["weights"])
    files = {}
    if results["history"]:
        files["curves.png"] = plot_curves(stage / "curves.png", results["history"], title, results["baseline_top1"],
                                          results["settings"].get("unfreeze_at"))
    files["history.csv"] = write_history(stage / "history.csv", results["history"], results["modalities"])
    files["finetune.md"] = write_text_atomic(stage / "finetune.md", markdown(results))
    files["finetune.json"] = write_json(stage / "finetune.json", json_safe(results))
    return files
