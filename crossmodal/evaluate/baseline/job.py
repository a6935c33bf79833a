"""The baseline job: how a photo-trained scene CNN does, unadjusted, on each CMPlaces modality.

For each modality: resolve the data set → map the model's labels onto its
categories (alias table, ``--label-map``) → one pass over the images (logits and
features, cached: :func:`~crossmodal.evaluate.features.extract_features`) →
label-muting scores (:func:`~crossmodal.data.labels.score`) → metrics
(:mod:`~crossmodal.evaluate.metrics`) → files (:mod:`~crossmodal.evaluate.baseline.reports`).

Every modality's input is checked before any image is decoded, so bad input
(unknown modality, missing root or list, a categories file the list disagrees
with, a model without labels, nothing left to score) stops the job with one
:class:`~crossmodal.errors.InputError` and writes nothing.

Files in the output folder of a modality (``out`` itself for one modality,
``out/<modality>/`` for several, with the comparison in ``out``), each written
atomically, ``metrics.json`` last and only when everything else succeeded (an
older ``metrics.json`` there is removed first):

* ``metrics.json`` — every number, the settings, the backend and device that ran,
  failed and missing images, the cache used;
* ``per_class.csv`` — per class: images, top-1/top-5 hits and accuracy, Wilson
  95 % interval, the model label it maps to and the categories sharing it;
* ``predictions.csv`` — per scored image: ``path, true, pred1..pred5,
  prob1..prob5``. Names are the data set's categories; predictions are muted
  (only labels that map to a category compete); a label shared by several
  categories is written ``a|b``; ``prob`` is the softmax over the kept (muted)
  logits only, so the five values are comparable across images of one run but are
  not the network's own 365-way probabilities;
* ``report.md``, ``confusion.png``, ``per_class.png``;
* with several modalities: ``comparison.md``, ``comparison.json``,
  ``accuracy_by_modality.png`` in ``out``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from crossmodal.ir import identity
from crossmodal.ir.consistency import check as check_consistency
from crossmodal.ir.graph import Graph
from crossmodal.ir.store import load_graph
from crossmodal.errors import InputError
from crossmodal.evaluate.baseline import reports
from crossmodal.models.published_accuracy import reference_for
from crossmodal.reports import figures, text
from crossmodal.data.datasets import Dataset, modality_names, resolve_modality
from crossmodal.data.labels import (
    LabelMapping, applicable_aliases, build_mapping, load_aliases, merge_aliases, score,
)
from crossmodal.evaluate.metrics import ClassificationMetrics, classification_metrics, muted_softmax, wilson_interval
from crossmodal.io.atomic import check_output_dir, write_text_atomic
from crossmodal.reports.runs import RunRecord
from crossmodal.io.runs import staged, utc_now

TOP_K = 5
FORMAT = "crossmodal-baseline"

FILES = {
    "per_class.csv": "per-class images, hits, accuracy and 95 % interval",
    "predictions.csv": "per image: true category, muted top-5 predictions and their probabilities",
    "confusion.png": "confusion matrix, rows normalised, categories in data set order",
    "per_class.png": "the best and worst classes by top-1 accuracy",
    "report.md": "this summary",
    "metrics.json": "every number and setting of the run (written last)",
}


@dataclass
class Prepared:
    """A modality whose input has been checked: the data set to run and the label mapping."""

    modality: str
    dataset: Dataset
    mapping: LabelMapping
    available: int       # images found (listed and present) before --limit
    out_dir: Path
    unused_user_entries: tuple[str, ...] = ()  # --label-map rows naming no category of this data set


@dataclass
class BaselineResult:
    modality: str
    out_dir: Path
    metrics: dict
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class BaselineRun:
    results: list[BaselineResult]
    comparison: dict[str, Path] = field(default_factory=dict)


def limit_records(dataset: Dataset, limit: int | None) -> Dataset:
    """At most ``limit`` records, evenly spaced over the list (deterministic, all categories touched)."""
    n = len(dataset.records)
    if limit is None or limit >= n:
        return dataset
    if limit < 1:
        raise InputError(f"--limit must be at least 1, not {limit}")
    idx = (np.arange(limit) * n) // limit
    return replace(dataset, records=[dataset.records[i] for i in idx])


def model_labels(graph: Graph, model_dir: Path) -> list[str]:
    if graph.labels is None or not graph.labels.names:
        raise InputError("the model has no class labels; convert it again with "
                         "--labels categories_places365.txt", model_dir)
    return list(graph.labels.names)


def prepare(model_dir: Path, graph: Graph, modality: str, *, out_dir: Path, aliases, unmapped: str,
            limit: int | None, **data) -> Prepared:
    """Resolve and check one modality's input (no image is decoded)."""
    dataset = resolve_modality(modality, **data)
    available = len(dataset.records)
    dataset = limit_records(dataset, limit)
    mapping = build_mapping(model_labels(graph, model_dir), dataset.categories, aliases)
    if not dataset.records:
        raise InputError(f"no images to evaluate for modality {dataset.name!r}: "
                         f"{len(dataset.missing)} listed files are missing", dataset.root)
    if unmapped == "exclude":
        mapped = sum(1 for r in dataset.records if mapping.target_to_source[r.label] is not None)
        if mapped == 0:
            cats = sorted({r.category for r in dataset.records})
            raise InputError(f"no images left to score for modality {dataset.name!r}: all "
                             f"{len(dataset.records)} belong to categories without a model label "
                             f"({', '.join(cats[:8])}{', …' if len(cats) > 8 else ''}); map them with "
                             f"--label-map or score them as errors with --unmapped keep")
    return Prepared(dataset.name, dataset, mapping, available, out_dir)


