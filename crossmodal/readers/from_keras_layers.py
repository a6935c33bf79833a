"""One converter per Keras layer class → IR layers (channels-last Keras, channels-first IR).

A converter gets the :class:`KerasBuilder` and one :class:`Node` (a Keras layer called once)
and returns the :class:`Value` the layer's output becomes. Layouts: a Keras map (N, H, W, C) is
the IR's (N, C, H, W); conv kernels HWIO → OIHW; dense kernels (in, out) → (out, in). A vector
made by ``Flatten`` of an H×W×C map is in HWC order, the IR's in CHW order: the value carries the
map's (C, H, W) (``hwc``) until a ``Dense`` reads it, whose rows are then permuted (the inverse of
the Keras emitter's permutation); element-wise layers in between pass it on.

Keras' ``same`` padding (total ``max((out − 1)·s + k − n, 0)``, the smaller half first) becomes
the IR's symmetric ``pad`` where both halves agree; a ``ZeroPadding2D`` is folded into the
convolution or pooling it feeds (the Keras emitter writes such pairs). What the IR cannot hold
exactly is refused by :meth:`KerasBuilder.refuse`, which collects every reason before one
:class:`~crossmodal.errors.UnsupportedError` is raised.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from crossmodal.errors import InputError
from crossmodal.ir import layouts
from crossmodal.ir.graph import Layer, TensorSpec
from crossmodal.ir.kinds import SHAPE_RULES, TENSOR_LAYOUTS, pool_output_size


@dataclass
class Node:
    """One Keras layer: ``name``, ``cls`` (class name), ``cfg`` (its config), ``inputs`` (the
    Keras layers it reads, in order)."""

    name: str
    cls: str
    cfg: dict
    inputs: list[str]


@dataclass(frozen=True)
class Value:
    """A Keras layer's output as the IR holds it: ``ir`` the IR layer (or ``input``), ``shape``
    per sample, IR order ((C, H, W) or (F,)); ``hwc``: the map a vector was flattened from in
    Keras' HWC order; ``pad``: a ZeroPadding2D not yet folded ((top, bottom), (left, right));
    ``coeff``: a Rescaling (no offset) not yet folded into the Add it feeds; ``nonneg``: ≥ 0."""

    ir: str
    shape: tuple[int, ...]
    hwc: tuple[int, int, int] | None = None
    pad: tuple[tuple[int, int], tuple[int, int]] | None = None
    coeff: float | None = None
    nonneg: bool = False


@dataclass
class KerasBuilder:
    path: Path
    weights: Callable[[str], list[np.ndarray]]
    consumers: dict[str, list[str]]
    classes: dict[str, str]
    layers: list[Layer] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)   # IR layer → shape
    taken: set[str] = field(default_factory=lambda: {"input"})
    problems: list[str] = field(default_factory=list)
    keras_names: dict[str, str] = field(default_factory=dict)         # IR layer → Keras layer

    def fresh(self, name: str) -> str:
        base, i = name, 1
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name

    def add(self, name: str, kind: str, inputs: list[Value], attrs: dict | None = None,
            tensors: dict[str, np.ndarray] | None = None, keras: str | None = None, **value) -> Value:
        """Append an IR layer (named ``name``, made unique) and return its output value."""
        ir_name = self.fresh(name)
        specs = {}
        for role, arr in (tensors or {}).items():
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            specs[role] = TensorSpec(f"{ir_name}.{role}", tuple(arr.shape), TENSOR_LAYOUTS[(kind, role)])
            self.arrays[f"{ir_name}.{role}"] = arr
        layer = Layer(ir_name, kind, [v.ir for v in inputs], dict(attrs or {}), specs)
        try:
            shape = SHAPE_RULES[kind](ir_name, [self.shapes[v.ir] for v in inputs], layer.attrs)
        except InputError as exc:
            raise InputError(str(exc), self.path) from None
        self.layers.append(layer)
        self.shapes[ir_name] = tuple(int(s) for s in shape)
        if keras:
            self.keras_names[ir_name] = keras
        return Value(ir_name, self.shapes[ir_name], **value)

    def refuse(self, node: Node, reason: str, passthrough: Value) -> Value:
        self.problems.append(f"{node.name} ({node.cls}: {reason})")
        return passthrough

    def arrays_of(self, node: Node, count: int) -> list[np.ndarray]:
        arrays = self.weights(node.name)
        if len(arrays) != count:
            raise InputError(f"layer {node.name!r} ({node.cls}) has {len(arrays)} weight arrays, its config "
                             f"says {count}", self.path)
        return arrays


Converter = Callable[[KerasBuilder, Node, list[Value]], Value]
CONVERTERS: dict[str, Converter] = {}
#: class → check(node, consumers' classes) → None or why the IR cannot hold the layer (first pass).
LIMITS: dict[str, Callable[[Node, list[str]], str | None]] = {}
ACTIVATIONS = {"linear": None, None: None, "relu": "relu", "relu6": "relu6", "softmax": "softmax"}


def converts(*classes: str, limit=None):
    def register(fn: Converter) -> Converter:
        for cls in classes:
            CONVERTERS[cls], LIMITS[cls] = fn, limit or (lambda node, consumers: None)
        return fn
    return register


def _activation_name(cfg: dict) -> Any:
    act = cfg.get("activation", "linear")
    return act if isinstance(act, str) or act is None else repr(act)


def _layer_limit(node: Node, consumers: list[str]) -> str | None:
    cfg = node.cfg
    if cfg.get("data_format", "channels_last") != "channels_last":
        return f"data_format {cfg['data_format']} (channels_last only)"
    act = _activation_name(cfg)
    if act not in ACTIVATIONS:
        return f"activation {act!r} (relu, relu6, softmax or linear)"
    return None


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


def _with_activation(b: KerasBuilder, node: Node, out: Value) -> Value:
    act = ACTIVATIONS[_activation_name(node.cfg)]
    if act in ("relu", "relu6"):
        return b.add(f"{out.ir}_{act}", "relu", [out], {"max_value": 6.0} if act == "relu6" else {}, nonneg=True)
    if act == "softmax":
        return b.add(f"{out.ir}_softmax", "softmax", [out], {"axis": 1}, hwc=out.hwc)
    return out


def same_padding(n: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """Keras' ``same`` padding of one axis: (start, end), the smaller half first."""
    out = -(-n // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
    return total // 2, total - total // 2


def _map_input(b: KerasBuilder, node: Node, x: Value) -> str | None:
    if len(x.shape) != 3:
        return f"needs an H×W×C map, its input has shape {x.shape}"
    return None


def _conv_pads(node: Node, x: Value, kernel, strides, dilation) -> tuple[list[tuple[int, int]], tuple]:
    """Per axis (start, end) padding of a conv: its own ``same`` padding plus a folded ZeroPadding2D."""
    pad = x.pad or ((0, 0), (0, 0))
    _, h, w = x.shape  # the padded size
    if node.cfg.get("padding", "valid") == "same":
        own = [same_padding(n, k, s, d) for n, k, s, d in zip((h, w), kernel, strides, dilation)]
    else:
        own = [(0, 0), (0, 0)]
    return [(p[0] + o[0], p[1] + o[1]) for p, o in zip(pad, own)], (x.shape[0], h - sum(pad[0]), w - sum(pad[1]))


def _conv_window(b: KerasBuilder, node: Node, x: Value):
    """A Conv2D's or DepthwiseConv2D's (kernel, strides, dilation, per-axis padding, unpadded input
    shape, weight arrays)."""
    cfg = node.cfg
    kernel, strides = _pair(cfg["kernel_size"]), _pair(cfg.get("strides", 1))
    dilation = _pair(cfg.get("dilation_rate", 1))
    pads, unpadded = _conv_pads(node, x, kernel, strides, dilation)
    return kernel, strides, dilation, pads, unpadded, b.arrays_of(node, 2 if cfg.get("use_bias", True) else 1)


def _conv_attrs(kernel, strides, dilation, pads, in_channels: int, out_channels: int, groups: int = 1) -> dict:
    """The IR ``conv2d`` attributes; ``groups`` and ``dilation`` only where they are not 1."""
    attrs = {"kernel": kernel, "stride": strides, **pad_attrs(pads), "in_channels": in_channels,
             "out_channels": out_channels}
    if groups != 1:
        attrs["groups"] = groups
    if dilation != (1, 1):
        attrs["dilation"] = dilation
    return attrs


def pad_attrs(pads) -> dict:
    """IR ``pad`` (top, left) and, where it differs, ``pad_end`` (bottom, right) of per-axis
    (start, end) padding."""
    (t, bo), (le, r) = pads
    return {"pad": (t, le), **({"pad_end": (bo, r)} if (bo, r) != (t, le) else {})}


def _source(x: Value, shape) -> Value:
    """The value a folded ZeroPadding2D padded (its IR layer, the unpadded shape)."""
    return replace(x, pad=None, shape=tuple(shape))


@converts("Conv2D", limit=_layer_limit)
def conv2d(b: KerasBuilder, node: Node, xs: list[Value]) -> Value:
    x, cfg = xs[0], node.cfg
    if (why := _map_input(b, node, x)):
        return b.refuse(node, why, x)
    kernel, strides, dilation, pads, unpadded, arrays = _conv_window(b, node, x)
    weight = layouts.conv_hwio_to_oihw(arrays[0])
    attrs = _conv_attrs(kernel, strides, dilation, pads, unpadded[0], int(cfg["filters"]), int(cfg.get("groups", 1)))
    tensors = {"weight": weight, **({"bias": arrays[1]} if len(arrays) == 2 else {})}
    out = b.add(node.name, "conv2d", [_source(x, unpadded)], attrs, tensors, keras=node.name)
    return _with_activation(b, node, out)


@converts("DepthwiseConv2D", limit=_layer_limit)
def depthwise(b: KerasBuilder, node: Node, xs: list[Value]) -> Value:
    """A depthwise convolution as a conv2d with one group per channel; a 1×1 one with multiplier 1
    and no padding or stride is the per-channel ``scale`` (how the Keras emitter writes scale)."""
    x, cfg = xs[0], node.cfg
    if (why := _map_input(b, node, x)):
        return b.refuse(node, why, x)
    kernel, strides, dilation, pads, unpadded, arrays = _conv_window(b, node, x)
    m, c = int(cfg.get("depth_multiplier", 1)), unpadded[0]
    bias = {"bias": arrays[1]} if len(arrays) == 2 else {}
    if kernel == (1, 1) and strides == (1, 1) and m == 1 and not any(a for a, _ in pads):
        out = b.add(node.name, "scale", [_source(x, unpadded)], {}, {"weight": arrays[0].reshape(c), **bias},
                    keras=node.name)
    else:
        weight = arrays[0].transpose(2, 3, 0, 1).reshape(c * m, 1, *kernel)   # (kh, kw, C, m) → (C·m, 1, kh, kw)
        attrs = _conv_attrs(kernel, strides, dilation, pads, c, c * m, groups=c)
        out = b.add(node.name, "conv2d", [_source(x, unpadded)], attrs, {"weight": weight, **bias}, keras=node.name)
    return _with_activation(b, node, out)


@converts("Dense", limit=_layer_limit)
def dense(b: KerasBuilder, node: Node, xs: list[Value]) -> Value:
    x, cfg = xs[0], node.cfg
    if len(x.shape) != 1:
        return b.refuse(node, f"a Dense layer on a {x.shape} map (Flatten or pool it first)", x)
    arrays = b.arrays_of(node, 2 if cfg.get("use_bias", True) else 1)
    o = int(cfg["units"])
    weight = layouts.dense_oi_to_io(arrays[0])            # (in, out) → (out, in): the same transpose
    if x.hwc is not None:                                   # Keras flattened H·W·C, the IR C·H·W
        weight = layouts.dense_hwc_rows_to_chw(weight, x.hwc)
    bias = arrays[1] if len(arrays) == 2 else np.zeros(o, np.float32)
    out = b.add(node.name, "dense", [replace(x, hwc=None)], {"in_features": x.shape[0], "out_features": o},
                {"weight": weight, "bias": bias}, keras=node.name)
    return _with_activation(b, node, out)


def _bn_limit(node: Node, consumers: list[str]) -> str | None:
    axis = node.cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    return None if axis in (-1, 3, 1) else f"axis {node.cfg.get('axis')} (the channel axis, -1, only)"


@converts("BatchNormalization", limit=_bn_limit)
def batch_norm(b: KerasBuilder, node: Node, xs: list[Value]) -> Value:
    x, cfg = xs[0], node.cfg
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) else axis
    if len(x.shape) == 3 and axis == 1 or len(x.shape) == 1 and axis == 3:
        return b.refuse(node, f"axis {axis} on a {len(x.shape) + 1}-d tensor (the channel axis, -1, only)", x)
    scale, center = bool(cfg.get("scale", True)), bool(cfg.get("center", True))
    arrays = b.arrays_of(node, 2 + scale + center)
    roles = (["weight"] if scale else []) + (["bias"] if center else []) + ["mean", "var"]
    tensors = dict(zip(roles, arrays))
    if x.hwc is not None:  # per-feature statistics of an HWC-flattened vector, in the IR's CHW order
        c, h, w = x.hwc
        order = np.arange(c * h * w).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
        tensors = {role: arr[order] for role, arr in tensors.items()}
    return b.add(node.name, "batch_norm", [x], {"eps": float(cfg.get("epsilon", 1e-3))}, tensors,
                 keras=node.name, hwc=x.hwc)


