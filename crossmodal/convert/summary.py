"""Describe a model file as a layer table: IR folder, checkpoint, Caffe prototxt, .onnx or .keras.

Returns plain data (:class:`ModelSummary`), printed by ``crossmodal inspect``. For an IR
graph (an IR folder, a checkpoint, a prototxt) each row also names the layer's inputs and
how many layers read its output, so the DAG's branch points (read by several layers:
an Inception module's input, a residual block's shortcut) and merge points (``concat``,
``eltwise``) show in the table.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from crossmodal.ir import identity
from crossmodal.errors import InputError
from crossmodal.models.cards import find_card_for_sha256


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: list
    parameters: int
    inputs: list[str] = field(default_factory=list)   # IR graphs only
    readers: int = 0                                   # layers reading this output (IR graphs only)
    statistics: int = 0                                # of ``parameters``: BatchNorm means and variances


@dataclass
class ModelSummary:
    path: str
    format: str
    layers: list[LayerRow]
    input: dict = field(default_factory=dict)
    preprocess: dict | None = None
    labels: dict | None = None
    #: the model's outputs by their public names (``logits``, ``prob``, the feature blob), as the
    #: emitted ONNX model names its outputs; ``output_layers``: public name → IR layer, where known
    outputs: list[str] = field(default_factory=list)
    output_layers: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: The weights' identity (:mod:`crossmodal.ir.identity`) and its one-line description.
    weights: dict = field(default_factory=dict)
    weights_description: str = ""

    @property
    def parameters(self) -> int:
        """Every stored value: weights, biases, and BatchNorm statistics."""
        return sum(r.parameters for r in self.layers)

    @property
    def statistics(self) -> int:
        """BatchNorm means and variances (stored, not learned by gradient)."""
        return sum(r.statistics for r in self.layers)

    def to_json(self) -> dict:
        return {**asdict(self), "parameters": self.parameters, "statistics": self.statistics}


def summarize(path: Path, **read_options) -> ModelSummary:
    path = Path(path)
    if path.suffix == ".onnx":
        return _summarize_onnx(path)
    if path.suffix == ".keras":
        return _summarize_keras(path)
    from crossmodal.ir.kinds import infer_shapes
    from crossmodal.convert.pipeline import read_source

    if path.suffix == ".prototxt" and read_options.get("caffemodel") is None:  # the graph alone
        from crossmodal.readers.from_caffe import read_prototxt
        g = read_prototxt(path).graph
    else:
        g = read_source(path, **read_options).graph
    shapes = infer_shapes(g)
    readers: dict[str, int] = {}
    for layer in g.layers:
        for src in dict.fromkeys(layer.inputs):
            readers[src] = readers.get(src, 0) + 1
    rows = [LayerRow(l.name, l.kind, ["N", *shapes[l.name]], sum(int(np.prod(t.shape)) for t in l.tensors.values()),
                     list(l.inputs), readers.get(l.name, 0),
                     sum(int(np.prod(t.shape)) for r, t in l.tensors.items()
                         if l.kind == "batch_norm" and r in ("mean", "var")))
            for l in g.layers]
    fmt = "ir" if (path / "model.json").is_file() else g.provenance.source_format or "caffe prototxt, no weights"
    public = {name: g.blobs[name] for name in dict.fromkeys(("logits", "prob", g.feature_blob)) if name in g.blobs}
    ident = g.provenance.weights_identity or \
        identity.resolve(read_options.get("caffemodel") or path, g.provenance.source_sha256, find_card_for_sha256)
    return ModelSummary(str(path), fmt, rows, {"shape": ["N", *g.input.shape], "layout": g.input.layout,
                                               "channel_order": g.input.channel_order,
                                               "value_range": g.input.value_range},
                        g.preprocess.to_dict(), _labels(g), list(public),
                        weights=identity.identity(ident), weights_description=identity.describe(ident),
                        output_layers=public)


def _labels(g) -> dict | None:
    if g.labels is None:
        return None
    flags = g.labels.indoor_outdoor
    return {"count": len(g.labels.names), "first": g.labels.names[:3], "source": g.labels.source,
            "indoor_outdoor": None if not flags else {"indoor": flags.count(1), "outdoor": flags.count(2)}}


def _summarize_onnx(path: Path) -> ModelSummary:
    import onnx
    from onnx import shape_inference

    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and others
        raise InputError(f"not a readable ONNX model ({exc.__class__.__name__})", path) from None
    inferred = shape_inference.infer_shapes(proto)
    dims = {vi.name: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    sizes = {t.name: int(np.prod(t.dims)) for t in proto.graph.initializer}
    rows = [LayerRow(n.name or n.output[0], n.op_type, dims.get(n.output[0], []),
                     sum(sizes.get(i, 0) for i in n.input)) for n in proto.graph.node]
    meta = {p.key: p.value for p in proto.metadata_props}
    inp = proto.graph.input[0]
    labels = json.loads(meta["crossmodal.labels"]) if "crossmodal.labels" in meta else None
    ident = identity.identity(json.loads(meta.get("crossmodal.weights_identity") or "{}")
                              or {"sha256": meta.get("crossmodal.source_sha256", "")})
    return ModelSummary(
        str(path), f"onnx (opset {proto.opset_import[0].version})", rows,
        {"name": inp.name, "shape": [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim],
         "layout": "NCHW"},
        json.loads(meta["crossmodal.preprocess"]) if "crossmodal.preprocess" in meta else None,
        {"count": len(labels), "first": labels[:3]} if labels else None,
        [o.name for o in proto.graph.output], weights=ident, weights_description=identity.describe(ident))


def _summarize_keras(path: Path) -> ModelSummary:
    from crossmodal.runtime.keras_engine import load_keras_model

    model = load_keras_model(path)
    rows = [LayerRow(l.name, l.__class__.__name__, ["N", *l.output.shape[1:]], int(l.count_params()))
            for l in model.layers]
    outputs = list(model.output_names)  # the producing layers' names: "predictions"
    summary = ModelSummary(str(path), "keras", rows, {"shape": ["N", *model.input.shape[1:]], "layout": "NHWC"},
                           outputs=outputs)
    _add_sibling_ir(summary, path, model)
    return summary


def _add_sibling_ir(summary: ModelSummary, path: Path, model) -> None:
    """A .keras file carries no preprocessing or labels: take them from the IR graph
    (``model.json``) converted beside it, when there is one and it fits the model."""
    from crossmodal.ir.store import GRAPH_FILE, load_graph

    if not (path.parent / GRAPH_FILE).is_file():
        summary.notes.append(f"no {GRAPH_FILE} beside it: preprocessing and labels unknown")
        return
    try:
        g = load_graph(path.parent)
    except InputError as exc:
        summary.notes.append(f"{GRAPH_FILE} beside it is unreadable ({exc})")
        return
    c, h, w = g.input.shape
    if tuple(model.input.shape[1:]) != (h, w, c) or model.outputs[0].shape[-1] != g.num_classes:
        summary.notes.append(f"{GRAPH_FILE} beside it describes another model: preprocessing and labels unknown")
        return
    summary.input.update(channel_order=g.input.channel_order, value_range=g.input.value_range)
    summary.preprocess, summary.labels = g.preprocess.to_dict(), _labels(g)
    summary.weights, summary.weights_description = identity.identity(g), identity.describe(g)
    summary.notes.append(f"preprocessing and labels from {path.parent / GRAPH_FILE} (the IR converted beside it)")
