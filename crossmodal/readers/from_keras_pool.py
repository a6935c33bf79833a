"""Keras pooling, padding, merge, rescaling and LRN layers → IR (see :mod:`from_keras_layers`).

Pooling is exact or refused. Keras windows start at ``i·s − start`` (``start``: a folded
ZeroPadding2D's zeros plus the smaller half of ``same`` padding); the IR's at ``i·s − pad``,
symmetric ``pad``, optionally in ceil mode (extra windows clipped at the padding's end). Keras
ignores ``same`` padding (max) or leaves it out of the count (average) but counts explicit
zeros; the IR's max pooling ignores its padding and its average pooling counts it. So:

* max pooling: ``pad = start``, the window count matching in floor or ceil mode; explicit zeros
  only where the input is ≥ 0 (after a ReLU: a zero never beats the window's maximum);
* average pooling: as for max, and no ``same`` padding at the start, and the zeros at the end
  either as many as ``pad`` or never reached by a window.
"""
from __future__ import annotations

from dataclasses import replace

from crossmodal.readers.from_keras_layers import (
    KerasBuilder, Node, Value, _layer_limit, _map_input, _pair, converts, pad_attrs, same_padding,
)
from crossmodal.ir.kinds import pool_output_size

#: Classes a ZeroPadding2D may feed (it is folded into them).
TAKES_PADDING = frozenset({"Conv2D", "DepthwiseConv2D", "MaxPooling2D", "AveragePooling2D", "ZeroPadding2D"})


