"""The feature cache: one resumable, locked HDF5 file per (model, preprocessing, file list, layer set).

**Cache.** One HDF5 file per (model, preprocessing, file list, layer set), in
``cache_dir`` (default :func:`default_cache_dir`: ``$CROSSMODAL_CACHE``, else
``$XDG_CACHE_HOME/crossmodal/features``, else ``~/.cache/crossmodal/features``; the
``baseline`` command uses ``<out>/cache`` unless ``--cache`` or
``$CROSSMODAL_CACHE`` says otherwise). Its name is
``<dataset>-<key[:16]>-<layers>.h5``; the key (:func:`cache_key`) is the SHA-256 of

* the model fingerprint (:func:`model_fingerprint`: the graph structure and every
  tensor's SHA-256, read from ``model.json`` — the same value as
  :meth:`IRModel.fingerprint`, without loading the weights),
* the preprocessing spec, the mean image's hash when there is one, and the
  draft-decoding flag,
* the file list: every image's path, size and modification time, in order,
* the precision, when it is not ``fp32`` (fp16 / bf16 features differ from fp32 ones
  by more than rounding, so they get their own file; fp32 keys are as before).

The backend is *not* part of the key (backends agree to float32 rounding); the
backends that filled a cache are recorded in its ``backends`` attribute. A
cache whose layers include the requested ones is reused (``fc7`` alone is
served from a ``logits+fc7`` file).

Layout of a cache file (``N`` = images in the list)::

    attrs   format="crossmodal-features", version, key, key_parts (JSON), layers (JSON),
            num_images, batch_size, done (rows settled, a prefix), complete,
            backends (JSON list), compute_seconds, computed_rows
    paths   (N,) str        labels (N,) int64       categories (C,) str
    status  (N,) int8       0 pending, 1 ok, 2 failed to decode
    reason  (N,) str        why a failed image failed
    features/<layer>  (N, ...) float32, chunked by batch; rows of failed images are 0

**Resume.** Batches are written in list order; after each one the rows, their
status and ``done`` are written and the file is flushed. An interrupted run
(Ctrl-C, kill, an exception) leaves a valid file whose first ``done`` rows are
final; the next run with the same key continues from ``done``. With the same
batch size the batches are the same as in an uninterrupted run, so the finished
arrays are identical to it. A file that HDF5 cannot open any more (killed in the
middle of a write) is discarded and recomputed.

**Sharing.** Every cache file has a lock, ``<file>.lock`` beside it (:mod:`filelock`,
an OS lock released when its process ends, even killed). A run holds it from the
moment it opens (or creates, or discards) the file until it has read its rows: a
second run given the same ``--cache`` at the same time waits, with a note
(``log``), then reads what the first one computed; no run ever reads half a file,
deletes a file another run is creating, or writes into a file another run fills.
Headers are probed without the lock only to *choose* a file; every decision that
reads or changes a file is taken again under its lock. A complete cache on a
read-only disk (no lock file can be made) is read without a lock.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from crossmodal.ir.graph import Graph, IRModel
from crossmodal.ir.store import load_graph, read_tensor
from crossmodal.errors import InputError
from crossmodal.data.datasets import Dataset

CACHE_FORMAT = "crossmodal-features"
CACHE_VERSION = 1
PENDING, OK, FAILED = 0, 1, 2


# --------------------------------------------------------------------------- keys
def default_cache_dir() -> Path:
    """``$CROSSMODAL_CACHE``, else ``$XDG_CACHE_HOME/crossmodal/features``, else ``~/.cache/…``."""
    if os.environ.get("CROSSMODAL_CACHE"):
        return Path(os.environ["CROSSMODAL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "crossmodal" / "features"


def run_cache_dir(cache_dir: str | os.PathLike | None, out_dir: str | os.PathLike) -> Path:
    """The cache folder of a ``baseline`` / ``retrieval`` run: ``cache_dir`` when given, else
    ``$CROSSMODAL_CACHE``, else ``<out_dir>/cache``."""
    if cache_dir:
        return Path(cache_dir)
    if os.environ.get("CROSSMODAL_CACHE"):
        return Path(os.environ["CROSSMODAL_CACHE"]).expanduser()
    return Path(out_dir) / "cache"


@contextmanager
def rollback_new_caches(cache_dir: str | os.PathLike, out_dir: str | os.PathLike):
    """Bad input leaves an output folder as it was, its ``cache`` sub-folder included.

    When ``cache_dir`` lies inside ``out_dir`` (the default ``<out>/cache``) and the
    block raises :class:`InputError` (bad input found after the image pass: nothing
    decoded, one category …), the entries this run added to ``cache_dir`` are removed,
    and ``cache_dir`` / ``out_dir`` themselves if this run created them. Any other
    exception (a crash, Ctrl-C, a kill) keeps the cache, so that the next run resumes;
    so does a cache elsewhere (``--cache``, ``$CROSSMODAL_CACHE``), which is shared.
    """
    import shutil

    cache_dir, out_dir = Path(cache_dir).absolute(), Path(out_dir).absolute()
    if not cache_dir.is_relative_to(out_dir):
        yield
        return
    anchor = next(p for p in [cache_dir, *cache_dir.parents] if p.exists())  # the deepest folder already there
    before = {p.name for p in cache_dir.iterdir()} if cache_dir.is_dir() else None
    try:
        yield
    except InputError:
        if cache_dir.is_dir():
            for entry in cache_dir.iterdir():
                if before is None or entry.name not in before:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        for d in [cache_dir, *cache_dir.parents]:  # folders this run created, if left empty
            if d == anchor or not d.is_relative_to(anchor) or not d.is_dir() or any(d.iterdir()):
                break
            d.rmdir()
        raise


def model_fingerprint(model_dir: str | os.PathLike, graph: Graph | None = None) -> str:
    """:meth:`IRModel.fingerprint` of a model folder, from the tensor hashes in ``model.json``.

    Falls back to loading the weights when the graph lacks a tensor hash.
    """
    graph = graph if graph is not None else load_graph(Path(model_dir))
    if all(t.sha256 for l in graph.layers for t in l.tensors.values()):
        return IRModel(graph, {}).fingerprint()
    from crossmodal.ir.store import load_ir
    return load_ir(Path(model_dir)).fingerprint()


def read_mean_image(model_dir: str | os.PathLike, graph: Graph) -> np.ndarray | None:
    """The mean image tensor the preprocessing names, float32 (3, H, W), read alone from
    ``weights.h5`` and checked against its SHA-256 in ``model.json``; None without one."""
    name = graph.preprocess.mean_image
    if not name:
        return None
    return np.asarray(read_tensor(Path(model_dir), graph, name), dtype=np.float32)


def file_list_sha256(paths: Sequence[Path]) -> str:
    """SHA-256 over every path (made absolute) with its size and modification time (ns), in order."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{os.path.abspath(p)}\t{stamp}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def cache_key(fingerprint: str, graph: Graph, paths: Sequence[Path], *, draft: bool,
              mean_image: np.ndarray | None = None, precision: str = "fp32") -> tuple[str, dict]:
    """The cache key and its parts (see the module docstring)."""
    from crossmodal.ir.graph import tensor_sha256
    parts = {
        "model_fingerprint": fingerprint,
        "preprocess": graph.preprocess.to_dict(),
        "mean_image_sha256": None if mean_image is None else tensor_sha256(mean_image),
        "draft": bool(draft),
        "num_images": len(paths),
        "file_list_sha256": file_list_sha256(paths),
    }
    if precision != "fp32":
        parts["precision"] = precision
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return key, parts