def _relu_limit(node: Node, consumers: list[str]) -> str | None:
    cfg = node.cfg
    if cfg.get("max_value") is not None and not float(cfg["max_value"]) > 0:
        return f"max_value {cfg['max_value']}"
    if float(cfg.get("threshold", 0) or 0) != 0:
        return f"threshold {cfg['threshold']}"
    return None


@converts("ReLU", "LeakyReLU", limit=_relu_limit)
def relu(b: KerasBuilder, node: Node, xs: list[Value]) -> Value:
    default = 0.3 if node.cls == "LeakyReLU" else 0.0
    slope = float(node.cfg.get("negative_slope", node.cfg.get("alpha", default)) or 0.0)
    top = node.cfg.get("max_value")
    attrs = {**({"negative_slope": slope} if slope else {}), **({"max_value": float(top)} if top is not None else {})}
    return b.add(node.name, "relu", xs, attrs, keras=node.name, hwc=xs[0].hwc, nonneg=not slope)


def _activation_limit(node: Node, consumers: list[str]) -> str | None:
    act = _activation_name(node.cfg)
    return None if act in ACTIVATIONS else f"activation {act!r} (relu, relu6, softmax or linear)"


@converts("Activation", limit=_activation_limit)
def activation(b: KerasBuilder, node: Node, xs: list[Value]) -> Value:
    act = ACTIVATIONS[_activation_name(node.cfg)]
    if act is None:
        return xs[0]
    if act in ("relu", "relu6"):
        return b.add(node.name, "relu", xs, {"max_value": 6.0} if act == "relu6" else {}, keras=node.name,
                     hwc=xs[0].hwc, nonneg=True)
    return b.add(node.name, "softmax", xs, {"axis": 1}, keras=node.name, hwc=xs[0].hwc)


