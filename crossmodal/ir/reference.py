"""NumPy reference evaluator of the IR: the framework-free oracle for verification.

One small function per layer kind, registered in :data:`REFERENCE_OPS`. Activations
are NCHW, as the IR defines them; ``run`` returns any layers' outputs on request.
Computation runs in ``dtype`` (float64 by default, so that float32 engines are
compared against something more exact than themselves).
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from crossmodal.ir.kinds import MULTI_INPUT_KINDS, padding, pool_output_size

from crossmodal.ir.graph import IRModel, Layer

from crossmodal.ir.validation import validate
from crossmodal.errors import InputError

#: (input, layer, model, dtype) → output; the input is a list of arrays for the
#: multi-input kinds (``eltwise``, ``concat``).
RefOp = Callable[[np.ndarray, Layer, IRModel, np.dtype], np.ndarray]
REFERENCE_OPS: dict[str, RefOp] = {}


def reference_op(kind: str) -> Callable[[RefOp], RefOp]:
    def register(fn: RefOp) -> RefOp:
        if kind in REFERENCE_OPS:
            raise ValueError(f"reference op for {kind!r} registered twice")
        REFERENCE_OPS[kind] = fn
        return fn
    return register


@reference_op("conv2d")
def conv2d(x: np.ndarray, layer: Layer, model: IRModel, dtype: np.dtype) -> np.ndarray:
    """(N, C, H, W) → (N, O, H', W'), weight OIHW (O, C / groups, kh, kw), optional bias.

    Summed as kh·kw matmuls in NHWC per group; ``dilation`` spaces the kernel taps; zero
    padding ``pad`` before and ``pad_end`` after each axis.
    """
    w = model.tensor(layer, "weight").astype(dtype)
    a = layer.attrs
    (kh, kw), (sh, sw) = a["kernel"], a["stride"]
    pads = padding(a)
    (dh, dw), groups = a.get("dilation", (1, 1)), int(a.get("groups", 1))
    if x.shape[1] != w.shape[1] * groups:
        raise InputError(f"layer {layer.name}: input has {x.shape[1]} channels, weight expects "
                         f"{w.shape[1]} × {groups} group(s)")
    xh = np.pad(x.transpose(0, 2, 3, 1), ((0, 0), pads[0], pads[1], (0, 0)))
    n, hp, wp, _ = xh.shape
    ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, ho, wo, w.shape[0]), dtype=dtype)
    cin, cout = w.shape[1], w.shape[0] // groups
    for g in range(groups):
        xg, wg = xh[..., g * cin:(g + 1) * cin], w[g * cout:(g + 1) * cout]
        og = out[..., g * cout:(g + 1) * cout]
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw, :]
                og += patch @ wg[:, :, i, j].T
    if "bias" in layer.tensors:
        out += model.tensor(layer, "bias").astype(dtype)
    return out.transpose(0, 3, 1, 2)


def _pool(x: np.ndarray, layer: Layer, reduce: str) -> np.ndarray:
    (kh, kw), (sh, sw) = layer.attrs["kernel"], layer.attrs["stride"]
    (ph, eh), (pw, ew) = padding(layer.attrs)
    ceil = bool(layer.attrs.get("ceil_mode", False))
    n, c, h, w = x.shape
    ho, wo = pool_output_size(h, kh, sh, ph, ceil, eh), pool_output_size(w, kw, sw, pw, ceil, ew)
    # pad to cover every window; -inf for max, NaN (ignored) for average
    need_h, need_w = (ho - 1) * sh + kh, (wo - 1) * sw + kw
    fill = -np.inf if reduce == "max" else np.nan
    xp = np.full((n, c, max(need_h, h + ph + eh), max(need_w, w + pw + ew)), fill, dtype=x.dtype)
    if reduce == "avg":  # zero padding counts (count_include_pad), beyond it does not (Caffe clips)
        xp[:, :, : h + ph + eh, : w + pw + ew] = 0
    xp[:, :, ph:ph + h, pw:pw + w] = x
    windows = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    windows = windows[:, :, : (ho - 1) * sh + 1:sh, : (wo - 1) * sw + 1:sw]
    return windows.max(axis=(-2, -1)) if reduce == "max" else np.nanmean(windows, axis=(-2, -1))


@reference_op("max_pool2d")
def max_pool2d(x, layer, model, dtype):
    """(N, C, H, W) → (N, C, H', W'), floor or ceil rounding (``ceil_mode``)."""
    return _pool(x, layer, "max")


@reference_op("avg_pool2d")
def avg_pool2d(x, layer, model, dtype):
    return _pool(x, layer, "avg")


@reference_op("relu")
def relu(x, layer, model, dtype):
    """max(x, 0), or x · negative_slope where x < 0 (a leaky ReLU); clipped at ``max_value``."""
    slope = float(layer.attrs.get("negative_slope", 0.0))
    y = np.maximum(x, 0) if slope == 0 else np.where(x > 0, x, x * slope)
    top = layer.attrs.get("max_value")
    return y if top is None else np.minimum(y, float(top))


@reference_op("rescale")
def rescale(x, layer, model, dtype):
    """x · scale + offset (scalars)."""
    return x * float(layer.attrs["scale"]) + float(layer.attrs.get("offset", 0.0))


@reference_op("global_avg_pool2d")
def global_avg_pool2d(x, layer, model, dtype):
    """(N, C, H, W) → (N, C): the mean over every position."""
    return x.mean(axis=(2, 3))


@reference_op("lrn")
def lrn(x, layer, model, dtype):
    """Across channels: x / (k + alpha / size · Σ window x²) ** beta, window of ``size`` (odd)
    channels centred on each channel, zero beyond the edges."""
    a = layer.attrs
    size = int(a["size"])
    half = size // 2
    sq = np.pad(np.square(x), ((0, 0), (half, half), (0, 0), (0, 0)))
    csum = np.concatenate([np.zeros_like(sq[:, :1]), np.cumsum(sq, axis=1)], axis=1)
    window = csum[:, size:] - csum[:, :-size]
    return x / (float(a.get("k", 1.0)) + float(a["alpha"]) / size * window) ** float(a["beta"])


def _per_channel_affine(x, layer, model, dtype):
    """x · the layer's ``weight`` + its ``bias``, per channel (axis 1), each only when the
    layer owns that tensor; maps or vectors."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if "weight" in layer.tensors:
        x = x * model.tensor(layer, "weight").astype(dtype).reshape(shape)
    if "bias" in layer.tensors:
        x = x + model.tensor(layer, "bias").astype(dtype).reshape(shape)
    return x


