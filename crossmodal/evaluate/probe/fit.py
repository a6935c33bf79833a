"""Logistic regression on frozen features, pure computation on arrays: the fit and the C sweep.

Inputs are feature matrices ``x`` ``(N, D)`` float32 (a pool map flattened
channel-first) and integer labels ``y`` ``(N,)`` in ``0..K-1``. Nothing here
reads or writes files.

**Logistic regression** (:func:`fit_logistic`): L2-regularised multinomial
logistic regression, minimised in float32 by L-BFGS written on PyTorch tensors
(full batch, CPU or GPU; centred features and a diagonal preconditioner, both
exact reparametrisations, see :func:`fit_logistic`). The objective is scikit-learn's, so that
``sklearn.linear_model.LogisticRegression(C=C)`` is the reference::

    C · Σ_i CE(W x_i + b, y_i) + ½ ‖W‖²        (the bias b is not penalised)

It is minimised divided by ``C · N`` (mean cross-entropy + ‖W‖² / (2 C N)), as
scikit-learn's lbfgs does, with the same stopping rule: the largest absolute
gradient entry ≤ ``tol`` (1e-4). A previous solution may be passed as ``init``
(warm start: the sweep goes from strong to weak regularisation, each fit
starting where the last one stopped).

**The sweep** (:func:`sweep_c`): C over a log grid, each fit scored on a
validation split carved from the training data (:func:`stratified_holdout`),
then the two log-midpoints around the best C; the best validation top-1 wins
(ties: the smaller C, the stronger regularisation). A best C at an end of the values tried
takes the grid one decade further that way, up to :data:`EXTEND` times; a C still at an end
(``Sweep.edge``), or a validation curve flat in C (``Sweep.flat``), is reported. The caller then refits on
all training data at that C (the protocol of CLIP's linear probe).

The MLP head: :mod:`crossmodal.evaluate.probe.mlp`; stratified splits and few-shot draws:
:mod:`crossmodal.evaluate.probe.splits`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from crossmodal.errors import InputError

#: The default C grid of the sweep (then refined around the best value).
DEFAULT_C_GRID: tuple[float, ...] = tuple(float(10.0 ** e) for e in range(-4, 4))
#: How many decades the sweep goes past an end of the grid when the best C sits there.
EXTEND = 3


# --------------------------------------------------------------------------- heads
@dataclass
class Head:
    """A trained classifier head: dense layers applied in order, ReLU between them.

    ``layers[i] = (weight (out, in) float32, bias (out,) float32)``: one layer for
    the logistic head, two (hidden 256, then K) for the MLP. ``logits(x)`` is the
    head applied to features ``x`` ``(N, in)``.
    """

    kind: str
    layers: list[tuple[np.ndarray, np.ndarray]]
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(self.layers[-1][0].shape[0])

    @property
    def in_features(self) -> int:
        return int(self.layers[0][0].shape[1])

    def logits(self, x: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """``(N, K)`` float32 logits, in row chunks (bounded memory)."""
        x = np.asarray(x, dtype=np.float32)
        out = np.empty((len(x), self.num_classes), dtype=np.float32)
        for s in range(0, len(x), chunk):
            h = x[s:s + chunk]
            for i, (w, b) in enumerate(self.layers):
                h = h @ w.T + b
                if i < len(self.layers) - 1:
                    h = np.maximum(h, 0.0)
            out[s:s + chunk] = h
        return out


def torch_device(device: str = "cpu") -> str:
    """``auto`` → ``cuda`` when PyTorch sees a GPU, else ``cpu``; other values as given."""
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but PyTorch sees no GPU")
    return device


def as_tensors(x, y, device: str):
    import torch
    xt = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = y if isinstance(y, torch.Tensor) else torch.from_numpy(np.asarray(y, dtype=np.int64))
    return xt.to(device=device, dtype=torch.float32), yt.to(device=device, dtype=torch.int64)


def check_xy(x, y, n_classes: int) -> None:
    if len(x) != len(y):
        raise InputError(f"{len(x)} feature rows for {len(y)} labels")
    if len(x) == 0:
        raise InputError("no training rows")
    if n_classes < 2:
        raise InputError(f"a classifier needs at least 2 classes, not {n_classes}")


# --------------------------------------------------------------------------- logistic regression
def fit_logistic(x, y, n_classes: int, C: float, *, init: Head | None = None, max_iter: int = 500,
                 tol: float = 1e-4, device: str = "cpu", history_size: int = 10, moments=None) -> Head:
    """L2-regularised multinomial logistic regression (module docstring), float32 L-BFGS.

    ``x`` ``(N, D)``, ``y`` ``(N,)`` in ``0..n_classes-1`` (NumPy arrays, or torch
    tensors already on ``device``; never modified, never copied). ``init``: a
    previous :class:`Head` to start from (warm start). ``moments``: the columns'
    ``(mean, variance)`` as torch tensors when the caller has them (the sweep
    computes them once). Returns a :class:`Head` whose ``info`` holds ``C``,
    ``iterations`` (function + gradient evaluations), ``converged``,
    ``max_abs_grad`` (of the objective in ``W, b``: scikit-learn's stopping
    quantity), ``seconds``.

    Two exact reparametrisations speed L-BFGS up without changing the optimum (the
    minimiser maps back one to one): the features are centred, implicitly
    (``W x + b = W (x − μ) + b_c`` with ``b_c = b + W μ``; the bias is not
    penalised), and each weight column is scaled by ``1 / sqrt(var_d / K + 1 / (C N))``,
    the inverse square root of the Hessian's diagonal at uniform probabilities (a
    diagonal preconditioner; the penalty is written in the original weights, so it is
    still ``½‖W‖²``). One evaluation is two ``(N × D)·(D × K)`` products.
    """
    import torch

    if not C > 0:
        raise InputError(f"C must be positive, not {C}")
    check_xy(x, y, n_classes)
    t0 = time.perf_counter()
    xt, yt = as_tensors(x, y, device)
    mu, var = moments if moments is not None else column_moments(xt)
    n, d = xt.shape
    k = n_classes
    reg = 1.0 / (2.0 * C * n)
    s = torch.rsqrt(var / k + 2.0 * reg)          # column scales of W
    s_b = math.sqrt(k)                              # the bias' scale (its Hessian diagonal ≈ 1/K)
    if init is not None:
        w0 = torch.as_tensor(init.layers[0][0], dtype=torch.float32, device=xt.device)
        b0 = torch.as_tensor(init.layers[0][1], dtype=torch.float32, device=xt.device)
        v = torch.cat([(w0 / s).reshape(-1), (b0 + w0 @ mu) / s_b])
    else:
        v = torch.zeros(k * d + k, dtype=torch.float32, device=xt.device)
    rows = torch.arange(n, device=xt.device)
    evals = 0

    def fg(v):
        """Objective and gradient in the scaled variables; also the max |entry| of the gradient in (W, b)."""
        nonlocal evals
        evals += 1
        w = v[:k * d].view(k, d) * s
        b_c = v[k * d:] * s_b
        z = torch.addmm(b_c - w @ mu, xt, w.T)
        lse = torch.logsumexp(z, 1)
        f = float((lse - z[rows, yt]).mean()) + reg * float((w * w).sum())
        p = torch.exp(z.sub_(lse[:, None]))
        p[rows, yt] -= 1.0
        p /= n
        gw = torch.addmm(w, p.T, xt, alpha=1.0, beta=2.0 * reg)   # ∂f/∂W at fixed b
        gb = p.sum(0)
        gmax = max(float(gw.abs().max()), float(gb.abs().max()))
        gw.sub_(torch.outer(gb, mu))                               # ∂f/∂W at fixed b_c
        return f, torch.cat([(gw * s).reshape(-1), gb * s_b]), gmax

    v, f, gmax = _lbfgs(fg, v, max_iter=max_iter, tol=tol, m=history_size)
    w = (v[:k * d].view(k, d) * s)
    b = v[k * d:] * s_b - w @ mu
    head = Head("logistic", [(w.cpu().numpy().astype(np.float32), b.cpu().numpy().astype(np.float32))])
    head.info = {"C": float(C), "iterations": evals, "converged": bool(gmax <= tol), "max_abs_grad": gmax,
                 "loss": f, "seconds": time.perf_counter() - t0, "device": str(xt.device)}
    return head


def column_moments(x, chunk: int = 4096):
    """Per-column mean and (population) variance of a torch ``(N, D)`` tensor, in row chunks
    (no ``N × D`` temporary), accumulated in float64."""
    import torch
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    squares = torch.zeros_like(total)
    for s in range(0, x.shape[0], chunk):
        block = x[s:s + chunk].double()
        total += block.sum(0)
        squares += (block * block).sum(0)
    n = max(x.shape[0], 1)
    mean = total / n
    var = (squares / n - mean * mean).clamp_(min=0.0)
    return mean.float(), var.float()


def _lbfgs(fg, v, *, max_iter: int, tol: float, m: int = 10):
    """Minimise a smooth convex function with L-BFGS (two-loop recursion, ``m`` pairs) and a
    backtracking Armijo line search that tries the unit step first.

    ``fg(v) → (f, g, gmax)``; stops when ``gmax ≤ tol`` (the caller's stopping quantity),
    after ``max_iter`` iterations, or when the step makes no progress. Returns (v, f, gmax).
    """
    f, g, gmax = fg(v)
    pairs: list = []
    for _ in range(max_iter):
        if gmax <= tol:
            break
        q = g.clone()
        alphas = []
        for s_i, y_i, rho in reversed(pairs):
            a = rho * float(s_i @ q)
            q.sub_(y_i, alpha=a)
            alphas.append(a)
        if pairs:
            s_i, y_i, _ = pairs[-1]
            q.mul_(float(s_i @ y_i) / float(y_i @ y_i))
        else:
            q.mul_(min(1.0, 1.0 / max(float(g.abs().max()), 1e-12)))
        for (s_i, y_i, rho), a in zip(pairs, reversed(alphas)):
            b = rho * float(y_i @ q)
            q.add_(s_i, alpha=a - b)
        d = q.neg_()
        gtd = float(g @ d)
        if gtd >= 0:  # not a descent direction (numerical trouble): restart from the gradient
            pairs.clear()
            d, gtd = -g, -float(g @ g)
        t = 1.0
        for _ls in range(30):
            v_new = v + t * d
            f_new, g_new, gmax_new = fg(v_new)
            if f_new <= f + 1e-4 * t * gtd or f_new <= f and _ls >= 20:
                break
            t *= 0.5
        else:
            break
        s_vec, y_vec = v_new - v, g_new - g
        sy = float(s_vec @ y_vec)
        if sy > 1e-10 * float(y_vec @ y_vec):
            pairs.append((s_vec, y_vec, 1.0 / sy))
            if len(pairs) > m:
                pairs.pop(0)
        progress = f - f_new
        v, f, g, gmax = v_new, f_new, g_new, gmax_new
        if 0 <= progress <= 1e-12 * max(abs(f), 1.0) and gmax > tol:
            break
    return v, f, gmax


def predict_topk(logits: np.ndarray, k: int = 5) -> np.ndarray:
    """Indices of the ``k`` largest logits per row, best first (ties: lower index first)."""
    k = min(k, logits.shape[1])
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def top1_accuracy(head: Head, x, y) -> float:
    y = np.asarray(y)
    return float(np.mean(np.argmax(head.logits(x), axis=1) == y)) if len(y) else float("nan")


@dataclass
class Sweep:
    """The C sweep: every C tried (in order) with its validation top-1, and the chosen C."""

    grid: list[float]
    val_top1: list[float]
    best_c: float
    heads: dict[float, Head] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def edge(self) -> str | None:
        """``"smallest"`` / ``"largest"`` when the chosen C is still an end of the values tried (after
        the grid was extended past it), else None."""
        if len(self.grid) < 2:
            return None
        return "smallest" if self.best_c == min(self.grid) else "largest" if self.best_c == max(self.grid) else None

    @property
    def flat(self) -> bool:
        """Every C tried gave the same validation top-1 (the smallest C is then kept)."""
        return len(set(self.val_top1)) == 1

    def to_dict(self) -> dict:
        order = np.argsort(self.grid)
        return {"C_grid": [self.grid[i] for i in order], "val_top1": [self.val_top1[i] for i in order],
                "C": self.best_c, "C_at_edge": self.edge, "val_top1_flat": self.flat,
                "seconds": round(self.seconds, 3),
                "iterations": [self.heads[self.grid[i]].info.get("iterations") for i in order]}


def sweep_c(x_train, y_train, x_val, y_val, n_classes: int, *, grid: Sequence[float] = DEFAULT_C_GRID,
            refine: bool = True, patience: int = 2, device: str = "cpu", max_iter: int = 300, tol: float = 1e-4,
            log: Callable[[str], None] | None = None) -> Sweep:
    """Sweep C (ascending, warm starts) on a train/validation split; see the module docstring.

    ``patience``: stop the coarse grid once the validation top-1 has fallen below the
    best for this many consecutive C values (weak regularisation is the slow end).
    ``refine``: then also fit the two log-midpoints around the best C.
    """
    import torch

    log = log or (lambda msg: None)
    t0 = time.perf_counter()
    grid = sorted(float(c) for c in grid)
    if not grid:
        raise InputError("the C grid is empty")
    xt, yt = as_tensors(x_train, y_train, device)
    moments = column_moments(xt)
    y_val = np.asarray(y_val)
    tried: dict[float, tuple[float, Head]] = {}
    prev: Head | None = None
    worse = 0
    for c in grid:
        head = fit_logistic(xt, yt, n_classes, c, init=prev, device=device, max_iter=max_iter, tol=tol,
                            moments=moments)
        acc = top1_accuracy(head, x_val, y_val)
        tried[c] = (acc, head)
        log(f"C={c:g}: validation top-1 {100 * acc:.2f} % ({head.info['iterations']} evaluations, "
            f"{head.info['seconds']:.1f} s)")
        prev = head
        best = max(a for a, _ in tried.values())
        worse = worse + 1 if acc < best else 0
        if worse >= patience:
            break
    best_c = _best(tried)
    if refine and len(grid) > 1:
        for c in (best_c / math.sqrt(10.0), best_c * math.sqrt(10.0)):
            if c in tried:
                continue
            start = max((k for k in tried if k < c), default=None)
            head = fit_logistic(xt, yt, n_classes, c, init=tried[start][1] if start else None,
                                device=device, max_iter=max_iter, tol=tol, moments=moments)
            tried[c] = (top1_accuracy(head, x_val, y_val), head)
            log(f"C={c:g}: validation top-1 {100 * tried[c][0]:.2f} % (refinement)")
        best_c = _best(tried)
    for _ in range(EXTEND):  # the best C at an end of what was tried: look one decade further
        if len({a for a, _ in tried.values()}) == 1 or best_c not in (min(tried), max(tried)):
            break
        c = best_c / 10.0 if best_c == min(tried) else best_c * 10.0
        start = max((k for k in tried if k < c), default=None)
        head = fit_logistic(xt, yt, n_classes, c, init=tried[start][1] if start else None,
                            device=device, max_iter=max_iter, tol=tol, moments=moments)
        tried[c] = (top1_accuracy(head, x_val, y_val), head)
        log(f"C={c:g}: validation top-1 {100 * tried[c][0]:.2f} % (the best C was at an end of the grid)")
        best_c = _best(tried)
    del xt, yt
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    cs = list(tried)
    return Sweep(cs, [tried[c][0] for c in cs], best_c, {c: h for c, (_, h) in tried.items()},
                 time.perf_counter() - t0)


def _best(tried: dict[float, tuple[float, Head]]) -> float:
    """Highest validation top-1; ties go to the smaller C."""
    return min(tried, key=lambda c: (-tried[c][0], c))