# --------------------------------------------------------------------------- cache file
def _probe(path: Path) -> dict | None:
    """A cache file's header (key, layers, num_images, done, complete), or None if unreadable."""
    import h5py
    try:
        with h5py.File(path, "r", locking=False) as f:
            if f.attrs.get("format") != CACHE_FORMAT:
                return None
            return {"key": str(f.attrs["key"]), "layers": set(json.loads(f.attrs["layers"])),
                    "num_images": int(f.attrs["num_images"]), "done": int(f.attrs["done"]),
                    "complete": bool(f.attrs["complete"])}
    except (OSError, KeyError, ValueError):
        return None


def find_cache(cache_dir: Path, key: str, layers: Sequence[str],
                resumable_within: set[str] | None = None) -> Path | None:
    """An existing cache file of ``key`` whose layers include ``layers`` (complete ones first,
    then the furthest along).

    An unfinished file qualifies only if its layers lie within ``resumable_within``
    (what the backend can compute; None: anything, the backend is opened to suit).
    """
    found = []
    for path in sorted(cache_dir.glob(f"*-{key[:16]}-*.h5")):
        head = _probe(path)
        if head is None or head["key"] != key or not set(layers) <= head["layers"]:
            continue
        if not head["complete"] and resumable_within is not None and not head["layers"] <= resumable_within:
            continue
        found.append((not head["complete"], -head["done"], path))
    return min(found)[2] if found else None


