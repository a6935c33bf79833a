"""The retrieval scoring of :mod:`~crossmodal.evaluate.retrieval.ranking` on a torch device (a GPU):
the same steps — similarity products of a query chunk with every target, one sort per row, each
relevant target's rank by a search in its row's sorted scores, exact ties ranked by index —
with every array on the device, so the similarity matrix never crosses to the host. Results
equal the NumPy path's wherever the device's matrix product rounds as the host's does (exactly
on integer-valued features, the tests' case); AP, P@k and R@k are computed as there.

Shapes: queries ``(Q, D)``, targets ``(N, D)``; ``qcodes`` ``(Q,)`` and ``tcodes`` ``(N,)`` int label
codes; ``groups`` from :func:`~crossmodal.evaluate.retrieval.ranking.target_groups`.
"""
from __future__ import annotations

import numpy as np

from crossmodal.evaluate.retrieval.ranking import relevant_pairs


def torch_scores(q: np.ndarray, t: np.ndarray, qcodes: np.ndarray, groups, n_rel: np.ndarray, *,
                 ks, same_set: bool, metric: str, chunk_size: int, device: str):
    """``(ap (Q,) float64 with NaN where no target is relevant, {k: hits (Q,) int64})``."""
    import torch

    dev = torch.device(device)
    dtype = torch.float32 if q.dtype == np.float32 else torch.float64
    tt = torch.as_tensor(t, dtype=dtype, device=dev)
    if metric == "cosine":
        norm = torch.linalg.vector_norm(tt, dim=1)
        t_aux = torch.where(norm > 0, 1 / norm, torch.zeros_like(norm))
    else:
        t_aux = 0.5 * (tt * tt).sum(1)
    n_q, n_t = len(q), len(t)
    ap = np.full(n_q, np.nan)
    hits = {k: np.zeros(n_q, dtype=np.int64) for k in ks}
    for start in range(0, n_q, chunk_size):
        stop = min(start + chunk_size, n_q)
        qc = torch.as_tensor(q[start:stop], dtype=dtype, device=dev)
        s = qc @ tt.T
        if metric == "cosine":  # scale the raw products, as the NumPy path does
            norm = torch.linalg.vector_norm(qc, dim=1)
            s *= torch.where(norm > 0, 1 / norm, torch.zeros_like(norm))[:, None]
            s *= t_aux
        else:
            s -= t_aux
        if not bool(torch.isfinite(s).all()):
            from crossmodal.errors import InputError
            raise InputError("similarities overflowed; features are too large in magnitude")
        self_cols = np.arange(start, stop) if same_set else None
        if same_set:
            s[torch.arange(stop - start, device=dev), torch.as_tensor(self_cols, device=dev)] = -torch.inf
        rows, cols = relevant_pairs(qcodes[start:stop], groups, self_cols)
        if not rows.size:
            continue
        part_ap, part_hits = _score_chunk(s, rows, cols, n_rel[start:stop], ks, torch)
        ap[start:stop] = part_ap
        for k in ks:
            hits[k][start:stop] = part_hits[k]
    return ap, hits


def _score_chunk(s, rows: np.ndarray, cols: np.ndarray, n_rel: np.ndarray, ks, torch):
    """AP and hits of the chunk ``s`` ``(c, N)`` on the device; ``(rows, cols)`` the relevant pairs."""
    c, n = s.shape
    dev = s.device
    counts = np.bincount(rows, minlength=c)
    m = int(counts.max())
    slot = np.arange(rows.size) - (np.cumsum(counts) - counts)[rows]  # place of a pair in its row
    r, col, j = (torch.as_tensor(a, device=dev) for a in (rows, cols, slot))
    values = torch.full((c, m), torch.inf, dtype=s.dtype, device=dev)  # padding sorts past every score
    values[r, j] = s[r, col]
    srt = torch.sort(s, dim=1).values
    above = torch.searchsorted(srt, values, right=True)  # targets of the row scoring <= the value
    rank = (n + 1 - above).to(torch.float64)
    valid = torch.zeros((c, m), dtype=torch.bool, device=dev)
    valid[r, j] = True
    colmat = torch.zeros((c, m), dtype=torch.long, device=dev)
    colmat[r, j] = col
    prev = srt.gather(1, (above - 2).clamp(min=0, max=n - 1))
    tr, tj = torch.nonzero(valid & (above >= 2) & (prev == values), as_tuple=True)
    index = torch.arange(n, device=dev)
    for a in range(0, len(tr), 256):  # exact ties: equal scores with a lower index rank higher
        b_r, b_j = tr[a:a + 256], tj[a:a + 256]
        earlier = (s[b_r] == values[b_r, b_j][:, None]) & (index[None, :] < colmat[b_r, b_j][:, None])
        rank[b_r, b_j] += earlier.sum(1).to(torch.float64)
    rank = torch.where(valid, rank, torch.full_like(rank, torch.inf))
    rank = torch.sort(rank, dim=1).values  # ascending within the row; padding last
    order = torch.arange(1, m + 1, dtype=torch.float64, device=dev)
    sums = torch.where(torch.isfinite(rank), order / rank, torch.zeros_like(rank)).sum(1).cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(n_rel > 0, sums / n_rel, np.nan)
    return ap, {k: (rank <= k).sum(1).cpu().numpy().astype(np.int64) for k in ks}
