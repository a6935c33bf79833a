"""Category-level retrieval metrics (mAP, P@k, R@k), pure NumPy: the inputs checked, the chunked driver
over the similarity matrix and the metric functions; the per-chunk ranking core is
:mod:`~crossmodal.evaluate.retrieval.ranking`, the chance levels :mod:`~crossmodal.evaluate.retrieval.chance`.

Conventions, shared by every function here:

* ``queries`` is a ``(Q, D)`` array of features, ``targets`` a ``(N, D)`` array,
  one row per image; ``query_labels`` ``(Q,)`` and ``target_labels`` ``(N,)`` hold
  the category of each row (ints or strings; the two must be of the same kind).
* A target is **relevant** to a query when it has the same label.
* ``metric="cosine"`` (default) ranks by cosine similarity, i.e. by the dot product
  of L2-normalised rows; a zero row has similarity 0 with everything (no NaN).
  ``metric="euclidean"`` ranks by ascending Euclidean distance (computed as
  ``q.t - |t|^2 / 2``, which orders targets exactly as ``-|q - t|^2`` would).
* Scores are computed in float32 when both feature arrays are float32, in float64
  otherwise.
* **Ties** are broken deterministically: targets are ranked by descending score,
  then by ascending target index (a strict ranking, as a stable sort of ``-score``
  would give). Two scores tie when they are equal as computed, so this differs from
  :func:`sklearn.metrics.average_precision_score`, which treats tied scores as a
  single threshold; with distinct scores both agree exactly.
* ``same_set=True`` is within-modal retrieval: queries and targets are the same
  set in the same order, and each query is removed from its own ranking (so a
  query sees ``N - 1`` targets and ``R - 1`` relevant ones).
* A query with **no relevant target** (its category is absent from the targets,
  or with ``same_set`` it is the only image of its category) is **excluded** from
  every mean and counted in ``n_excluded``; its per-query values are NaN.
* AP is computed over the full ranking of all targets:
  ``AP = (1/R) * sum_j j / pos_j`` with ``pos_j`` the 1-based rank of the
  ``j``-th relevant target. ``P@k`` = relevant in top ``k`` / ``k``;
  ``R@k`` = relevant in top ``k`` / ``R``.

Speed: float32 scores are ranked without an argsort: each relevant target's rank is
found by searching the row's sorted scores (a SIMD sort), and an exact tie is ordered by
index by counting in the row; the work beyond the matrix product and that sort is
O(relevant targets). float64 scores take the argsort path. Both give the same ranks.
On 20,500 × 20,500 × 4,096 float32 the whole call costs about 1.1–1.2× the matrix
product alone (``benchmarks/bench_retrieval.py``).

Memory: the similarity matrix is never held whole. Queries are processed in
chunks of ``chunk_size`` rows, and each chunk needs about
``chunk_size * N * BYTES_PER_PAIR`` (32) bytes of working memory on top of the
inputs: float32, two product buffers (one chunk is ranked while the next one's product is
computed) and the sorted rows, 12 bytes a pair; float64, the products, the int64 ranking,
sorted scores and gathered labels. The default chunk size keeps this
under ``DEFAULT_CHUNK_BYTES`` (256 MiB). The inputs themselves are not copied when
they are already C-contiguous float32/float64 arrays.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from crossmodal.errors import InputError
from crossmodal.evaluate.retrieval.ranking import (
    chunk_scores, inverse_norm, products_bounded, rank, score_part, target_groups,
)

__all__ = [
    "RetrievalResult", "RetrievalScores", "retrieval_scores", "mean_average_precision",
    "precision_at_k", "recall_at_k", "nearest_targets", "default_chunk_size", "METRICS",
    "DEFAULT_CHUNK_BYTES", "BYTES_PER_PAIR",
]

METRICS = ("cosine", "euclidean")
#: Working-memory budget per query chunk when ``chunk_size`` is None.
DEFAULT_CHUNK_BYTES = 256 * 2**20
_MAX_THREADS = 8  # threads that sort the rows of one chunk (BLAS is idle meanwhile)
#: Upper bound of the working memory per (query, target) pair of one chunk, in bytes.
BYTES_PER_PAIR = 32


@dataclass(frozen=True)
class RetrievalResult:
    """One metric: ``value`` is the mean over included queries, in [0, 1].

    ``per_query`` is ``(Q,)`` float64 with NaN for excluded queries;
    ``n_excluded`` counts the queries with no relevant target.
    """

    value: float
    per_query: np.ndarray
    n_excluded: int

    @property
    def n_included(self) -> int:
        return int(self.per_query.size - self.n_excluded)


@dataclass(frozen=True)
class RetrievalScores:
    """Every metric of one retrieval run (one ranking pass).

    Arrays are ``(Q,)``: ``ap`` float64 (NaN when excluded), ``n_relevant`` int64
    (``R`` per query, after removing the query itself with ``same_set``),
    ``precision[k]`` / ``recall[k]`` float64 (NaN when excluded). ``n_targets``
    is the ranking length each query sees (``N``, or ``N - 1`` with ``same_set``).
    """

    ap: np.ndarray
    n_relevant: np.ndarray
    n_targets: int
    precision: dict[int, np.ndarray] = field(default_factory=dict)
    recall: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def excluded(self) -> np.ndarray:
        """``(Q,)`` bool mask of the queries with no relevant target."""
        return self.n_relevant == 0

    @property
    def n_excluded(self) -> int:
        return int(np.count_nonzero(self.excluded))

    @property
    def mean_ap(self) -> float:
        return float(np.mean(self.ap[~self.excluded]))

    def precision_at(self, k: int) -> float:
        return float(np.mean(self.precision[k][~self.excluded]))

    def recall_at(self, k: int) -> float:
        return float(np.mean(self.recall[k][~self.excluded]))

    def result(self, name: str, k: int | None = None) -> RetrievalResult:
        """``name`` in ``"ap"``, ``"precision"``, ``"recall"`` as a :class:`RetrievalResult`."""
        per_query = self.ap if name == "ap" else getattr(self, name)[k]
        value = float(np.mean(per_query[~self.excluded]))
        return RetrievalResult(value, per_query, self.n_excluded)


# ----------------------------------------------------------------------------- inputs

def _features(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise InputError(f"{name} must be numeric features, got dtype {x.dtype}")
    if x.ndim != 2:
        raise InputError(f"{name} must be a 2-D (n_images, n_dims) array, got shape {x.shape}")
    if x.shape[0] == 0:
        raise InputError(f"{name} is empty (no images)")
    if x.shape[1] == 0:
        raise InputError(f"{name} has zero feature dimensions")
    if not _all_finite(x):
        raise InputError(f"{name} contains NaN or infinite values")
    return x


def _all_finite(x: np.ndarray, block: int = 4096) -> bool:
    """True when no NaN/inf; a float64 sum first (NaN and inf propagate), blockwise if it is not finite."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(x, dtype=np.float64)):
            return True
    return all(np.isfinite(x[i:i + block]).all() for i in range(0, x.shape[0], block))


