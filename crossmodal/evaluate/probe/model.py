"""The adjusted network as a model: the frozen base network with a trained probe head in place.

:func:`adjusted_model` builds the new IR (pure: IR in, IR out):

* a **logistic head on the layer the last dense reads** (fc7 for VGG, through its
  dropout) keeps the graph as it is and replaces that dense's weights, bias and
  ``out_features``: fc8 replaced;
* any other layer (``pool5``, ``fc6``, a conv map) or the **MLP head**: the graph
  is cut after the feature layer (later layers dropped), a ``flatten`` is added
  after a map (channel-first, as the cached features are flattened), then the
  head: ``probe_fc`` (logistic) or ``probe_fc1`` → ``probe_relu1`` → ``probe_fc2``
  (MLP), and the softmax ``prob`` when the base had one.

Labels are the data set's categories in the head's output order; the provenance
names the base model (folder, name, fingerprint) and the probe's settings, and its
``weights_identity`` is ``{"kind": "probe", "base": <the base's identity>, ...}``
(:mod:`crossmodal.ir.identity`): ``inspect`` says the weights are a probe head
on the base's weights, and a random base keeps the random-weights banner.

:func:`write_adjusted_model` writes it as a full model folder (IR + ONNX + Keras)
through the convert pipeline (:func:`crossmodal.convert.pipeline.convert` on a
staged IR), so ``baseline``, ``retrieval`` and ``verify`` read it like any
converted model.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from crossmodal.ir.graph import IRModel, Labels, Layer, Provenance, TensorSpec

from crossmodal.ir.kinds import infer_shapes
from crossmodal.errors import InputError
from crossmodal.evaluate.probe.fit import Head

#: public feature blobs kept as extra ONNX outputs when they survive the cut
ONNX_FEATURES = ("fc7", "fc6")


def _dense(name: str, src: str, w: np.ndarray, b: np.ndarray) -> tuple[Layer, dict[str, np.ndarray]]:
    out, fin = w.shape
    layer = Layer(name, "dense", [src], {"in_features": int(fin), "out_features": int(out)},
                  {"weight": TensorSpec(f"{name}.weight", (int(out), int(fin)), "OI"),
                   "bias": TensorSpec(f"{name}.bias", (int(out),), "O")})
    return layer, {f"{name}.weight": np.ascontiguousarray(w, np.float32),
                   f"{name}.bias": np.ascontiguousarray(b, np.float32)}


def replaces_last_dense(model: IRModel, feature_layer: str) -> str | None:
    """The name of the last dense layer when it reads ``feature_layer`` (through dropouts only)
    and only a softmax follows it; else None."""
    g = model.graph
    dense = [l for l in g.layers if l.kind == "dense"]
    if not dense:
        return None
    last = dense[-1]
    src = last.inputs[0]
    while src != g.input.name and g.layer(src).kind == "dropout":
        src = g.layer(src).inputs[0]
    after = g.layers[[l.name for l in g.layers].index(last.name) + 1:]
    if src != feature_layer or any(l.kind != "softmax" for l in after):
        return None
    return last.name


def adjusted_model(base: IRModel, feature: str, head: Head, class_names: Sequence[str], *,
                   provenance: dict, base_dir: Path, fingerprint: str) -> IRModel:
    """The base network with ``head`` on the feature ``feature`` (a blob or layer name); see the
    module docstring. ``head.in_features`` must equal the feature's flattened size."""
    g = base.graph
    feat_layer = g.resolve(feature)
    shapes = infer_shapes(g)
    size = int(np.prod(shapes[feat_layer]))
    if head.in_features != size:
        raise InputError(f"the head reads {head.in_features} features, {feature!r} has {size}")
    if len(class_names) != head.num_classes:
        raise InputError(f"{len(class_names)} class names for a head of {head.num_classes} outputs")
    weights = dict(base.weights)
    last = replaces_last_dense(base, feat_layer) if head.kind == "logistic" else None
    names = [l.name for l in g.layers]
    if last is not None:  # exactly the last dense replaced
        w, b = head.layers[0]
        layers = []
        for l in g.layers:
            if l.name == last:
                new, arrays = _dense(last, l.inputs[0], w, b)
                for spec in l.tensors.values():
                    weights.pop(spec.name, None)
                weights.update(arrays)
                l = new
            layers.append(l)
        blobs = dict(g.blobs)
        outputs = list(g.outputs)
        feature_blob = g.feature_blob
    else:
        keep = g.layers[:names.index(feat_layer) + 1]
        dropped = g.layers[len(keep):]
        for l in dropped:
            for spec in l.tensors.values():
                weights.pop(spec.name, None)
        layers, src = list(keep), feat_layer
        taken = {l.name for l in keep}
        if len(shapes[feat_layer]) > 1:
            name = "flatten" if "flatten" not in taken else "probe_flatten"
            layers.append(Layer(name, "flatten", [src], {"shape": tuple(int(v) for v in shapes[feat_layer])}))
            src = name
        dense_names = ["probe_fc"] if len(head.layers) == 1 else [f"probe_fc{i + 1}" for i in range(len(head.layers))]
        for i, ((w, b), name) in enumerate(zip(head.layers, dense_names)):
            feature_blob = src  # what the last dense layer reads: the cut network's features
            layer, arrays = _dense(name, src, w, b)
            layers.append(layer)
            weights.update(arrays)
            src = name
            if i < len(head.layers) - 1:
                relu = f"probe_relu{i + 1}"
                layers.append(Layer(relu, "relu", [src]))
                src = relu
        logits = src
        blobs = {k: v for k, v in g.blobs.items() if v in taken}
        blobs["logits"] = logits
        outputs = [logits]
        if "prob" in g.blobs:
            layers.append(Layer("prob", "softmax", [logits], {"axis": 1}))
            blobs["prob"] = "prob"
            outputs.append("prob")
    from crossmodal.ir import identity
    prov = Provenance(
        source_file=str(base_dir), source_sha256=fingerprint, source_format="crossmodal-ir + probe head",
        reader="crossmodal probe",
        weights_identity={"kind": "probe", "base": identity.identity(g), "head": head.kind, "layer": feature,
                          "train_modality": provenance.get("train_modality"), "base_fingerprint": fingerprint},
        notes=[f"base model {g.name!r} from {base_dir}, fingerprint {fingerprint} (source "
               f"{g.provenance.source_file or '?'}, sha256 {g.provenance.source_sha256 or '?'})",
               f"probe head: {head.kind} on {feature} ({feat_layer}), "
               + ("the last dense layer " + repr(last) + " replaced" if last else
                  f"layers after {feat_layer} dropped ({', '.join(n for n in names[names.index(feat_layer) + 1:])})"),
               "probe settings: " + ", ".join(f"{k}={v}" for k, v in provenance.items())])
    graph = dataclasses.replace(
        g, name=f"{g.name}-probe", layers=layers, outputs=outputs, blobs=blobs, feature_blob=feature_blob,
        labels=Labels(list(class_names), None, "crossmodal probe: the data set's categories"),
        provenance=prov, tensors=dict(g.tensors))
    return IRModel(graph, weights)


def write_adjusted_model(model: IRModel, out_dir: Path, targets: Sequence[str] = ("ir", "onnx", "keras"), *,
                         on_step=None) -> list[dict]:
    """Write ``model`` as a model folder in ``out_dir`` through the convert pipeline (``targets`` of
    ir, onnx, keras, torch); returns its artifacts (kind, path, bytes, sha256). The ONNX model also
    outputs the feature blob and whichever of fc7 / fc6 survive."""
    import os

    from crossmodal.ir.store import save_ir
    from crossmodal.convert.pipeline import convert

    out_dir = Path(out_dir)
    staging = out_dir.parent / f".{out_dir.name}-ir-{os.getpid()}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        save_ir(model, staging)
        extra = list(dict.fromkeys([model.graph.feature_blob] + [b for b in ONNX_FEATURES if b in model.graph.blobs]))
        result = convert(staging, out_dir, targets=list(targets), onnx_outputs=extra if "onnx" in targets else None,
                         on_step=on_step)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [dataclasses.asdict(a) for a in result.artifacts]
