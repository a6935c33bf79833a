"""``explain --from-run``: where the network looks on each modality, from a baseline run.

Reads the run's ``predictions.csv`` files (``RUN/predictions.csv`` for a one-modality
run, ``RUN/<modality>/predictions.csv`` for several; the modality's name from the
``metrics.json`` beside it) — ``path, true, pred1..pred5, prob1..prob5`` with the
data set's category names and the muted predictions (see
:mod:`crossmodal.evaluate.baseline.job`).

Per category, per modality (natural, clip art, sketch first), the ``per_class``
most confident **correct** (``true`` among ``pred1``'s names) and the ``per_class``
most confident **wrong** predictions are explained for their predicted class
``pred1`` (mapped back onto the model's label through the packaged alias table; a
category without a label falls back to the model's own top-1). Category by category,
so memory holds one category's images at a time.

Files: ``categories/<category>.png`` (rows: modality × correct / wrong),
``mean_maps.png`` (the mean map per modality over the maps computed), ``cams.npz``
(keys ``<modality>/<stem>``), ``explain.json``, ``explain.md`` (written last).
``explain.json`` names the baseline run read (``baseline_run``), the weights' identity
(``weights``, ``banner``) and carries the ``run`` block of this run
(:class:`crossmodal.reports.runs.RunRecord`); on random weights the banner tops
``explain.md`` and every figure's title.
"""
from __future__ import annotations

import csv
import difflib
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from crossmodal.ir import identity
from crossmodal.errors import InputError
from crossmodal.data.datasets import IMAGE_MODALITIES
from crossmodal.explain import render
from crossmodal.explain.job import batches
from crossmodal.io.atomic import check_output_dir, write_text_atomic
from crossmodal.reports.runs import RunRecord
from crossmodal.reports.text import decoding, decoding_lines
from crossmodal.io.runs import staged, utc_now

NEEDED = ("path", "true", "pred1", "prob1")


def find_runs(run_dir: Path) -> list[tuple[str, Path]]:
    """``[(modality, predictions.csv)]``, natural / clipart / sketch first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError("baseline run folder not found", run_dir)
    folders = [run_dir] if (run_dir / "predictions.csv").is_file() else \
        [d for d in sorted(run_dir.iterdir()) if (d / "predictions.csv").is_file()]
    if not folders:
        raise InputError("no predictions.csv here or in its sub-folders; run `crossmodal baseline` first", run_dir)
    runs = []
    for d in folders:
        name = d.name
        try:
            name = json.loads((d / "metrics.json").read_text()).get("modality") or name
        except (OSError, ValueError):
            pass
        runs.append((str(name), d / "predictions.csv"))
    order = {m: i for i, m in enumerate(IMAGE_MODALITIES)}
    return sorted(runs, key=lambda r: (order.get(r[0], len(order)), r[0]))


def read_predictions(path: Path) -> list[dict]:
    """Rows of a ``predictions.csv`` with ``prob1`` as a float and ``correct`` added."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in NEEDED if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"not a baseline predictions.csv (no column {', '.join(missing)})", path)
            rows = []
            for r in reader:
                try:
                    prob = float(r["prob1"] or "nan")
                except ValueError:
                    raise InputError(f"prob1 {r['prob1']!r} is not a number", path) from None
                rows.append({"path": r["path"], "true": r["true"], "pred": r["pred1"], "prob": prob,
                             "correct": r["true"] in r["pred1"].split("|")})
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"unreadable ({exc.__class__.__name__})", path) from None
    return rows


def select(rows: Sequence[dict], per_class: int) -> dict[str, dict[str, list[dict]]]:
    """category → {"correct": [...], "wrong": [...]}, each the ``per_class`` most confident."""
    out: dict[str, dict[str, list[dict]]] = {}
    for r in rows:
        out.setdefault(r["true"], {"correct": [], "wrong": []})["correct" if r["correct"] else "wrong"].append(r)
    for groups in out.values():
        for key in groups:
            groups[key] = sorted(groups[key], key=lambda r: -np.nan_to_num(r["prob"], nan=-1.0))[:per_class]
    return out


