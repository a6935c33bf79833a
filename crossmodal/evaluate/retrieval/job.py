"""The retrieval job: do a photo-trained network's features put a sketch near photos of its scene?

For each modality: resolve the data set (as ``baseline`` does) → features of one
layer (the network's feature blob by default: ``fc7``, ``avgpool`` …) from the feature cache, extracted on demand with the
same machinery (:func:`~crossmodal.evaluate.features.extract_features`; a cache
that ``baseline`` filled is reused, since the cache key does not depend on the
command) → for every (query, target) pair of modalities, category-level
retrieval scores (:func:`~crossmodal.evaluate.retrieval.metrics.retrieval_scores`):
mAP, P@k, R@k and their exact chance levels → files
(:mod:`~crossmodal.evaluate.retrieval.reports`).

Relevance is *same category name*: the CMPlaces modalities share their 205
categories by name, so a clip-art ``bedroom`` is relevant to a photo
``bedroom``, whatever each modality's category indices are. Within-modal pairs
(query modality = target modality) drop each query from its own ranking.

Feature rows come in data set order, one per image that decoded; images that
failed to decode are left out of both sides and counted. Pool layers are
flattened channel-first (``pool5`` → 25,088 dimensions).

Every modality's input is checked before any image is decoded; bad input (a
modality absent from the data, a modality with fewer than two categories, no
shared category between a query and a target modality) raises
:class:`~crossmodal.errors.InputError` and writes nothing.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from crossmodal.ir import identity
from crossmodal.ir.consistency import check as check_consistency
from crossmodal.ir.store import load_graph
from crossmodal.errors import InputError
from crossmodal.data.datasets import (
    CONFIG_NAME, IMAGE_MODALITIES, TEXT_MODALITIES, Dataset, ModalityAbsent, load_config, modality_names,
    resolve_modality,
)
from crossmodal.evaluate.retrieval.metrics import METRICS, retrieval_scores
from crossmodal.evaluate.retrieval.chance import chance_map, chance_precision_at_k, chance_recall_at_k
from crossmodal.io.atomic import check_output_dir
from crossmodal.reports.runs import RunRecord
from crossmodal.reports.text import decoding
from crossmodal.io.runs import staged, utc_now

FORMAT = "crossmodal-retrieval"
#: VGG's feature blobs; any public blob of the graph (``Graph.blobs``) is accepted, the default
#: being the network's ``feature_blob`` (``fc7`` for VGG/AlexNet, ``avgpool`` for ResNet/DenseNet).
LAYERS: tuple[str, ...] = ("fc7", "fc6", "pool5")


@dataclass
class ModalityFeatures:
    """One modality's features: ``features`` ``(N, D)`` float32, ``labels`` ``(N,)`` category names."""

    modality: str
    dataset: Dataset
    paths: list[Path]
    labels: np.ndarray
    features: np.ndarray
    failed: list[tuple[Path, str]] = field(default_factory=list)
    cache: dict = field(default_factory=dict)

    def describe(self) -> dict:
        cats, counts = np.unique(self.labels, return_counts=True)
        return {"root": str(self.dataset.root), "layout": self.dataset.layout, "origin": self.dataset.origin,
                "num_images": len(self.dataset.records), "num_decoded": len(self.paths),
                "num_failed": len(self.failed), "num_missing": len(self.dataset.missing),
                "num_categories": int(cats.size), "dimensions": int(self.features.shape[1]),
                "images_per_category": {"min": int(counts.min()), "max": int(counts.max())},
                "failed_images": [{"path": str(p), "reason": r} for p, r in self.failed],
                "cache": self.cache}