def per_class_rows(m: ClassificationMetrics, mapping: LabelMapping) -> list[dict]:
    """Rows of ``per_class.csv`` (class order = data set category order)."""
    rows = []
    names = mapping.target_categories
    for i, t in enumerate(m.classes):
        t = int(t)
        src = mapping.target_to_source[t]
        images = int(m.per_class_images[i])
        h1, h5 = int(m.per_class_top1_hits[i]), int(m.per_class_top5_hits[i])
        lo, hi = wilson_interval(h1, images)
        status = ("scored" if src is not None else "unmapped, scored as errors") if images else \
            "predicted only (no images)"
        sources = mapping.target_sources[t] if mapping.target_sources else (() if src is None else (src,))
        shared = list(dict.fromkeys(names[o] for s in sources for o in mapping.source_to_targets.get(s, ())
                                    if o != t))
        rows.append({
            "category": names[t], "label": t, "status": status, "images": images,
            "top1_correct": h1, "top1_accuracy": h1 / images if images else float("nan"),
            "top5_correct": h5, "top5_accuracy": h5 / images if images else float("nan"),
            "top1_ci95_low": lo, "top1_ci95_high": hi,
            "source_label": "|".join(mapping.source_labels[s] for s in sources),
            "shares_source_with": "|".join(shared),
        })
    return rows


def _versions() -> dict:
    from crossmodal._version import __version__
    from crossmodal.convert.pipeline import framework_versions
    return {"crossmodal": __version__, **framework_versions()}


