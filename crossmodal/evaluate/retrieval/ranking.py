"""The exact core of retrieval scoring, on one chunk of queries: similarity scores, each relevant
target's 1-based rank under the strict ranking (descending score, then ascending target index),
and from the ranks AP and hits in the top ``k``. Pure NumPy; conventions as in
:mod:`crossmodal.evaluate.retrieval.metrics`.

float32 scores are ranked without an argsort (each relevant target's rank is found by searching
the row's sorted scores, and an exact tie is ordered by index by counting in the row); float64
scores take the argsort path. Both give the same ranks. See ``benchmarks/bench_retrieval.py``.
"""
from __future__ import annotations

import numpy as np

from crossmodal.errors import InputError



def rank(scores: np.ndarray, n_keep: int) -> np.ndarray:
    """Ranking of each row of ``scores`` ``(c, N)``: ``(c, n_keep)`` int64 target indices.

    Descending score, ties by ascending index. ``scores`` is overwritten. Ties are
    ordered only within the kept columns, so ``n_keep < N`` may cut off only entries
    that score strictly below every kept one (the ``-inf`` of a left-out query).
    """
    neg = np.negative(scores, out=scores)
    order = np.ascontiguousarray(np.argsort(neg, axis=1)[:, :n_keep])  # unstable: fixed below
    sv = np.take_along_axis(neg, order, axis=1)
    tie = np.zeros(order.shape, dtype=bool)  # tie[i, j]: rank j and j + 1 have equal scores
    np.equal(sv[:, 1:], sv[:, :-1], out=tie[:, :-1])
    del sv
    pos = np.flatnonzero(tie)  # flat positions that start a tied pair (last column is False)
    if pos.size:
        # Every position in a run of equal scores, in order; a run continues from p to
        # p + 1 exactly when tie[p]. Sort (run number << 32 | index) to reorder each run.
        pos = np.union1d(pos, pos + 1)
        tie_flat, order_flat = tie.reshape(-1), order.reshape(-1)
        new_run = np.ones(pos.size, dtype=bool)
        new_run[1:] = ~((pos[1:] == pos[:-1] + 1) & tie_flat[pos[:-1]])
        key = np.cumsum(new_run, dtype=np.int64) << 32
        key |= order_flat[pos]
        key.sort()
        order_flat[pos] = key & 0xFFFFFFFF
    return order


def inverse_norm(x: np.ndarray) -> np.ndarray:
    """``(n,)`` 1 / L2 norm of each row of ``x`` ``(n, D)``; 0 for a zero row."""
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))
    return np.divide(1, norm, out=np.zeros_like(norm), where=norm > 0)


def chunk_scores(qc: np.ndarray, t: np.ndarray, t_aux: np.ndarray, metric: str, dtype) -> np.ndarray:
    """Similarity of a query chunk ``(c, D)`` to all targets ``(N, D)``: ``(c, N)``."""
    qc = np.asarray(qc, dtype=dtype)
    return finish_scores(qc @ t.T, qc, t_aux, metric)


def finish_scores(s: np.ndarray, qc: np.ndarray, t_aux: np.ndarray, metric: str, *,
                  check: bool = True) -> np.ndarray:
    """Raw products ``s = qc @ t.T`` ``(c, N)`` → similarities, in place. Cosine scales the
    products (exact products stay exact ties); Euclidean subtracts ``|t|^2 / 2``. ``check=False``
    skips the overflow check, for callers that proved the products bounded
    (:func:`products_bounded`)."""
    if metric == "cosine":
        s *= inverse_norm(qc)[:, None]
        s *= t_aux  # 1/|t|
    else:
        s -= t_aux  # |t|^2 / 2
    if check and not np.isfinite(s).all():
        raise InputError("similarities overflowed; features are too large in magnitude")
    return s


def products_bounded(q: np.ndarray, t: np.ndarray, dtype) -> bool:
    """True when no similarity of rows of ``q`` and ``t`` can overflow ``dtype``: by
    Cauchy-Schwarz every partial sum of a product is at most ``max|q| * max|t|`` (and a
    Euclidean score adds ``|t|^2 / 2``), checked in float64 with a 16x margin for rounding."""
    def max_norm(x):
        return max(float(np.sqrt(np.einsum("ij,ij->i", x[i:i + 4096], x[i:i + 4096],
                                           dtype=np.float64).max())) for i in range(0, len(x), 4096))
    nq, nt = max_norm(q), max_norm(t)
    return np.isfinite(nq * nt) and nq * nt + nt * nt < float(np.finfo(dtype).max) / 16


