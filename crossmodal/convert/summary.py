"""Describe a model file as a layer table: IR folder, checkpoint, Caffe prototxt, .onnx or .keras.

Returns plain data (:class:`ModelSummary`), printed by ``crossmodal inspect``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from crossmodal.errors import InputError


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: list
    parameters: int


@dataclass
class ModelSummary:
    path: str
    format: str
    layers: list[LayerRow]
    input: dict = field(default_factory=dict)
    preprocess: dict | None = None
    labels: dict | None = None
    outputs: list[str] = field(default_factory=list)

    @property
    def parameters(self) -> int:
        return sum(r.parameters for r in self.layers)

    def to_json(self) -> dict:
        return {**asdict(self), "parameters": self.parameters}


def summarize(path: Path, **read_options) -> ModelSummary:
    path = Path(path)
    if path.suffix == ".onnx":
        return _summarize_onnx(path)
    if path.suffix == ".keras":
        return _summarize_keras(path)
    from crossmodal.convert.ir import infer_shapes
    from crossmodal.convert.pipeline import read_source

    model = read_source(path, **read_options)
    g = model.graph
    shapes = infer_shapes(g)
    rows = [LayerRow(l.name, l.kind, ["N", *shapes[l.name]],
                     sum(int(np.prod(t.shape)) for t in l.tensors.values())) for l in g.layers]
    labels = None
    if g.labels is not None:
        labels = {"count": len(g.labels.names), "first": g.labels.names[:3], "source": g.labels.source,
                  "indoor_outdoor": None if not g.labels.indoor_outdoor else
                  {"indoor": g.labels.indoor_outdoor.count(1), "outdoor": g.labels.indoor_outdoor.count(2)}}
    fmt = "ir" if (path / "model.json").is_file() else g.provenance.source_format
    return ModelSummary(str(path), fmt, rows, {"shape": ["N", *g.input.shape], "layout": g.input.layout,
                                               "channel_order": g.input.channel_order,
                                               "value_range": g.input.value_range},
                        g.preprocess.to_dict(), labels, list(g.outputs))


def _summarize_onnx(path: Path) -> ModelSummary:
    import onnx
    from onnx import numpy_helper, shape_inference

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
    return ModelSummary(
        str(path), f"onnx (opset {proto.opset_import[0].version})", rows,
        {"name": inp.name, "shape": [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim],
         "layout": "NCHW"},
        json.loads(meta["crossmodal.preprocess"]) if "crossmodal.preprocess" in meta else None,
        {"count": len(labels), "first": labels[:3]} if labels else None,
        [o.name for o in proto.graph.output])


def _summarize_keras(path: Path) -> ModelSummary:
    import keras

    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # keras raises many kinds on a bad archive
        raise InputError(f"not a loadable Keras model ({exc.__class__.__name__}: {str(exc)[:120]})", path) from None
    rows = [LayerRow(l.name, l.__class__.__name__, ["N", *l.output.shape[1:]], int(l.count_params()))
            for l in model.layers]
    return ModelSummary(str(path), "keras", rows, {"shape": ["N", *model.input.shape[1:]], "layout": "NHWC"},
                        outputs=[t.name for t in model.outputs])
