"""One pass over a data set's images → logits and features, in a resumable HDF5 cache.

:func:`extract_features` is the library entry point (``baseline`` and ``retrieval``
use it)::

    fs = extract_features("models/vgg16", dataset, backend="onnx", layers=("logits", "fc7"))
    fs["fc7"]          # float32 (N, 4096), one row per image that decoded, data set order
    fs.paths, fs.labels, fs.categories, fs.failed

**Pipeline.** Images are decoded and preprocessed (the IR's preprocessing spec,
JPEG draft mode on by default) on a pool of ``workers`` threads, one batch per
task, while the backend runs the batch before: a bounded number of batches
(``workers + 1``) is in flight, so decoding overlaps inference and memory stays
bounded. PIL releases the GIL while decoding and resizing. Images that fail to
decode (truncated, empty, not an image) are skipped, counted and listed
(``FeatureSet.failed``), never fatal.

The cache itself (its key, layout, resume and locking): :mod:`crossmodal.evaluate.feature_cache`.
"""
from __future__ import annotations

import json
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from crossmodal.ir.consistency import check as check_consistency
from crossmodal.ir.graph import Graph
from crossmodal.ir.kinds import infer_shapes
from crossmodal.ir.store import load_graph
from crossmodal.errors import InputError
from crossmodal.data.datasets import Dataset
from crossmodal.data.images import load_batch
from crossmodal.evaluate.feature_cache import (
    FAILED, OK, cache_key, cache_lock, cache_name, default_cache_dir, find_cache, model_fingerprint, open_cache,
    read_cache, read_mean_image, record_backend,
)



@dataclass
class FeatureSet:
    """Features of the images of a data set that decoded, in data set order.

    ``arrays[layer]`` has one row per entry of ``paths`` / ``labels``;
    ``labels[i]`` indexes ``categories``; ``failed`` lists ``(path, reason)`` for
    images that did not decode. ``backend`` describes the backend that computed
    rows in this call (``None`` when everything came from the cache);
    ``cache_backends`` every backend that filled the cache file;
    ``stats``: ``num_images``, ``computed`` (rows computed in this call),
    ``from_cache``, ``seconds`` (wall time of the call), ``pass_seconds`` (of the
    decode + inference pass alone, the backend already open), ``images_per_second``
    (computed rows / pass seconds, ``None`` when nothing was computed),
    ``cache_images_per_second`` (over every run that filled the cache).
    """

    paths: list[Path]
    labels: np.ndarray
    categories: list[str]
    arrays: dict[str, np.ndarray]
    failed: list[tuple[Path, str]] = field(default_factory=list)
    cache_path: Path | None = None
    key: str = ""
    backend: dict | None = None
    cache_backends: list[dict] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def __getitem__(self, layer: str) -> np.ndarray:
        try:
            return self.arrays[layer]
        except KeyError:
            raise InputError(f"no feature {layer!r} here; have {sorted(self.arrays)}") from None

    def __len__(self) -> int:
        return len(self.paths)