def evaluate(prep: Prepared, model_dir: Path, graph: Graph, fingerprint: str, features, *,
             unmapped: str, settings: dict, label_map: Path | None, t_start: float,
             record: RunRecord | None = None) -> BaselineResult:
    """Score one modality's features and write its files (``metrics.json`` last).

    ``record``: the run's :class:`~crossmodal.reports.runs.RunRecord` (the ``run`` block of
    ``metrics.json``); charts and the report carry the random-weights banner when it applies.
    """
    mapping, dataset, out = prep.mapping, prep.dataset, prep.out_dir
    if len(features) == 0:
        example = f" (e.g. {features.failed[0][0]}: {features.failed[0][1]})" if features.failed else ""
        raise InputError(f"none of the {len(dataset.records)} images of modality {prep.modality!r} "
                         f"could be decoded{example}")
    logits = features["logits"]
    scores = score(logits, features.labels, mapping, unmapped=unmapped, k=TOP_K)
    if scores.n_scored == 0:
        raise InputError(f"no images left to score for modality {prep.modality!r}: every image that "
                         f"decoded belongs to a category without a model label")
    met = classification_metrics(scores, features.labels)
    names = list(mapping.target_categories)
    inc = np.flatnonzero(scores.included)

    # predictions: muted top-k as category names, softmax over the kept logits
    kept = mapping.kept_sources
    probs_all = muted_softmax(logits[inc], kept)
    cols = np.searchsorted(kept, scores.pred[inc])
    probs = np.take_along_axis(probs_all, cols, axis=1) if cols.size else np.zeros((len(inc), 0))
    targets = scores.predicted_targets(muted=True)
    predicted = [["|".join(group) for group in targets[i]] for i in inc]
    rows = per_class_rows(met, mapping)
    class_names = [names[int(t)] for t in met.classes]

    files = {name: out / name for name in FILES}
    reports.write_per_class_csv(files["per_class.csv"], rows)
    reports.write_predictions_csv(files["predictions.csv"], [features.paths[i] for i in inc],
                                  [names[int(features.labels[i])] for i in inc], predicted, probs, k=TOP_K)
    weights, draft = identity.identity(graph), bool(settings.get("draft"))
    figures.plot_confusion(files["confusion.png"], met.confusion, class_names,
                           title=text.decoding_title(identity.titled(
                               f"{prep.modality}: confusion matrix ({len(class_names)} classes, rows normalised)",
                               weights), draft))
    figures.plot_per_class(files["per_class.png"], class_names, met.per_class_top1, met.per_class_images,
                           overall=met.top1, chance=met.chance["chance_top1"],
                           title=text.decoding_title(identity.titled(f"{prep.modality}: per-class top-1 accuracy",
                                                                     weights), draft))

    ips, ips_source = features.stats.get("images_per_second"), "this run"
    if ips is None:
        ips, ips_source = features.stats.get("cache_images_per_second"), "cache"
    # what ran: this run's backend, or (everything cached) the one that filled the cache
    backend_info = features.backend or (features.cache_backends[-1] if features.cache_backends else {})
    metrics = text.json_safe({
        "format": FORMAT, "version": 1,
        "banner": identity.banner(weights),
        "weights": {**weights, "description": identity.describe(weights)},
        "modality": prep.modality, "split": settings["split"],
        "backend": backend_info.get("backend", settings["backend"]),
        "device": backend_info.get("device", "unknown"),
        "backend_info": backend_info, "features_from_cache": features.backend is None,
        "precision": backend_info.get("precision", settings.get("precision", "fp32")),
        "providers": backend_info.get("providers"),
        "decoding": text.decoding(draft),
        "model": {"dir": str(model_dir), "name": graph.name, "fingerprint": fingerprint,
                  "num_labels": len(mapping.source_labels), "preprocess": graph.preprocess.to_dict()},
        "dataset": {"root": str(dataset.root), "layout": dataset.layout, "origin": dataset.origin,
                    "num_categories": len(dataset.categories), "num_available": prep.available,
                    "num_missing": len(dataset.missing), "limit": settings.get("limit")},
        "num_images": len(dataset.records), "num_failed": len(features.failed),
        "num_decoded": len(features), "num_scored": met.n_scored,
        "num_classes_evaluated": met.num_classes_evaluated,
        "unmapped_policy": unmapped,
        "excluded_categories": dict(scores.left_out),
        "kept_unmapped_categories": dict(scores.kept_unmapped),
        **met.summary(),
        "images_per_second": ips, "images_per_second_source": ips_source if ips is not None else None,
        "shared_labels": {
            "rule": "a prediction of a label shared by several categories counts as correct for any of them",
            "groups": [{"source": s, "targets": list(ts)} for s, ts in mapping.shared_groups()],
            "images": scores.shared_images, "top1_hits": scores.shared_top1_hits,
        },
        "label_map": {"user_map": None if label_map is None else str(label_map),
                      "user_entries_unused": list(prep.unused_user_entries),
                      "aliases_used": dict(mapping.via_alias), "kept_sources": int(kept.size),
                      "categories_with_several_labels_or_synset_names": {c: list(ls) for c, ls in
                                                                         mapping.matches.items()},
                      "muted_sources": len(mapping.muted), "unmapped_categories": list(mapping.unmapped)},
        "reference": reference_for(graph.name, graph.num_classes),
        "failed_images": [{"path": str(p), "reason": r} for p, r in features.failed],
        "missing_files": [{"path": str(p), "reason": r} for p, r in dataset.missing],
        "cache": {"path": str(features.cache_path), "key": features.key,
                  "rows_computed": features.stats["computed"], "rows_from_cache": features.stats["from_cache"],
                  "filled_by": features.cache_backends},
        "settings": settings,
        "timings_s": {"features": round(features.stats["seconds"], 3),
                      "total": round(time.perf_counter() - t_start, 3)},
        "versions": _versions(),
        "files": FILES,
        "run": (record or RunRecord("baseline", settings, weights)).block(),
    })

    write_text_atomic(files["report.md"], reports.markdown_report(metrics, rows))
    text.write_json(files["metrics.json"], metrics)
    return BaselineResult(prep.modality, out, metrics, files)


