"""Baseline reports: the per-class and prediction CSVs, the Markdown summary, the accuracy chart
across modalities and the comparison table.

The Markdown and comparison writers work from the ``metrics.json`` dictionary built by
:mod:`crossmodal.evaluate.baseline.job`, so the report says exactly what the JSON says.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from crossmodal.reports.figures import new_figure, save_png
from crossmodal.reports.text import (
    decoding_lines, decoding_title, pct, pct_interval, run_lines, weights_lines, write_csv,
)

def write_per_class_csv(path: Path, rows: list[dict]) -> Path:
    """One row per class: the dicts built by :func:`crossmodal.evaluate.baseline.job.per_class_rows`."""
    header = ["category", "label", "status", "images", "top1_correct", "top1_accuracy", "top5_correct",
              "top5_accuracy", "top1_ci95_low", "top1_ci95_high", "source_label", "shares_source_with"]

    def fmt(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.6f}"
        return v
    return write_csv(path, header, ([fmt(r.get(h, "")) for h in header] for r in rows))


def write_predictions_csv(path: Path, paths: Sequence, true_names: Sequence[str],
                          predicted: Sequence[Sequence[str]], probs: np.ndarray, k: int = 5) -> Path:
    """``path, true, pred1..predk, prob1..probk``; a shared prediction is ``a|b`` (see baseline)."""
    header = ["path", "true"] + [f"pred{i}" for i in range(1, k + 1)] + [f"prob{i}" for i in range(1, k + 1)]

    def row(p, t, names, pr):
        names = list(names) + [""] * (k - len(names))
        values = [f"{v:.6f}" for v in pr] + [""] * (k - len(pr))
        return [str(p), t, *names[:k], *values[:k]]
    return write_csv(path, header, (row(*r) for r in zip(paths, true_names, predicted, probs)))


def plot_modalities(path: Path, runs: Sequence[dict], reference: dict | None = None) -> Path:
    """Top-1 and top-5 (muted, with 95 % intervals) per modality, each bar's value above its interval,
    beside top-1 and top-5 chance and, for a network the Places365 authors measured, its published
    accuracy (``reference``; none for any other network)."""
    labels = [r["modality"] for r in runs]
    x = np.arange(len(runs))
    width = 0.38
    fig = new_figure(max(6.0, 1.6 * len(runs) + 3.5), 4.8)
    ax = fig.add_subplot(1, 1, 1)
    for offset, key, colour in ((-width / 2, "top1", "#3b7dd8"), (width / 2, "top5", "#8cb8f0")):
        values = np.array([100 * (r.get(key) or 0.0) for r in runs])
        ci = np.array([[100 * (r.get(f"{key}_ci95") or [0, 0])[0], 100 * (r.get(f"{key}_ci95") or [0, 0])[1]]
                       for r in runs])
        err = np.vstack([np.maximum(values - ci[:, 0], 0), np.maximum(ci[:, 1] - values, 0)])
        bars = ax.bar(x + offset, values, width, yerr=err, capsize=3, color=colour, ecolor="#333333",
                      label=f"{'top-1' if key == 'top1' else 'top-5'} (muted, 95 % CI)")
        for bar, v, hi in zip(bars, values, ci[:, 1]):  # the label above the interval, not on it
            ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, max(v, hi)), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 3), textcoords="offset points")
    for i, r in enumerate(runs):
        for key, offset, style, name in (("chance_top1", -width / 2, ":", "chance top-1"),
                                         ("chance_top5", width / 2, "--", "chance top-5")):
            if r.get(key) is not None:
                ax.hlines(100 * r[key], i + offset - width / 2, i + offset + width / 2, colors="#c00000",
                          linestyles=style, linewidth=1.4, zorder=4, label=name if i == 0 else None)
    if reference:
        ax.axhline(100 * reference["top1"], color="black", linestyle="--", linewidth=0.8,
                   label=f"{reference['model']} top-1 on Places365 val (other data)")
        ax.axhline(100 * reference["top5"], color="black", linestyle="-.", linewidth=0.8,
                   label=f"{reference['model']} top-5 on Places365 val (other data)")
    ax.set_xticks(x)
    ax.set_xticklabels(labels)
    ax.set_ylim(0, 108)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("accuracy (%)")
    title = decoding_title("Baseline accuracy per modality", bool(runs and runs[0].get("settings", {}).get("draft")))
    if runs and runs[0].get("banner"):
        title = f"{runs[0]['banner'].upper()}\n{title}"
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return save_png(fig, path)


def reference_line(ref: dict | None, name: str) -> str:
    """The published Places365 accuracy of this network, or why there is none to show."""
    if not ref:
        return (f"Reference: the Places365 authors publish no validation accuracy for `{name}` (their table has "
                "AlexNet, GoogLeNet, VGG16 and ResNet-152), so none is shown.")
    return (f"Reference: {ref['model']} reaches {pct(ref['top1'])} top-1 / {pct(ref['top5'])} top-5 on "
            f"{ref['dataset']} — {ref['note']}.")


def markdown_report(m: dict, per_class: Sequence[dict] = (), *, top_n: int = 10, max_failed: int = 30) -> str:
    """The human summary of one run, from its ``metrics.json`` dictionary and per-class rows."""
    ref = m.get("reference")
    lines = [
        f"# Baseline: {m['modality']} ({m['split']})",
        "",
        *weights_lines(m),
        *decoding_lines(bool(m.get("settings", {}).get("draft"))),
        f"Model `{m['model']['name']}` (fingerprint `{m['model']['fingerprint'][:16]}…`) from "
        f"`{m['model']['dir']}`, run on **{m['backend']} / {m['device']}**"
        + f" at {m.get('precision') or 'fp32'}"
        + (f" (providers: {', '.join(m['providers'])})" if m.get("providers") else "")
        + (f" at {m['images_per_second']:.1f} images/s" if m.get("images_per_second") else "")
        + (" (features from the cache, computed earlier)" if m.get("features_from_cache") else "") + ".",
        "",
        f"Data: {m['dataset']['layout']} layout under `{m['dataset']['root']}`; "
        f"{m['num_images']} images run, {m['num_failed']} failed to decode, "
        f"{m['dataset']['num_missing']} listed but missing"
        + (f", limited to {m['dataset']['limit']}" if m['dataset'].get('limit') else "") + "; "
        f"**{m['num_scored']} scored** over **{m['num_classes_evaluated']} classes** "
        f"(unmapped categories: {m['unmapped_policy']}).",
        "",
        "| metric | value | 95 % CI |",
        "|---|---:|---:|",
        f"| top-1 (muted) | **{pct(m['top1'])}** | {pct_interval(m['top1_ci95'])} |",
        f"| top-5 (muted) | **{pct(m['top5'])}** | {pct_interval(m['top5_ci95'])} |",
        f"| top-1 (unmuted) | {pct(m['top1_unmuted'])} | |",
        f"| top-5 (unmuted) | {pct(m['top5_unmuted'])} | |",
        f"| mean class accuracy (top-1) | {pct(m['mean_class_accuracy'])} | |",
        f"| chance top-1, uniform guess over the {m.get('chance_num_labels', '?')} kept labels "
        f"| {pct(m['chance_top1'])} | |",
        f"| chance top-1, prior-matched guess | {pct(m.get('chance_top1_prior'))} | |",
        f"| chance top-1, always the most frequent label | {pct(m.get('chance_top1_majority'))} | |",
        f"| chance top-5, uniform guess | {pct(m.get('chance_top5'))} | |",
        "",
        reference_line(ref, m["model"]["name"]),
        "",
        "## How labels were matched",
        "",
        f"- {m['label_map']['kept_sources']} of the model's {m['model']['num_labels']} labels map to a category "
        f"of this data set; the other {m['label_map']['muted_sources']} are **muted** (their logits are "
        "removed before ranking, so the network cannot win by naming a class the data set lacks). "
        "`_unmuted` rows rank all labels.",
        f"- Categories mapped through the alias table: {len(m['label_map']['aliases_used'])}"
        + (" (" + ", ".join(f"{k} → {v}" for k, v in sorted(m['label_map']['aliases_used'].items())) + ")"
           if m['label_map']['aliases_used'] else "") + ".",
        *(["- Categories kept with several labels or by a synset's name (a prediction of any of them is "
           "correct): " + "; ".join(f"{c} → {' | '.join(ls)}" for c, ls in sorted(
               m['label_map']['categories_with_several_labels_or_synset_names'].items())) + "."]
          if m['label_map'].get('categories_with_several_labels_or_synset_names') else []),
    ]
    shared = m["shared_labels"]
    if shared["groups"]:
        groups = "; ".join(f"{g['source']} ← {', '.join(g['targets'])}" for g in shared["groups"])
        lines.append(f"- Shared labels (one model label for several categories; a prediction of it counts "
                     f"as correct for any of them): {groups}. {shared['images']} scored images belong to "
                     f"such categories, {shared['top1_hits']} of them correct at top-1.")
    if m["excluded_categories"]:
        lines.append(f"- Categories without a model label, **left out** ({sum(m['excluded_categories'].values())} "
                     "images): " + ", ".join(f"{k} ({v})" for k, v in m["excluded_categories"].items()) + ".")
    if m.get("kept_unmapped_categories"):
        lines.append("- Categories without a model label, **scored as errors** (`--unmapped keep`): "
                     + ", ".join(f"{k} ({v})" for k, v in m["kept_unmapped_categories"].items()) + ".")
    scored = [r for r in per_class if r.get("images")]
    if scored:
        ranked = sorted(scored, key=lambda r: (-r["top1_accuracy"], r["category"]))
        if len(ranked) <= 2 * top_n:  # few classes: one table, best first (two would repeat each other)
            lines += ["", f"## Classes by top-1 ({len(ranked)})", "", "| class | images | top-1 | top-5 |",
                      "|---|---:|---:|---:|"]
            lines += [f"| {r['category']} | {r['images']} | {pct(r['top1_accuracy'], 1)} | "
                      f"{pct(r['top5_accuracy'], 1)} |" for r in ranked]
        else:
            lines += ["", f"## Best and worst {top_n} classes (top-1, of {len(ranked)})", "",
                      "| best | images | top-1 | | worst | images | top-1 |", "|---|---:|---:|---|---|---:|---:|"]
            worst = ranked[::-1]
            for b, w in zip(ranked[:top_n], worst[:top_n]):
                lines.append(f"| {b['category']} | {b['images']} | {pct(b['top1_accuracy'], 1)} | | "
                             f"{w['category']} | {w['images']} | {pct(w['top1_accuracy'], 1)} |")
    if m["num_failed"] or m["dataset"]["num_missing"]:
        lines += ["", "## Images not evaluated", ""]
        entries = [("failed to decode", f) for f in m["failed_images"]] + \
                  [("missing", f) for f in m["missing_files"]]
        for what, f in entries[:max_failed]:
            lines.append(f"- `{f['path']}`: {what} — {f['reason']}")
        if len(entries) > max_failed:
            lines.append(f"- … and {len(entries) - max_failed} more (all are listed in metrics.json)")
    lines += ["", "## Files", ""]
    for name, desc in m.get("files", {}).items():
        lines.append(f"- `{name}`: {desc}")
    lines += ["", f"Backend details: `{json.dumps(m.get('backend_info'), default=str)}`; "
              f"feature cache `{m['cache']['path']}` ({m['cache']['rows_computed']} rows computed now, "
              f"{m['cache']['rows_from_cache']} from the cache).", "", *run_lines(m.get("run"))]
    return "\n".join(lines)


#: The fields of each run that the comparison table and JSON carry.
COMPARISON_KEYS = ("modality", "split", "backend", "device", "num_images", "num_failed", "num_scored",
                   "num_classes_evaluated", "top1", "top1_ci95", "top5", "top5_ci95", "top1_unmuted",
                   "top5_unmuted", "mean_class_accuracy", "chance_top1", "images_per_second")


def comparison_markdown(runs: Sequence[dict], reference: dict | None = None) -> str:
    lines = ["# Baseline across modalities", "", *weights_lines(runs[0] if runs else {}),
             *decoding_lines(bool(runs and runs[0].get("settings", {}).get("draft"))),
             "| modality | images scored | classes | top-1 (95 % CI) | top-5 (95 % CI) | top-1 unmuted | "
             "mean class acc. | chance top-1 | failed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        lines.append(f"| {r['modality']} | {r['num_scored']} | {r['num_classes_evaluated']} | "
                     f"{pct(r['top1'])} {pct_interval(r['top1_ci95'])} | {pct(r['top5'])} "
                     f"{pct_interval(r['top5_ci95'])} | {pct(r['top1_unmuted'])} | "
                     f"{pct(r['mean_class_accuracy'])} | {pct(r['chance_top1'])} | {r['num_failed']} |")
    lines += ["", reference_line(reference, runs[0]["model"]["name"] if runs else "this network"), "",
              "Per-modality details: `<modality>/report.md` and `<modality>/metrics.json`; "
              "chart: `accuracy_by_modality.png`.", ""]
    return "\n".join(lines)
