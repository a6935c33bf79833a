"""ONNX models (``torch.onnx`` legacy and dynamo, tf2onnx, model zoos, our own emitter) → IR.

The file is read as data (:mod:`onnx_load`: bounded, external initializers from its folder, opsets
7 to 21), then walked once in node order:

* nodes whose inputs are all known are folded (:mod:`onnx_fold`: initializers, ``Constant``,
  ``ConstantOfShape``, and ``Shape`` of an activation with a symbolic batch), so the shape chains
  exporters write around the batch size (``Shape → Gather → Concat → Reshape``) become constants;
* every other node goes through its converter (:mod:`onnx_ops`, :mod:`onnx_ops_view`), which adds
  IR layers or only changes how its tensor is seen (a transpose, a pending pad, a flatten).

Every unsupported op (an op without a converter, attributes a converter refuses, a node it cannot
express) is collected with its node name and they are listed together in one
:class:`UnsupportedError`, before anything is written.

The input must have a static C×H×W (``input_size`` fixes a dynamic H×W); an NHWC input (N, H, W, C)
whose only reader is a Transpose to NCHW is absorbed: the IR stays channels-first and the source's
layout is a provenance note. IR layers take the ONNX node names (made unique). ``logits`` is the last
dense layer, ``prob`` a softmax after it, ``features`` (the feature blob) the input of the last
dense layer unless ``feature_layer`` names another layer or ONNX tensor. A file our emitter wrote
carries its labels, preprocessing and blobs in ``metadata_props``: they are taken back.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossmodal.errors import InputError, UnsupportedError
from crossmodal.ir.graph import Graph, InputSpec, IRModel, Labels, Provenance
from crossmodal.ir.preprocess import Preprocess
from crossmodal.ir.validation import validate
from crossmodal.readers import onnx_ops_view  # noqa: F401  (registers its converters)
from crossmodal.readers.onnx_fold import BATCH, FOLDERS, FoldError, fold
from crossmodal.readers.onnx_load import OnnxFile, load_onnx
from crossmodal.readers.onnx_ops import CONVERTERS, LIMITS
from crossmodal.readers.onnx_state import NHWC, OnnxBuilder, Value, layer_name

_HANDLED = set(CONVERTERS) | set(FOLDERS) | {"Shape"}


@dataclass
class OnnxRead:
    """What :func:`read_onnx` returns: the model, the preprocessing the file carried (crossmodal
    metadata, or None), and IR layer → the source's ONNX tensor holding the same values (verify)."""

    model: IRModel
    carried_preprocess: Preprocess | None
    layer_tensors: dict[str, str] = field(default_factory=dict)


def _input_shape(f: OnnxFile, input_size: tuple[int, int] | None) -> tuple[tuple[int, int, int], str]:
    """(C, H, W) and the source layout (NCHW or NHWC) of the image input."""
    dims = f.input_dims
    if len(dims) != 4:
        raise UnsupportedError(f"input {f.input_name!r} has rank {len(dims)}; an N×C×H×W (or N×H×W×C) image is "
                               "supported", f.path)
    nhwc = _nhwc_input(f)
    c, h, w = (dims[3], dims[1], dims[2]) if nhwc else (dims[1], dims[2], dims[3])
    if not isinstance(c, int):
        raise InputError(f"input {f.input_name!r} has a dynamic channel count", f.path)
    if input_size is not None:
        if any(isinstance(d, int) and d != want for d, want in zip((h, w), input_size)):
            raise InputError(f"input {f.input_name!r} is {h}×{w}, --input-size says "
                             f"{input_size[0]}×{input_size[1]}", f.path)
        h, w = input_size
    if not isinstance(h, int) or not isinstance(w, int):
        raise InputError(f"input {f.input_name!r} has a dynamic spatial size ({h}×{w}); give --input-size H or "
                         "HxW", f.path)
    return (int(c), int(h), int(w)), "NHWC" if nhwc else "NCHW"


_ELEMENTWISE = {"Mul", "Sub", "Add", "Div", "Relu", "Clip", "Identity", "Cast"}