def as_modality_features(modality: str, dataset: Dataset, fs, layer: str) -> ModalityFeatures:
    """A :class:`~crossmodal.evaluate.features.FeatureSet` → :class:`ModalityFeatures` (checked).

    Raises :class:`InputError` when no image decoded or the decoded images cover
    fewer than two categories (every target would be relevant: no retrieval to measure).
    """
    if len(fs) == 0:
        raise InputError(f"modality {modality!r}: none of its {len(dataset.records)} images could be decoded",
                         dataset.root)
    labels = np.asarray([fs.categories[i] for i in fs.labels], dtype=str)
    n_cats = np.unique(labels).size
    if n_cats < 2:
        raise InputError(f"modality {modality!r} has {n_cats} category among its decoded images; retrieval "
                         f"needs at least two (with one, every target is relevant)", dataset.root)
    x = np.asarray(fs[layer], dtype=np.float32)
    return ModalityFeatures(modality, dataset, list(fs.paths), labels, x.reshape(len(x), -1), list(fs.failed),
                            {"path": str(fs.cache_path), "rows_computed": fs.stats.get("computed"),
                             "rows_from_cache": fs.stats.get("from_cache"), "filled_by": fs.cache_backends})


def score_pair(query: ModalityFeatures, target: ModalityFeatures, *, metric: str = "cosine", k: int = 10,
               chunk_size: int | None = None, device: str | None = None) -> dict:
    """Retrieval of ``target`` images for every ``query`` image; within-modal when they are the same.

    Returns a JSON-ready dict: ``map``, ``precision_at_k``, ``recall_at_k`` (in
    [0, 1], means over included queries), their chance levels, ``k`` (lowered to the
    ranking length when the targets are fewer), query/target counts, excluded
    queries (no relevant target) by category, and mAP per query category. ``device``: a CUDA
    device scores there (the similarity matrix never leaves it); otherwise NumPy on the host.
    """
    same = query.modality == target.modality
    pair = f"{query.modality} → {target.modality}"
    if query.features.shape[1] != target.features.shape[1]:
        raise InputError(f"{pair}: feature sets of different dimensions ({query.features.shape[1]} vs "
                         f"{target.features.shape[1]}); extract both with the same model and layer")
    n_keep = len(target.labels) - 1 if same else len(target.labels)
    k = max(1, min(int(k), n_keep))
    if not same and not np.intersect1d(query.labels, target.labels).size:
        raise InputError(f"{pair}: the two modalities share no category name, so no query has a relevant "
                         f"target (e.g. {query.labels[0]!r} vs {target.labels[0]!r})")
    s = retrieval_scores(query.features, query.labels, target.features, target.labels, same_set=same,
                         metric=metric, ks=(k,), chunk_size=chunk_size,
                         device=device if device and device.startswith("cuda") else None)
    chance_args = (query.labels, None if same else target.labels)
    excl_cats, excl_counts = np.unique(query.labels[s.excluded], return_counts=True)
    inc = ~s.excluded
    cats, inverse = np.unique(query.labels[inc], return_inverse=True)
    per_cat = np.bincount(inverse, weights=s.ap[inc]) / np.bincount(inverse)
    return {
        "query": query.modality, "target": target.modality, "within_modal": same,
        "map": s.mean_ap, "precision_at_k": s.precision_at(k), "recall_at_k": s.recall_at(k), "k": k,
        "chance_map": chance_map(*chance_args, same_set=same),
        "chance_precision_at_k": chance_precision_at_k(*chance_args, k=k, same_set=same),
        "chance_recall_at_k": chance_recall_at_k(*chance_args, k=k, same_set=same),
        "num_queries": int(len(query.labels)), "num_targets": int(s.n_targets),
        "num_included_queries": int(np.count_nonzero(inc)), "num_excluded_queries": s.n_excluded,
        "excluded_queries_by_category": {str(c): int(n) for c, n in zip(excl_cats, excl_counts)},
        "map_by_category": {str(c): float(v) for c, v in zip(cats, per_cat)},
    }


def present_modalities(*, data_root=None, config=None, split: str = "val") -> dict[str, Dataset]:
    """The image modalities whose data can be found, read: ``{name: Dataset}`` (known ones
    first, then the config's own). A modality that is absent (:class:`ModalityAbsent`) is
    left out; one that is there but broken (a missing list, a bad categories file) raises."""
    if config is None and Path(CONFIG_NAME).is_file():
        config = Path(CONFIG_NAME)
    cfg = load_config(config) if config is not None else {}
    names = list(IMAGE_MODALITIES) + sorted(set(cfg.get("modalities", {})) - set(IMAGE_MODALITIES)
                                            - set(TEXT_MODALITIES))
    found = {}
    for name in names:
        try:
            found[name] = resolve_modality(name, data_root=data_root, config=cfg, split=split)
        except ModalityAbsent:
            continue
    return found


