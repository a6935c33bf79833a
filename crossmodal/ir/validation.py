"""Whole-model checks and hashes: :func:`validate` lists every problem of an IR at once (kinds,
wiring, tensor presence and shapes); :func:`with_hashes` fills in each tensor's SHA-256.
"""
from __future__ import annotations

import dataclasses

from crossmodal.errors import InputError, UnsupportedError
from crossmodal.ir.graph import Graph, IRModel, TensorSpec, tensor_sha256
from crossmodal.ir.kinds import LAYER_KINDS, OPTIONAL_ROLES, expected_tensor_shapes, infer_shapes


def validate(model: IRModel) -> None:
    """Check kinds, wiring, tensor presence and shapes; list *every* problem at once."""
    graph, problems = model.graph, []
    seen = {graph.input.name}
    unknown = sorted({l.kind for l in graph.layers if l.kind not in LAYER_KINDS})
    if unknown:
        raise UnsupportedError(f"unsupported layer kinds {unknown}")
    try:
        shapes = infer_shapes(graph)
    except InputError as exc:
        problems.append(str(exc))
        shapes = {}
    for layer in graph.layers:
        for src in layer.inputs:
            if src not in seen:
                problems.append(f"layer {layer.name!r} reads {src!r}, which comes later or not at all")
        seen.add(layer.name)
        required, optional = set(LAYER_KINDS[layer.kind]), set(OPTIONAL_ROLES.get(layer.kind, ()))
        if not required <= set(layer.tensors) <= required | optional:
            problems.append(f"layer {layer.name!r} ({layer.kind}) has tensors {sorted(layer.tensors)}, "
                            f"expected {sorted(required)}" + (f" and optionally {sorted(optional)}" if optional else ""))
            continue
        in_shape = shapes.get(layer.inputs[0]) if layer.inputs else None
        want = expected_tensor_shapes(layer.kind, layer.attrs, in_shape) if in_shape else {}
        for role, spec in layer.tensors.items():
            arr = model.weights.get(spec.name)
            if arr is None:
                problems.append(f"tensor {spec.name!r} of layer {layer.name!r} is missing")
            elif tuple(arr.shape) != tuple(spec.shape):
                problems.append(f"tensor {spec.name!r} has shape {tuple(arr.shape)}, graph says {spec.shape}")
            elif role in want and tuple(arr.shape) != tuple(want[role]):
                problems.append(f"tensor {spec.name!r} has shape {tuple(arr.shape)}, layer {layer.name!r} "
                                f"({layer.kind}) needs {tuple(want[role])}")
    for name, spec in graph.tensors.items():
        arr = model.weights.get(name)
        if arr is None:
            problems.append(f"tensor {name!r} is recorded in the graph but missing")
        elif tuple(arr.shape) != tuple(spec.shape):
            problems.append(f"tensor {name!r} has shape {tuple(arr.shape)}, graph says {spec.shape}")
    for out in graph.outputs:
        if out not in seen:
            problems.append(f"output {out!r} is not a layer")
    for blob, target in graph.blobs.items():
        if target not in seen:
            problems.append(f"blob {blob!r} points at unknown layer {target!r}")
    if graph.labels is not None and len(graph.labels.names) != graph.num_classes:
        problems.append(f"{len(graph.labels.names)} labels for {graph.num_classes} classes")
    if problems:
        raise InputError("invalid IR: " + "; ".join(dict.fromkeys(problems)))


def layer_tensor_names(graph: Graph) -> set[str]:
    return {t.name for l in graph.layers for t in l.tensors.values()}


def with_hashes(model: IRModel) -> IRModel:
    """Fill in the SHA-256 of every tensor that has none yet (returns a new graph).

    Covers the layers' tensors and every other array in ``model.weights`` (e.g. the
    Caffe mean image), which gets a record in ``Graph.tensors``. Hashes already
    present are kept: they were computed from these arrays when the model was
    read (``load_ir`` checks them against the file).
    """
    from concurrent.futures import ThreadPoolExecutor

    graph = model.graph
    owned = layer_tensor_names(graph)
    extra = {name: graph.tensors.get(name) or TensorSpec(name, tuple(arr.shape), "CHW" if arr.ndim == 3 else "",
                                                         str(arr.dtype))
             for name, arr in model.weights.items() if name not in owned}
    todo = [t.name for l in graph.layers for t in l.tensors.values() if not t.sha256]
    todo += [name for name, t in extra.items() if not t.sha256]
    with ThreadPoolExecutor(max_workers=2) as pool:  # hashlib releases the GIL on large buffers
        hashes = dict(zip(todo, pool.map(lambda n: tensor_sha256(model.weights[n]), todo)))

    def filled(t: TensorSpec) -> TensorSpec:
        return t if t.sha256 else dataclasses.replace(t, sha256=hashes[t.name], dtype=str(model.weights[t.name].dtype))
    layers = [dataclasses.replace(l, tensors={r: filled(t) for r, t in l.tensors.items()}) for l in graph.layers]
    tensors = {name: filled(t) for name, t in extra.items()}
    return IRModel(dataclasses.replace(graph, layers=layers, tensors=tensors), model.weights)