def extract_features(model_dir: str | os.PathLike, dataset: Dataset, backend="onnx",
                     layers: Sequence[str] | None = None, *, device: str = "auto", batch_size: int = 32,
                     workers: int | None = None, cache_dir: str | os.PathLike | None = None,
                     draft: bool = False, threads: int | None = None,
                     on_start: Callable[[int, int], None] | None = None,
                     on_batch: Callable[[int, int], None] | None = None,
                     log: Callable[[str], None] | None = None,
                     read: Sequence[str] | None = None, precision: str = "fp32",
                     backend_options: dict | None = None) -> FeatureSet:
    """Run ``dataset``'s images through the model once; cached and resumable (module docstring).

    ``backend``: a name (``onnx``, ``keras``, ``torch``; opened only when rows need
    computing, with ``device`` and ``threads``, and closed after), an open
    :class:`~crossmodal.runtime.engine.Engine` returning at least ``layers``, or
    a function returning one (called only when rows need computing; the caller
    closes it — to share one backend between data sets).
    ``layers``: feature names (``logits``, ``fc7``, ``pool5``, … see
    :meth:`Graph.resolve`). ``workers``: decoding threads (default
    ``min(8, cpu count − 1)``, at least 1). ``draft``: JPEG draft decoding
    (:func:`~crossmodal.data.images.load_rgb`). ``on_start(done, total)`` is
    called once before the pass (``done`` rows already cached) and
    ``on_batch(done, total)`` after each batch is written; an exception raised
    there stops the pass with the cache resumable. ``log`` receives notes.
    ``read``: the layers to return (default: ``layers``); the others are computed
    and cached for later use but not loaded into memory. ``precision``: ``fp32``,
    ``fp16``, ``bf16`` (:mod:`crossmodal.runtime.precision`), part of the cache key when
    reduced; a backend passed in must run at it. ``backend_options``: more keywords for
    :func:`~crossmodal.runtime.engine.open_engine` when ``backend`` is a name
    (``trt``, ``cache_dir``, ``pinned`` …).

    Labels and categories are always the data set's own (the cache stores the
    features, which do not depend on them), so a relabelled list reuses the cache
    with its new labels. A resumed pass keeps the batch size the cache was started
    with, so that its rows are identical to those of an uninterrupted pass.
    """
    from crossmodal.runtime.precision import check_precision
    from crossmodal.runtime.engine import Engine, open_engine

    precision = check_precision(precision)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    log = log or (lambda msg: None)
    model_dir = Path(model_dir)
    graph = load_graph(model_dir)
    check_consistency(graph, model_dir)
    layers = list(dict.fromkeys(layers if layers is not None else [graph.feature_blob]))
    if not layers:
        raise InputError("no feature layers asked for")
    if read is not None and not set(read) <= set(layers):
        raise InputError(f"cannot return {sorted(set(read) - set(layers))}: not among the layers {layers}")
    shapes_by_layer = infer_shapes(graph)
    shapes = {l: shapes_by_layer[graph.resolve(l)] for l in layers}
    mean_image = read_mean_image(model_dir, graph)
    paths = [r.path for r in dataset.records]
    key, parts = cache_key(model_fingerprint(model_dir, graph), graph, paths, draft=draft,
                           mean_image=mean_image, precision=precision)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the feature cache folder ({exc.strerror or exc})", cache_dir) from None
    if isinstance(backend, Engine):
        within = set(backend.layers)
    else:
        within = None if isinstance(backend, str) else set(layers)
    path = find_cache(cache_dir, key, layers, within) or cache_dir / cache_name(dataset.name, key, layers)
    if workers is None:
        workers = max(1, min(8, (os.cpu_count() or 2) - 1))
    workers = max(1, int(workers))

    t0 = time.perf_counter()
    opened: Engine | None = None
    described = None
    computed, pass_seconds = 0, 0.0
    try:
        with cache_lock(path, log), \
                open_cache(path, key=key, layers=layers, dataset=dataset, log=log, parts=parts, shapes=shapes,
                            batch_size=batch_size) as f:
            stored_layers = json.loads(f.attrs["layers"])
            n, done = len(paths), int(f.attrs["done"])
            if on_start:
                on_start(done, n)
            if done < n:
                if isinstance(backend, Engine):
                    run = backend
                elif callable(backend):  # a factory: opened lazily, owned by the caller
                    run = backend()
                else:
                    run = opened = open_engine(str(backend), model_dir, stored_layers, device=device,
                                                graph=graph, threads=threads, precision=precision,
                                                **(backend_options or {}))
                ran_at = getattr(run, "precision", "fp32")
                if ran_at != precision:
                    raise InputError(f"the backend runs at {ran_at}, but {precision} features were asked for")
                missing = [l for l in stored_layers if l not in run.layers]
                if missing:
                    raise InputError(f"the backend does not return {missing} (it returns {list(run.layers)})")
                described = record_backend(f, run)
                computed, pass_seconds = _fill(f, run, paths, graph, mean_image, stored_layers, done,
                                               int(f.attrs["batch_size"]), workers, draft, on_batch)
            status, reasons, arrays = read_cache(f, layers if read is None else read)
            cache_seconds, cache_rows = float(f.attrs["compute_seconds"]), int(f.attrs["computed_rows"])
            cache_backends = json.loads(f.attrs["backends"])
    except OSError as exc:
        if "lock" in str(exc).lower():
            raise InputError("feature cache is in use by another run (HDF5 file lock)", path) from None
        raise
    finally:
        if opened is not None:
            opened.close()
    seconds = time.perf_counter() - t0
    ok = status == OK
    failed = [(paths[i], reasons[i]) for i in np.flatnonzero(status == FAILED)]
    return FeatureSet(
        paths=[p for p, good in zip(paths, ok) if good],
        labels=np.array([r.label for r in dataset.records], dtype=np.int64)[ok],
        categories=list(dataset.categories),
        arrays=arrays, failed=failed, cache_path=path, key=key, backend=described, cache_backends=cache_backends,
        stats={"num_images": len(paths), "computed": computed, "from_cache": len(paths) - computed,
               "seconds": seconds, "pass_seconds": pass_seconds,
               "images_per_second": computed / pass_seconds if computed and pass_seconds else None,
               "cache_images_per_second": cache_rows / cache_seconds if cache_rows and cache_seconds else None},
    )