def run_from_run(model, run_dir: Path, out_dir: Path, *, per_class: int = 4, categories: Sequence[str] | None = None,
                 method: str = "auto", layer: str | None = None, batch_size: int = 8,
                 on_progress: Callable[[int, int], None] | None = None,
                 on_step: Callable[[str], None] | None = None) -> dict:
    from crossmodal.data.labels import build_mapping, load_aliases

    step = on_step or (lambda msg: None)
    started = utc_now()
    out_dir = check_output_dir(Path(out_dir))
    runs = find_runs(run_dir)
    chosen = {m: select(read_predictions(p), per_class) for m, p in runs}
    every = sorted({c for sel in chosen.values() for c in sel})
    if categories:
        unknown = [c for c in categories if c not in every]
        if unknown:
            close = difflib.get_close_matches(unknown[0], every, n=5, cutoff=0.6)
            raise InputError(f"category {unknown[0]!r} is not in the run's predictions"
                             + (f"; close matches: {', '.join(close)}" if close else ""), run_dir)
        every = [c for c in every if c in categories]
    method, chosen_layer, head = model.explain_setup(method, layer)
    predicted = sorted({n for sel in chosen.values() for g in sel.values() for rows in g.values()
                        for r in rows for n in r["pred"].split("|") if n} | set(every))
    try:
        mapping = build_mapping(model.labels, predicted, load_aliases())
    except InputError:  # the packaged aliases name labels this model lacks: names only
        mapping = build_mapping(model.labels, predicted, {})
    index = {normal: i for i, normal in enumerate(mapping.target_categories)}
    from crossmodal.data.labels import normalise

    def target(pred: str) -> int:
        first = pred.split("|")[0]
        src = mapping.target_to_source[index[normalise(first)]] if first else None
        return -1 if src is None else int(src)

    total = sum(len(rows) for sel in chosen.values() for c in every for rows in sel.get(c, {}).values())
    weights = identity.identity(model.graph)
    record = RunRecord("explain --from-run", {"model_dir": str(model.model_dir), "baseline_run": str(run_dir),
                                              "out_dir": str(out_dir), "method": method, "layer": chosen_layer,
                                              "per_class": per_class, "categories": list(every),
                                              "batch_size": batch_size}, weights, started=started)
    if identity.banner(model.graph):
        step(identity.banner(model.graph).upper())
    step(f"{method} on layer {chosen_layer!r}; {len(every)} categories × {len(runs)} modalities, {total} images")
    labels = model.labels
    H, W = model.input_size
    with staged(out_dir, "explain") as stage:  # all files or none (crossmodal.io.runs)
        sums = {m: (np.zeros((H, W), np.float64), 0) for m, _ in runs}
        if on_progress:  # the bar starts when the work does
            on_progress(0, total)
        writer = render.NpzWriter(stage / "cams.npz")
        failures, figures, records, done, grid = [], {}, [], 0, (0, 0)
        try:
            for cat in every:
                fig_rows = []
                for modality, _ in runs:
                    groups = chosen[modality].get(cat)
                    if not groups:
                        continue
                    for kind in ("correct", "wrong"):
                        items = groups[kind]
                        cells = []
                        for chunk in batches(items, batch_size):
                            batch = model.load([r["path"] for r in chunk], on_error="skip")
                            failures += [(f"{modality}: {p}", why) for p, why in batch.failures]
                            by_path = {r["path"]: r for r in chunk}
                            rows = [by_path[s] for s in batch.sources]
                            if rows:
                                classes = np.array([[target(r["pred"])] for r in rows], np.int64)
                                res = model.cam_batch(batch, classes, 1, method, chosen_layer, head)
                                grid = res.grid
                                pics = model.display(batch.x)
                                for i, r in enumerate(rows):
                                    key = writer.unique(f"{modality}/{Path(r['path']).stem}")
                                    writer.add(key, res.maps[i, 0])
                                    total_sum, n = sums[modality]
                                    sums[modality] = (total_sum + res.maps[i, 0], n + 1)
                                    label = labels[int(res.targets[i, 0])]
                                    cells.append({"image": pics[i], "cam": res.maps[i, 0], "correct": r["correct"],
                                                  "title": f"{r['pred'][:22]} {r['prob']:.2f}"})
                                    records.append({"modality": modality, "category": cat, "kind": kind,
                                                    "path": r["path"], "key": key, "predicted": r["pred"],
                                                    "prob": r["prob"], "map_class": label,
                                                    "map_prob": float(res.scores[i, 0])})
                            done += len(chunk)
                            if on_progress:
                                on_progress(done, total)
                        fig_rows.append((f"{modality}\n{kind}", cells))  # an empty row says "none"
                if any(cells for _, cells in fig_rows):
                    png = f"categories/{render.safe_name(cat)}.png"
                    render.category_png(stage / png, cat, fig_rows, per_class, identity.banner(model.graph),
                                        model.draft)
                    figures[cat] = png
            if not records:
                raise InputError("none of the run's selected images could be read: "
                                 + "; ".join(f"{p}: {r}" for p, r in failures[:3]), run_dir)
            writer.commit()
        finally:
            writer.close()
        means = {m: (s / max(n, 1), n) for m, (s, n) in sums.items() if n}
        render.mean_maps_png(stage / "mean_maps.png", means, identity.banner(model.graph), model.draft)
        summary = {"format": "crossmodal-explain-from-run", "model": str(model.model_dir),
                   "baseline_run": str(run_dir),
                   "weights": {**weights, "description": identity.describe(weights)},
                   "banner": identity.banner(weights), "decoding": decoding(model.draft),
                   "method": method, "layer": chosen_layer, "grid": list(grid), "crop": [H, W],
                   "images": len(records), "per_class": per_class, "modalities": [m for m, _ in runs],
                   "categories": figures, "failed": [{"path": p, "reason": r} for p, r in failures],
                   "mean_map_images": {m: n for m, (_, n) in means.items()}, "maps": records,
                   "run": record.block()}
        write_text_atomic(stage / "explain.json", json.dumps(summary, indent=1) + "\n")
        write_text_atomic(stage / "explain.md", from_run_markdown(
            summary, records, [*identity.markdown_lines(model.graph), *decoding_lines(model.draft)]))
    return summary


