"""One small function per Caffe layer type: a prototxt layer → IR layer(s), and the blobs
its caffemodel entry must hold.

The reader (:mod:`from_caffe`) walks the prototxt in order with a :class:`NetBuilder`;
for each layer it calls the type's converter from :data:`CONVERTERS`, after checking the
layer against :data:`LIMITS` (the settings a type supports, for the one message listing
every unsupported layer). Converters know Caffe layer types and IR kinds, never
architectures.

Blobs and names: an IR layer is named after its Caffe layer (Caffe's names are unique),
so an in-place layer (``top == bottom``: ReLU, BatchNorm, Scale, Dropout) is an IR layer
of its own, and a later reader of the blob reads its latest writer. ``graph.blobs[top]``
is the IR layer whose output is the blob's final value (an in-place Dropout does not
take the name: it is the identity, and engines without dropout layers keep the blob).

Caffe layer → IR kind:

* Convolution → ``conv2d`` (group, dilation, pad/stride/kernel with ``_h``/``_w``
  overrides; ``bias_term: false`` → no bias tensor); weights OIHW as Caffe stores them;
* Pooling MAX/AVE → ``max_pool2d``/``avg_pool2d`` with Caffe's ceil rounding (unless
  ``round_mode: FLOOR``); ``global_pooling`` → a window the size of the map (output
  C×1×1, as Caffe's blob);
* LRN ACROSS_CHANNELS → ``lrn`` (local_size, alpha, beta, k; the IR's alpha is Caffe's:
  divided by the window size in the formula); WITHIN_CHANNEL is refused;
* ReLU → ``relu`` (``negative_slope``); Dropout → ``dropout``; Softmax → ``softmax``;
* Concat (channel axis) → ``concat``; Eltwise SUM (``coeff``)/PROD/MAX → ``eltwise``;
* BatchNorm → ``batch_norm`` with ``eps``; blobs mean, variance, scale factor: the IR
  holds mean/factor and var/factor (factor 0 → 0, as Caffe's ``1 / factor`` guard does);
  ``use_global_stats: false`` (mini-batch statistics) is refused;
* Scale (one bottom, axis 1, one axis) → ``scale`` (weight, bias with ``bias_term``);
* InnerProduct → ``dense`` (``transpose`` read), after an IR ``flatten`` when its input is
  a map (Caffe flattens C, H, W implicitly, channel-first as the IR does); ``bias_term:
  false`` → a zero bias (the IR's dense always has one);
* Flatten → ``flatten``; Split → aliases of its bottom; Input/Data and the train_val
  types are handled by the reader itself.

Shapes come from the IR's rules (:func:`crossmodal.ir.kinds.infer_shapes`' rules per
kind), so a prototxt whose shapes do not add up (a Concat of different spatial sizes, an
Eltwise of different shapes) fails with one line naming the layer and the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from crossmodal.ir.kinds import TENSOR_LAYOUTS

from crossmodal.ir.graph import Layer, TensorSpec
from crossmodal.ir.kinds import SHAPE_RULES, conv_output_size, pool_output_size
from crossmodal.errors import InputError, UnsupportedError

#: The BatchNorm blob holding the moving-average scale factor: no IR tensor, it divides the others.
SCALE_FACTOR = "scale_factor"


@dataclass
class NetBuilder:
    """The reader's state while it walks a prototxt (see the module doc for blob naming).

    ``expected``: Caffe layer → [(IR tensor name or None, role, shape as the caffemodel
    stores it)]; ``transposed``: InnerProduct layers stored (in, out); ``zero_bias``: dense
    layers with ``bias_term: false``; ``batch_norms``: BatchNorm layers, whose third blob
    divides the first two.
    """

    path: Path
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)   # Caffe blob → per-sample shape
    wire: dict[str, str] = field(default_factory=dict)                 # Caffe blob → IR layer that last wrote it
    value: dict[str, str] = field(default_factory=dict)                # … ignoring in-place dropout
    public: list[str] = field(default_factory=list)                    # Caffe blobs to expose, in order
    layers: list[Layer] = field(default_factory=list)
    expected: dict[str, list] = field(default_factory=dict)
    transposed: set[str] = field(default_factory=set)
    zero_bias: set[str] = field(default_factory=set)
    batch_norms: set[str] = field(default_factory=set)
    taken: set[str] = field(default_factory=set)
    ir_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # IR layer (and "input") → shape

    def fresh(self, name: str) -> str:
        while name in self.taken:
            name += "_"
        self.taken.add(name)
        return name

    def src(self, blob: str) -> str:
        return self.wire[blob]

    def shape_of(self, ir_layer: Layer) -> tuple[int, ...]:
        """The IR layer's output shape by the IR's own rule; InputError naming the file."""
        ins = [self.ir_shapes[src] for src in ir_layer.inputs]
        try:
            return tuple(int(v) for v in SHAPE_RULES[ir_layer.kind](ir_layer.name, ins, ir_layer.attrs))
        except InputError as exc:
            raise InputError(str(exc), self.path) from None

    def add(self, layer: Layer, top: str | None, same_as: str | None = None, *, expose: bool = True) -> str:
        """Append ``layer``, which writes blob ``top`` (None: an IR-only layer, e.g. the flatten
        before an InnerProduct); ``same_as``: the IR layer whose value the blob then holds, when
        not the new layer's (an in-place dropout). Returns the layer's name."""
        shape = self.shape_of(layer)
        self.layers.append(layer)
        self.ir_shapes[layer.name] = shape
        if top is not None:
            self.wire[top], self.shapes[top], self.value[top] = layer.name, shape, same_as or layer.name
            if expose and top not in self.public:
                self.public.append(top)
        return layer.name

    def set_input(self, blob: str, shape: tuple[int, ...]) -> None:
        self.ir_shapes["input"] = shape
        self.shapes[blob], self.wire[blob], self.value[blob] = shape, "input", "input"

    def alias(self, top: str, bottom: str) -> None:  # a layer with no effect at inference
        self.wire[top], self.shapes[top], self.value[top] = self.wire[bottom], self.shapes[bottom], self.value[bottom]

    def tensors(self, name: str, kind: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, TensorSpec]:
        return {role: TensorSpec(f"{name}.{role}", shape, TENSOR_LAYOUTS[(kind, role)])
                for role, shape in shapes.items()}

    def fail(self, message: str, cls=InputError):
        raise cls(message, self.path)


Converter = Callable[[NetBuilder, object], None]
#: Caffe layer type → converter(builder, layer); the layer is the reader's ``_CLayer``.
CONVERTERS: dict[str, Converter] = {}
#: Caffe layer type → check(layer) → None (supported) or the reason it is not.
LIMITS: dict[str, Callable[[object], str | None]] = {}
#: Caffe layer types with several bottoms (every other converted type has one).
MULTI_BOTTOM = frozenset({"Concat", "Eltwise"})


def converts(*types: str, limit: Callable[[object], str | None] | None = None):
    def register(fn: Converter) -> Converter:
        for t in types:
            CONVERTERS[t] = fn
            LIMITS[t] = limit or (lambda layer: None)
        return fn
    return register


def pair(values, h_field, w_field, msg, default, what: str, path: Path) -> tuple[int, int]:
    """Caffe's ``x_h``/``x_w`` override ``x`` (repeated: one value for both, or h then w)."""
    if msg.HasField(h_field) or msg.HasField(w_field):
        return int(getattr(msg, h_field)), int(getattr(msg, w_field))
    values = [int(v) for v in values]
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    if not values and default is not None:
        return default
    raise InputError(f"{what}: needs 1 or 2 values, has {values}", path)


