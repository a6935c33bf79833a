"""Probe reports: ``probe.md``, ``per_class.csv``, ``confusion.png``, ``few_shot.png``, ``transfer.png``,
``training_curves.png`` (MLP head), then ``probe.md`` and ``probe.json`` last.

Everything is drawn from the results dictionary that becomes ``probe.json`` (and,
for the per-class table and the confusion matrix, the arrays kept beside it), so
the Markdown says exactly what the JSON says. Files are written atomically.
The weights' identity (``results["weights"]``) heads ``probe.md``
(:func:`~crossmodal.ir.identity.markdown_lines`) and, on random weights, every
chart title (:func:`~crossmodal.ir.identity.titled`); the ``run`` block closes it.
In grid mode (``--all``) the per-pair files go to ``<out>/<train>-to-<test>/``.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from crossmodal.ir import identity
from crossmodal.evaluate.metrics import wilson_interval
from crossmodal.reports.figures import new_figure, plot_confusion, save_png
from crossmodal.reports.text import decoding_lines, decoding_title, json_safe, pct, pct_interval, run_lines, write_json
from crossmodal.io.atomic import write_text_atomic

FILES = {
    "probe.md": "a person's summary: chance, the unadjusted baseline and the probe side by side; few-shot table",
    "per_class.csv": "per class: test images, top-1/top-5 hits and accuracy, Wilson 95 % interval",
    "confusion.png": "confusion matrix of the probe on the test images, rows normalised",
    "few_shot.png": "test top-1 against training images per class (log x), the baseline dashed",
    "transfer.png": "heat map of probe top-1 over the train × test grid (--all)",
    "training_curves.png": "loss and accuracy per epoch of the MLP head (--classifier mlp)",
    "model/": "the adjusted network: IR + ONNX + Keras with the trained head (model-<train>/ with --all)",
    "probe.json": "every number and setting (written last)",
}


def _written(name: str, results: dict) -> bool:
    """Whether this run wrote the file ``name`` of :data:`FILES` (a report lists only those)."""
    if name in ("probe.md", "probe.json"):
        return True
    if name == "model/":
        return bool(results.get("models"))
    return any(Path(f).name == name or Path(f).name.startswith(Path(name).stem + "-")
               for f in results.get("files_written", ()))


def _pair_dir(out_dir: Path, results: dict, train: str, test: str) -> Path:
    return out_dir if results["mode"] != "grid" else out_dir / f"{train}-to-{test}"


def per_class_csv(path: Path, class_names, arrays: dict) -> Path:
    header = ["category", "label", "images", "top1_correct", "top1_accuracy", "top5_correct", "top5_accuracy",
              "top1_ci95_low", "top1_ci95_high"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for i, name in enumerate(class_names):
        n, h1, h5 = int(arrays["images"][i]), int(arrays["hits1"][i]), int(arrays["hits5"][i])
        lo, hi = wilson_interval(h1, n)
        fmt = (lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6f}")
        w.writerow([name, i, n, h1, fmt(h1 / n if n else None), h5, fmt(h5 / n if n else None), fmt(lo), fmt(hi)])
    return write_text_atomic(path, buf.getvalue())


def few_shot_title(pairs: list[dict]) -> str:
    return f"Few-shot probe on {pairs[0]['layer'] if pairs else ''} features"


def transfer_title(pairs: list[dict]) -> str:
    return f"Probe top-1 (%), {pairs[0]['classifier']} on {pairs[0]['layer']}"


def plot_few_shot(path: Path, pairs: list[dict], title: str | None = None) -> Path:
    """Mean test top-1 ± std over seeds against shots per class (log x), one line per pair; each
    pair's muted baseline as a dashed line in the same colour, chance dotted. ``title``: default
    :func:`few_shot_title`."""
    fig = new_figure(6.5, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    colours = ["#3b7dd8", "#d8643b", "#3bb36b", "#9b59b6", "#c0a030", "#555555"]
    ticks: dict[float, str] = {}
    for i, p in enumerate(pairs):
        rows = [r for r in p["few_shot"] if r["top1_mean"] is not None]
        if not rows:
            continue
        colour = colours[i % len(colours)]
        xs = [r["shots"] if r["shots"] != "all" else p["num_train"] / max(p["num_classes"], 1) for r in rows]
        order = np.argsort(xs, kind="stable")
        rows, xs = [rows[i] for i in order], [xs[i] for i in order]
        ys = np.array([100 * r["top1_mean"] for r in rows])
        err = np.array([100 * (r["top1_std"] or 0.0) for r in rows])
        label = p["modality"] if p["train_modality"] == p["modality"] else f"{p['train_modality']} → {p['modality']}"
        line = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color=colour, label=f"probe, {label}")
        for artist in line.lines[0:1]:  # a point at 100 % drawn whole, not cut by the frame
            artist.set_clip_on(False)
        for r, xv in zip(rows, xs):
            ticks[float(xv)] = str(r["shots"]) if r["shots"] != "all" else f"all\n({xv:.0f})"
        if p.get("baseline_top1") is not None:
            ax.axhline(100 * p["baseline_top1"], color=colour, linestyle="--", linewidth=0.9,
                       label=f"unadjusted baseline (muted), {p['modality']}")
    if pairs:  # drawn last and on top: it can coincide with a probe line (random features)
        chance = 100 * pairs[0]["chance_top1"]
        ax.axhline(chance, color="#c00000", linestyle=(0, (2, 2)), linewidth=1.6, zorder=5,
                   label=f"chance ({chance:.1f} %)")
    ax.set_xscale("log")
    if ticks:
        ax.set_xticks(sorted(ticks), [ticks[t] for t in sorted(ticks)])
        from matplotlib.ticker import NullLocator
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("training images per class (all: every training image, mean per class)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_ylim(0, 103)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(title or few_shot_title(pairs), fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return save_png(fig, path)


def plot_transfer(path: Path, pairs: list[dict], title: str | None = None) -> Path:
    """Heat map of probe top-1: rows = training modality, columns = test modality (``title``:
    default :func:`transfer_title`)."""
    trains = list(dict.fromkeys(p["train_modality"] for p in pairs))
    tests = list(dict.fromkeys(p["modality"] for p in pairs))
    grid = np.full((len(trains), len(tests)), np.nan)
    for p in pairs:
        grid[trains.index(p["train_modality"]), tests.index(p["modality"])] = 100 * p["top1"]
    fig = new_figure(1.3 * len(tests) + 2.5, 1.0 * len(trains) + 1.8)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100)
    for i in range(len(trains)):
        for j in range(len(tests)):
            if not math.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center",
                        color="white" if grid[i, j] < 60 else "black", fontsize=9)
    ax.set_xticks(range(len(tests)))
    ax.set_xticklabels(tests)
    ax.set_yticks(range(len(trains)))
    ax.set_yticklabels(trains)
    ax.set_xlabel("test modality")
    ax.set_ylabel("training modality")
    ax.set_title(title or transfer_title(pairs), fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label("top-1 (%)")
    return save_png(fig, path)


def plot_curves(path: Path, curves: dict, title: str = "") -> Path:
    fig = new_figure(9, 3.6)
    epochs = np.arange(1, len(curves["train_loss"]) + 1)
    for col, (key, label) in enumerate((("loss", "cross-entropy"), ("top1", "top-1"))):
        ax = fig.add_subplot(1, 2, col + 1)
        ax.plot(epochs, curves[f"train_{key}"], label="training")
        ax.plot(epochs, curves[f"val_{key}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_png(fig, path)


def markdown(results: dict) -> str:
    pairs = results["pairs"]
    m = results["model"]
    lines = [f"# Probe: {results['classifier']} on `{results['layer']}` features", "",
             *identity.markdown_lines(results.get("weights") or {}),
             *decoding_lines(bool(results.get("settings", {}).get("draft"))),
             f"Base model `{m['name']}` (fingerprint `{m['fingerprint'][:16]}…`) from `{m['dir']}`, frozen; "
             f"a new classifier is trained on its `{results['layer']}` features of the training images and "
             f"scored on the test images. Mode: {results['mode']}"
             + (f" ({results['settings']['cv']}-fold, stratified)" if results["mode"] == "cv" else "") + ".", "",
             "| train → test | images (train / test) | classes | chance top-1 | unadjusted baseline top-1 (muted) "
             "| probe top-1 (95 % CI) | probe top-5 | mean class acc. | C |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in pairs:
        lines.append(f"| {p['train_modality']} → {p['modality']} | {p['num_train']} / {p['num_test']} | "
                     f"{p['num_classes']} | {pct(p['chance_top1'])} | {pct(p['baseline_top1'])} | "
                     f"**{pct(p['top1'])}** {pct_interval(p['top1_ci'])} | {pct(p['top5'])} | "
                     f"{pct(p['mean_class_accuracy'])} | {'–' if p['C'] is None else format(p['C'], 'g')} |")
    lines += ["", "What the numbers mean: *chance* is a uniform guess among the trained classes; the *baseline* "
              "is the unadjusted network (its own 365-way head, labels muted to the data set's categories, "
              "categories without a model label left out) on the same test images; the *probe* is the "
              "frozen network with a head trained on this data set's categories. "
              + ("C (the inverse L2 strength) was chosen on a validation split carved from the training "
                 "images, then the head was refit on all of them." if results["classifier"] == "logistic" else
                 "The MLP head (Dense 256 + ReLU + softmax, RMSprop) stopped early on a validation split "
                 "carved from the training images.")]
    for p in pairs:
        sweep = p.get("sweep") or {}
        if sweep.get("val_top1_flat"):
            lines.append(f"- {p['train_modality']} → {p['modality']}: every C tried gave the same validation top-1, "
                         f"so the smallest, C = {p['C']:g} (the strongest regularisation), was kept: the choice "
                         "says nothing about the best C.")
        elif sweep.get("C_at_edge"):
            lines.append(f"- {p['train_modality']} → {p['modality']}: the chosen C = {p['C']:g} is the "
                         f"{sweep['C_at_edge']} value tried, even after the grid was extended past its end: a better "
                         "C may lie further out (give --C to choose it).")
        if p.get("probe_top1_on_baseline_images") is not None and p["baseline_num_scored"] != p["num_test"]:
            lines.append(f"- {p['train_modality']} → {p['modality']}: on the {p['baseline_num_scored']} test "
                         f"images the baseline can score, the probe reaches {pct(p['probe_top1_on_baseline_images'])}.")
        if p.get("test_images_of_untrained_categories"):
            lines.append(f"- {p['train_modality']} → {p['modality']}: test images of categories without training "
                         "images, left out: " + ", ".join(f"{k} ({v})" for k, v in
                                                         p["test_images_of_untrained_categories"].items()) + ".")
        if p.get("cv"):
            cv = p["cv"]
            lines.append(f"- {cv['folds']}-fold cross-validation: top-1 per fold "
                         + ", ".join(pct(v) for v in cv["top1"])
                         + f"; mean {pct(cv['top1_mean'])} ± {100 * cv['top1_std']:.2f} points (std).")
    shots = [p for p in pairs if p["few_shot"]]
    if shots:
        lines += ["", "## Few-shot", "",
                  "k training images per class drawn at random (seeded) from the training images outside the "
                  "validation split, the head trained "
                  + ("at the chosen C" if results["classifier"] == "logistic" else "with early stopping")
                  + "; mean ± std of test top-1 over the seeds.", "",
                  "| train → test | " + " | ".join(str(r["shots"]) for r in shots[0]["few_shot"]) + " |",
                  "|---|" + "---:|" * len(shots[0]["few_shot"])]
        for p in shots:
            cells = [("–" if r["top1_mean"] is None else f"{100 * r['top1_mean']:.1f} ± {100 * r['top1_std']:.1f}")
                     for r in p["few_shot"]]
            lines.append(f"| {p['train_modality']} → {p['modality']} | " + " | ".join(cells) + " |")
    if results.get("not_trained_on"):
        lines += ["", "Not trained on: " + "; ".join(f"{k}: {v}" for k, v in results["not_trained_on"].items())]
    lines += ["", "## Files", ""] + [f"- `{n}`: {d}" for n, d in FILES.items() if _written(n, results)] + [""]
    lines += run_lines(results.get("run"))
    return "\n".join(lines)


def write_probe(out_dir: Path, results: dict, extras: dict) -> dict[str, Path]:
    """Every file but ``probe.md`` and ``probe.json`` (:func:`write_json_last`); returns name → path.
    Chart titles carry the random-weights banner of ``results["weights"]``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    pairs = results["pairs"]
    weights = results.get("weights") or {}
    draft = bool(results.get("settings", {}).get("draft"))

    def titled(title: str) -> str:  # the banner on random weights; the decoding when it was fast
        return identity.titled(decoding_title(title, draft), weights)
    for p in pairs:
        extra = extras[(p["train_modality"], p["modality"])]
        folder = _pair_dir(out_dir, results, p["train_modality"], p["modality"])
        tag = "" if folder == out_dir else f"{folder.name}/"
        files[f"{tag}per_class.csv"] = per_class_csv(folder / "per_class.csv", extra["class_names"], extra["arrays"])
        files[f"{tag}confusion.png"] = plot_confusion(
            folder / "confusion.png", extra["arrays"]["confusion"], extra["class_names"],
            title=titled(f"probe {p['train_modality']} → {p['modality']}: confusion matrix "
                         f"({len(extra['class_names'])} classes, rows normalised)"),
            xlabel="predicted category (probe top-1)")
    curves = {p["train_modality"]: extras[(p["train_modality"], p["modality"])]["curves"] for p in pairs}
    for train, c in curves.items():
        if c:
            name = "training_curves.png" if len(curves) == 1 else f"training_curves-{train}.png"
            files[name] = plot_curves(out_dir / name, c,
                                      title=titled(f"MLP head trained on {train}"))
    shot_pairs = [p for p in pairs if p["few_shot"] and (results["mode"] != "grid" or p["train_modality"] == p["modality"])]
    if shot_pairs:
        files["few_shot.png"] = plot_few_shot(out_dir / "few_shot.png", shot_pairs,
                                            titled(few_shot_title(shot_pairs)))
    if results["mode"] == "grid":
        files["transfer.png"] = plot_transfer(out_dir / "transfer.png", pairs,
                                              titled(transfer_title(pairs)))
    return files


def write_json_last(out_dir: Path, results: dict) -> dict[str, Path]:
    """``probe.md`` and ``probe.json``, once ``results`` is complete (its ``run`` block included)."""
    md = write_text_atomic(out_dir / "probe.md", markdown(results))
    path = out_dir / "probe.json"
    write_json(path, json_safe(results))
    return {"probe.md": md, "probe.json": path}
