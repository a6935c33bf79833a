"""Exact chance levels of the retrieval metrics: the expected AP, P@k and R@k of a uniformly random
ranking, from the label counts alone (conventions as in :mod:`crossmodal.evaluate.retrieval.metrics`).
"""
from __future__ import annotations

import numpy as np

from crossmodal.errors import InputError
from crossmodal.evaluate.retrieval.metrics import check_labels_only, relevant_counts



def _harmonic(n: np.ndarray) -> np.ndarray:
    """H_n for an int array ``n >= 1`` (pairwise-summed, one sum per distinct n)."""
    out = np.empty(n.shape, dtype=np.float64)
    for value in np.unique(n):
        out[n == value] = np.sum(1.0 / np.arange(1, value + 1, dtype=np.float64))
    return out


def expected_random_ap(n_relevant, n_targets):
    """Exact expected AP of a uniformly random ranking of ``N`` targets, ``R`` relevant.

    ``E[AP] = ((R - 1) / (N - 1) * (N - H_N) + H_N) / N`` with ``H_N`` the N-th
    harmonic number; 1 when ``R == N`` (including ``N == 1``). Accepts scalars or
    broadcastable int arrays with ``1 <= R <= N``; returns a float or an array.
    """
    r = np.asarray(n_relevant)
    n = np.asarray(n_targets)
    if r.dtype.kind not in "iu" or n.dtype.kind not in "iu":
        raise InputError("n_relevant and n_targets must be integers")
    r, n = np.broadcast_arrays(r.astype(np.int64), n.astype(np.int64))
    if np.any(r < 1) or np.any(r > n):
        raise InputError("expected_random_ap needs 1 <= n_relevant <= n_targets")
    h = _harmonic(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(n > 1, (r - 1) / np.maximum(n - 1, 1), 1.0)
        out = (frac * (n - h) + h) / n
    out = np.where(r == n, 1.0, out)
    return float(out) if out.ndim == 0 else out


def _chance_counts(query_labels, target_labels, same_set):
    qc, tc = check_labels_only(query_labels, target_labels, same_set)
    n_rel = relevant_counts(qc, tc, same_set)
    n = tc.size - 1 if same_set else tc.size
    keep = n_rel > 0
    if n < 1 or not keep.any():
        raise InputError("every query is excluded: no query category has a relevant target")
    return n_rel[keep], n


def chance_map(query_labels, target_labels=None, *, same_set: bool = False) -> float:
    """Expected mAP of random rankings, averaged over the non-excluded queries.

    ``query_labels`` ``(Q,)``, ``target_labels`` ``(N,)`` (None with ``same_set``).
    With ``same_set`` each query sees ``N - 1`` targets, ``R - 1`` of them relevant.
    """
    n_rel, n = _chance_counts(query_labels, target_labels, same_set)
    return float(np.mean(expected_random_ap(n_rel, n)))


def chance_precision_at_k(query_labels, target_labels=None, *, k: int = 10,
                          same_set: bool = False) -> float:
    """Expected P@k of random rankings: mean of ``R / N`` over non-excluded queries."""
    n_rel, n = _chance_counts(query_labels, target_labels, same_set)
    if not 1 <= k <= n:
        raise InputError(f"k={k} is out of range: each query ranks {n} targets")
    return float(np.mean(n_rel / n))


def chance_recall_at_k(query_labels, target_labels=None, *, k: int = 10,
                       same_set: bool = False) -> float:
    """Expected R@k of random rankings: ``k / N`` (the same for every query)."""
    _, n = _chance_counts(query_labels, target_labels, same_set)
    if not 1 <= k <= n:
        raise InputError(f"k={k} is out of range: each query ranks {n} targets")
    return k / n