def run_baseline(model_dir: str | os.PathLike, modalities: str | Sequence[str], *,
                 out_dir: str | os.PathLike, data_root=None, config=None, split: str = "val",
                 images=None, list_file=None, categories=None, backend: str = "onnx", device: str = "auto",
                 batch_size: int = 32, workers: int | None = None, threads: int | None = None,
                 limit: int | None = None, label_map=None, unmapped: str = "exclude",
                 features: Sequence[str] | None = None, cache_dir=None, draft: bool = False,
                 backend_options: dict | None = None, precision: str = "fp32", trt: bool = False,
                 on_step: Callable[[str], None] | None = None,
                 on_start: Callable[[str, int, int], None] | None = None,
                 on_batch: Callable[[str, int, int], None] | None = None) -> BaselineRun:
    """Evaluate ``model_dir`` on one or several modalities; see the module docstring.

    ``modalities``: a name or several (``"natural,clipart,sketch"`` or a list).
    ``images``/``list_file``/``categories`` override the data set of a single
    modality. ``features``: feature layers cached beside the logits (``fc7``,
    ``pool5``) for later use (retrieval). ``cache_dir``: feature cache folder
    (default ``$CROSSMODAL_CACHE`` or ``<out>/cache``; the fp16 ONNX model and TensorRT engines go
    there too when the model folder is read-only). ``precision``: fp32, fp16, bf16
    (:mod:`crossmodal.runtime.precision`); ``trt``: ONNX Runtime's TensorRT provider first.
    ``backend_options``: passed to
    :func:`~crossmodal.runtime.engine.open_engine` (e.g. ``{"spinning": True}``). Progress: ``on_start(modality,
    done, total)``, ``on_batch(modality, done, total)``; notes go to ``on_step``.
    """
    from crossmodal.runtime.devices import check_device
    from crossmodal.runtime.engine import BACKENDS, SharedEngine
    from crossmodal.evaluate.feature_cache import model_fingerprint, rollback_new_caches, run_cache_dir

    t_start = time.perf_counter()
    started = utc_now()
    step = on_step or (lambda msg: None)
    names = modality_names(modalities)
    if not names:
        raise InputError("no modality given; use e.g. --modality sketch or natural,clipart,sketch")
    if len(names) > 1 and any(v is not None for v in (images, list_file, categories)):
        raise InputError("--images, --list and --categories describe one data set; give a single "
                         "--modality with them (or use --data-root / --config for several)")
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if unmapped not in ("exclude", "keep"):
        raise InputError(f"--unmapped must be 'exclude' or 'keep', not {unmapped!r}")
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, not {batch_size}")
    device = check_device(device)
    from crossmodal.runtime.precision import check_precision, unsupported
    precision = check_precision(precision)
    if unsupported(backend, precision):
        raise InputError(unsupported(backend, precision))
    if trt and backend != "onnx":
        raise InputError(f"--trt is for the onnx backend, not {backend}")
    model_dir, out_dir = Path(model_dir), check_output_dir(Path(out_dir))
    graph = load_graph(model_dir)
    check_consistency(graph, model_dir)
    source_labels = model_labels(graph, model_dir)
    layers = list(dict.fromkeys(["logits", *(features if features is not None else [graph.feature_blob])]))
    for name in layers:
        graph.resolve(name)  # unknown feature names fail here, before any work
    aliases = applicable_aliases(load_aliases(), source_labels)
    user_aliases = load_aliases(label_map) if label_map is not None else {}
    aliases = merge_aliases(aliases, user_aliases)
    cache_dir = run_cache_dir(cache_dir, out_dir)

    # 1. check every modality's input before decoding a single image
    prepared = []
    for name in names:
        target = out_dir if len(names) == 1 else out_dir / name
        prep = prepare(model_dir, graph, name, out_dir=target, aliases=aliases, unmapped=unmapped, limit=limit,
                       data_root=data_root, config=config, split=split, images=images,
                       list_file=list_file, categories=categories)
        if prep.dataset.missing:
            step(f"{name}: {len(prep.dataset.missing)} listed files are missing (skipped, listed in the report)")
        prep.unused_user_entries = tuple(sorted(set(user_aliases) - set(prep.dataset.categories)))
        if prep.unused_user_entries:
            step(f"{name}: {len(prep.unused_user_entries)} --label-map rows name no category of this data set "
                 f"(a typo?): {', '.join(prep.unused_user_entries[:8])}")
        if prep.mapping.unmapped:
            step(f"{name}: {len(prep.mapping.unmapped)} categories have no model label "
                 f"({'left out' if unmapped == 'exclude' else 'scored as errors'})")
        prepared.append(prep)
    fingerprint = model_fingerprint(model_dir, graph)

    # 2. one backend for all modalities, opened when a modality needs computing
    onnx_options = {"trt": trt, "cache_dir": cache_dir, "log": step, "max_batch": batch_size} \
        if backend == "onnx" else {}
    backend_runner = SharedEngine(backend, model_dir, layers, device=device, graph=graph, threads=threads,
                                   precision=precision, on_open=lambda b: step(f"backend: {b.summary()}"),
                                   **onnx_options, **(backend_options or {}))

    settings = {"split": split, "backend": backend, "device_requested": device, "precision": precision,
                "trt": trt, "batch_size": batch_size,
                "workers": workers, "threads": threads, "limit": limit, "draft": draft,
                "features": layers, "unmapped": unmapped, "top_k": TOP_K,
                "label_map": None if label_map is None else str(label_map)}
    record = RunRecord("baseline", {**settings, "modalities": names, "model_dir": str(model_dir),
                                    "out_dir": str(out_dir), "cache_dir": str(cache_dir),
                                    "data_root": None if data_root is None else str(data_root),
                                    "config": None if config is None else str(config)},
                       identity.identity(graph), started=started)
    if identity.banner(graph):
        step(identity.banner(graph).upper())
    results = []
    with staged(out_dir, "baseline") as stage, rollback_new_caches(cache_dir, out_dir):
        _run_modalities(prepared, stage, out_dir, len(names) > 1, model_dir, graph, fingerprint, backend_runner,
                        layers, results, device=device, batch_size=batch_size, workers=workers, precision=precision,
                        cache_dir=cache_dir, draft=draft, threads=threads, step=step, on_start=on_start,
                        on_batch=on_batch, unmapped=unmapped, settings=settings, label_map=label_map,
                        t_start=t_start, record=record)
        run = BaselineRun(results)
        if len(results) > 1:
            run.comparison = {name: out_dir / name for name in write_comparison(stage, results)}
    return run


