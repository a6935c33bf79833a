"""IR → ONNX, built directly with ``onnx.helper`` (no tracing, no tf2onnx).

The model takes the preprocessed float32 batch ``input`` (N, C, H, W) with a named
dynamic batch dimension ``N``. Outputs, in order: ``logits`` (pre-softmax), ``prob``,
then any requested feature blobs (``fc7`` …). Labels, the preprocessing spec and the
IR fingerprint go into ``metadata_props``. NCHW throughout, so fc6 needs no permutation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from crossmodal._version import __version__
from crossmodal.ir.graph import IRModel, Layer
from crossmodal.ir.kinds import infer_shapes, padding, pool_output_size
from crossmodal.emitters.registry import check_supported, converter, lookup
from crossmodal.errors import InputError
from crossmodal.emitters.onnx_opset import DEFAULT_OPSET, MIN_OPSET, check_opset, max_opset  # noqa: F401

HELPER = "crossmodal: part of a layer"  # doc_string of nodes that are not a whole IR layer



@dataclass
class OnnxContext:
    """What the per-layer converters append to while building the graph."""

    model: IRModel
    opset: int
    shapes: dict[str, tuple] = field(default_factory=dict)  # IR layer → (C, H, W) or (F,)
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # IR layer → ONNX tensor name
    reserved: set[str] = field(default_factory=set)  # public output names
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # initializer data, kept apart

    def add_initializer(self, name: str, array: np.ndarray) -> str:
        """Declare a float32 initializer; its bytes stay in ``arrays`` until written."""
        from onnx import TensorProto
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(array.shape))
        self.initializers.append(tensor)
        self.arrays[name] = array
        return name

    def node(self, op: str, inputs: list[str], layer: Layer, **attrs) -> str:
        from onnx import helper
        out = f"{layer.name}/out" if layer.name in self.reserved else layer.name
        self.nodes.append(helper.make_node(op, inputs, [out], name=layer.name, **attrs))
        return out


def _src(ctx: OnnxContext, layer: Layer) -> str:
    return ctx.names[layer.inputs[0]]


@converter("conv2d", "onnx")
def _conv(ctx: OnnxContext, layer: Layer) -> str:
    a = layer.attrs
    inputs = [_src(ctx, layer), ctx.add_initializer(f"{layer.name}.weight", ctx.model.tensor(layer, "weight"))]
    if "bias" in layer.tensors:
        inputs.append(ctx.add_initializer(f"{layer.name}.bias", ctx.model.tensor(layer, "bias")))
    (pt, pb), (pl, pr) = padding(a)
    return ctx.node("Conv", inputs, layer, kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                    pads=[pt, pl, pb, pr], dilations=list(a.get("dilation", (1, 1))), group=int(a.get("groups", 1)))


def _pool(op: str, ctx: OnnxContext, layer: Layer) -> str:
    """Pooling with ``pads`` (begin, end); in ceil mode onnxruntime keeps a last window
    that starts in the right padding, which Caffe and PyTorch drop: a Slice then cuts
    the output to the IR's size (every other window is the same)."""
    from onnx import TensorProto, helper
    (kh, kw), (sh, sw) = layer.attrs["kernel"], layer.attrs["stride"]
    (pt, pb), (pl, pr) = padding(layer.attrs)
    ceil = bool(layer.attrs.get("ceil_mode", False))
    extra = {"count_include_pad": 1} if op == "AveragePool" else {}
    attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw], pads=[pt, pl, pb, pr], ceil_mode=int(ceil), **extra)
    _, h, w = ctx.shapes[layer.inputs[0]]
    want = (pool_output_size(h, kh, sh, pt, ceil, pb), pool_output_size(w, kw, sw, pl, ceil, pr))
    onnx_out = tuple(-(-(n + p + e - k) // st) + 1 for n, k, st, p, e in ((h, kh, sh, pt, pb), (w, kw, sw, pl, pr)))
    if not ceil or onnx_out == want:
        return ctx.node(op, [_src(ctx, layer)], layer, **attrs)
    pooled = f"{layer.name}/pool"
    ctx.nodes.append(helper.make_node(op, [_src(ctx, layer)], [pooled], name=pooled, doc_string=HELPER, **attrs))
    names = []
    for role, values in (("starts", [0, 0]), ("ends", list(want)), ("axes", [2, 3])):
        name = f"{layer.name}/{role}"
        ctx.nodes.append(helper.make_node("Constant", [], [name], name=name, doc_string=HELPER,
                                          value=helper.make_tensor(name, TensorProto.INT64, [2], values)))
        names.append(name)
    return ctx.node("Slice", [pooled, *names], layer)


@converter("max_pool2d", "onnx")
def _max_pool(ctx: OnnxContext, layer: Layer) -> str:
    return _pool("MaxPool", ctx, layer)


@converter("avg_pool2d", "onnx")
def _avg_pool(ctx: OnnxContext, layer: Layer) -> str:
    return _pool("AveragePool", ctx, layer)


@converter("relu", "onnx")
def _relu(ctx: OnnxContext, layer: Layer) -> str:
    """Relu or LeakyRelu; a clipped ReLU (``max_value``) as Clip(x, 0, max), or LeakyRelu then
    Clip(·, none, max)."""
    from onnx import helper
    slope = float(layer.attrs.get("negative_slope", 0.0))
    top = layer.attrs.get("max_value")
    if top is None:
        if slope:
            return ctx.node("LeakyRelu", [_src(ctx, layer)], layer, alpha=slope)
        return ctx.node("Relu", [_src(ctx, layer)], layer)
    hi = ctx.add_initializer(f"{layer.name}.max_value", np.asarray(float(top), np.float32))
    if not slope:
        lo = ctx.add_initializer(f"{layer.name}.min_value", np.asarray(0.0, np.float32))
        return ctx.node("Clip", [_src(ctx, layer), lo, hi], layer)
    leaky = f"{layer.name}/leaky"
    ctx.nodes.append(helper.make_node("LeakyRelu", [_src(ctx, layer)], [leaky], name=leaky, doc_string=HELPER,
                                      alpha=slope))
    return ctx.node("Clip", [leaky, "", hi], layer)


@converter("rescale", "onnx")
def _rescale(ctx: OnnxContext, layer: Layer) -> str:
    """Mul by the scalar ``scale``, then Add the ``offset`` when it is not 0."""
    from onnx import helper
    scale = ctx.add_initializer(f"{layer.name}.scale", np.asarray(float(layer.attrs["scale"]), np.float32))
    offset = float(layer.attrs.get("offset", 0.0))
    if not offset:
        return ctx.node("Mul", [_src(ctx, layer), scale], layer)
    scaled = f"{layer.name}/mul"
    ctx.nodes.append(helper.make_node("Mul", [_src(ctx, layer), scale], [scaled], name=scaled, doc_string=HELPER))
    return ctx.node("Add", [scaled, ctx.add_initializer(f"{layer.name}.offset", np.asarray(offset, np.float32))],
                    layer)


@converter("global_avg_pool2d", "onnx")
def _global_avg_pool(ctx: OnnxContext, layer: Layer) -> str:
    """GlobalAveragePool (N, C, 1, 1), then Flatten to the IR's (N, C)."""
    from onnx import helper
    pooled = f"{layer.name}/pool"
    ctx.nodes.append(helper.make_node("GlobalAveragePool", [_src(ctx, layer)], [pooled], name=pooled,
                                      doc_string=HELPER))
    return ctx.node("Flatten", [pooled], layer, axis=1)


@converter("lrn", "onnx")
def _lrn(ctx: OnnxContext, layer: Layer) -> str:
    a = layer.attrs
    return ctx.node("LRN", [_src(ctx, layer)], layer, size=int(a["size"]), alpha=float(a["alpha"]),
                    beta=float(a["beta"]), bias=float(a.get("k", 1.0)))


def _per_channel(ctx: OnnxContext, layer: Layer, role: str, array: np.ndarray) -> str:
    """A (C,) tensor as an initializer shaped to broadcast over axis 1 of the layer's input."""
    rank = len(ctx.shapes[layer.inputs[0]])
    return ctx.add_initializer(f"{layer.name}.{role}", np.asarray(array, np.float32).reshape((-1,) + (1,) * (rank - 1)))


@converter("batch_norm", "onnx")
def _batch_norm(ctx: OnnxContext, layer: Layer) -> str:
    """BatchNormalization (inference form); a missing affine part becomes γ = 1, β = 0."""
    mean = ctx.model.tensor(layer, "mean")
    gamma = ctx.model.tensor(layer, "weight") if "weight" in layer.tensors else np.ones_like(mean)
    beta = ctx.model.tensor(layer, "bias") if "bias" in layer.tensors else np.zeros_like(mean)
    inputs = [_src(ctx, layer)] + [ctx.add_initializer(f"{layer.name}.{role}", arr) for role, arr in
                                   (("weight", gamma), ("bias", beta), ("mean", mean),
                                    ("var", ctx.model.tensor(layer, "var")))]
    return ctx.node("BatchNormalization", inputs, layer, epsilon=float(layer.attrs.get("eps", 1e-5)))


@converter("scale", "onnx")
def _scale(ctx: OnnxContext, layer: Layer) -> str:
    """Mul by the per-channel weight, then Add the bias (when there is one)."""
    from onnx import helper
    weight = _per_channel(ctx, layer, "weight", ctx.model.tensor(layer, "weight"))
    if "bias" not in layer.tensors:
        return ctx.node("Mul", [_src(ctx, layer), weight], layer)
    scaled = f"{layer.name}/mul"
    ctx.nodes.append(helper.make_node("Mul", [_src(ctx, layer), weight], [scaled], name=scaled, doc_string=HELPER))
    return ctx.node("Add", [scaled, _per_channel(ctx, layer, "bias", ctx.model.tensor(layer, "bias"))], layer)


@converter("eltwise", "onnx")
def _eltwise(ctx: OnnxContext, layer: Layer) -> str:
    """Sum (inputs with a coefficient ≠ 1 are first multiplied by it), Mul or Max."""
    from onnx import TensorProto, helper
    op, coeffs = layer.attrs.get("op", "sum"), layer.attrs.get("coeffs")
    inputs = [ctx.names[src] for src in layer.inputs]
    if op == "sum" and coeffs:
        for i, c in enumerate(coeffs):
            if float(c) != 1.0:
                name = f"{layer.name}/coeff{i}"
                ctx.nodes.append(helper.make_node("Constant", [], [name], name=name, doc_string=HELPER,
                                                  value=helper.make_tensor(name, TensorProto.FLOAT, [], [float(c)])))
                ctx.nodes.append(helper.make_node("Mul", [inputs[i], name], [f"{name}/mul"], name=f"{name}/mul",
                                                  doc_string=HELPER))
                inputs[i] = f"{name}/mul"
    if op == "prod":
        return _chain(ctx, layer, "Mul", inputs)
    return ctx.node("Sum" if op == "sum" else "Max", inputs, layer)


def _chain(ctx: OnnxContext, layer: Layer, op: str, inputs: list[str]) -> str:
    """A binary op folded over ``inputs`` (ONNX Mul takes two)."""
    from onnx import helper
    acc = inputs[0]
    for i, x in enumerate(inputs[1:-1], 1):
        name = f"{layer.name}/{op.lower()}{i}"
        ctx.nodes.append(helper.make_node(op, [acc, x], [name], name=name, doc_string=HELPER))
        acc = name
    return ctx.node(op, [acc, inputs[-1]], layer)


@converter("concat", "onnx")
def _concat(ctx: OnnxContext, layer: Layer) -> str:
    return ctx.node("Concat", [ctx.names[src] for src in layer.inputs], layer, axis=1)


@converter("flatten", "onnx")
def _flatten(ctx: OnnxContext, layer: Layer) -> str:
    return ctx.node("Flatten", [_src(ctx, layer)], layer, axis=1)


@converter("dense", "onnx")
def _dense(ctx: OnnxContext, layer: Layer) -> str:
    w = ctx.add_initializer(f"{layer.name}.weight", ctx.model.tensor(layer, "weight"))
    b = ctx.add_initializer(f"{layer.name}.bias", ctx.model.tensor(layer, "bias"))
    return ctx.node("Gemm", [_src(ctx, layer), w, b], layer, transB=1)


@converter("dropout", "onnx")
def _dropout(ctx: OnnxContext, layer: Layer) -> str:
    return _src(ctx, layer)  # identity at inference: no node


@converter("softmax", "onnx")
def _softmax(ctx: OnnxContext, layer: Layer) -> str:
    return ctx.node("Softmax", [_src(ctx, layer)], layer, axis=int(layer.attrs.get("axis", 1)))


def metadata(model: IRModel) -> dict[str, str]:
    g = model.graph
    meta = {
        "crossmodal.ir_fingerprint": model.fingerprint(),
        "crossmodal.preprocess": json.dumps(g.preprocess.to_dict()),
        "crossmodal.input": json.dumps({"shape": list(g.input.shape), "layout": "NCHW",
                                        "channel_order": g.input.channel_order,
                                        "value_range": g.input.value_range}),
        "crossmodal.source_sha256": g.provenance.source_sha256,
        "crossmodal.source_file": g.provenance.source_file,
        "crossmodal.weights_identity": json.dumps(g.provenance.weights_identity or {}),
        "crossmodal.blobs": json.dumps(g.blobs),
    }
    if g.labels is not None:
        meta["crossmodal.labels"] = json.dumps(g.labels.names)
        if g.labels.indoor_outdoor:
            meta["crossmodal.indoor_outdoor"] = json.dumps(g.labels.indoor_outdoor)
    return meta


def build_onnx(model: IRModel, *, opset: int = DEFAULT_OPSET, extra_outputs: Iterable[str] = ("fc7",)):
    """The complete ``onnx.ModelProto`` of ``model``, initializer data included (in memory)."""
    from onnx import numpy_helper
    proto, arrays = build_onnx_skeleton(model, opset=opset, extra_outputs=extra_outputs)
    for t in proto.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arrays[t.name], dtype="<f4"), t.name))
    return proto


