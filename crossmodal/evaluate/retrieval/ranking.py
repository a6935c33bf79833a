"""The exact core of retrieval scoring, on one chunk of queries: similarity scores, each relevant
target's 1-based rank under the strict ranking (descending score, then ascending target index),
and from the ranks AP and hits in the top ``k``. Pure NumPy; conventions as in
:mod:`crossmodal.evaluate.retrieval.metrics`.

float32 scores are ranked without an argsort (each relevant target's rank is found by searching
the row's sorted scores; rows with exact ties take the argsort path, which orders ties by index);
float64 scores always take the argsort path. Both give the same ranks.
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


def chunk_scores(qc: np.ndarray, t: np.ndarray, t_aux: np.ndarray, metric: str, dtype):
    """Similarity of a query chunk ``(c, D)`` to all targets ``(N, D)``: ``(c, N)``."""
    qc = np.asarray(qc, dtype=dtype)
    if metric == "cosine":  # scale the raw products: exact products stay exact ties
        s = qc @ t.T
        s *= inverse_norm(qc)[:, None]
        s *= t_aux  # 1/|t|
    else:
        s = qc @ t.T
        s -= t_aux  # |t|^2 / 2
    if not np.isfinite(s).all():
        raise InputError("similarities overflowed; features are too large in magnitude")
    return s


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


def sortable_keys(s: np.ndarray) -> np.ndarray:
    """float32 ``(c, N)`` → uint32 keys in the same order (``a < b`` ⇔ ``key(a) < key(b)``;
    equal floats, ``-0.0`` and ``0.0`` included, get equal keys)."""
    u = (s + np.float32(0.0)).view(np.uint32)  # -0.0 + 0.0 = +0.0
    return np.where(u >> 31 != 0, ~u, u | np.uint32(0x80000000))


def score_rows_by_search(s, qcodes, tcodes, n_rel, n_keep, ap_out, hits_out, self_cols=None) -> None:
    """:func:`score_rows` for float32 scores, from a sort of the scores and a search, not an argsort.

    Each relevant target's rank is 1 + the number of targets scoring strictly higher,
    found by searching its key in the row's sorted keys (rows are made disjoint by
    putting the row number in the upper 32 bits of a uint64 key, so one search serves
    the chunk). Rows where a relevant target ties with any other target go to
    :func:`score_rows`, whose ranking breaks ties by index. ``self_cols``: with
    within-modal retrieval, each row's own column (its ``-inf``), never relevant.
    """
    c, n = s.shape
    keys = sortable_keys(s)
    rel = tcodes[None, :] == qcodes[:, None]
    if self_cols is not None:
        rel[np.arange(c), self_cols] = False
    rows, cols = np.nonzero(rel)
    del rel
    row_bits = np.arange(c, dtype=np.uint64)[:, None] << np.uint64(32)
    wanted = keys[rows, cols].astype(np.uint64) | row_bits[rows, 0]
    keys.sort(axis=1)
    flat = (keys.astype(np.uint64) | row_bits).ravel()
    del keys
    above = np.searchsorted(flat, wanted, side="right")
    tied = above - np.searchsorted(flat, wanted, side="left") > 1
    del flat, wanted
    rank = (rows + 1) * n - above + 1  # 1 + targets of the row scoring strictly higher
    order = np.argsort(rows * (n + 1) + rank, kind="stable")  # by row, then rank
    rows, rank = rows[order], rank[order]
    counts = np.bincount(rows, minlength=c)
    first = np.cumsum(counts) - counts
    j = np.arange(1, rows.size + 1) - first[rows]
    sums = np.bincount(rows, weights=j / rank, minlength=c)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap_out[:] = np.where(n_rel > 0, sums / n_rel, np.nan)
    for k, out in hits_out.items():
        out[:] = np.bincount(rows[rank <= k], minlength=c)
    redo = np.unique(rows[tied[order]])
    if redo.size:  # exact ties: rank those rows by index as well
        ap_part, hits_part = np.empty(redo.size), {k: np.empty(redo.size, np.int64) for k in hits_out}
        score_rows(s[redo], qcodes[redo], tcodes, n_rel[redo], n_keep, ap_part, hits_part)
        ap_out[redo] = ap_part
        for k, out in hits_out.items():
            out[redo] = hits_part[k]