def prefetched_batches(paths: Sequence[Path], spec, mean_image, start: int, batch_size: int, workers: int,
                       draft: bool) -> Iterator[tuple[int, int, np.ndarray, dict[Path, str]]]:
    """Rows ``start..N`` of ``paths`` decoded and preprocessed in batches on a pool of ``workers``
    threads, ``workers + 1`` batches in flight ahead of the consumer (decoding overlaps inference,
    memory stays bounded). Yields ``(lo, hi, batch, failed_at)``: ``batch`` ``(B, C, H, W)`` holds
    the rows of ``lo..hi`` that decoded, in order; ``failed_at`` maps each other path to its reason."""
    n = len(paths)
    bounds = iter([(s, min(s + batch_size, n)) for s in range(start, n, batch_size)])
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    pending: deque = deque()

    def submit() -> None:
        nxt = next(bounds, None)
        if nxt is not None:
            pending.append((nxt, pool.submit(load_batch, paths[nxt[0]:nxt[1]], spec, mean_image,
                                             workers=1, draft=draft)))

    try:
        for _ in range(workers + 1):  # bounded prefetch: decoding runs ahead of inference
            submit()
        while pending:
            (lo, hi), future = pending.popleft()
            batch, failures = future.result()
            submit()
            yield lo, hi, batch, {Path(p): reason for p, reason in failures}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _fill(f, backend, paths: list[Path], graph: Graph, mean_image, layers: list[str], start: int,
          batch_size: int, workers: int, draft: bool, on_batch) -> tuple[int, float]:
    """Compute rows ``start..N`` batch by batch into the open cache ``f``.

    Returns (rows computed, wall seconds of the pass: decoding, inference and writes).
    """
    n = len(paths)
    datasets = {l: f[f"features/{l}"] for l in layers}
    computed = 0
    first = last = time.perf_counter()
    for lo, hi, batch, failed_at in prefetched_batches(paths, graph.preprocess, mean_image, start, batch_size,
                                                        workers, draft):
        rows_ok = [i for i in range(lo, hi) if paths[i] not in failed_at]
        outs = backend.run(batch) if len(batch) else {}
        status = np.full(hi - lo, OK, dtype=np.int8)
        reasons = [""] * (hi - lo)
        for i in range(lo, hi):
            if paths[i] in failed_at:
                status[i - lo], reasons[i - lo] = FAILED, failed_at[paths[i]]
        local = np.array([i - lo for i in rows_ok], dtype=np.int64)
        for layer, ds in datasets.items():
            block = np.zeros((hi - lo, *ds.shape[1:]), dtype=np.float32)
            if len(local):
                values = np.asarray(outs[layer], dtype=np.float32)
                if values.shape != (len(local), *ds.shape[1:]):
                    raise InputError(f"backend returned {layer} of shape {values.shape}, "
                                     f"expected {(len(local), *ds.shape[1:])}")
                block[local] = values
            ds[lo:hi] = block
        f["status"][lo:hi] = status
        f["reason"][lo:hi] = np.array(reasons, dtype=object)
        f.flush()  # the rows reach the file before ``done`` says they are there
        f.attrs["done"] = hi
        f.attrs["computed_rows"] = int(f.attrs["computed_rows"]) + (hi - lo)
        now = time.perf_counter()  # wall time of the pass, decoding waits included
        f.attrs["compute_seconds"] = float(f.attrs["compute_seconds"]) + (now - last)
        last = now
        f.flush()
        computed += hi - lo
        if on_batch:
            on_batch(hi, n)
    f.attrs["complete"] = True
    f.flush()
    return computed, last - first