def _nhwc_input(f: OnnxFile) -> bool:
    """Whether the input is NHWC: every path from it goes through element-wise ops with constants
    (a model's own rescaling) to a Transpose [0, 3, 1, 2]."""
    frontier, found = {f.input_name}, False
    for node in f.nodes:
        if not frontier & set(node.inputs):
            continue
        if node.op == "Transpose" and list(node.attrs.get("perm", [])) == [0, 3, 1, 2]:
            found = True
        elif node.op in _ELEMENTWISE and all(i in frontier or i in f.initializers or not i for i in node.inputs):
            frontier.update(node.outputs)
        else:
            return False
    return found


def unsupported_nodes(f: OnnxFile) -> list[str]:
    """Nodes whose op no converter handles or whose attributes a converter refuses."""
    bad = []
    for node in f.nodes:
        if node.domain not in ("", "ai.onnx"):
            bad.append(f"{node.name} ({node.domain}.{node.op})")
        elif node.op not in _HANDLED and node.op not in LIMITS:
            bad.append(f"{node.name} ({node.op})")
        else:
            limit = LIMITS.get(node.op)
            reason = limit(node, f.opset) if limit else None
            if reason:
                bad.append(f"{node.name} ({node.op}: {reason})")
    return bad


def _walk(b: OnnxBuilder, f: OnnxFile, skip: set[str]) -> list[str]:
    """Fold or convert every node in order; returns the problems (node, op, reason)."""
    problems, poisoned = [], set()
    for node in f.nodes:
        if node.name in skip or any(i in poisoned for i in node.inputs if i):
            poisoned.update(node.outputs)
            continue
        try:
            if node.op == "Shape" and node.inputs[0] in b.values:
                v = b.values[node.inputs[0]]
                shape = [BATCH, *v.onnx_shape]
                start, end = node.attrs.get("start", 0), node.attrs.get("end")
                b.consts[node.outputs[0]] = np.asarray(shape[start:end], dtype=np.int64)
            elif all(not i or i in b.consts for i in node.inputs) and node.op in FOLDERS:
                args = [b.consts.get(i) if i else None for i in node.inputs]
                for name, arr in zip(node.outputs, fold(node.op, node.attrs, args, f.opset)):
                    b.consts[name] = arr
            elif node.op in CONVERTERS:
                CONVERTERS[node.op](b, node)
            else:
                raise UnsupportedError(f"{node.op} on an activation")
        except FoldError as exc:
            problems.append(f"{node.name} ({node.op}: {_reason(exc)})")
            poisoned.update(node.outputs)
        except UnsupportedError as exc:
            problems.append(f"{node.name} ({node.op}: {_reason(exc)})")
            poisoned.update(node.outputs)
    return problems


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("/") and ": " in text else text


def _blobs(b: OnnxBuilder, f: OnnxFile, feature_layer: str | None) -> tuple[dict[str, str], list[str], str]:
    """Public blobs, IR outputs and the feature blob."""
    layers = b.layers
    dense = [l for l in layers if l.kind == "dense"]
    if not dense:
        raise UnsupportedError("no dense (fully connected) classifier layer: the IR needs one for the logits", f.path)
    logits = dense[-1].name
    softmax = [l.name for l in layers if l.kind == "softmax" and l.inputs == [logits]]
    blobs = {"logits": logits, **({"prob": softmax[-1]} if softmax else {})}
    names = {l.name for l in layers}
    carried = _meta_json(f, "crossmodal.blobs")
    if isinstance(carried, dict):
        blobs.update({k: v for k, v in carried.items() if isinstance(v, str) and v in names})
    if feature_layer is not None:
        target = feature_layer if feature_layer in names else b.layer_of_node.get(feature_layer) or next(
            (layer for layer, t in b.tensor_of.items() if t == feature_layer), None)
        if target is None:
            target = blobs.get(feature_layer)
        if target is None:
            raise InputError(f"--feature-layer {feature_layer!r} is no layer, node or tensor of the model", f.path)
        blobs["features"] = target
    elif "features" not in blobs:
        blobs["features"] = dense[-1].inputs[0]
    feature = "features"
    if isinstance(carried, dict) and feature_layer is None:  # our own file: its third output is the feature blob
        extra = [o for o in f.outputs if o not in ("logits", "prob") and o in carried]
        feature = extra[0] if extra else feature
    return blobs, [logits] + ([softmax[-1]] if softmax else []), feature


