"""The units pass: one streamed pass over a data set's images → each unit's maximum and its position.

Maps come from the runtime (:func:`~crossmodal.runtime.engine.open_engine`, the same engines as
``baseline``) one batch at a time and are reduced at once (:func:`.topk.unit_max`); whole maps are
never kept (VGG16 ``relu5_3``: 401 KB per image), only 8 bytes per unit and image.

**Cache file** (HDF5, beside the feature caches, ``<dataset>-<key[:16]>-units-<layer>.h5``): the key
is the feature cache's (:func:`~crossmodal.evaluate.feature_cache.cache_key`: model fingerprint,
preprocessing, file list, precision) with the layer added. Layout::

    attrs    format="crossmodal-units", version, key, layer, num_images, num_units, grid (h, w),
             batch_size, done, complete, backends (JSON), compute_seconds, computed_rows
    max      (N, U) float32   a unit's maximum over positions (0 for images that failed)
    argmax   (N, U) int32     its flat position i·w + j
    status   (N,) int8        0 pending, 1 ok, 2 failed to decode;   reason (N,) str

Resume and sharing are the feature cache's: rows are written batch by batch, ``done`` after them;
an interrupted pass continues from ``done``; the file's lock (:func:`.feature_cache.cache_lock`) is
held from opening to the last read. :func:`read_top` then streams the rows in blocks into a
:class:`.topk.TopK`, so memory stays O(units × K + block) for any number of images.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from crossmodal.data.datasets import Dataset
from crossmodal.errors import InputError
from crossmodal.evaluate.feature_cache import (
    FAILED, OK, PENDING, cache_key, cache_lock, model_fingerprint, record_backend,
)
from crossmodal.evaluate.features import prefetched_batches
from crossmodal.evaluate.units.topk import TopK, unit_max

FORMAT, VERSION = "crossmodal-units", 1
READ_BLOCK = 2048


@dataclass
class UnitPass:
    """One modality's pass: ``path`` the cache file, ``labels`` (N,) into ``categories``,
    ``status`` (N,), ``reasons``; ``stats``: images, computed, seconds of the pass, images/s."""

    name: str
    paths: list[Path]
    labels: np.ndarray
    categories: list[str]
    status: np.ndarray
    reasons: list[str]
    path: Path
    grid: tuple[int, int]
    backend: dict | None = None
    stats: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[tuple[Path, str]]:
        return [(self.paths[i], self.reasons[i]) for i in np.flatnonzero(self.status == FAILED)]


def units_key(model_dir: Path, graph, dataset: Dataset, layer: str, *, draft: bool, mean_image,
              precision: str) -> str:
    key, _ = cache_key(model_fingerprint(model_dir, graph), graph, [r.path for r in dataset.records],
                       draft=draft, mean_image=mean_image, precision=precision)
    return hashlib.sha256(f"{key}\nunits:{layer}".encode()).hexdigest()


def cache_file(cache_dir: Path, dataset: Dataset, key: str, layer: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in f"{dataset.name}") or "data"
    tail = "".join(c if c.isalnum() or c in "_-" else "_" for c in layer)
    return Path(cache_dir) / f"{safe}-{key[:16]}-units-{tail}.h5"


def _open(path: Path, *, key: str, layer: str, n: int, units: int, grid, batch_size: int, log):
    import h5py

    if path.exists():
        try:
            f = h5py.File(path, "a")
            if f.attrs.get("format") == FORMAT and f.attrs.get("key") == key and int(f.attrs["num_images"]) == n:
                return f
            f.close()
        except OSError:
            pass
        log(f"units cache {path.name} is unreadable or of another run; recomputing it")
        path.unlink()
    f = h5py.File(path, "w")
    text = h5py.string_dtype()
    rows = max(1, min(batch_size, n))
    f.create_dataset("max", shape=(n, units), dtype=np.float32, fillvalue=0.0, chunks=(rows, units))
    f.create_dataset("argmax", shape=(n, units), dtype=np.int32, fillvalue=0, chunks=(rows, units))
    f.create_dataset("status", shape=(n,), dtype=np.int8, fillvalue=PENDING)
    f.create_dataset("reason", shape=(n,), dtype=text)
    f.attrs.update({"format": FORMAT, "version": VERSION, "key": key, "layer": layer, "num_images": n,
                    "num_units": units, "grid": list(grid), "batch_size": batch_size, "done": 0,
                    "complete": False, "backends": "[]", "compute_seconds": 0.0, "computed_rows": 0})
    f.flush()
    return f


def run_pass(model_dir: Path, graph, dataset: Dataset, layer: str, shape: tuple[int, int, int], *,
             engine: Callable[[], object], cache_dir: Path, mean_image=None, batch_size: int = 32,
             workers: int = 1, draft: bool = False, precision: str = "fp32",
             on_start: Callable[[int, int], None] | None = None,
             on_batch: Callable[[int, int], None] | None = None,
             log: Callable[[str], None] = lambda msg: None) -> UnitPass:
    """Fill (or resume) ``dataset``'s units cache for ``layer`` (``shape`` = (C, h, w)); ``engine()``
    returns an engine whose ``run(batch)`` gives ``{layer: (B, C, h, w)}`` (opened only when rows
    need computing)."""
    paths = [r.path for r in dataset.records]
    n, (units, h, w) = len(paths), shape
    key = units_key(model_dir, graph, dataset, layer, draft=draft, mean_image=mean_image, precision=precision)
    path = cache_file(cache_dir, dataset, key, layer)
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the cache folder ({exc.strerror or exc})", cache_dir) from None
    described, computed, seconds = None, 0, 0.0
    with cache_lock(path, log):
        f = _open(path, key=key, layer=layer, n=n, units=units, grid=(h, w), batch_size=batch_size, log=log)
        try:
            done = int(f.attrs["done"])
            if on_start:
                on_start(done, n)
            if done < n:
                run = engine()
                described = record_backend(f, run)
                computed, seconds = _fill(f, run, paths, graph, mean_image, layer, done,
                                          int(f.attrs["batch_size"]), workers, draft, on_batch)
            status = f["status"][()]
            reasons = [r.decode() if isinstance(r, bytes) else str(r) for r in f["reason"][()]]
        finally:
            f.close()
    return UnitPass(dataset.name, paths, np.array([r.label for r in dataset.records], np.int64),
                    list(dataset.categories), status, reasons, path, (h, w), described,
                    {"images": n, "computed": computed, "from_cache": n - computed, "pass_seconds": seconds,
                     "images_per_second": computed / seconds if computed and seconds else None})


def _fill(f, engine, paths, graph, mean_image, layer: str, start: int, batch_size: int, workers: int,
          draft: bool, on_batch) -> tuple[int, float]:
    n, units = len(paths), int(f.attrs["num_units"])
    first = last = time.perf_counter()
    computed = 0
    for lo, hi, batch, failed_at in prefetched_batches(paths, graph.preprocess, mean_image, start, batch_size,
                                                        workers, draft):
        vals = np.zeros((hi - lo, units), np.float32)
        pos = np.zeros((hi - lo, units), np.int32)
        ok = np.array([paths[i] not in failed_at for i in range(lo, hi)], bool)
        if len(batch):
            maps = np.asarray(engine.run(batch)[layer])
            if maps.shape[1] != units:
                raise InputError(f"the engine returned {layer} with {maps.shape[1]} units, expected {units}")
            vals[ok], pos[ok] = unit_max(maps)
        f["max"][lo:hi], f["argmax"][lo:hi] = vals, pos
        f["status"][lo:hi] = np.where(ok, OK, FAILED).astype(np.int8)
        f["reason"][lo:hi] = np.array([failed_at.get(paths[i], "") for i in range(lo, hi)], dtype=object)
        f.flush()  # rows first, then ``done``
        now = time.perf_counter()
        f.attrs.update({"done": hi, "computed_rows": int(f.attrs["computed_rows"]) + hi - lo,
                        "compute_seconds": float(f.attrs["compute_seconds"]) + now - last})
        f.flush()
        last, computed = now, computed + hi - lo
        if on_batch:
            on_batch(hi, n)
    f.attrs["complete"] = True
    f.flush()
    return computed, last - first


def read_top(path: Path, units: Sequence[int], k: int, block: int = READ_BLOCK) -> TopK:
    """Top-``k`` images of each of ``units`` from a finished cache file, streamed in ``block`` rows
    (failed images never count). Image indices are rows of the file (the data set's order)."""
    import h5py

    units = np.asarray(units, np.int64)
    top = TopK(len(units), k)
    with h5py.File(path, "r") as f:
        n = int(f.attrs["num_images"])
        for lo in range(0, n, block):
            hi = min(lo + block, n)
            ok = f["status"][lo:hi] == OK
            if not ok.any():
                continue
            vals, pos = f["max"][lo:hi][:, units], f["argmax"][lo:hi][:, units]
            top.update(vals[ok], pos[ok], np.arange(lo, hi)[ok])
    return top