@reference_op("batch_norm")
def batch_norm(x, layer, model, dtype):
    """(x − mean) / sqrt(var + eps) · weight + bias, per channel (axis 1); maps or vectors."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = model.tensor(layer, "mean").astype(dtype).reshape(shape)
    var = model.tensor(layer, "var").astype(dtype).reshape(shape)
    y = (x - mean) / np.sqrt(var + float(layer.attrs.get("eps", 1e-5)))
    return _per_channel_affine(y, layer, model, dtype)


@reference_op("scale")
def scale(x, layer, model, dtype):
    """x · weight (+ bias), per channel (axis 1): Caffe's Scale, the affine half of a batch norm."""
    return _per_channel_affine(x, layer, model, dtype)


@reference_op("eltwise")
def eltwise(xs, layer, model, dtype):
    """Element-wise sum (each input times its coefficient), product or maximum."""
    op, coeffs = layer.attrs.get("op", "sum"), layer.attrs.get("coeffs")
    if op == "sum":
        coeffs = coeffs or [1.0] * len(xs)
        return sum(float(c) * x if float(c) != 1.0 else x for c, x in zip(coeffs, xs))
    reduce = np.multiply if op == "prod" else np.maximum
    out = xs[0]
    for x in xs[1:]:
        out = reduce(out, x)
    return out


@reference_op("concat")
def concat(xs, layer, model, dtype):
    """Inputs joined along the channel axis (1)."""
    return np.concatenate(xs, axis=1)


@reference_op("dropout")
def dropout(x, layer, model, dtype):
    """Identity at inference."""
    return x


@reference_op("flatten")
def flatten(x, layer, model, dtype):
    """(N, C, H, W) → (N, C·H·W) in channel-first order; checks the recorded (C, H, W)."""
    expected = tuple(layer.attrs["shape"])
    if tuple(x.shape[1:]) != expected:
        raise InputError(f"layer {layer.name}: input map is {tuple(x.shape[1:])}, the model "
                         f"needs {expected} (fc6 fixes the input size)")
    return x.reshape(x.shape[0], -1)


@reference_op("dense")
def dense(x, layer, model, dtype):
    """(N, in) → (N, out), weight (out, in)."""
    w = model.tensor(layer, "weight").astype(dtype)
    return x @ w.T + model.tensor(layer, "bias").astype(dtype)


@reference_op("softmax")
def softmax(x, layer, model, dtype):
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def run(model: IRModel, x: np.ndarray, layers: Iterable[str] | None = None,
        dtype: np.dtype = np.float64) -> dict[str, np.ndarray]:
    """Evaluate ``model`` on ``x`` (N, C, H, W).

    ``layers``: exact IR layer names to return (default the graph's outputs; for a
    public blob such as ``fc7`` pass ``graph.resolve("fc7")``). Returns name → array
    in ``dtype``.
    """
    graph = model.graph
    validate(model)
    wanted = list(layers) if layers is not None else list(graph.outputs)
    known = {l.name for l in graph.layers}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise InputError(f"no layer named {unknown}; layers: {sorted(known)}")
    targets = {name: name for name in wanted}
    if tuple(x.shape[1:]) != tuple(graph.input.shape):
        raise InputError(f"input batch is {tuple(x.shape[1:])} per sample, the model takes "
                         f"{tuple(graph.input.shape)}")
    last_use = {}
    for i, layer in enumerate(graph.layers):
        for src in layer.inputs:
            last_use[src] = i
    values: dict[str, np.ndarray] = {graph.input.name: np.asarray(x, dtype=dtype)}
    results: dict[str, np.ndarray] = {}
    keep = set(targets.values())
    for i, layer in enumerate(graph.layers):
        args = [values[src] for src in layer.inputs] if layer.kind in MULTI_INPUT_KINDS else values[layer.inputs[0]]
        values[layer.name] = REFERENCE_OPS[layer.kind](args, layer, model, np.dtype(dtype))
        for src in layer.inputs:
            if last_use.get(src) == i and src not in keep:
                values.pop(src, None)
        if layer.name in keep:
            for name, target in targets.items():
                if target == layer.name:
                    results[name] = values[layer.name]
        if len(results) == len(targets):
            break
    return results