def score_rows(s, qcodes, tcodes, n_rel, n_keep, ap_out, hits_out) -> None:
    """Rank rows ``s`` ``(c, N)`` (overwritten) and write AP and top-k hits into the outputs."""
    order = rank(s, n_keep)
    rel = tcodes[order] == qcodes[:, None]
    del order
    for k, out in hits_out.items():
        out[:] = np.count_nonzero(rel[:, :k], axis=1)
    rows, cols = np.nonzero(rel)
    del rel
    # the j-th relevant target of a row (1-based) sits at rank cols + 1: AP = mean_j j / rank_j
    counts = np.bincount(rows, minlength=s.shape[0])
    first = np.cumsum(counts) - counts
    j = np.arange(1, rows.size + 1) - first[rows]
    sums = np.bincount(rows, weights=j / (cols + 1.0), minlength=s.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        ap_out[:] = np.where(n_rel > 0, sums / n_rel, np.nan)


def target_groups(tcodes: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """Target columns grouped by label code: ``(columns, starts)``, both int64, with the columns
    of code ``k`` (ascending) at ``columns[starts[k]:starts[k + 1]]``."""
    columns = np.argsort(tcodes, kind="stable")
    starts = np.zeros(n_codes + 1, dtype=np.int64)
    np.cumsum(np.bincount(tcodes, minlength=n_codes), out=starts[1:])
    return columns, starts


#: a row with more relevant targets tied to other targets than this takes the argsort path
MAX_TIED_PER_ROW = 16


def relevant_pairs(qcodes: np.ndarray, groups, self_cols=None) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` int64 of every (query row, relevant target column) pair, row-major with
    columns ascending; ``self_cols`` (each row's own column) left out."""
    columns, starts = groups
    lo, hi = starts[qcodes], starts[np.asarray(qcodes) + 1]
    counts = hi - lo
    rows = np.repeat(np.arange(len(counts)), counts)
    offsets = np.cumsum(counts) - counts
    cols = columns[np.repeat(lo - offsets, counts) + np.arange(rows.size)]
    if self_cols is not None:
        keep = cols != np.asarray(self_cols)[rows]
        rows, cols = rows[keep], cols[keep]
    return rows, cols


def score_rows_by_search(s, qcodes, tcodes, groups, n_rel, n_keep, ap_out, hits_out,
                         self_cols=None, sorted_out=None) -> None:
    """:func:`score_rows` for float32 scores ``s`` ``(c, N)`` (left unchanged), from a sort of
    the scores and a search, not an argsort.

    Each relevant target's rank is 1 + the number of targets scoring strictly higher (found by
    searching its score in the row's sorted scores: a SIMD sort of 32-bit floats; ``-0.0`` and
    ``0.0`` compare equal, as they do for scikit-learn) + the number of targets with an equal
    score and a lower index (counted in the row, so ties are ranked by index, as in
    :func:`rank`). Only the relevant columns are touched per row (``groups``:
    :func:`target_groups`), so the work beyond the sort is O(relevant). A row with more than
    :data:`MAX_TIED_PER_ROW` tied relevant targets (degenerate features) goes to
    :func:`score_rows`. ``self_cols``: with within-modal retrieval, each row's own column (its
    ``-inf``), never relevant. ``sorted_out``: an optional ``(c, N)`` float32 buffer for the
    sorted rows (reused across chunks to spare page faults).
    """
    c, n = s.shape
    if sorted_out is None:
        srt = s.copy()
    else:
        srt = sorted_out
        np.copyto(srt, s)
    srt.sort(axis=1)
    rows, cols = relevant_pairs(qcodes, groups, self_cols)  # row-major, columns ascending
    values = s[rows, cols]
    above = np.empty(rows.size, dtype=np.int64)  # targets of the row scoring <= the value
    bounds = np.searchsorted(rows, np.arange(c + 1))
    for r in np.flatnonzero(np.diff(bounds)):
        a, b = bounds[r], bounds[r + 1]
        above[a:b] = np.searchsorted(srt[r], values[a:b], side="right")
    rank = n + 1 - above  # 1 + targets scoring strictly higher
    tied = np.flatnonzero((above >= 2) & (srt[rows, np.maximum(above - 2, 0)] == values))
    tied_rows, tied_count = np.unique(rows[tied], return_counts=True)
    redo = tied_rows[tied_count > MAX_TIED_PER_ROW]
    for i in tied[~np.isin(rows[tied], redo)]:  # equal scores rank by index
        rank[i] += np.count_nonzero(s[rows[i], :cols[i]] == values[i])
    order = np.argsort(rows * (n + 2) + rank)  # by row, then rank (distinct within a row)
    rows, rank = rows[order], rank[order]
    counts = np.bincount(rows, minlength=c)
    first = np.cumsum(counts) - counts
    j = np.arange(1, rows.size + 1) - first[rows]  # the j-th relevant target of its row
    sums = np.bincount(rows, weights=j / rank, minlength=c)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap_out[:] = np.where(n_rel > 0, sums / n_rel, np.nan)
    ks = list(hits_out)
    for k in ks:
        hits_out[k][:] = np.bincount(rows[rank <= k], minlength=c)
    if redo.size:  # degenerate rows: rank by argsort
        ap_part, hits_part = np.empty(redo.size), {k: np.empty(redo.size, np.int64) for k in ks}
        score_rows(s[redo], qcodes[redo], tcodes, n_rel[redo], n_keep, ap_part, hits_part)
        ap_out[redo] = ap_part
        for k in ks:
            hits_out[k][redo] = hits_part[k]


def score_part(raw, qc, qcodes, tcodes, groups, n_rel, n_keep, ap_out, hits_out, *, t_aux, metric,
               self_cols, check, sorted_out) -> None:
    """One thread's share of a chunk: raw products ``raw`` ``(c, N)`` (overwritten) →
    similarities (:func:`finish_scores`), the query's own column to ``-inf`` (``self_cols``),
    then AP and hits: by search for float32, by argsort otherwise."""
    s = finish_scores(raw, qc, t_aux, metric, check=check)
    if self_cols is not None:  # the query itself sorts last and is cut off by n_keep
        s[np.arange(len(s)), self_cols] = -np.inf
    if s.dtype == np.float32:
        score_rows_by_search(s, qcodes, tcodes, groups, n_rel, n_keep, ap_out, hits_out,
                             self_cols, sorted_out)
    else:
        score_rows(s, qcodes, tcodes, n_rel, n_keep, ap_out, hits_out)
