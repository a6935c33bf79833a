"""ONNX op → IR layer converters of the layers with weights or windows: Conv, Gemm, MatMul,
BatchNormalization, pooling (MaxPool, AveragePool, GlobalAveragePool, ReduceMean over the spatial
axes), Pad (folded into the next conv or pooling), LRN, activations (Relu, LeakyRelu, Clip as the
clipped ReLU), Softmax, Concat. Views and arithmetic: :mod:`onnx_ops_view`.

One converter per op in :data:`CONVERTERS` (``fn(builder, node)``, setting the node's outputs);
:data:`LIMITS` give a reason an op's attributes alone make it unsupported (listed before any
conversion with every other unsupported node). A converter raises UnsupportedError (the reader
collects it with the node's name and goes on) or InputError (a malformed file: stops).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from crossmodal.errors import InputError, UnsupportedError
from crossmodal.readers.onnx_load import Node
from crossmodal.readers.onnx_state import NHWC, OnnxBuilder, Value

Converter = Callable[[OnnxBuilder, Node], None]
CONVERTERS: dict[str, Converter] = {}
LIMITS: dict[str, Callable[[Node, int], str | None]] = {
    "ConvTranspose": lambda node, opset: "transposed convolution (upsampling) has no IR layer kind",
}


def converts(*ops: str, limit: Callable[[Node, int], str | None] | None = None):
    def register(fn: Converter) -> Converter:
        for op in ops:
            CONVERTERS[op] = fn
            if limit is not None:
                LIMITS[op] = limit
        return fn
    return register


def _ints(values, n: int = 2, default: int = 1) -> tuple[int, ...]:
    return tuple(int(v) for v in values) if values is not None else (default,) * n


def spatial_pads(node: Node, hw: tuple[int, int], kernel, strides, dilations) -> tuple[tuple[int, int], ...]:
    """((top, bottom), (left, right)) from ``pads`` or ``auto_pad`` (SAME_UPPER puts the odd cell
    at the end, SAME_LOWER at the start, VALID none)."""
    auto = node.attrs.get("auto_pad", "NOTSET") or "NOTSET"
    if auto in ("NOTSET", ""):
        p = _ints(node.attrs.get("pads"), 4, 0)
        if len(p) != 4:
            raise UnsupportedError(f"pads {list(p)} (2-D only)")
        return (p[0], p[2]), (p[1], p[3])
    if auto == "VALID":
        return (0, 0), (0, 0)
    out = []
    for n, k, s, d in zip(hw, kernel, strides, dilations):
        total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
        small, big = total // 2, total - total // 2
        out.append((small, big) if auto == "SAME_UPPER" else (big, small))
    return tuple(out)


def _window_attrs(kernel, strides, pads, extra_pad=None) -> dict:
    (t, b), (l, r) = pads
    if extra_pad is not None:
        (et, eb), (el, er) = extra_pad
        t, b, l, r = t + et, b + eb, l + el, r + er
    attrs = {"kernel": tuple(kernel), "stride": tuple(strides), "pad": (t, l)}
    if (b, r) != (t, l):
        attrs["pad_end"] = (b, r)
    return attrs


# --- convolution and dense ----------------------------------------------------------------------
@converts("Conv")
def conv(b: OnnxBuilder, node: Node) -> None:
    x = b.map_value(node, pad_ok=True)
    w = b.needs_const(node, 1, "weight")
    if w.ndim != 4:
        raise UnsupportedError(f"a {w.ndim - 2}-D convolution (2-D only)")
    bias = b.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if len(node.inputs) > 2 and node.inputs[2] and bias is None:
        raise UnsupportedError("its bias is computed, not a constant")
    kernel = _ints(node.attrs.get("kernel_shape") or w.shape[2:])
    strides, dil = _ints(node.attrs.get("strides")), _ints(node.attrs.get("dilations"))
    groups = int(node.attrs.get("group", 1))
    attrs = _window_attrs(kernel, strides, spatial_pads(node, x.shape[1:], kernel, strides, dil), x.pad)
    attrs.update(in_channels=int(x.shape[0]), out_channels=int(w.shape[0]))
    if groups != 1:
        attrs["groups"] = groups
    if dil != (1, 1):
        attrs["dilation"] = dil
    tensors = {"weight": w} if bias is None else {"weight": w, "bias": bias.reshape(-1)}
    b.set(node, b.add(node, "conv2d", [x.viewed(pad=None)], attrs, tensors))


def _dense(b: OnnxBuilder, node: Node, x: Value, weight: np.ndarray, bias: np.ndarray) -> None:
    """A dense layer (weight (out, in)); after an HWC-order flatten its rows go back to CHW."""
    if weight.ndim != 2 or weight.shape[1] != x.shape[0]:
        raise InputError(f"node {node.name!r} ({node.op}): a weight of shape {list(weight.shape)} for "
                         f"{x.shape[0]} input features", b.path)
    if x.hwc is not None:
        from crossmodal.ir.layouts import dense_hwc_rows_to_chw
        weight = dense_hwc_rows_to_chw(weight, x.hwc)
    attrs = {"in_features": int(weight.shape[1]), "out_features": int(weight.shape[0])}
    b.set(node, b.add(node, "dense", [x.viewed(hwc=None)], attrs, {"weight": weight, "bias": bias}))


@converts("Gemm", limit=lambda n, o: "transA (the activations transposed)" if n.attrs.get("transA") else None)
def gemm(b: OnnxBuilder, node: Node) -> None:
    x = b.vector_value(node)
    w = b.needs_const(node, 1, "weight").astype(np.float32)
    w = w if node.attrs.get("transB") else w.T
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    c = b.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    if len(node.inputs) > 2 and node.inputs[2] and c is None:
        raise UnsupportedError("its bias is computed, not a constant")
    bias = np.zeros(w.shape[0], np.float32) if c is None else np.broadcast_to(c.astype(np.float32) * beta,
                                                                               (1, w.shape[0]))[0]
    _dense(b, node, x, w * alpha if alpha != 1 else w, bias)


@converts("MatMul")
def matmul(b: OnnxBuilder, node: Node) -> None:
    """x (N, in) @ W (in, out): a dense layer without bias (a following Add of a constant gives it one)."""
    x = b.vector_value(node)
    w = b.needs_const(node, 1, "weight")
    if w.ndim != 2:
        raise UnsupportedError(f"a matrix product with a {w.ndim}-D constant")
    _dense(b, node, x, np.ascontiguousarray(w.T), np.zeros(w.shape[1], np.float32))


def _bn_limit(node: Node, opset: int) -> str | None:
    if node.attrs.get("training_mode"):
        return "training_mode (batch statistics)"
    return None


@converts("BatchNormalization", limit=_bn_limit)
def batch_norm(b: OnnxBuilder, node: Node) -> None:
    x = b.value(node.inputs[0])
    if x.perm is not None or x.pad is not None or x.pseudo:
        raise UnsupportedError("its input is not an NCHW map or an N×F matrix")
    if len(node.outputs) > 1 and any(b.uses.get(o) for o in node.outputs[1:] if o):
        raise UnsupportedError("its running statistics are read (training)")
    gamma, beta, mean, var = (b.needs_const(node, i, what) for i, what in
                              ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
    eps = float(np.float32(node.attrs.get("epsilon", 1e-5)))
    tensors = {"mean": mean, "var": var, "weight": gamma, "bias": beta}
    b.set(node, b.add(node, "batch_norm", [x], {"eps": eps}, {k: v.reshape(-1) for k, v in tensors.items()}))


# --- pooling ----------------------------------------------------------------------------------
def _pool_limit(node: Node, opset: int) -> str | None:
    if any(int(d) != 1 for d in node.attrs.get("dilations") or ()):
        return f"dilations {list(node.attrs['dilations'])}"
    if node.op == "MaxPool" and len(node.outputs) > 1 and node.outputs[1]:
        return "its indices output"
    return None


@converts("MaxPool", "AveragePool", limit=_pool_limit)
def pool(b: OnnxBuilder, node: Node) -> None:
    """``count_include_pad`` 0 with padding has no IR form (the IR's average counts the padding);
    a Pad of zeros before an average pool is exact, before a max pool only on a non-negative input."""
    x = b.map_value(node, pad_ok=True)
    kernel = _ints(node.attrs["kernel_shape"])
    strides = _ints(node.attrs.get("strides"))
    pads = spatial_pads(node, x.shape[1:], kernel, strides, (1, 1))
    avg = node.op == "AveragePool"
    if avg and any(pads[0] + pads[1]) and not node.attrs.get("count_include_pad", 0):
        raise UnsupportedError("average pooling that leaves the padding out of the count (count_include_pad 0); "
                               "the IR's average pooling counts it")
    if x.pad is not None and not avg and not x.nonneg:
        raise UnsupportedError("a zero Pad before max pooling on an input that can be negative")
    attrs = _window_attrs(kernel, strides, pads, x.pad)
    attrs["ceil_mode"] = bool(node.attrs.get("ceil_mode", 0))
    b.set(node, b.add(node, "avg_pool2d" if avg else "max_pool2d", [x.viewed(pad=None)], attrs, nonneg=x.nonneg))


@converts("GlobalAveragePool")
def global_avg_pool(b: OnnxBuilder, node: Node) -> None:
    x = b.map_value(node)
    b.set(node, b.add(node, "global_avg_pool2d", [x], {}, pseudo=True, nonneg=x.nonneg))


@converts("ReduceMean")
def reduce_mean(b: OnnxBuilder, node: Node) -> None:
    """The mean over the spatial axes (2, 3 of NCHW; 1, 2 of an NHWC view, as tf2onnx writes it)."""
    x = b.value(node.inputs[0])
    axes = node.attrs.get("axes") if b.opset < 18 else (
        None if len(node.inputs) < 2 or not node.inputs[1] else b.needs_const(node, 1, "axes"))
    axes = None if axes is None else sorted(int(a) % 4 for a in np.asarray(axes).reshape(-1))
    spatial = [2, 3] if x.perm is None else [x.perm.index(2), x.perm.index(3)] if x.perm == NHWC else None
    if len(x.shape) != 3 or x.pad is not None or x.pseudo or axes != spatial:
        raise UnsupportedError(f"a mean over axes {axes} of an N×{'×'.join(map(str, x.onnx_shape))} tensor "
                               "(only the spatial mean, global average pooling, is supported)")
    keep = bool(node.attrs.get("keepdims", 1))
    b.set(node, b.add(node, "global_avg_pool2d", [x.viewed(perm=None)], {}, pseudo=keep, nonneg=x.nonneg))


@converts("Pad", limit=lambda n, o: None if (n.attrs.get("mode", "constant") or "constant") == "constant"
          else f"mode {n.attrs.get('mode')} (only zero padding)")
def pad(b: OnnxBuilder, node: Node) -> None:
    """Zero padding of H and W, held back and folded into the next Conv or pooling."""
    x = b.map_value(node, pad_ok=True)
    if b.opset < 11:
        pads, value = node.attrs.get("pads") or node.attrs.get("paddings"), float(node.attrs.get("value", 0.0))
    else:
        pads = b.needs_const(node, 1, "pads")
        value = b.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else np.zeros(1)
        if value is None:
            raise UnsupportedError("its padding value is computed")
        value = float(np.asarray(value).reshape(-1)[0]) if np.asarray(value).size else 0.0
        if len(node.inputs) > 3 and node.inputs[3]:
            axes = [int(a) % 4 for a in b.needs_const(node, 3, "axes").reshape(-1)]
            full = [0] * 8
            for i, a in enumerate(axes):
                full[a], full[a + 4] = int(pads[i]), int(pads[i + len(axes)])
            pads = full
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    if value != 0 or len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0:
        raise UnsupportedError(f"pads {pads} value {value:g} (only non-negative zero padding of H and W)")
    (t, bt), (l, r) = ((pads[2], pads[6]), (pads[3], pads[7]))
    if x.pad is not None:
        (t0, b0), (l0, r0) = x.pad
        t, bt, l, r = t + t0, bt + b0, l + l0, r + r0
    b.set(node, x.viewed(pad=((t, bt), (l, r))))


@converts("LRN")
def lrn(b: OnnxBuilder, node: Node) -> None:
    x = b.map_value(node)
    attrs = {"size": int(node.attrs["size"]), "alpha": float(node.attrs.get("alpha", 1e-4)),
             "beta": float(node.attrs.get("beta", 0.75)), "k": float(node.attrs.get("bias", 1.0))}
    b.set(node, b.add(node, "lrn", [x], attrs))


# --- activations ------------------------------------------------------------------------------
def _activation(b: OnnxBuilder, node: Node, attrs: dict) -> None:
    """An element-wise activation keeps its input's view (it commutes with transposes and flattens)."""
    x = b.value(node.inputs[0])
    if x.pad is not None:
        raise UnsupportedError("an activation between a Pad and the layer it pads")
    out = b.add(node, "relu", [x], attrs)
    b.set(node, out.viewed(perm=x.perm, pseudo=x.pseudo, hwc=x.hwc, nonneg=not attrs.get("negative_slope"),
                           fresh="relu"))


@converts("Relu")
def relu(b: OnnxBuilder, node: Node) -> None:
    _activation(b, node, {})


@converts("LeakyRelu")
def leaky_relu(b: OnnxBuilder, node: Node) -> None:
    _activation(b, node, {"negative_slope": float(node.attrs.get("alpha", 0.01))})


@converts("Clip")
def clip(b: OnnxBuilder, node: Node) -> None:
    """Clip(x, 0, max): the clipped ReLU (ReLU6 with max 6); Clip(x, 0): a ReLU."""
    if b.opset < 11:
        lo, hi = node.attrs.get("min"), node.attrs.get("max")
    else:
        lo, hi = (None if len(node.inputs) <= i or not node.inputs[i] else b.needs_const(node, i, what)
                  for i, what in ((1, "min"), (2, "max")))
    lo = None if lo is None else float(np.asarray(lo).reshape(-1)[0])
    hi = None if hi is None or float(np.asarray(hi).reshape(-1)[0]) >= 3.4e38 else float(np.asarray(hi).reshape(-1)[0])
    x = b.value(node.inputs[0])
    if lo is None and hi is not None and hi > 0 and x.fresh == "relu" and b.single_use(node, 0):
        layer = b.layer(x.layer)  # LeakyRelu then Clip(·, none, max): one clipped leaky ReLU
        if layer.attrs.get("max_value") is None:
            layer.attrs["max_value"] = hi
            b.set(node, x.viewed(fresh="relu"))
            return
    if lo != 0.0 or (hi is not None and hi <= 0):
        raise UnsupportedError(f"Clip to [{lo}, {hi}] (only a clipped ReLU, min 0 and max > 0)")
    _activation(b, node, {} if hi is None else {"max_value": hi})


@converts("Softmax")
def softmax(b: OnnxBuilder, node: Node) -> None:
    x = b.value(node.inputs[0])
    axis = int(node.attrs.get("axis", 1 if b.opset < 13 else -1))
    if len(x.shape) != 1 or x.pseudo or axis not in (1, -1):
        raise UnsupportedError(f"softmax over axis {axis} of an N×{'×'.join(map(str, x.onnx_shape))} tensor "
                               "(only over the classes of an N×K matrix)")
    b.set(node, b.add(node, "softmax", [x], {"axis": 1}))


@converts("Concat")
def concat(b: OnnxBuilder, node: Node) -> None:
    xs = [b.value(n) for n in node.inputs if n]
    if len(xs) == 1:  # torch.cat of one tensor (DenseNet's first layer): nothing to join
        b.set(node, xs[0].viewed())
        return
    if any(x.perm is not None or x.pad is not None or x.hwc is not None for x in xs):
        raise UnsupportedError("a concatenation of transposed or padded tensors")
    rank = len(xs[0].onnx_shape) + 1
    if int(node.attrs.get("axis", 1)) % rank != 1 or len({x.pseudo for x in xs}) != 1:
        raise UnsupportedError(f"a concatenation along axis {node.attrs.get('axis')} (only channels)")
    b.set(node, b.add(node, "concat", xs, {"axis": 1}, pseudo=xs[0].pseudo, nonneg=all(x.nonneg for x in xs)))
