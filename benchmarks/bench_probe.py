"""Benchmark: the probe's logistic regression on CMPlaces-sized fc7 features.

Default: 20,500 training rows (205 classes × 100) of 4,096-dim float32 features,
class-structured like fc7 (post-ReLU: class centre + noise, clipped at 0), and
2,050 test rows from the same classes. Measured in one run:

1. the whole protocol of ``crossmodal probe``: stratified 80/20 hold-out → C sweep
   (warm starts, early stop, refinement) → refit on all 20,500 rows at the chosen C;
2. one fit at that fixed C from a cold start: ours (float32 L-BFGS on PyTorch
   tensors) vs ``sklearn.linear_model.LogisticRegression(C=C)`` (lbfgs with its
   defaults: tol 1e-4, max_iter 100; scikit-learn ≥ 1.4 keeps float32 input in
   float32), with both test top-1s (equal accuracy is the condition for the speed
   ratio to mean anything);
3. what dominates: the time of one function + gradient evaluation (two
   (N × D) · (D × K) products) × the number of evaluations.

    python benchmarks/bench_probe.py [--n-per-class 100] [--dim 4096] [--classes 205]
                                     [--sklearn-rows N] [--device cpu|cuda]

``--sklearn-rows`` fits scikit-learn (and ours, for the ratio) on the first N rows
only, for a machine where the full-size scikit-learn fit is too slow.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np

from crossmodal.evaluate.probe import fit as pf
from crossmodal.evaluate.probe import splits


def make_features(classes: int, per_class: int, dim: int, rng: np.random.Generator,
                  centres: np.ndarray, noise: float = 1.6) -> tuple[np.ndarray, np.ndarray]:
    """fc7-like rows: ``relu(centre + noise)``, float32, classes interleaved (as a shuffled list)."""
    y = np.tile(np.arange(classes), per_class)
    x = np.empty((len(y), dim), dtype=np.float32)
    for s in range(0, len(y), 2048):
        block = rng.standard_normal((min(2048, len(y) - s), dim), dtype=np.float32) * noise
        block += centres[y[s:s + 2048]]
        np.maximum(block, 0.0, out=block)
        x[s:s + 2048] = block
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=205)
    ap.add_argument("--n-per-class", type=int, default=100)
    ap.add_argument("--test-per-class", type=int, default=10)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--sklearn-rows", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch
    rng = np.random.default_rng(0)
    centres = (np.abs(rng.standard_normal((args.classes, args.dim))) * 0.35 - 0.1).astype(np.float32)
    centres *= rng.random((args.classes, args.dim)) < 0.3  # sparse, overlapping class profiles
    x, y = make_features(args.classes, args.n_per_class, args.dim, rng, centres)
    xt, yt = make_features(args.classes, args.test_per_class, args.dim, rng, centres)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), device {args.device}")
    print(f"features: {x.shape[0]:,} × {x.shape[1]:,} float32 training rows ({x.nbytes / 2**20:.0f} MiB), "
          f"{args.classes} classes; {len(yt):,} test rows")

    # 1. the protocol: hold-out, sweep, refit
    t0 = time.perf_counter()
    tr, va = splits.stratified_holdout(y, 0.2, seed=0)
    sw = pf.sweep_c(x[tr], y[tr], x[va], y[va], args.classes, device=args.device, log=lambda m: print("  ", m))
    t_sweep = time.perf_counter() - t0
    t1 = time.perf_counter()
    final = pf.fit_logistic(x, y, args.classes, sw.best_c, init=sw.heads[sw.best_c], device=args.device)
    t_refit = time.perf_counter() - t1
    total = time.perf_counter() - t0
    sweep_evals = sum(h.info["iterations"] for h in sw.heads.values())
    evals = sweep_evals + final.info["iterations"]
    print(f"sweep: {len(sw.grid)} values of C in {t_sweep:.1f} s ({sweep_evals} evaluations on "
          f"{len(tr):,} rows), chosen C={sw.best_c:g}; refit on all rows {t_refit:.1f} s "
          f"({final.info['iterations']} evaluations); test top-1 {100 * pf.top1_accuracy(final, xt, yt):.2f} %")
    print(f"whole sweep + refit: {total:.1f} s ({total / 60:.2f} min; target < 10 min)")

    # 3. what dominates: one evaluation
    xt_t = torch.from_numpy(x).to(args.device)
    yt_t = torch.from_numpy(y.astype(np.int64)).to(args.device)
    w = torch.zeros((args.classes, args.dim), requires_grad=True, device=args.device)
    b = torch.zeros(args.classes, requires_grad=True, device=args.device)
    reps = 3
    t2 = time.perf_counter()
    for _ in range(reps):
        loss = torch.nn.functional.cross_entropy(torch.addmm(b, xt_t, w.T), yt_t) + (w * w).sum()
        loss.backward()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    per_eval = (time.perf_counter() - t2) / reps
    del xt_t
    gflop = 2 * 2 * x.shape[0] * x.shape[1] * args.classes / 1e9
    products = per_eval * (sweep_evals * len(tr) / len(y) + final.info["iterations"])
    print(f"one loss + gradient evaluation on all rows: {per_eval * 1000:.0f} ms ({gflop:.1f} GFLOP in two "
          f"matrix products, {gflop / per_eval:.0f} GFLOP/s); {evals} evaluations ≈ {products:.0f} s of the "
          f"{total:.0f} s (≈ {min(100, round(100 * products / total))} %; this autograd evaluation is a little slower "
          f"than the fitter's own): the (N × D)·(D × K) products dominate, the L-BFGS updates (K × D vectors) "
          f"are the rest")

    # 2. one fit at fixed C, cold start, ours vs scikit-learn: at the chosen C and at 100× it (weak
    #    regularisation, the slow end of any sweep)
    n = args.sklearn_rows or len(y)
    xs, ys = x[:n], y[:n]
    from sklearn.linear_model import LogisticRegression
    for c in (sw.best_c, 100 * sw.best_c):
        t3 = time.perf_counter()
        ours = pf.fit_logistic(xs, ys, args.classes, c, device=args.device)
        t_ours = time.perf_counter() - t3
        t4 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ref = LogisticRegression(C=c).fit(xs, ys)
        t_sk = time.perf_counter() - t4
        conv = "converged" if not any("converge" in str(w.message).lower() for w in caught) else \
            f"stopped at max_iter={ref.max_iter} (ConvergenceWarning)"
        a, s = pf.top1_accuracy(ours, xt, yt), float(ref.score(xt, yt))
        print(f"one fit at C={c:g} on {n:,} rows, cold start: ours {t_ours:.1f} s "
              f"({ours.info['iterations']} evaluations, max|grad| {ours.info['max_abs_grad']:.1e}), scikit-learn "
              f"lbfgs {t_sk:.1f} s ({int(ref.n_iter_[0])} iterations, {conv})")
        print(f"   test top-1: ours {100 * a:.2f} %, scikit-learn {100 * s:.2f} % (Δ {100 * (a - s):+.2f} points); "
              f"speed-up ×{t_sk / t_ours:.2f} (target ≥ 2)")


if __name__ == "__main__":
    main()
