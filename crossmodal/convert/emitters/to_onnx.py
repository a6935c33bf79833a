"""IR → ONNX, built directly with ``onnx.helper`` (no tracing, no tf2onnx).

The model takes the preprocessed float32 batch ``input`` (N, C, H, W) with a named
dynamic batch dimension ``N``. Outputs, in order: ``logits`` (pre-softmax), ``prob``,
then any requested feature blobs (``fc7`` …). Labels, the preprocessing spec and the
IR fingerprint go into ``metadata_props``. NCHW throughout, so fc6 needs no permutation.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from crossmodal.convert.ir import IRModel, Layer, infer_shapes
from crossmodal.convert.registry import check_supported, converter, lookup

DEFAULT_OPSET = 21
MIN_OPSET = 13  # Softmax with per-axis semantics
PROTOBUF_LIMIT = 2 * 1024 ** 3 - 64 * 1024 ** 2  # leave headroom below protobuf's 2 GiB


@dataclass
class OnnxContext:
    """What the per-layer converters append to while building the graph."""

    model: IRModel
    opset: int
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # IR layer → ONNX tensor name
    reserved: set[str] = field(default_factory=set)  # public output names

    def add_initializer(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
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
    w = ctx.add_initializer(f"{layer.name}.weight", ctx.model.tensor(layer, "weight"))
    b = ctx.add_initializer(f"{layer.name}.bias", ctx.model.tensor(layer, "bias"))
    (ph, pw) = layer.attrs["pad"]
    return ctx.node("Conv", [_src(ctx, layer), w, b], layer, kernel_shape=list(layer.attrs["kernel"]),
                    strides=list(layer.attrs["stride"]), pads=[ph, pw, ph, pw])


def _pool(op: str, ctx: OnnxContext, layer: Layer) -> str:
    (ph, pw) = layer.attrs["pad"]
    extra = {"count_include_pad": 1} if op == "AveragePool" else {}
    return ctx.node(op, [_src(ctx, layer)], layer, kernel_shape=list(layer.attrs["kernel"]),
                    strides=list(layer.attrs["stride"]), pads=[ph, pw, ph, pw],
                    ceil_mode=int(bool(layer.attrs.get("ceil_mode", False))), **extra)


@converter("max_pool2d", "onnx")
def _max_pool(ctx: OnnxContext, layer: Layer) -> str:
    return _pool("MaxPool", ctx, layer)


@converter("avg_pool2d", "onnx")
def _avg_pool(ctx: OnnxContext, layer: Layer) -> str:
    return _pool("AveragePool", ctx, layer)


@converter("relu", "onnx")
def _relu(ctx: OnnxContext, layer: Layer) -> str:
    return ctx.node("Relu", [_src(ctx, layer)], layer)


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
        "crossmodal.blobs": json.dumps(g.blobs),
    }
    if g.labels is not None:
        meta["crossmodal.labels"] = json.dumps(g.labels.names)
        if g.labels.indoor_outdoor:
            meta["crossmodal.indoor_outdoor"] = json.dumps(g.labels.indoor_outdoor)
    return meta


def build_onnx(model: IRModel, *, opset: int = DEFAULT_OPSET, extra_outputs: Iterable[str] = ("fc7",)):
    """Build the ``onnx.ModelProto`` of ``model``.

    ``extra_outputs``: blob or layer names added after ``logits`` and ``prob``.
    Each node is named after its IR layer and outputs a tensor of that name
    (``NAME/out`` where the name is also a public output, e.g. the dense ``fc7``
    beside the post-ReLU blob ``fc7``); public outputs come through Identity nodes.
    """
    from onnx import TensorProto, helper

    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old; use {MIN_OPSET} or newer")
    graph = model.graph
    check_supported(graph, ["onnx"])
    public = ["logits"] + (["prob"] if "prob" in graph.blobs else [])
    public += [n for n in extra_outputs if n not in public]
    targets = {name: graph.resolve(name) for name in public}
    ctx = OnnxContext(model, opset, names={graph.input.name: "input"}, reserved=set(public))
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
    proto = helper.make_model(g, opset_imports=opsets, producer_name="crossmodal",
                              ir_version=helper.find_min_ir_version_for(opsets))
    helper.set_model_props(proto, metadata(model))
    return proto


def save_onnx(proto, path: Path, *, check: bool = True) -> list[Path]:
    """Write ``proto`` atomically; external data beyond the 2 GiB protobuf limit.

    Returns the files written. The check (``onnx.checker`` full check with shape
    inference) runs on the written file, before the rename.
    """
    import onnx

    path = Path(path)
    size = sum(len(t.raw_data) for t in proto.graph.initializer)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
    files = [path]
    try:
        if size > PROTOBUF_LIMIT:
            data_name = path.name + ".data"
            onnx.save_model(proto, tmp, save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
            # the data file is written beside tmp under its final name
            files.append(path.with_name(data_name))
        else:
            with open(tmp, "wb") as f:
                f.write(proto.SerializeToString())
        if check:
            onnx.checker.check_model(str(tmp), full_check=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return files


def layer_tensors(proto) -> dict[str, str]:
    """IR layer name → ONNX tensor name, read back from a model this module built.

    Layers without a node (dropout) are absent: they equal their input.
    """
    return {node.name: node.output[0] for node in proto.graph.node if not node.name.startswith("output_")}