def build_onnx_skeleton(model: IRModel, *, opset: int = DEFAULT_OPSET, extra_outputs: Iterable[str] = ("fc7",)):
    """The ``onnx.ModelProto`` of ``model`` with empty initializers, and their data apart.

    Returns (proto, name → array). :func:`save_onnx` streams the arrays into the file,
    so the 528 MB of VGG16 weights are never copied into protobuf objects.
    ``extra_outputs``: blob or layer names added after ``logits`` and ``prob``.
    Each node is named after its IR layer and outputs a tensor of that name
    (``NAME/out`` where the name is also a public output, e.g. the dense ``fc7``
    beside the post-ReLU blob ``fc7``); public outputs come through Identity nodes.
    """
    from onnx import TensorProto, helper

    opset = check_opset(opset)
    graph = model.graph
    check_supported(graph, ["onnx"])
    public = ["logits"] + (["prob"] if "prob" in graph.blobs else [])
    public += [n for n in extra_outputs if n not in public]
    targets = {name: graph.resolve(name) for name in public}
    ctx = OnnxContext(model, opset, infer_shapes(graph), names={graph.input.name: "input"}, reserved=set(public))
    for layer in graph.layers:
        ctx.names[layer.name] = lookup(layer.kind, "onnx")(ctx, layer)
    outputs, shapes = [], infer_shapes(graph)
    for name in public:
        ctx.nodes.append(helper.make_node("Identity", [ctx.names[targets[name]]], [name], name=f"output_{name}"))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *shapes[targets[name]]]))
    c, h, w = graph.input.shape
    g = helper.make_graph(
        ctx.nodes, graph.name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c, h, w])],
        outputs, initializer=ctx.initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    # the lowest IR version that carries this opset, so that older runtimes load it
    proto = helper.make_model(g, opset_imports=opsets, producer_name="crossmodal", producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    helper.set_model_props(proto, metadata(model))
    return proto, ctx.arrays


def layer_tensors(proto) -> dict[str, str]:
    """IR layer name → ONNX tensor name, read back from a model this module built.

    Layers without a node (dropout) are absent: they equal their input. Helper nodes
    (a pooling layer's Slice inputs and pre-Slice pooling) are not layers.
    """
    return {node.name: node.output[0] for node in proto.graph.node
            if not node.name.startswith("output_") and node.doc_string != HELPER}