def cache_name(dataset_name: str, key: str, layers: Sequence[str]) -> str:
    safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in dataset_name) or "data"
    return f"{safe}-{key[:16]}-{'+'.join(layers)}.h5"


def _create_cache(path: Path, *, key: str, parts: dict, layers: Sequence[str], shapes: dict[str, tuple],
                  dataset: Dataset, batch_size: int):
    import h5py

    f = h5py.File(path, "w")
    n = len(dataset.records)
    text = h5py.string_dtype()
    f.create_dataset("paths", data=np.array([str(r.path) for r in dataset.records], dtype=object), dtype=text)
    f.create_dataset("labels", data=np.array([r.label for r in dataset.records], dtype=np.int64))
    f.create_dataset("categories", data=np.array(list(dataset.categories), dtype=object), dtype=text)
    f.create_dataset("status", shape=(n,), dtype=np.int8, fillvalue=PENDING)
    f.create_dataset("reason", shape=(n,), dtype=text)
    group = f.create_group("features")
    for layer in layers:
        shape = shapes[layer]
        group.create_dataset(layer, shape=(n, *shape), dtype=np.float32, fillvalue=0.0,
                             chunks=(max(1, min(batch_size, n)), *shape))
    f.attrs.update({
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key,
        "key_parts": json.dumps(parts, sort_keys=True), "layers": json.dumps(list(layers)),
        "num_images": n, "batch_size": batch_size, "done": 0, "complete": False,
        "backends": "[]", "compute_seconds": 0.0, "computed_rows": 0,
        "dataset": dataset.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    f.flush()
    return f


def lock_path(cache_file: Path) -> Path:
    """The lock file of a cache file (see "Sharing" in the module docstring)."""
    return cache_file.with_name(cache_file.name + ".lock")


@contextmanager
def cache_lock(path: Path, log: Callable[[str], None], poll: float = 0.2) -> Iterator[None]:
    """Hold ``path``'s lock for the block; when another run holds it, say so and wait.

    Where no lock file can be made (a read-only cache folder), a complete cache file is
    read unlocked (nobody can be writing it) and anything else is an InputError.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(str(lock_path(path)))
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log(f"feature cache {path.name} is in use by another run (lock {lock_path(path).name}); waiting for it")
            lock.acquire(poll_interval=poll)
    except OSError as exc:
        head = _probe(path) if path.exists() else None
        if head is not None and head["complete"]:
            yield
            return
        raise InputError(f"cannot lock the feature cache ({exc.strerror or exc})", lock_path(path)) from None
    try:
        yield
    finally:
        lock.release()


def open_cache(path: Path, *, key: str, layers: Sequence[str], dataset: Dataset,
                log: Callable[[str], None], **create):
    """The cache file, open: read-only when complete (it may be shared, or on a read-only
    disk), for writing when unfinished; a file that is unreadable or of another run is
    replaced by a new one."""
    import h5py

    if path.exists():
        head = _probe(path)
        if head is None or head["key"] != key or head["num_images"] != len(dataset.records) \
                or not set(layers) <= head["layers"]:
            log(f"feature cache {path.name} is unreadable or of another run; recomputing it")
            path.unlink()
        elif head["complete"]:
            return h5py.File(path, "r")
        else:
            try:
                return h5py.File(path, "a")
            except OSError as exc:
                if "lock" in str(exc).lower():
                    raise InputError("feature cache is in use by another run (HDF5 file lock); wait for "
                                     "it or pass another --cache", path) from None
                log(f"feature cache {path.name} cannot be resumed ({str(exc)[:80]}); recomputing it")
                path.unlink()
    return _create_cache(path, key=key, layers=layers, dataset=dataset, **create)


def record_backend(f, run) -> dict:
    """Add ``run.describe()`` (engine, providers, precision) to the open cache ``f``'s ``backends``
    attribute, once; returns it."""
    described = run.describe()
    backends = json.loads(f.attrs["backends"])
    if described not in backends:
        f.attrs["backends"] = json.dumps(backends + [described])
    return described


def read_cache(f, layers: Sequence[str]) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    status = f["status"][()]
    reasons = [r.decode() if isinstance(r, bytes) else str(r) for r in f["reason"][()]]
    ok = status == OK
    arrays = {l: f[f"features/{l}"][()][ok] for l in layers}
    return status, reasons, arrays


# --------------------------------------------------------------------------- extraction
