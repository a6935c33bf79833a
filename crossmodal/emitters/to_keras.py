"""IR → Keras 3 functional model (channels_last), with keras.applications names.

The model takes the preprocessed float32 batch (N, H, W, C) and returns the logits
(pre-softmax), exactly like ``keras.applications.VGG16(weights=None, classes=K,
classifier_activation=None)``, so its weights load there by layer name and back.
A conv or dense followed by a ReLU becomes one layer with ``activation="relu"``;
dropout (identity at inference) and the final softmax have no layer. The fc6
weights are permuted from CHW to HWC input order, so only native layers are used.

Pooling (Caffe/PyTorch windows: padding ``pad`` on both sides, in ceil mode extra
windows that run past the end, clipped there) is emitted only where Keras computes
exactly the same thing (:func:`pool_plan`): ``valid``; ``same`` where Keras' padding
falls wholly at the end (total padding ≤ 1 per axis: Keras puts half at the start);
else an explicit ``ZeroPadding2D`` then ``valid``, which is exact for max pooling
only when the input is ≥ 0 (it follows a ReLU) and for average pooling only
when no window runs past the padding (Caffe counts the padding, not the overhang). Anything else is
refused, all such layers in one :class:`UnsupportedError` with the other gaps.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from crossmodal.ir import layouts
from crossmodal.ir.kinds import MULTI_INPUT_KINDS, conv_output_size, infer_shapes, padding, pool_output_size
from crossmodal.ir.graph import Graph, IRModel, Layer
from crossmodal.emitters.keras_weights import FromArray
from crossmodal.emitters.registry import converter, lookup
from crossmodal.errors import UnsupportedError


@dataclass
class KerasContext:
    model: IRModel
    names: dict[str, str]                      # IR layer → Keras layer name
    fused: set[str]                            # ReLU layers folded into their producer
    fused_into: set[str] = field(default_factory=set)  # conv/dense layers that carry a ReLU
    tensors: dict[str, object] = field(default_factory=dict)  # IR layer → Keras tensor
    shapes: dict[str, tuple] = field(default_factory=dict)    # IR layer → (C, H, W) or (F,)


def keras_names(graph: Graph) -> dict[str, str]:
    """IR layer → Keras layer name: the graph's ``keras_names`` where it gives one (the model
    definitions set them, e.g. VGG16's ``block1_conv1``), else the IR name with every
    character Keras refuses (``/`` …) replaced by ``_``, made unique."""
    import re
    names, taken = {}, set(graph.keras_names.values())
    for layer in graph.layers:
        name = graph.keras_names.get(layer.name)
        if name is None:
            base = name = re.sub(r"[^A-Za-z0-9_.-]", "_", layer.name)
            i = 1
            while name in taken or name == "input":
                name, i = f"{base}_{i}", i + 1
        names[layer.name] = name
        taken.add(name)
    return names


def fused_relus(graph: Graph) -> set[str]:
    """ReLU layers that directly follow a conv2d/dense whose only consumer they are."""
    layers, consumers = graph.layers, {}
    for layer in layers:
        for src in layer.inputs:
            consumers.setdefault(src, []).append(layer.name)
    kinds = {l.name: l.kind for l in layers}
    return {l.name for l in layers
            if l.kind == "relu" and not l.attrs.get("negative_slope") and l.attrs.get("max_value") is None
            and kinds.get(l.inputs[0]) in ("conv2d", "dense") and consumers[l.inputs[0]] == [l.name]}


def _built(klayer, x):
    """Call (and so build) ``klayer``, then restore Keras' default initializers so that the
    saved config is the ordinary one (as keras.applications writes it)."""
    import keras
    y = klayer(x)
    for attr, default in _DEFAULT_INITIALIZERS.items():
        if hasattr(klayer, attr):
            setattr(klayer, attr, keras.initializers.get(default))
    return y


#: Keras' default initializers, restored after a layer is built from our arrays.
_DEFAULT_INITIALIZERS = {
    "kernel_initializer": "glorot_uniform", "bias_initializer": "zeros",
    "depthwise_initializer": "glorot_uniform",
    "gamma_initializer": "ones", "beta_initializer": "zeros",
    "moving_mean_initializer": "zeros", "moving_variance_initializer": "ones",
}


def _activation(ctx: KerasContext, layer: Layer) -> str | None:
    return "relu" if layer.name in ctx.fused_into else None


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(begin, end) padding of Keras/TensorFlow ``same`` on one axis: ⌈n / s⌉ outputs, the total
    padding split with the odd cell at the end (SAME with stride 2 on an even size: (0, 1))."""
    total = max((-(-size // stride) - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def _conv_is_same(a, in_shape: tuple[int, ...]) -> bool:
    """Whether Keras' ``same`` padding is the conv layer's padding on this (C, H, W) input."""
    _, h, w = in_shape
    (kh, kw), (sh, sw), (dh, dw) = a["kernel"], a["stride"], a.get("dilation", (1, 1))
    return padding(a) == (same_padding(h, kh, sh, dh), same_padding(w, kw, sw, dw)) and all(
        conv_output_size(n, k, s, p[0], d, p[1]) == -(-n // s)
        for n, k, s, d, p in ((h, kh, sh, dh, padding(a)[0]), (w, kw, sw, dw, padding(a)[1])))


@converter("conv2d", "keras")
def _conv(ctx: KerasContext, layer: Layer, x):
    """Conv2D (``groups``, ``dilation_rate``; kernel OIHW → HWIO); ``same`` padding where it
    equals the IR's padding (symmetric, or SAME's extra cell at the end), else an explicit
    ZeroPadding2D ((top, bottom), (left, right)) and ``valid``."""
    import keras
    a = layer.attrs
    (kh, kw), (sh, sw) = a["kernel"], a["stride"]
    pads = padding(a)
    dh, dw = a.get("dilation", (1, 1))
    same = _conv_is_same(a, ctx.shapes[layer.inputs[0]])
    if not same and any(pads[0] + pads[1]):
        x = keras.layers.ZeroPadding2D(pads, name=f"{ctx.names[layer.name]}_pad")(x)
    kernel = layouts.conv_oihw_to_hwio(ctx.model.tensor(layer, "weight"))
    has_bias = "bias" in layer.tensors
    init = {"kernel_initializer": FromArray(kernel)}
    if has_bias:
        init["bias_initializer"] = FromArray(ctx.model.tensor(layer, "bias"))
    conv = keras.layers.Conv2D(a["out_channels"], (kh, kw), strides=(sh, sw), padding="same" if same else "valid",
                               dilation_rate=(dh, dw), groups=int(a.get("groups", 1)), use_bias=has_bias,
                               activation=_activation(ctx, layer), name=ctx.names[layer.name], **init)
    return _built(conv, x)


@dataclass(frozen=True)
class PoolPlan:
    """How one IR pooling layer becomes Keras layers: ``padding`` of the pooling layer,
    and ``zero_pad`` ((top, bottom), (left, right)) of a ZeroPadding2D before it, if any."""

    padding: str
    zero_pad: tuple[tuple[int, int], tuple[int, int]] | None = None


def _non_negative(graph: Graph, name: str) -> bool:
    """Whether the output of ``name`` is ≥ 0 for every input: it comes from a plain ReLU,
    possibly through layers that keep the sign (pooling, dropout, LRN, and concatenations
    or maxima of such outputs)."""
    if name == graph.input.name:
        return False
    layer = graph.layer(name)
    if layer.kind == "relu":
        return not layer.attrs.get("negative_slope")
    if layer.kind == "rescale":
        return float(layer.attrs["scale"]) >= 0 and float(layer.attrs.get("offset", 0.0)) >= 0 and all(
            _non_negative(graph, src) for src in layer.inputs)
    if layer.kind in ("max_pool2d", "avg_pool2d", "global_avg_pool2d", "dropout", "lrn", "concat") or (
            layer.kind == "eltwise" and layer.attrs.get("op") == "max"):
        return all(_non_negative(graph, src) for src in layer.inputs)
    return False


def pool_plan(graph: Graph, layer: Layer, in_shape: tuple[int, ...]) -> PoolPlan:
    """The exact Keras form of a pooling layer on a (C, H, W) input, or UnsupportedError.

    Per axis of size n, kernel k, stride s, pad p, the IR wants ``out`` windows
    starting at ``i·s − p``; they cover ``(out − 1)·s + k`` cells, of which
    ``end = (out − 1)·s + k − n − p`` (≥ 0) lie past the input's end.
    """
    (kh, kw), (sh, sw) = layer.attrs["kernel"], layer.attrs["stride"]
    (ph, eh), (pw, ew) = padding(layer.attrs)
    _, h, w = in_shape
    ceil = bool(layer.attrs.get("ceil_mode", False))
    axes = [(n, k, st, p, pool_output_size(n, k, st, p, ceil, e))
            for n, k, st, p, e in ((h, kh, sh, ph, eh), (w, kw, sw, pw, ew))]
    if all(p == 0 and out == (n - k) // st + 1 for n, k, st, p, out in axes):
        return PoolPlan("valid")
    if layer.kind == "max_pool2d" and all(out == -(-n // st) for n, k, st, p, out in axes) and (
            padding(layer.attrs) == (same_padding(h, kh, sh), same_padding(w, kw, sw))):
        return PoolPlan("same")  # max pooling ignores padding wherever it is
    # Keras "same": out = ceil(n / s), padding total = max((out − 1)·s + k − n, 0), of which
    # total // 2 at the start: exact (padding ignored, as Caffe clips) when nothing goes first.
    if all(p == 0 and out == -(-n // st) and max((out - 1) * st + k - n, 0) <= 1 for n, k, st, p, out in axes):
        return PoolPlan("same")
    ends = tuple(max((out - 1) * st + k - n - p, 0) for n, k, st, p, out in axes)
    pads = ((ph, ends[0]), (pw, ends[1]))
    pad_text = f"{ph}x{pw}" if (ph, pw) == (eh, ew) else f"{ph}x{pw}+{eh}x{ew}"
    what = (f"layer {layer.name}: {layer.kind} k={kh}x{kw} s={sh}x{sw} pad={pad_text} "
            f"{'ceil' if ceil else 'floor'} on a {h}x{w} map")
    if layer.kind == "max_pool2d" and not _non_negative(graph, layer.inputs[0]):
        raise UnsupportedError(f"{what} needs end padding {ends[0]}x{ends[1]}, which Keras can only add as zeros: "
                               "exact only after a ReLU, and this input can be negative")
    if layer.kind == "avg_pool2d" and (ends[0] > eh or ends[1] > ew):
        raise UnsupportedError(f"{what}: its last windows run past the padding, where Caffe counts no cells "
                               "and a zero-padded Keras average pooling would")
    return PoolPlan("valid", pads)


def keras_gaps(graph: Graph) -> list[str]:
    """Every reason ``graph`` cannot become an exact Keras model: layer kinds without a
    converter and pooling Keras cannot express (:func:`pool_plan`)."""
    from crossmodal.emitters.registry import coverage
    kinds, shapes, gaps = coverage("keras"), infer_shapes(graph, skip_unknown=True), []
    for layer in graph.layers:
        if layer.kind not in kinds:
            gaps.append(f"{layer.name} ({layer.kind}) → keras")
        elif layer.kind in ("max_pool2d", "avg_pool2d"):
            try:
                pool_plan(graph, layer, shapes[layer.inputs[0]])
            except UnsupportedError as exc:
                gaps.append(str(exc))
        elif layer.kind == "conv2d" and max(layer.attrs["stride"]) > 1 and max(layer.attrs.get("dilation", (1, 1))) > 1:
            gaps.append(f"layer {layer.name}: Keras' Conv2D has no stride > 1 with dilation > 1")
        elif layer.kind == "scale" and len(shapes[layer.inputs[0]]) != 3:
            gaps.append(f"layer {layer.name}: a per-channel scale of a vector (Keras' exact form is a 1×1 "
                        "depthwise convolution, which needs a map)")
    return gaps


def check_keras(graph: Graph) -> None:
    """Raise one UnsupportedError listing every gap of :func:`keras_gaps`."""
    gaps = keras_gaps(graph)
    if gaps:
        raise UnsupportedError(f"{len(gaps)} unsupported layer(s) for Keras: " + "; ".join(gaps))


def _pool(cls_name: str, ctx: KerasContext, layer: Layer, x):
    import keras
    plan = pool_plan(ctx.model.graph, layer, ctx.shapes[layer.inputs[0]])
    name = ctx.names[layer.name]
    if plan.zero_pad is not None:
        x = keras.layers.ZeroPadding2D(plan.zero_pad, name=f"{name}_pad")(x)
    cls = getattr(keras.layers, cls_name)
    return cls(layer.attrs["kernel"], strides=layer.attrs["stride"], padding=plan.padding, name=name)(x)


@converter("max_pool2d", "keras")
def _max_pool(ctx, layer, x):
    return _pool("MaxPooling2D", ctx, layer, x)


@converter("avg_pool2d", "keras")
def _avg_pool(ctx, layer, x):
    return _pool("AveragePooling2D", ctx, layer, x)


@converter("relu", "keras")
def _relu(ctx, layer, x):
    import keras
    if layer.name in ctx.fused:
        return x
    slope = float(layer.attrs.get("negative_slope", 0.0))
    top = layer.attrs.get("max_value")
    return keras.layers.ReLU(max_value=None if top is None else float(top), negative_slope=slope,
                             name=ctx.names[layer.name])(x)


@converter("rescale", "keras")
def _rescale(ctx, layer, x):
    import keras
    return keras.layers.Rescaling(float(layer.attrs["scale"]), float(layer.attrs.get("offset", 0.0)),
                                  name=ctx.names[layer.name])(x)


@converter("global_avg_pool2d", "keras")
def _global_avg_pool(ctx, layer, x):
    import keras
    return keras.layers.GlobalAveragePooling2D(name=ctx.names[layer.name])(x)


@converter("lrn", "keras")
def _lrn(ctx, layer, x):
    from crossmodal.emitters.keras_layers import LocalResponseNorm
    a = layer.attrs
    return LocalResponseNorm(int(a["size"]), float(a["alpha"]), float(a["beta"]), float(a.get("k", 1.0)),
                             name=ctx.names[layer.name])(x)


@converter("batch_norm", "keras")
def _batch_norm(ctx, layer, x):
    """BatchNormalization (channels last) holding the IR's statistics and affine part."""
    import keras
    t = layer.tensors
    init = {"moving_mean_initializer": FromArray(ctx.model.tensor(layer, "mean")),
            "moving_variance_initializer": FromArray(ctx.model.tensor(layer, "var"))}
    if "weight" in t:
        init["gamma_initializer"] = FromArray(ctx.model.tensor(layer, "weight"))
    if "bias" in t:
        init["beta_initializer"] = FromArray(ctx.model.tensor(layer, "bias"))
    bn = keras.layers.BatchNormalization(axis=-1, epsilon=float(layer.attrs.get("eps", 1e-5)), center="bias" in t,
                                         scale="weight" in t, name=ctx.names[layer.name], **init)
    return _built(bn, x)


@converter("scale", "keras")
def _scale(ctx, layer, x):
    """Per-channel x · w + b as a 1×1 DepthwiseConv2D (a native layer; exact: one multiply-add)."""
    import keras
    w = ctx.model.tensor(layer, "weight")
    has_bias = "bias" in layer.tensors
    init = {"depthwise_initializer": FromArray(w.reshape(1, 1, -1, 1).astype("float32"))}
    if has_bias:
        init["bias_initializer"] = FromArray(ctx.model.tensor(layer, "bias"))
    conv = keras.layers.DepthwiseConv2D(1, use_bias=has_bias, name=ctx.names[layer.name], **init)
    return _built(conv, x)


@converter("eltwise", "keras")
def _eltwise(ctx, layer, xs):
    """Add (inputs with a coefficient ≠ 1 first go through Rescaling), Multiply or Maximum."""
    import keras
    op, coeffs, name = layer.attrs.get("op", "sum"), layer.attrs.get("coeffs"), ctx.names[layer.name]
    if op == "sum" and coeffs:
        xs = [x if float(c) == 1.0 else keras.layers.Rescaling(float(c), name=f"{name}_coeff{i}")(x)
              for i, (c, x) in enumerate(zip(coeffs, xs))]
    cls = {"sum": keras.layers.Add, "prod": keras.layers.Multiply, "max": keras.layers.Maximum}[op]
    return cls(name=name)(list(xs))


@converter("concat", "keras")
def _concat(ctx, layer, xs):
    import keras
    return keras.layers.Concatenate(axis=-1, name=ctx.names[layer.name])(list(xs))


@converter("dropout", "keras")
def _dropout(ctx, layer, x):
    return x


@converter("softmax", "keras")
def _softmax(ctx, layer, x):
    return x  # the model's output is the logits; probabilities are computed outside


@converter("flatten", "keras")
def _flatten(ctx, layer, x):
    import keras
    return keras.layers.Flatten(name=ctx.names[layer.name])(x)


def through_dropout(graph: Graph, layer: Layer) -> Layer:
    """``layer``, or the layer a chain of dropouts (identities, no Keras layer) starts from:
    AlexNet's classifier drops out between the flatten and fc6."""
    while layer.kind == "dropout":
        layer = graph.layer(layer.inputs[0])
    return layer


@converter("dense", "keras")
def _dense(ctx, layer, x):
    import keras
    w, src = ctx.model.tensor(layer, "weight"), through_dropout(ctx.model.graph, ctx.model.graph.layer(layer.inputs[0]))
    if src.kind == "flatten":  # channel-first flatten in the IR, channel-last in Keras
        kernel = layouts.dense_chw_oi_to_hwc_io(w, tuple(src.attrs["shape"]))
    else:
        kernel = layouts.dense_oi_to_io(w)
    dense = keras.layers.Dense(layer.attrs["out_features"], activation=_activation(ctx, layer),
                               name=ctx.names[layer.name], kernel_initializer=FromArray(kernel),
                               bias_initializer=FromArray(ctx.model.tensor(layer, "bias")))
    return _built(dense, x)


def keras_outputs(graph: Graph) -> dict[str, str]:
    """IR layer → the Keras layer whose output equals it, for every layer that has one.

    A fused ReLU maps to its conv/dense layer (whose own pre-ReLU output Keras does
    not expose); dropout maps to what its input maps to; softmax has no Keras layer.
    """
    names, fused, exposed = keras_names(graph), fused_relus(graph), {}
    carriers = {graph.layer(n).inputs[0] for n in fused}
    for layer in graph.layers:
        if layer.kind in ("conv2d", "dense"):
            target = None if layer.name in carriers else names[layer.name]
        elif layer.kind == "relu":
            target = names[layer.inputs[0]] if layer.name in fused else names[layer.name]
        elif layer.kind == "dropout":
            target = exposed.get(layer.inputs[0])
        elif layer.kind == "softmax":
            target = None
        else:
            target = names[layer.name]
        if target:
            exposed[layer.name] = target
    return exposed


def build_keras(model: IRModel):
    """Build the Keras model of ``model``, setting each layer's weights as it is built
    (so only one layer's converted copy exists at a time); returns (model, IR→Keras names).

    The name map sends each IR layer to the Keras layer whose output equals it
    (a fused ReLU maps to its conv/dense layer; dropout to the layer before it).
    """
    import keras

    graph = model.graph
    check_keras(graph)
    names = keras_names(graph)
    fused = fused_relus(graph)
    ctx = KerasContext(model, names, fused, {graph.layer(n).inputs[0] for n in fused}, shapes=infer_shapes(graph))
    c, h, w = graph.input.shape
    inp = keras.Input(shape=(h, w, c), name="input", dtype="float32")
    ctx.tensors[graph.input.name] = inp
    for layer in graph.layers:
        x = ([ctx.tensors[src] for src in layer.inputs] if layer.kind in MULTI_INPUT_KINDS
             else ctx.tensors[layer.inputs[0]])
        ctx.tensors[layer.name] = lookup(layer.kind, "keras")(ctx, layer, x)
    logits = ctx.tensors[graph.resolve("logits")]
    kmodel = keras.Model(inp, logits, name=graph.name.replace("-", "_"))
    return kmodel, keras_outputs(graph)