@dataclass
class RetrievalRun:
    results: dict
    files: dict[str, Path] = field(default_factory=dict)


def run_retrieval(model_dir: str | os.PathLike, queries: str | Sequence[str] | None = None,
                  targets: str | Sequence[str] | None = None, *, all_pairs: bool = False, out_dir,
                  layer: str | None = None, metric: str = "cosine", k: int = 10, data_root=None, config=None,
                  split: str = "val", backend: str = "onnx", device: str = "auto", batch_size: int = 32,
                  workers: int | None = None, threads: int | None = None, limit: int | None = None,
                  cache_dir=None, draft: bool = False, show: int = 0, show_query: str = "0",
                  precision: str = "fp32", trt: bool = False,
                  on_step: Callable[[str], None] | None = None,
                  on_start: Callable[[str, int, int], None] | None = None,
                  on_batch: Callable[[str, int, int], None] | None = None) -> RetrievalRun:
    """Score every (query, target) modality pair and write the files (module docstring).

    ``queries`` / ``targets``: modality names (comma-separated or a list; ``targets``
    defaults to ``queries``), or ``all_pairs=True`` for the full grid over the
    modalities present. ``cache_dir``: the feature cache (give the baseline's to
    reuse its features; default ``$CROSSMODAL_CACHE``, else ``<out>/cache``).
    ``show``: for each pair, a PNG of the ``show`` nearest targets of the query
    image ``show_query`` (a 0-based index into the query modality's decoded
    images, or a path / file name), checked against the images listed before the
    feature pass and against the decoded ones after it, before any file is written. ``precision`` (fp32, fp16, bf16) and ``trt`` as in
    :func:`~crossmodal.evaluate.baseline.job.run_baseline`; reduced-precision features have
    their own cache entries.
    """
    from crossmodal.evaluate.retrieval import reports
    from crossmodal.evaluate.retrieval.reports import pick_query
    from crossmodal.runtime.devices import check_device
    from crossmodal.runtime.engine import SharedEngine
    from crossmodal.evaluate.baseline.job import limit_records
    from crossmodal.evaluate.features import extract_features
    from crossmodal.evaluate.feature_cache import model_fingerprint, rollback_new_caches, run_cache_dir

    t_start = time.perf_counter()
    started = utc_now()
    step = on_step or (lambda msg: None)
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    if k < 1:
        raise InputError(f"k must be at least 1, not {k}")
    device = check_device(device)
    model_dir, out_dir = Path(model_dir), check_output_dir(Path(out_dir))
    graph = load_graph(model_dir)
    check_consistency(graph, model_dir)
    layer = layer or graph.feature_blob
    choices = [b for b in graph.blobs if b not in ("logits", "prob")] or list(LAYERS)
    if layer not in choices and layer not in LAYERS:
        raise InputError(f"unknown feature layer {layer!r}; choose from {', '.join(choices)}")
    graph.resolve(layer)
    if all_pairs:
        if queries or targets:
            raise InputError("--all runs every pair of the modalities present; leave out --query/--target")
        present = present_modalities(data_root=data_root, config=config, split=split)
        q_names = t_names = list(present)
        if not q_names:
            raise InputError("no image modality found (looked for " + ", ".join(IMAGE_MODALITIES)
                             + " under the data root / in the config)", data_root or config)
        step(f"modalities present: {', '.join(q_names)}")
    else:
        present = {}
        q_names = modality_names(queries)
        t_names = modality_names(targets) or q_names
        if not q_names:
            raise InputError("no query modality given; use e.g. --query clipart --target natural, or --all")
    names = list(dict.fromkeys(q_names + t_names))
    cache_dir = run_cache_dir(cache_dir, out_dir)

    # 1. every modality's data, checked before any image is decoded
    datasets = {}
    for name in names:
        role = "query" if name in q_names else "target"
        try:
            ds = present.get(name) or resolve_modality(name, data_root=data_root, config=config, split=split)
        except ModalityAbsent as exc:
            raise InputError(f"{role} modality {name!r} is absent from the data: {exc}") from None
        datasets[name] = limit_records(ds, limit)
    if show:  # a bad query image fails now, not after the feature pass
        for name in q_names:
            pick_query([r.path for r in datasets[name].records], show_query, what="images listed",
                       modality=f"query modality {name!r}")

    from crossmodal.runtime.precision import check_precision, unsupported
    precision = check_precision(precision)
    if unsupported(backend, precision):
        raise InputError(unsupported(backend, precision))
    if trt and backend != "onnx":
        raise InputError(f"--trt is for the onnx backend, not {backend}")
    settings = {"batch_size": batch_size, "workers": workers, "threads": threads, "limit": limit,
                "precision": precision, "trt": trt,
                "draft": draft, "device_requested": device, "cache_dir": str(cache_dir)}
    weights = identity.identity(graph)
    record = RunRecord("retrieval", {**settings, "model_dir": str(model_dir), "out_dir": str(out_dir),
                                     "queries": q_names, "targets": t_names, "layer": layer, "metric": metric,
                                     "k": k, "split": split, "backend": backend, "show": show,
                                     "show_query": show_query,
                                     "data_root": None if data_root is None else str(data_root),
                                     "config": None if config is None else str(config)},
                       weights, started=started)
    if identity.banner(weights):
        step(identity.banner(weights).upper())
    onnx_options = {"trt": trt, "cache_dir": cache_dir, "log": step, "max_batch": batch_size} \
        if backend == "onnx" else {}
    with staged(out_dir, "retrieval") as stage, rollback_new_caches(cache_dir, out_dir):  # bad input found late: <out> as it was
        # 2. features, from the cache or computed by one shared backend ("logits" too: the baseline's cache)
        layers = ["logits", layer]
        runner = SharedEngine(backend, model_dir, layers, device=device, graph=graph, threads=threads,
                               precision=precision, on_open=lambda b: step(f"backend: {b.summary()}"),
                               **onnx_options)
        feats: dict[str, ModalityFeatures] = {}
        try:
            for name, ds in datasets.items():
                step(f"{name}: {len(ds.records)} images, {len(ds.categories)} categories ({ds.layout})")
                fs = extract_features(
                    model_dir, ds, runner, layers, device=device, batch_size=batch_size, workers=workers,
                    cache_dir=cache_dir, draft=draft, threads=threads, log=step, read=[layer], precision=precision,
                    on_start=(lambda d, t, m=name: on_start(m, d, t)) if on_start else None,
                    on_batch=(lambda d, t, m=name: on_batch(m, d, t)) if on_batch else None)
                feats[name] = as_modality_features(name, ds, fs, layer)
            ran = runner.engine.describe() if runner.engine is not None else None
        finally:
            runner.close()
        if show:  # the pick is made among the decoded images: check it there, before any file is written
            for q in q_names:
                pick_query(feats[q].paths, show_query, failed=feats[q].failed, modality=f"query modality {q!r}")

        # 3. scores per pair, then the files
        pairs = []
        for q in q_names:
            for t in t_names:
                step(f"retrieval {q} → {t}")
                pairs.append(score_pair(feats[q], feats[t], metric=metric, k=k, device=device))
        results = {
            "format": FORMAT, "version": 1,
            "banner": identity.banner(weights),
            "weights": {**weights, "description": identity.describe(weights)},
            "model": {"dir": str(model_dir), "name": graph.name, "fingerprint": model_fingerprint(model_dir, graph)},
            "layer": layer, "metric": metric, "k": k, "split": split,
            "queries": q_names, "targets": t_names,
            "backend": ran or {"backend": backend, "note": "every feature came from the cache"},
            "modalities": {n: f.describe() for n, f in feats.items()},
            "pairs": pairs,
            "published": reports.published_comparison(pairs),
            "precision": precision,
            "decoding": decoding(draft),
            "settings": settings,
            "timings_s": {"total": round(time.perf_counter() - t_start, 3)},
        }
        results["run"] = record.block()
        written = reports.write_retrieval(stage, results, feats if show else None, show=show, show_query=show_query)
    return RetrievalRun(results, {name: out_dir / name for name in written})