# --- Convolution -------------------------------------------------------------------------------
def _conv_limit(layer) -> str | None:
    p = layer.param("convolution_param")
    if p.axis != 1:
        return f"axis {p.axis}"
    if len(p.dilation) > 2:
        return f"dilation {list(p.dilation)}"
    return None


@converts("Convolution", limit=_conv_limit)
def convolution(b: NetBuilder, layer) -> None:
    name, p, bottom = layer.name, layer.param("convolution_param"), layer.bottom[0]
    shape = b.shapes[bottom]
    if len(shape) != 3:
        b.fail(f"layer {name} (Convolution) needs a C×H×W map, gets shape {shape}")
    kernel = pair(p.kernel_size, "kernel_h", "kernel_w", p, None, f"layer {name} kernel", b.path)
    stride = pair(p.stride, "stride_h", "stride_w", p, (1, 1), f"layer {name} stride", b.path)
    pad = pair(p.pad, "pad_h", "pad_w", p, (0, 0), f"layer {name} pad", b.path)
    dilation = tuple(int(d) for d in p.dilation) or (1,)
    dilation = dilation * 2 if len(dilation) == 1 else dilation
    o, i, g = int(p.num_output), shape[0], int(p.group)
    out_hw = [conv_output_size(s, k, st, pd, d) if st > 0 else 0
              for s, k, st, pd, d in zip(shape[1:], kernel, stride, pad, dilation)]
    if not o or g < 1 or min(out_hw) < 1 or min(kernel) < 1:
        b.fail(f"layer {name}: kernel {kernel} stride {stride} pad {pad} num_output {o} do not fit a {shape} map")
    if i % g or o % g:
        b.fail(f"layer {name}: group {g} does not divide its {i} input and {o} output channels")
    roles = {"weight": (o, i // g, *kernel), **({"bias": (o,)} if p.bias_term else {})}
    attrs = {"kernel": kernel, "stride": stride, "pad": pad, "in_channels": i, "out_channels": o}
    if g != 1:
        attrs["groups"] = g
    if dilation != (1, 1):
        attrs["dilation"] = dilation
    b.add(Layer(name, "conv2d", [b.src(bottom)], attrs, b.tensors(name, "conv2d", roles)), layer.top[0])
    b.expected[name] = [(f"{name}.{role}", role, s) for role, s in roles.items()]


# --- Pooling -----------------------------------------------------------------------------------
def _pool_limit(layer) -> str | None:
    return "stochastic pooling" if layer.param("pooling_param").pool not in (0, 1) else None


@converts("Pooling", limit=_pool_limit)
def pooling(b: NetBuilder, layer) -> None:
    name, p, bottom = layer.name, layer.param("pooling_param"), layer.bottom[0]
    shape = b.shapes[bottom]
    if len(shape) != 3:
        b.fail(f"layer {name} (Pooling) needs a C×H×W map, gets shape {shape}")
    if p.global_pooling:
        kernel, stride, pad = tuple(shape[1:]), (1, 1), (0, 0)
    else:
        kernel = pair([p.kernel_size] if p.HasField("kernel_size") else [], "kernel_h", "kernel_w", p,
                      None, f"layer {name} kernel", b.path)
        stride = pair([p.stride], "stride_h", "stride_w", p, None, f"layer {name} stride", b.path)
        pad = pair([p.pad], "pad_h", "pad_w", p, None, f"layer {name} pad", b.path)
    ceil = p.round_mode == 0
    out_hw = [pool_output_size(s, k, st, pd, ceil) if st > 0 else 0
              for s, k, st, pd in zip(shape[1:], kernel, stride, pad)]
    if ceil and not any(pad) and min(stride) > 0 and any(
            o != -(-(s - k) // st) + 1 for o, s, k, st in zip(out_hw, shape[1:], kernel, stride)):
        # Caffe drops a last window that starts past the input only when padded
        b.fail(f"layer {name}: pooling kernel {kernel} stride {stride} without pad on a {shape} map: Caffe's "
               "ceil rounding adds a window outside the input", UnsupportedError)
    if min(out_hw) < 1 or min(kernel) < 1 or any(pd >= k for pd, k in zip(pad, kernel)):
        b.fail(f"layer {name}: pooling kernel {kernel} stride {stride} pad {pad} does not fit a {shape} map")
    kind = "max_pool2d" if p.pool == 0 else "avg_pool2d"
    b.add(Layer(name, kind, [b.src(bottom)], {"kernel": kernel, "stride": stride, "pad": pad, "ceil_mode": ceil}),
          layer.top[0])


# --- element-wise and normalisation --------------------------------------------------------------
def _lrn_limit(layer) -> str | None:
    p = layer.param("lrn_param")
    if p.norm_region != 0:
        return "WITHIN_CHANNEL normalisation (only ACROSS_CHANNELS is supported)"
    if p.local_size % 2 == 0:
        return f"even local_size {p.local_size} (Caffe itself takes odd sizes only)"
    return None


@converts("LRN", limit=_lrn_limit)
def lrn(b: NetBuilder, layer) -> None:
    p = layer.param("lrn_param")
    attrs = {"size": int(p.local_size), "alpha": float(p.alpha), "beta": float(p.beta), "k": float(p.k)}
    b.add(Layer(layer.name, "lrn", [b.src(layer.bottom[0])], attrs), layer.top[0])


@converts("ReLU")
def relu(b: NetBuilder, layer) -> None:
    slope = float(layer.param("relu_param").negative_slope)
    b.add(Layer(layer.name, "relu", [b.src(layer.bottom[0])], {"negative_slope": slope} if slope else {}),
          layer.top[0])


@converts("Dropout")
def dropout(b: NetBuilder, layer) -> None:  # identity at inference: the blob keeps its value's name
    bottom = layer.bottom[0]
    b.add(Layer(layer.name, "dropout", [b.src(bottom)], {"rate": float(layer.param("dropout_param").dropout_ratio)}),
          layer.top[0], b.value[bottom])


def _softmax_limit(layer) -> str | None:
    axis = layer.param("softmax_param").axis
    return f"axis {axis}" if axis != 1 else None


@converts("Softmax", limit=_softmax_limit)
def softmax(b: NetBuilder, layer) -> None:
    b.add(Layer(layer.name, "softmax", [b.src(layer.bottom[0])], {"axis": 1}), layer.top[0])


def _concat_axis(layer) -> int:
    p = layer.param("concat_param")
    return int(p.axis) if p.HasField("axis") or not p.HasField("concat_dim") else int(p.concat_dim)


@converts("Concat", limit=lambda l: None if _concat_axis(l) == 1 else f"axis {_concat_axis(l)}")
def concat(b: NetBuilder, layer) -> None:
    b.add(Layer(layer.name, "concat", [b.src(x) for x in layer.bottom], {"axis": 1}), layer.top[0])


@converts("Eltwise")
def eltwise(b: NetBuilder, layer) -> None:
    p = layer.param("eltwise_param")
    op = {0: "prod", 1: "sum", 2: "max"}[p.operation]
    attrs: dict = {"op": op}
    if len(p.coeff):
        if op != "sum" or len(p.coeff) != len(layer.bottom):
            b.fail(f"layer {layer.name} (Eltwise): {len(p.coeff)} coeff for {len(layer.bottom)} bottoms of "
                   f"op {op.upper()} (Caffe takes one per bottom, SUM only)")
        if any(c != 1 for c in p.coeff):
            attrs["coeffs"] = [float(c) for c in p.coeff]
    b.add(Layer(layer.name, "eltwise", [b.src(x) for x in layer.bottom], attrs), layer.top[0])


def _bn_limit(layer) -> str | None:
    p = layer.param("batch_norm_param")
    if p.HasField("use_global_stats") and not p.use_global_stats:
        return "use_global_stats: false (mini-batch statistics at inference)"
    return None


@converts("BatchNorm", limit=_bn_limit)
def batch_norm(b: NetBuilder, layer) -> None:
    name, bottom = layer.name, layer.bottom[0]
    c = b.shapes[bottom][0]
    roles = {"mean": (c,), "var": (c,)}
    b.add(Layer(name, "batch_norm", [b.src(bottom)], {"eps": float(np.float32(layer.param("batch_norm_param").eps))},
                b.tensors(name, "batch_norm", roles)), layer.top[0])
    b.expected[name] = [(f"{name}.mean", "mean", (c,)), (f"{name}.var", "var", (c,)), (None, SCALE_FACTOR, (1,))]
    b.batch_norms.add(name)


def _scale_limit(layer) -> str | None:
    p = layer.param("scale_param")
    if len(layer.bottom) != 1:
        return "scale from a second bottom"
    if p.axis != 1 or p.num_axes != 1:
        return f"axis {p.axis} num_axes {p.num_axes} (per-channel scale only)"
    return None


@converts("Scale", limit=_scale_limit)
def scale(b: NetBuilder, layer) -> None:
    name, bottom = layer.name, layer.bottom[0]
    c = b.shapes[bottom][0]
    roles = {"weight": (c,), **({"bias": (c,)} if layer.param("scale_param").bias_term else {})}
    b.add(Layer(name, "scale", [b.src(bottom)], {}, b.tensors(name, "scale", roles)), layer.top[0])
    b.expected[name] = [(f"{name}.{role}", role, s) for role, s in roles.items()]


# --- classifier --------------------------------------------------------------------------------
def _flatten_limit(layer) -> str | None:
    p = layer.param("flatten_param")
    return f"axis {p.axis}..{p.end_axis}" if p.axis != 1 or p.end_axis != -1 else None


@converts("Flatten", limit=_flatten_limit)
def flatten(b: NetBuilder, layer) -> None:
    bottom, top = layer.bottom[0], layer.top[0]
    shape = b.shapes[bottom]
    if len(shape) == 3:
        b.add(Layer(layer.name, "flatten", [b.src(bottom)], {"shape": shape}), top)
    else:  # already a vector: nothing to do
        b.alias(top, bottom)


def _ip_limit(layer) -> str | None:
    axis = layer.param("inner_product_param").axis
    return f"axis {axis}" if axis != 1 else None


@converts("InnerProduct", limit=_ip_limit)
def inner_product(b: NetBuilder, layer) -> None:
    name, bottom, p = layer.name, layer.bottom[0], layer.param("inner_product_param")
    src, shape = b.src(bottom), b.shapes[bottom]
    if len(shape) == 3:  # Caffe flattens C, H, W implicitly; the IR says so
        src = b.add(Layer(b.fresh("flatten"), "flatten", [src], {"shape": shape}), None)
        shape = (int(np.prod(shape)),)
    o, i = int(p.num_output), shape[0]
    if not o:
        b.fail(f"layer {name}: InnerProduct without num_output")
    b.add(Layer(name, "dense", [src], {"in_features": i, "out_features": o},
                b.tensors(name, "dense", {"weight": (o, i), "bias": (o,)})), layer.top[0])
    b.expected[name] = [(f"{name}.weight", "weight", (i, o) if p.transpose else (o, i))]
    if p.transpose:
        b.transposed.add(name)
    if p.bias_term:
        b.expected[name].append((f"{name}.bias", "bias", (o,)))
    else:
        b.zero_bias.add(name)


@converts("Split")
def split(b: NetBuilder, layer) -> None:
    for top in layer.top:
        b.alias(top, layer.bottom[0])