def _labels(y, n: int, name: str, features: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {y.shape}")
    if y.shape[0] != n:
        raise InputError(f"{name} has {y.shape[0]} labels but {features} has {n} rows")
    return y


def _label_codes(query_labels, target_labels) -> tuple[np.ndarray, np.ndarray]:
    """Map both label arrays onto shared int32 codes."""
    numeric = [y.dtype.kind in "biu" for y in (query_labels, target_labels)]
    if numeric[0] != numeric[1]:
        raise InputError("query and target labels are of different kinds (ints vs strings): "
                         f"{query_labels.dtype} and {target_labels.dtype}")
    both = np.concatenate([query_labels, target_labels])
    try:
        _, codes = np.unique(both, return_inverse=True)
    except TypeError as exc:
        raise InputError(f"labels cannot be compared: {exc}") from None
    codes = codes.astype(np.int32, copy=False)
    return codes[: query_labels.size], codes[query_labels.size:]


def check_labels_only(query_labels, target_labels, same_set: bool):
    q = np.asarray(query_labels)
    t = q if (same_set and target_labels is None) else np.asarray(target_labels)
    for y, name in ((q, "query_labels"), (t, "target_labels")):
        if y.ndim != 1:
            raise InputError(f"{name} must be 1-D, got shape {y.shape}")
        if y.size == 0:
            raise InputError(f"{name} is empty")
    if same_set and not (q.shape == t.shape and np.array_equal(q, t)):
        raise InputError("same_set=True but query and target labels differ")
    qc, tc = _label_codes(q, t)
    return qc, tc


def relevant_counts(qcodes: np.ndarray, tcodes: np.ndarray, same_set: bool) -> np.ndarray:
    counts = np.bincount(tcodes, minlength=int(max(qcodes.max(), tcodes.max())) + 1)
    r = counts[qcodes].astype(np.int64)
    return r - 1 if same_set else r


def _validate(queries, query_labels, targets, target_labels, same_set, metric, chunk_size):
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if chunk_size is not None and (not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1):
        raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    q = _features(queries, "queries")
    if same_set and targets is None:
        targets, target_labels = q, query_labels if target_labels is None else target_labels
    t = _features(targets, "targets")
    if q.shape[1] != t.shape[1]:
        raise InputError(f"queries have {q.shape[1]} dimensions but targets have {t.shape[1]}")
    ql = _labels(query_labels, q.shape[0], "query_labels", "queries")
    tl = _labels(target_labels, t.shape[0], "target_labels", "targets")
    if same_set:
        if q.shape != t.shape or not (q is t or np.array_equal(q, t)):
            raise InputError("same_set=True but queries and targets are different feature sets")
        if not np.array_equal(ql, tl):
            raise InputError("same_set=True but query and target labels differ")
        if t.shape[0] < 2:
            raise InputError("same_set=True needs at least 2 images")
    qc, tc = _label_codes(ql, tl)
    n_rel = relevant_counts(qc, tc, same_set)
    if not np.any(n_rel > 0):
        raise InputError("every query is excluded: no query category has a relevant target")
    return q, t, qc, tc, n_rel


def default_chunk_size(n_targets: int, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Queries per chunk so that ``chunk * n_targets * BYTES_PER_PAIR <= budget_bytes`` (>= 1)."""
    return max(1, int(budget_bytes) // (BYTES_PER_PAIR * max(1, int(n_targets))))


def retrieval_scores(queries, query_labels, targets=None, target_labels=None, *,
                     same_set: bool = False, metric: str = "cosine",
                     ks: Sequence[int] = (10,), chunk_size: int | None = None,
                     device: str | None = None) -> RetrievalScores:
    """Rank all ``targets`` for every query once; return AP, P@k and R@k per query.

    ``queries`` ``(Q, D)``, ``query_labels`` ``(Q,)``, ``targets`` ``(N, D)``,
    ``target_labels`` ``(N,)`` (with ``same_set=True`` both may be None, meaning
    "the queries"). ``ks``: the cut-offs for P@k and R@k, each in ``1..N`` (``N-1``
    with ``same_set``). ``chunk_size``: queries per chunk; None picks the largest
    chunk whose working memory (``chunk_size * N * BYTES_PER_PAIR`` bytes) fits
    :data:`DEFAULT_CHUNK_BYTES` (:func:`default_chunk_size`). Results do not depend
    on ``chunk_size`` beyond the rounding of the BLAS matrix product (none when the
    products are exact, e.g. integer-valued features). The rows of each chunk are
    ranked by up to ``min(8, os.cpu_count())`` threads (NumPy sorts release the GIL).
    ``device``: a torch device (``cuda``, ``cuda:1``, ``cpu``) runs the same steps there with
    torch (:mod:`~crossmodal.evaluate.retrieval.ranking_torch`); None (the default): NumPy.

    Raises :class:`~crossmodal.errors.InputError` on bad input (see module docs).
    """
    q, t, qcodes, tcodes, n_rel = _validate(queries, query_labels, targets, target_labels,
                                            same_set, metric, chunk_size)
    n_q, n_t = q.shape[0], t.shape[0]
    n_keep = n_t - 1 if same_set else n_t
    ks = [int(k) for k in ks]
    for k in ks:
        if not 1 <= k <= n_keep:
            raise InputError(f"k={k} is out of range: each query ranks {n_keep} targets")
    if chunk_size is None:
        chunk_size = default_chunk_size(n_t)
    chunk_size = int(min(chunk_size, n_q))

    dtype = np.float32 if (q.dtype == np.float32 and t.dtype == np.float32) else np.float64
    t = np.ascontiguousarray(t, dtype=dtype)
    if metric == "cosine":
        t_aux = inverse_norm(t)
    else:
        t_aux = 0.5 * np.einsum("ij,ij->i", t, t)

    groups = target_groups(tcodes, int(max(qcodes.max(), tcodes.max())) + 1)
    if device is not None:
        from crossmodal.evaluate.retrieval.ranking_torch import torch_scores
        ap, hits = torch_scores(q, t, qcodes, groups, n_rel, ks=ks, same_set=same_set, metric=metric,
                                chunk_size=chunk_size, device=device)
        return _scores(ap, hits, n_rel, n_keep, ks)
    ap = np.full(n_q, np.nan)
    hits = {k: np.empty(n_q, dtype=np.int64) for k in ks}
    workers = max(1, min(_MAX_THREADS, os.cpu_count() or 1))
    check = not products_bounded(q, t, dtype)  # else no chunk can overflow: no per-chunk check
    # product buffers, reused (fresh pages cost page faults). float32: two, so the rows of one
    # chunk are ranked by the threads while the next chunk's product is computed into the other;
    # float64 (the argsort path, 3 more arrays of 8 bytes a pair) one, within BYTES_PER_PAIR
    raw = [np.empty((chunk_size, n_t), dtype=dtype) for _ in range(2 if dtype == np.float32 else 1)]
    sorted_rows = np.empty_like(raw[0]) if dtype == np.float32 else None
    pending: list = []
    with ThreadPoolExecutor(workers) as pool:
        for i, start in enumerate(range(0, n_q, chunk_size)):
            stop = min(start + chunk_size, n_q)
            qc = np.asarray(q[start:stop], dtype=dtype)
            buf = raw[i % len(raw)]
            if len(raw) == 1:  # the previous chunk's rows are still being ranked in buf
                for job in pending:
                    job.result()
            np.matmul(qc, t.T, out=buf[:stop - start])  # BLAS: every core, beside the ranking
            for job in pending:  # the previous chunk: its buffer and sorted_rows are free again
                job.result()
            # scaling and ranking in threads over the rows (NumPy's sorts release the GIL)
            bounds = np.linspace(0, stop - start, min(workers, stop - start) + 1).astype(int)
            pending = []
            for a, b in zip(bounds[:-1], bounds[1:]):
                g = slice(start + a, start + b)
                pending.append(pool.submit(
                    score_part, buf[a:b], qc[a:b], qcodes[g], tcodes, groups, n_rel[g], n_keep, ap[g],
                    {k: h[g] for k, h in hits.items()}, t_aux=t_aux, metric=metric,
                    self_cols=np.arange(g.start, g.stop) if same_set else None, check=check,
                    sorted_out=None if sorted_rows is None else sorted_rows[a:b]))
        for job in pending:
            job.result()

    return _scores(ap, hits, n_rel, n_keep, ks)


def _scores(ap, hits, n_rel, n_keep, ks) -> RetrievalScores:
    excluded = n_rel == 0
    precision, recall = {}, {}
    for k in ks:
        h = hits[k].astype(np.float64)
        precision[k] = np.where(excluded, np.nan, h / k)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall[k] = np.where(excluded, np.nan, h / n_rel)
    return RetrievalScores(ap=ap, n_relevant=n_rel, n_targets=n_keep,
                           precision=precision, recall=recall)


def nearest_targets(query, targets, k: int, *, metric: str = "cosine",
                    exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best targets for one query, ranked exactly as :func:`retrieval_scores` ranks them.

    ``query`` ``(D,)``, ``targets`` ``(N, D)``. ``exclude``: a target index left out
    of the ranking (the query itself in within-modal retrieval). Returns
    ``(indices, scores)``, both ``(min(k, N'),)``: target indices, best first (ties
    by ascending index), and their similarity (cosine) or negated squared
    half-distance term (euclidean; higher is nearer).
    """
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    t = _features(targets, "targets")
    q = _features(np.asarray(query).reshape(1, -1), "query")
    if q.shape[1] != t.shape[1]:
        raise InputError(f"the query has {q.shape[1]} dimensions but targets have {t.shape[1]}")
    dtype = np.float32 if (q.dtype == np.float32 and t.dtype == np.float32) else np.float64
    t = np.ascontiguousarray(t, dtype=dtype)
    t_aux = inverse_norm(t) if metric == "cosine" else 0.5 * np.einsum("ij,ij->i", t, t)
    s = chunk_scores(q, t, t_aux, metric, dtype)
    n_keep = t.shape[0]
    if exclude is not None:
        s[0, int(exclude)] = -np.inf
        n_keep -= 1
    values = s[0].copy()
    order = rank(s, n_keep)[0][: int(k)]  # rank all: rank fixes ties only within what it keeps
    return order, values[order]


def mean_average_precision(queries, query_labels, targets=None, target_labels=None, *,
                           same_set: bool = False, metric: str = "cosine",
                           chunk_size: int | None = None, return_per_query: bool = False):
    """Mean average precision (in [0, 1]) of ranking ``targets`` for each query.

    Shapes as in :func:`retrieval_scores`. Returns a float, or with
    ``return_per_query=True`` a :class:`RetrievalResult` (``value``, ``per_query``
    ``(Q,)`` AP with NaN for excluded queries, ``n_excluded``).
    """
    s = retrieval_scores(queries, query_labels, targets, target_labels, same_set=same_set,
                         metric=metric, ks=(), chunk_size=chunk_size)
    res = s.result("ap")
    return res if return_per_query else res.value


def precision_at_k(queries, query_labels, targets=None, target_labels=None, *, k: int = 10,
                   same_set: bool = False, metric: str = "cosine",
                   chunk_size: int | None = None, return_per_query: bool = False):
    """Mean precision at ``k``: relevant targets among the top ``k``, over ``k``.

    Same conventions and return types as :func:`mean_average_precision`.
    """
    s = retrieval_scores(queries, query_labels, targets, target_labels, same_set=same_set,
                         metric=metric, ks=(k,), chunk_size=chunk_size)
    res = s.result("precision", int(k))
    return res if return_per_query else res.value


def recall_at_k(queries, query_labels, targets=None, target_labels=None, *, k: int = 10,
                same_set: bool = False, metric: str = "cosine",
                chunk_size: int | None = None, return_per_query: bool = False):
    """Mean recall at ``k``: relevant targets among the top ``k``, over all relevant ``R``.

    Same conventions and return types as :func:`mean_average_precision`.
    """
    s = retrieval_scores(queries, query_labels, targets, target_labels, same_set=same_set,
                         metric=metric, ks=(k,), chunk_size=chunk_size)
    res = s.result("recall", int(k))
    return res if return_per_query else res.value