def from_run_markdown(summary: dict, records: Sequence[dict], weights_lines: Sequence[str] = ()) -> str:
    s = summary
    lines = ["# crossmodal explain: across modalities", "", *weights_lines,
             f"Baseline run `{s['baseline_run']}`, model `{s['model']}`; **{s['method']}** on layer `{s['layer']}`. "
             f"Per category and modality, the {s['per_class']} most confident correct and wrong predictions, "
             "each explained for its (muted) predicted class; titles: prediction and its probability "
             "(green correct, red wrong).", "",
             "## Mean map per modality", "", "![mean maps](mean_maps.png)", "",
             "| modality | maps | correct | wrong |", "|---|---|---|---|"]
    for m in s["modalities"]:
        rs = [r for r in records if r["modality"] == m]
        lines.append(f"| {m} | {len(rs)} | {sum(r['kind'] == 'correct' for r in rs)} | "
                     f"{sum(r['kind'] == 'wrong' for r in rs)} |")
    lines += ["", "## Categories", ""]
    for cat, png in s["categories"].items():
        lines += [f"### {render.md_escape(cat)}", "", f"![{render.md_escape(cat)}]({png})", ""]
    if s["failed"]:
        lines += ["## Skipped (did not decode)", ""]
        lines += [f"- `{render.md_escape(f['path'])}`: {render.md_escape(f['reason'])}" for f in s["failed"]]
    from crossmodal.reports.text import run_lines
    lines += ["", *run_lines(s.get("run"))]
    return "\n".join(lines) + "\n"
