"""Benchmark: mean_average_precision on a CMPlaces-sized retrieval problem.

Default: 20,500 queries and 20,500 targets (205 classes x 100), 4,096-dim float32
features (fc7-sized), cosine, cross-set. Prints the wall time, the process RSS
high-water mark (``resource.getrusage``) and the tracemalloc peak of the call's
NumPy allocations, and ratios against references measured in the same run: the
similarity matrix product alone (the same chunks, timed before and after the call; the
mean is the reference, the target is <= 1.2x), and, on a subset of queries and
extrapolated, a naive per-query NumPy loop (one matrix-vector product and a stable
argsort per query) and ``sklearn.metrics.average_precision_score`` per query (if
scikit-learn is installed).

    python benchmarks/bench_retrieval.py [--n 20500] [--dim 4096] [--classes 205]
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import time
import tracemalloc

import numpy as np

from crossmodal.evaluate.retrieval.metrics import (

    BYTES_PER_PAIR, default_chunk_size, mean_average_precision, retrieval_scores,

)

from crossmodal.evaluate.retrieval.chance import chance_map


def rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_features(n: int, dim: int, centres: np.ndarray, labels: np.ndarray,
                  rng: np.random.Generator, block: int = 2048) -> np.ndarray:
    """``(n, dim)`` float32: class centre + unit Gaussian noise, filled block by block."""
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        rng.standard_normal((stop - start, dim), dtype=np.float32, out=out[start:stop])
        out[start:stop] += centres[labels[start:stop]]
    return out


def gemm_alone(queries: np.ndarray, targets: np.ndarray, chunk: int) -> float:
    """Seconds for every query chunk's product with all targets, into one reused buffer: the
    floor of any exact retrieval (no scaling, no ranking)."""
    out = np.empty((chunk, len(targets)), dtype=np.float32)
    t0 = time.perf_counter()
    for start in range(0, len(queries), chunk):
        stop = min(start + chunk, len(queries))
        np.matmul(queries[start:stop], targets.T, out=out[:stop - start])
    return time.perf_counter() - t0


def naive_per_query_ap(queries, query_labels, targets, target_labels) -> np.ndarray:
    """Reference: one query at a time, normalise, dot, stable argsort, cumsum."""
    tn = targets / np.linalg.norm(targets, axis=1, keepdims=True)
    out = np.empty(len(queries))
    for i, (q, label) in enumerate(zip(queries, query_labels)):
        s = tn @ (q / np.linalg.norm(q))
        rel = target_labels[np.argsort(-s, kind="stable")] == label
        hits = np.cumsum(rel)
        out[i] = np.sum(hits[rel] / (np.flatnonzero(rel) + 1)) / rel.sum()
    return out


def sklearn_per_query_ap(queries, query_labels, targets, target_labels) -> np.ndarray:
    from sklearn.metrics import average_precision_score
    tn = targets / np.linalg.norm(targets, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    scores = qn @ tn.T
    return np.array([average_precision_score(target_labels == l, s)
                     for s, l in zip(scores, query_labels)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20500, help="queries and targets each")
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--classes", type=int, default=205)
    ap.add_argument("--signal", type=float, default=0.15, help="class-centre scale per dim")
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--subset", type=int, default=200, help="queries timed for the references")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"numpy {np.__version__}")
    rng = np.random.default_rng(args.seed)
    labels = np.arange(args.n) % args.classes
    centres = (args.signal * rng.standard_normal((args.classes, args.dim))).astype(np.float32)
    t0 = time.perf_counter()
    queries = make_features(args.n, args.dim, centres, labels, rng)
    targets = make_features(args.n, args.dim, centres, labels, rng)
    gb = 2 * queries.nbytes / 2**30
    print(f"data: {args.n} queries x {args.n} targets x {args.dim} dims float32, "
          f"{args.classes} classes ({gb:.2f} GiB of features, made in {time.perf_counter() - t0:.1f} s)")
    rss_before = rss_peak_mib()
    chunk = args.chunk_size or default_chunk_size(args.n)
    print(f"chunk_size: {chunk} queries (documented working-memory bound "
          f"{chunk * args.n * BYTES_PER_PAIR / 2**20:.0f} MiB)")

    gemm_before = gemm_alone(queries, targets, chunk)
    tracemalloc.start()
    t0 = time.perf_counter()
    res = mean_average_precision(queries, labels, targets, labels, chunk_size=args.chunk_size,
                                 return_per_query=True)
    elapsed = time.perf_counter() - t0
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    rss_after = rss_peak_mib()
    print(f"mean_average_precision: {elapsed:.1f} s  mAP={res.value:.4f}  "
          f"excluded={res.n_excluded}  ({args.n / elapsed:.0f} queries/s)")
    gemm_after = gemm_alone(queries, targets, chunk)
    gemm = (gemm_before + gemm_after) / 2
    print(f"reference, the similarity matrix product alone (same chunks, float32 BLAS): "
          f"{gemm_before:.1f} s before, {gemm_after:.1f} s after -> mean_average_precision = "
          f"{elapsed / gemm:.2f}x the GEMM (target <= 1.2x); ranking and the rest "
          f"{max(0.0, elapsed - gemm):.1f} s for {args.n * args.n / 1e6:.0f} M scores")
    print(f"memory: RSS high-water {rss_before:.0f} MiB before the call (features), "
          f"{rss_after:.0f} MiB after; tracemalloc peak of the call {traced_peak:.0f} MiB")
    t0 = time.perf_counter()
    chance = chance_map(labels, labels)
    print(f"chance_map: {chance:.5f} ({(time.perf_counter() - t0) * 1e3:.1f} ms)")

    sub = slice(0, args.subset)
    t0 = time.perf_counter()
    ours = retrieval_scores(queries[sub], labels[sub], targets, labels, ks=()).ap
    ours_sub = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = naive_per_query_ap(queries[sub], labels[sub], targets, labels)
    naive_total = (time.perf_counter() - t0) * args.n / args.subset
    print(f"reference, naive per-query loop: {naive_total:.1f} s extrapolated from "
          f"{args.subset} queries -> ratio {naive_total / elapsed:.1f}x slower than chunked "
          f"(max |AP diff| on the subset {np.max(np.abs(naive - ours)):.1e})")
    try:
        t0 = time.perf_counter()
        sk = sklearn_per_query_ap(queries[sub], labels[sub], targets, labels)
        sk_total = (time.perf_counter() - t0) * args.n / args.subset
        print(f"reference, sklearn average_precision_score per query: {sk_total:.1f} s "
              f"extrapolated -> ratio {sk_total / elapsed:.1f}x (max |AP diff| "
              f"{np.max(np.abs(sk - ours)):.1e}; float32 scores, ties may differ)")
    except ImportError:
        print("reference, sklearn: not installed, skipped")
    print(f"(chunked code on the same {args.subset}-query subset: {ours_sub:.2f} s)")


if __name__ == "__main__":
    main()