def _softmax_limit(node: Node, consumers: list[str]) -> str | None:
    axis = node.cfg.get("axis", -1)
    return None if axis in (-1, [-1]) else f"axis {axis} (the last axis only)"


@converts("Softmax", limit=_softmax_limit)
def softmax(b: KerasBuilder, node: Node, xs: list[Value]) -> Value:
    return b.add(node.name, "softmax", xs, {"axis": 1}, keras=node.name, hwc=xs[0].hwc)


@converts("Dropout", "SpatialDropout2D")
def dropout(b: KerasBuilder, node: Node, xs: list[Value]) -> Value:
    x = xs[0]
    return b.add(node.name, "dropout", xs, {"rate": float(node.cfg.get("rate", 0.5))}, keras=node.name,
                 hwc=x.hwc, nonneg=x.nonneg)


@converts("Flatten", limit=_layer_limit)
def flatten(b: KerasBuilder, node: Node, xs: list[Value]) -> Value:
    x = xs[0]
    if len(x.shape) == 1:
        return x
    c, h, w = x.shape
    return b.add(node.name, "flatten", xs, {"shape": x.shape}, keras=node.name,
                 hwc=(c, h, w) if h * w > 1 else None, nonneg=x.nonneg)


def _gap_limit(node: Node, consumers: list[str]) -> str | None:
    return _layer_limit(node, consumers) or ("keepdims true (a 1×1 map; the IR's pooling gives a vector)"
                                             if node.cfg.get("keepdims") else None)


@converts("GlobalAveragePooling2D", limit=_gap_limit)
def global_avg_pool(b: KerasBuilder, node: Node, xs: list[Value]) -> Value:
    if (why := _map_input(b, node, xs[0])):
        return b.refuse(node, why, xs[0])
    return b.add(node.name, "global_avg_pool2d", xs, {}, keras=node.name, nonneg=xs[0].nonneg)