#: doc_string of the nodes our emitter writes as part of a layer (crossmodal.emitters.to_onnx.HELPER).
_HELPER_DOC = "crossmodal: part of a layer"


def _own_names(b: OnnxBuilder, f: OnnxFile) -> dict[str, str]:
    """In a file our emitter wrote, each layer takes the name of the last whole-layer node whose
    output it equals (not a helper such as ``gap/pool``, not an ``output_*`` Identity)."""
    docs = {n.name: n for n in f.nodes}
    mapping, taken = {}, {l.name for l in b.layers}
    for layer in b.layers:
        names = [n for n in b.history.get(layer.name, []) if docs[n].doc != _HELPER_DOC
                 and not (docs[n].op == "Identity" and n.startswith("output_"))]
        new = layer_name(names[-1]) if names else None
        if new and new != layer.name and new not in taken:
            mapping[layer.name] = new
            taken.add(new)
    return mapping


def _meta_json(f: OnnxFile, key: str):
    try:
        return json.loads(f.metadata[key]) if key in f.metadata else None
    except json.JSONDecodeError:
        return None


def _carried(f: OnnxFile) -> tuple[Preprocess | None, Labels | None]:
    """The preprocessing and labels a crossmodal-written file records in its metadata."""
    spec = _meta_json(f, "crossmodal.preprocess")
    pre = None
    if isinstance(spec, dict):
        try:
            pre = Preprocess.from_dict(spec, f.path)
        except InputError:
            pre = None
    names = _meta_json(f, "crossmodal.labels")
    labels = None
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        io = _meta_json(f, "crossmodal.indoor_outdoor")
        labels = Labels(names, io if isinstance(io, list) and len(io) == len(names) else None, source=str(f.path))
    return pre, labels


def read_onnx(path: Path, *, input_size: tuple[int, int] | None = None,
              feature_layer: str | None = None) -> OnnxRead:
    """Read an ``.onnx`` file into the IR (module docstring)."""
    import onnx

    from crossmodal.io.hashing import file_sha256

    path = Path(path)
    f = load_onnx(path)
    shape, layout = _input_shape(f, input_size)
    bad = unsupported_nodes(f)
    b = OnnxBuilder(f, shape)
    b.values[f.input_name] = Value("input", shape, perm=NHWC if layout == "NHWC" else None)
    problems = _walk(b, f, {entry.split(" (")[0] for entry in bad})
    problems = bad + [p for p in problems if p not in bad]
    if problems:
        raise UnsupportedError(f"{len(problems)} unsupported ONNX node(s): {', '.join(problems)}", path)
    missing = [o for o in f.outputs if o not in b.values and o not in b.consts]
    if missing:
        raise InputError(f"graph output(s) {missing} are written by no node", path)
    if f.producer == "crossmodal":
        b.rename(_own_names(b, f))
    blobs, outputs, feature = _blobs(b, f, feature_layer)
    pre, labels = _carried(f)
    if labels is not None and len(labels.names) != int(b.layer(outputs[0]).attrs["out_features"]):
        labels = None
    notes = [f"ONNX opset {f.opset}" + (f", written by {f.producer}" if f.producer else "")]
    if layout == "NHWC":
        notes.append("source layout NHWC: its input Transpose absorbed; the IR and the models emitted from it are "
                     "channels-first (NCHW ONNX, NHWC Keras as always)")
    graph = Graph(
        name=(f.graph_name if f.producer == "crossmodal" and f.graph_name else path.stem),
        input=InputSpec(shape=shape), layers=b.layers, outputs=outputs,
        preprocess=pre or Preprocess(crop=shape[1:]), labels=labels, blobs=blobs, feature_blob=feature,
        provenance=Provenance(source_file=str(path), source_sha256=file_sha256(path), source_format="onnx",
                              reader="crossmodal.readers.from_onnx",
                              framework_versions={"onnx": onnx.__version__}, notes=notes),
    )
    model = IRModel(graph, b.weights)
    validate(model)
    return OnnxRead(model, pre, dict(b.tensor_of))