def pool_form(kind: str, n: int, k: int, s: int, zeros: tuple[int, int], same: bool,
              nonneg: bool) -> tuple[int, int, list[bool]] | str:
    """The IR padding (before, after) of one pooling axis of ``n`` input cells, and the ceil modes
    (False, True) that give Keras' windows; or why none does. ``zeros``: explicit zero padding
    (start, end). The symmetric form is preferred (what PyTorch and Caffe write), then ``pad_end``."""
    padded = n + sum(zeros)
    own = same_padding(padded, k, s) if same else (0, 0)
    out = -(-padded // s) if same else (padded - k) // s + 1
    pad = zeros[0] + own[0]
    if any(zeros) and kind == "max_pool2d" and not nonneg:
        return "zero padding before a max pooling whose input can be negative (exact only after a ReLU)"
    if kind == "avg_pool2d" and own[0]:
        return "'same' average pooling with padding at the start, which Keras leaves out of the count"
    last_end = (out - 1) * s - pad + k   # one past the last cell the last window covers
    if kind == "max_pool2d" or zeros[1] == pad or last_end <= n + min(zeros[1], pad):
        modes = [ceil for ceil in (False, True) if pool_output_size(n, k, s, pad, ceil) == out]
        if modes:
            return pad, pad, modes
    end = zeros[1] + own[1] if kind == "max_pool2d" else zeros[1]  # average: Keras' own padding not counted
    modes = [ceil for ceil in (False, True) if pool_output_size(n, k, s, pad, ceil, end) == out]
    if not modes:
        return f"{out} windows of {k} cells, stride {s}, on {n} cells padded {pad}+{end} fit neither rounding"
    return pad, end, modes


def _pool_limit(node: Node, consumers: list[str]) -> str | None:
    return _layer_limit(node, consumers)


def _pool(kind: str, b: KerasBuilder, node: Node, xs: list[Value]) -> Value:
    x, cfg = xs[0], node.cfg
    if (why := _map_input(b, node, x)):
        return b.refuse(node, why, x)
    kernel = _pair(cfg.get("pool_size", 2))
    strides = _pair(cfg.get("strides") or kernel)
    zeros = x.pad or ((0, 0), (0, 0))
    c, hp, wp = x.shape
    sizes = (hp - sum(zeros[0]), wp - sum(zeros[1]))
    same = cfg.get("padding", "valid") == "same"
    forms = [pool_form(kind, n, k, s, z, same, x.nonneg) for n, k, s, z in zip(sizes, kernel, strides, zeros)]
    bad = [f for f in forms if isinstance(f, str)]
    ceil = [m for m in (False, True) if all(m in f[2] for f in forms if not isinstance(f, str))]
    if bad or not ceil:
        return b.refuse(node, bad[0] if bad else "the two axes need different rounding modes", x)
    attrs = {"kernel": kernel, "stride": strides, **pad_attrs(((forms[0][0], forms[0][1]), (forms[1][0], forms[1][1]))),
             "ceil_mode": ceil[0]}
    src = replace(x, pad=None, shape=(c, *sizes))
    return b.add(node.name, kind, [src], attrs, keras=node.name, nonneg=x.nonneg)


@converts("MaxPooling2D", limit=_pool_limit)
def max_pool(b, node, xs):
    return _pool("max_pool2d", b, node, xs)


@converts("AveragePooling2D", limit=_pool_limit)
def avg_pool(b, node, xs):
    return _pool("avg_pool2d", b, node, xs)


def _padding_of(cfg: dict) -> tuple[tuple[int, int], tuple[int, int]]:
    p = cfg.get("padding", 1)
    if isinstance(p, (int, float)):
        return (int(p), int(p)), (int(p), int(p))
    return tuple((int(a), int(a)) if isinstance(a, (int, float)) else (int(a[0]), int(a[1])) for a in p)


def _zero_pad_limit(node: Node, consumers: list[str]) -> str | None:
    others = sorted({c for c in consumers if c not in TAKES_PADDING})
    if others:
        return (f"feeds {', '.join(others)}: the IR pads only inside convolutions and pooling "
                "(a standalone padding layer is not in the IR yet)")
    return _layer_limit(node, consumers)


@converts("ZeroPadding2D", limit=_zero_pad_limit)
def zero_padding(b: KerasBuilder, node: Node, xs: list[Value]) -> Value:
    """Not an IR layer: the padding travels with the value to the conv or pooling it feeds."""
    x = xs[0]
    if (why := _map_input(b, node, x)):
        return b.refuse(node, why, x)
    (t, bo), (le, r) = _padding_of(node.cfg)
    old = x.pad or ((0, 0), (0, 0))
    c, h, w = x.shape
    return replace(x, pad=((old[0][0] + t, old[0][1] + bo), (old[1][0] + le, old[1][1] + r)),
                   shape=(c, h + t + bo, w + le + r))


def _folds_into_add(node: Node, consumers: list[str]) -> bool:
    """A Rescaling without offset that only feeds sums: their coefficient (the Keras emitter's form)."""
    return (not node.cfg.get("offset") and bool(consumers)
            and all(c in ("Add", "Subtract", "Average") for c in consumers))


def _rescaling_limit(node: Node, consumers: list[str]) -> str | None:
    scale, offset = node.cfg.get("scale", 1.0), node.cfg.get("offset", 0.0)
    if not isinstance(scale, (int, float)) or not isinstance(offset, (int, float)):
        return "per-channel scale or offset (the IR's rescale is scalar)"
    return None


@converts("Rescaling", limit=_rescaling_limit)
def rescaling(b: KerasBuilder, node: Node, xs: list[Value]) -> Value:
    """``x · scale + offset``: the IR's ``rescale``, or, feeding only sums, their coefficient."""
    x, scale, offset = xs[0], float(node.cfg.get("scale", 1.0)), float(node.cfg.get("offset", 0.0))
    if _folds_into_add(node, [b.classes[c] for c in b.consumers.get(node.name, [])]):
        return replace(x, coeff=scale * (x.coeff or 1.0), nonneg=False)
    return b.add(node.name, "rescale", xs, {"scale": scale, **({"offset": offset} if offset else {})},
                 keras=node.name, hwc=x.hwc, nonneg=x.nonneg and scale >= 0 and offset >= 0)


def _merge_limit(node: Node, consumers: list[str]) -> str | None:
    return None


@converts("Add", "Subtract", "Average", "Multiply", "Maximum", limit=_merge_limit)
def eltwise(b: KerasBuilder, node: Node, xs: list[Value]) -> Value:
    if len({x.hwc for x in xs}) != 1:
        return b.refuse(node, "inputs flattened from different maps", xs[0])
    if len({x.shape for x in xs}) != 1:
        return b.refuse(node, f"inputs of different shapes {[x.shape for x in xs]} (no broadcasting in the IR)",
                        xs[0])
    n = len(xs)
    coeffs = [x.coeff if x.coeff is not None else 1.0 for x in xs]
    if node.cls == "Subtract":
        coeffs = [coeffs[0], -coeffs[1]]
    elif node.cls == "Average":
        coeffs = [c / n for c in coeffs]
    op = {"Multiply": "prod", "Maximum": "max"}.get(node.cls, "sum")
    attrs = {"op": op, **({"coeffs": tuple(coeffs)} if op == "sum" and any(c != 1.0 for c in coeffs) else {})}
    nonneg = all(x.nonneg for x in xs) and (op != "sum" or all(c > 0 for c in coeffs))
    return b.add(node.name, "eltwise", [replace(x, coeff=None) for x in xs], attrs, keras=node.name,
                 hwc=xs[0].hwc, nonneg=nonneg)


@converts("Concatenate")
def concat(b: KerasBuilder, node: Node, xs: list[Value]) -> Value:
    axis, rank = node.cfg.get("axis", -1), len(xs[0].shape) + 1
    if axis not in (-1, rank - 1):
        return b.refuse(node, f"axis {axis} (the channel axis, -1, only)", xs[0])
    if any(x.hwc for x in xs):
        return b.refuse(node, "joins vectors flattened from maps (HWC order; the IR's is CHW)", xs[0])
    return b.add(node.name, "concat", xs, {"axis": 1}, keras=node.name, nonneg=all(x.nonneg for x in xs))


@converts("LocalResponseNorm")
def lrn(b: KerasBuilder, node: Node, xs: list[Value]) -> Value:
    """crossmodal's own ``crossmodal>LocalResponseNorm`` (the Keras emitter's LRN)."""
    if (why := _map_input(b, node, xs[0])):
        return b.refuse(node, why, xs[0])
    cfg = node.cfg
    attrs = {"size": int(cfg["size"]), "alpha": float(cfg["alpha"]), "beta": float(cfg["beta"]),
             "k": float(cfg.get("k", 1.0))}
    return b.add(node.name, "lrn", xs, attrs, keras=node.name, nonneg=xs[0].nonneg)