def _run_modalities(prepared, stage: Path, out_dir: Path, several: bool, model_dir, graph, fingerprint,
                    backend_runner, layers, results: list, *, device, batch_size, workers, cache_dir, draft,
                    threads, step, on_start, on_batch, unmapped, settings, label_map, t_start, record,
                    precision) -> None:
    """Features and files of every modality, written into ``stage``; ``results`` get the final paths."""
    from crossmodal.evaluate.features import extract_features

    try:
        for prep in prepared:
            final = prep.out_dir
            prep.out_dir = stage / final.relative_to(out_dir)
            step(f"{prep.modality}: {len(prep.dataset.records)} images, "
                 f"{len(prep.dataset.categories)} categories ({prep.dataset.layout})")
            fs = extract_features(
                model_dir, prep.dataset, backend_runner, layers, device=device, batch_size=batch_size,
                workers=workers, cache_dir=cache_dir, draft=draft, threads=threads, log=step, read=["logits"],
                precision=precision,
                on_start=(lambda d, t, m=prep.modality: on_start(m, d, t)) if on_start else None,
                on_batch=(lambda d, t, m=prep.modality: on_batch(m, d, t)) if on_batch else None)
            result = evaluate(prep, model_dir, graph, fingerprint, fs, unmapped=unmapped,
                              settings=settings, label_map=label_map, t_start=t_start, record=record)
            result.out_dir, prep.out_dir = final, final
            result.files = {name: final / name for name in result.files}
            results.append(result)
    finally:
        backend_runner.close()


