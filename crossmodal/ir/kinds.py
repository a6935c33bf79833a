"""The IR's layer kinds: the tensors each owns, their layouts, and one shape rule per kind.

Adding a kind means one entry in :data:`LAYER_KINDS` (its tensor roles), one shape
rule here, one reference op (:mod:`crossmodal.ir.reference`) and one converter
per target (:mod:`crossmodal.emitters`); ``tests/test_emitters.py`` checks that
every target covers every kind.

Shapes are per sample: (C, H, W) for maps, (F,) for vectors. Attributes by kind:

* ``conv2d``: ``kernel`` (kh, kw), ``stride``, ``pad`` (ph, pw: top and left, and both
  sides unless ``pad_end`` says otherwise), ``pad_end`` (bottom, right; format 1.3, default
  ``pad``: asymmetric padding such as TensorFlow's SAME with stride 2, (0, 0) + (1, 1)),
  ``dilation`` (default (1, 1)), ``groups`` (default 1), ``in_channels``,
  ``out_channels``; weight OIHW of shape (O, I / groups, kh, kw), bias (O,) optional;
* ``relu``: ``negative_slope`` (default 0: a plain ReLU; else a leaky one), ``max_value``
  (format 1.3, default none: the output is clipped from above, ReLU6 is 6):
  ``min(x if x > 0 else x · negative_slope, max_value)``;
* ``rescale`` (format 1.3): ``x · scale + offset`` with scalar ``scale`` and ``offset``
  (default 0), Keras' Rescaling (a model that takes 0–255 pixels and divides them itself);
* ``max_pool2d`` / ``avg_pool2d``: ``kernel``, ``stride``, ``pad``, ``pad_end`` (as for
  ``conv2d``), ``ceil_mode`` (average pooling counts the zero padding and clips windows that
  run past it, as Caffe and PyTorch's ``count_include_pad=True`` do; max pooling ignores it);
* ``global_avg_pool2d``: (C, H, W) → (C,), the mean over every position;
* ``lrn``: ``size`` (odd), ``alpha``, ``beta``, ``k``: across channels,
  ``b_c = a_c / (k + alpha / size · Σ_{|c'−c| ≤ size//2} a_c'²) ** beta`` (Caffe's,
  PyTorch's and ONNX's definition: alpha is divided by the window size);
* ``batch_norm``: ``eps``; tensors ``mean``, ``var`` (C,) and optionally the affine
  ``weight`` (γ) and ``bias`` (β): ``(x − mean) / sqrt(var + eps) · γ + β``;
* ``scale``: per-channel ``x · weight + bias`` (bias optional), Caffe's Scale layer;
* ``eltwise``: two or more inputs of one shape; ``op`` ``sum`` (with optional
  ``coeffs``, one per input), ``prod`` or ``max``;
* ``concat``: two or more inputs joined along the channel axis (``axis`` 1: the
  channels of maps, the features of vectors); every other dimension must agree;
* ``flatten``: ``shape`` (C, H, W) of its input, flattened channel-first;
* ``dense``: ``in_features``, ``out_features``; weight (out, in);
* ``dropout``: ``rate`` (identity at inference); ``softmax``: ``axis`` (1).

This module is pure.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from crossmodal.errors import InputError

#: Every layer kind, with the tensor roles it must own (in order).
LAYER_KINDS: dict[str, tuple[str, ...]] = {
    "conv2d": ("weight",),
    "relu": (),
    "max_pool2d": (),
    "avg_pool2d": (),
    "global_avg_pool2d": (),
    "lrn": (),
    "batch_norm": ("mean", "var"),
    "scale": ("weight",),
    "eltwise": (),
    "concat": (),
    "flatten": (),
    "dense": ("weight", "bias"),
    "dropout": (),
    "softmax": (),
    "rescale": (),
}

#: Tensor roles a kind may own in addition to its required ones.
OPTIONAL_ROLES: dict[str, tuple[str, ...]] = {
    "conv2d": ("bias",),
    "batch_norm": ("weight", "bias"),
    "scale": ("bias",),
}

#: Kinds that read several inputs (every other kind reads exactly one).
MULTI_INPUT_KINDS = frozenset({"eltwise", "concat"})

#: Storage layout of each tensor role, per kind (recorded in the JSON and HDF5).
TENSOR_LAYOUTS: dict[tuple[str, str], str] = {
    ("conv2d", "weight"): "OIHW",
    ("conv2d", "bias"): "O",
    ("dense", "weight"): "OI",
    ("dense", "bias"): "O",
    ("batch_norm", "mean"): "C",
    ("batch_norm", "var"): "C",
    ("batch_norm", "weight"): "C",
    ("batch_norm", "bias"): "C",
    ("scale", "weight"): "C",
    ("scale", "bias"): "C",
}

ELTWISE_OPS = ("sum", "prod", "max")

Shape = tuple[int, ...]
ShapeRule = Callable[[str, Sequence[Shape], Mapping[str, Any]], Shape]
SHAPE_RULES: dict[str, ShapeRule] = {}


def shape_rule(*kinds: str) -> Callable[[ShapeRule], ShapeRule]:
    def register(fn: ShapeRule) -> ShapeRule:
        for kind in kinds:
            if kind in SHAPE_RULES:
                raise ValueError(f"shape rule for {kind!r} registered twice")
            SHAPE_RULES[kind] = fn
        return fn
    return register


def _map(name: str, shape: Shape, kind: str) -> Shape:
    if len(shape) != 3:
        raise InputError(f"layer {name!r} ({kind}) needs a (C, H, W) map, its input is {shape}")
    return shape


def pool_output_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool,
                     pad_end: int | None = None) -> int:
    """Output length of a pooling window sweep (PyTorch/Caffe rule for ceil mode).

    ``pad`` cells before the input, ``pad_end`` (default ``pad``) after it. In ceil mode the
    last window must start inside the input or left padding (a window that would start in
    the right padding is dropped).
    """
    span = size + pad + (pad if pad_end is None else pad_end) - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int = 1,
                     pad_end: int | None = None) -> int:
    """Output length of a convolution: ⌊(n + p + p_end − d·(k − 1) − 1) / s⌋ + 1."""
    return (size + pad + (pad if pad_end is None else pad_end) - dilation * (kernel - 1) - 1) // stride + 1


def padding(attrs: Mapping[str, Any]) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) of a conv or pooling layer: ``pad`` before, ``pad_end``
    (default ``pad``) after."""
    ph, pw = (int(v) for v in attrs["pad"])
    eh, ew = (int(v) for v in attrs.get("pad_end") or (ph, pw))
    return (ph, eh), (pw, ew)


def is_symmetric(attrs: Mapping[str, Any]) -> bool:
    """Whether a conv or pooling layer pads both ends of each axis alike (every IR before 1.3)."""
    (t, b), (l, r) = padding(attrs)
    return t == b and l == r


@shape_rule("conv2d")
def _conv_shape(name, shapes, a):
    c, h, w = _map(name, shapes[0], "conv2d")
    groups = int(a.get("groups", 1))
    if c != a["in_channels"] or c % groups or a["out_channels"] % groups:
        raise InputError(f"layer {name!r}: a {c}-channel input for a convolution of {a['in_channels']} input "
                         f"and {a['out_channels']} output channels in {groups} group(s)")
    (kh, kw), (sh, sw) = a["kernel"], a["stride"]
    (ph, eh), (pw, ew) = _pads(name, a)
    dh, dw = a.get("dilation", (1, 1))
    out = (a["out_channels"], conv_output_size(h, kh, sh, ph, dh, eh), conv_output_size(w, kw, sw, pw, dw, ew))
    if min(out[1:]) < 1:
        raise InputError(f"layer {name!r}: a {kh}×{kw} convolution does not fit its {h}×{w} input")
    return out


def _pads(name: str, a: Mapping[str, Any]):
    pads = padding(a)
    if min(min(p) for p in pads) < 0:
        raise InputError(f"layer {name!r}: negative padding {pads}")
    return pads


@shape_rule("max_pool2d", "avg_pool2d")
def _pool_shape(name, shapes, a):
    c, h, w = _map(name, shapes[0], "pooling")
    (kh, kw), (sh, sw) = a["kernel"], a["stride"]
    (ph, eh), (pw, ew) = _pads(name, a)
    ceil = bool(a.get("ceil_mode", False))
    out = (c, pool_output_size(h, kh, sh, ph, ceil, eh), pool_output_size(w, kw, sw, pw, ceil, ew))
    if min(out[1:]) < 1:
        raise InputError(f"layer {name!r}: a {kh}×{kw} pooling window does not fit its {h}×{w} input")
    return out


@shape_rule("global_avg_pool2d")
def _global_pool_shape(name, shapes, a):
    return (_map(name, shapes[0], "global_avg_pool2d")[0],)


@shape_rule("dropout", "softmax")
def _same_shape(name, shapes, a):
    return shapes[0]


@shape_rule("relu")
def _relu_shape(name, shapes, a):
    top = a.get("max_value")
    if top is not None and not float(top) > 0:
        raise InputError(f"layer {name!r}: a clipped ReLU needs max_value > 0, not {top}")
    return shapes[0]


@shape_rule("rescale")
def _rescale_shape(name, shapes, a):
    float(a["scale"]), float(a.get("offset", 0.0))  # KeyError names a missing scale
    return shapes[0]


@shape_rule("lrn")
def _lrn_shape(name, shapes, a):
    size = int(a["size"])
    if size < 1 or size % 2 == 0:
        raise InputError(f"layer {name!r}: LRN size must be odd (frameworks centre even windows differently), "
                         f"not {size}")
    return _map(name, shapes[0], "lrn")