def write_comparison(out_dir: Path, results: Sequence[BaselineResult]) -> dict[str, Path]:
    """``comparison.md``, ``accuracy_by_modality.png``, then ``comparison.json``, in ``out_dir``
    (the random-weights banner on the chart and report, the first run's ``run`` block in the JSON)."""
    runs = [r.metrics for r in results]
    files = {name: out_dir / name for name in ("comparison.md", "accuracy_by_modality.png", "comparison.json")}
    reference = runs[0].get("reference") if runs else None
    reports.plot_modalities(files["accuracy_by_modality.png"], runs, reference)
    write_text_atomic(files["comparison.md"], reports.comparison_markdown(runs, reference))
    rows = [{k: m.get(k) for k in reports.COMPARISON_KEYS} | {"metrics": str(r.files["metrics.json"])}
            for m, r in zip(runs, results)]
    first = runs[0] if runs else {}
    text.write_json(files["comparison.json"], {"format": "crossmodal-baseline-comparison", "version": 1,
                                                  "banner": first.get("banner"), "weights": first.get("weights"),
                                                  "decoding": first.get("decoding"),
                                                  "reference": reference, "runs": rows,
                                                  "run": first.get("run")})
    return files


def summary_line(m: dict) -> str:
    """One line per modality for the console."""
    ips = m.get("images_per_second")
    return (f"{m['modality']}: top-1 {text.pct(m['top1'])} {text.pct_interval(m['top1_ci95'])}, "
            f"top-5 {text.pct(m['top5'])} {text.pct_interval(m['top5_ci95'])}, "
            f"mean class {text.pct(m['mean_class_accuracy'])}, chance {text.pct(m['chance_top1'])} — "
            f"{m['num_scored']} images scored over {m['num_classes_evaluated']} classes, "
            f"{m['num_failed']} failed, {m['dataset']['num_missing']} missing — "
            f"{m['backend']}/{m['device']}" + (f", {ips:.1f} img/s" if ips else ""))