@shape_rule("batch_norm", "scale")
def _channel_shape(name, shapes, a):
    return shapes[0]


@shape_rule("eltwise")
def _eltwise_shape(name, shapes, a):
    if len(shapes) < 2:
        raise InputError(f"layer {name!r}: an element-wise layer needs two or more inputs")
    if len(set(shapes)) != 1:
        raise InputError(f"layer {name!r}: element-wise {a.get('op', 'sum')} of different shapes "
                         f"{[tuple(s) for s in shapes]}")
    if a.get("op", "sum") not in ELTWISE_OPS:
        raise InputError(f"layer {name!r}: element-wise op {a.get('op')!r} is not one of {ELTWISE_OPS}")
    coeffs = a.get("coeffs")
    if coeffs is not None and (a.get("op", "sum") != "sum" or len(coeffs) != len(shapes)):
        raise InputError(f"layer {name!r}: coefficients need op 'sum' and one per input "
                         f"({len(shapes)} inputs, {len(coeffs)} coefficients)")
    return shapes[0]


@shape_rule("concat")
def _concat_shape(name, shapes, a):
    if len(shapes) < 2:
        raise InputError(f"layer {name!r}: a concatenation needs two or more inputs")
    if int(a.get("axis", 1)) != 1:
        raise InputError(f"layer {name!r}: only concatenation along the channel axis (1) is supported")
    if len({len(s) for s in shapes}) != 1 or len({tuple(s[1:]) for s in shapes}) != 1:
        raise InputError(f"layer {name!r}: concatenated inputs differ beyond the channel axis "
                         f"{[tuple(s) for s in shapes]}")
    return (sum(s[0] for s in shapes), *shapes[0][1:])


@shape_rule("flatten")
def _flatten_shape(name, shapes, a):
    if "shape" in a and tuple(a["shape"]) != tuple(shapes[0]):
        raise InputError(f"layer {name!r}: flattens a {tuple(a['shape'])} map, its input is {tuple(shapes[0])}")
    n = 1
    for v in shapes[0]:
        n *= int(v)
    return (n,)


@shape_rule("dense")
def _dense_shape(name, shapes, a):
    if len(shapes[0]) != 1 or shapes[0][0] != a["in_features"]:
        raise InputError(f"layer {name!r}: a dense layer of {a['in_features']} inputs on a {tuple(shapes[0])} "
                         "input")
    return (a["out_features"],)


def infer_shapes(graph, *, skip_unknown: bool = False) -> dict[str, Shape]:
    """Per-sample output shape of every layer of ``graph`` (and of its input).

    ``skip_unknown``: take a layer of an unknown kind to keep its first input's shape
    instead of raising (for reports that list every unsupported layer at once).

    Raises InputError naming the first layer whose inputs do not fit it (a concat of
    different spatial sizes, an element-wise sum of different shapes, a dense layer
    whose weight does not match its input …).
    """
    shapes: dict[str, Shape] = {graph.input.name: tuple(graph.input.shape)}
    for layer in graph.layers:
        missing = [src for src in layer.inputs if src not in shapes]
        if skip_unknown and not missing and layer.kind not in SHAPE_RULES:
            shapes[layer.name] = shapes[layer.inputs[0]]
            continue
        if missing:
            raise InputError(f"layer {layer.name!r} reads {missing}, which come later or not at all")
        if layer.kind not in MULTI_INPUT_KINDS and len(layer.inputs) != 1:
            raise InputError(f"layer {layer.name!r} ({layer.kind}) takes one input, not {len(layer.inputs)}")
        rule = SHAPE_RULES.get(layer.kind)
        if rule is None:
            raise InputError(f"layer {layer.name!r}: unknown kind {layer.kind!r}")
        try:
            shape = rule(layer.name, [shapes[src] for src in layer.inputs], layer.attrs)
        except KeyError as exc:
            raise InputError(f"layer {layer.name!r} ({layer.kind}) lacks the attribute {exc}") from None
        shapes[layer.name] = tuple(int(v) for v in shape)
    return shapes


def expected_tensor_shapes(kind: str, attrs: Mapping[str, Any], in_shape: Shape) -> dict[str, Shape]:
    """The shape each tensor role of a ``kind`` layer must have, given its input shape."""
    if kind == "conv2d":
        (kh, kw), g = attrs["kernel"], int(attrs.get("groups", 1))
        o = attrs["out_channels"]
        return {"weight": (o, attrs["in_channels"] // g, kh, kw), "bias": (o,)}
    if kind == "dense":
        return {"weight": (attrs["out_features"], attrs["in_features"]), "bias": (attrs["out_features"],)}
    if kind in ("batch_norm", "scale"):
        c = (in_shape[0],)
        return {role: c for role in ("mean", "var", "weight", "bias")}
    return {}
