"""Structural comparison of two IR models, modulo what an emitter folds away.

A model read back from a file an emitter wrote (ONNX, Keras) is the same network as the IR it came
from, but not the same list of layers: emitters drop ``dropout`` (identity at inference) and the
final ``softmax`` (Keras), fuse a plain ReLU into the conv or dense layer before it (Keras'
``activation="relu"``), and write defaults out (a batch norm without affine part gets γ = 1, β = 0).
:func:`canonical` brings a model into one form where those differences are gone:

* ``dropout`` and ``softmax`` layers are removed (their consumers read their input);
* a plain ReLU (no slope, no clip) that is the only consumer of a conv/dense layer becomes that
  layer's ``activation``;
* attributes take their defaults (``pad_end`` = ``pad``, ``dilation`` (1, 1), ``groups`` 1,
  ``negative_slope`` 0, ``coeffs`` of 1 dropped, ``ceil_mode`` only where it changes the output
  size), floats as float32 (what the ONNX and Keras files store);
* a batch norm's missing γ / β become ones / zeros;
* layers are addressed by position, not name (readers name layers after the file's nodes).

:func:`structural_diff` lists every difference (empty: the same network, same weights within the
tolerances); :func:`assert_same_structure` raises with the list. This module is pure.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossmodal.ir.graph import IRModel
from crossmodal.ir.kinds import infer_shapes, padding, pool_output_size

_FOLDED = ("dropout", "softmax")


@dataclass
class CanonicalLayer:
    """One layer in canonical form: ``inputs`` are positions in the canonical list (−1: the
    graph input); ``name`` is kept for messages only."""

    name: str
    kind: str
    inputs: tuple[int, ...]
    attrs: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


def _f32(v) -> float:
    return float(np.float32(v))


def _attrs(kind: str, a: dict, in_shape, model: IRModel) -> dict[str, Any]:
    """The attributes that define the computation, with defaults filled in."""
    if kind == "conv2d":
        return {"kernel": tuple(a["kernel"]), "stride": tuple(a["stride"]), "padding": padding(a),
                "dilation": tuple(a.get("dilation", (1, 1))), "groups": int(a.get("groups", 1)),
                "in_channels": int(a["in_channels"]), "out_channels": int(a["out_channels"])}
    if kind in ("max_pool2d", "avg_pool2d"):
        (kh, kw), (sh, sw), ((pt, pb), (pl, pr)) = a["kernel"], a["stride"], padding(a)
        ceil = bool(a.get("ceil_mode", False))
        if ceil and in_shape is not None:  # ceil mode that adds no window means nothing
            ceil = any(pool_output_size(n, k, s, p, True, e) != pool_output_size(n, k, s, p, False, e)
                       for n, k, s, p, e in ((in_shape[1], kh, sh, pt, pb), (in_shape[2], kw, sw, pl, pr)))
        return {"kernel": tuple(a["kernel"]), "stride": tuple(a["stride"]), "padding": padding(a), "ceil_mode": ceil}
    if kind == "relu":
        top = a.get("max_value")
        return {"negative_slope": _f32(a.get("negative_slope", 0.0)), "max_value": None if top is None else _f32(top)}
    if kind == "rescale":
        return {"scale": _f32(a["scale"]), "offset": _f32(a.get("offset", 0.0))}
    if kind == "eltwise":
        coeffs = a.get("coeffs")
        coeffs = None if not coeffs or all(float(c) == 1.0 for c in coeffs) else tuple(_f32(c) for c in coeffs)
        return {"op": a.get("op", "sum"), "coeffs": coeffs}
    if kind == "lrn":
        return {"size": int(a["size"]), "alpha": _f32(a["alpha"]), "beta": _f32(a["beta"]), "k": _f32(a.get("k", 1.0))}
    if kind == "batch_norm":
        return {"eps": _f32(a.get("eps", 1e-5))}
    if kind == "flatten":
        return {"shape": tuple(a["shape"])} if "shape" in a else {}
    if kind == "dense":
        return {"in_features": int(a["in_features"]), "out_features": int(a["out_features"])}
    if kind == "concat":
        return {"axis": int(a.get("axis", 1))}
    return dict(a)


def _tensors(model: IRModel, layer) -> dict[str, np.ndarray]:
    out = {role: np.asarray(model.tensor(layer, role)) for role in layer.tensors}
    if layer.kind == "batch_norm":
        c = out["mean"].shape
        out.setdefault("weight", np.ones(c, np.float32))
        out.setdefault("bias", np.zeros(c, np.float32))
    return out


def canonical(model: IRModel) -> list[CanonicalLayer]:
    """``model``'s layers in canonical form (module docstring), in graph order."""
    graph = model.graph
    shapes = infer_shapes(graph)
    consumers: dict[str, list[str]] = {}
    for layer in graph.layers:
        for src in layer.inputs:
            consumers.setdefault(src, []).append(layer.name)
    kinds = {l.name: l.kind for l in graph.layers}
    alias: dict[str, str] = {}                # folded layer → the layer whose value it carries
    position: dict[str, int] = {graph.input.name: -1}
    out: list[CanonicalLayer] = []

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name
    for layer in graph.layers:
        src = [resolve(s) for s in layer.inputs]
        if layer.kind in _FOLDED:
            alias[layer.name] = src[0]
            continue
        if (layer.kind == "relu" and not layer.attrs.get("negative_slope") and layer.attrs.get("max_value") is None
                and kinds.get(src[0]) in ("conv2d", "dense") and consumers.get(layer.inputs[0]) == [layer.name]
                and src[0] == layer.inputs[0] and "activation" not in out[position[src[0]]].attrs):
            out[position[src[0]]].attrs["activation"] = "relu"
            alias[layer.name] = src[0]
            continue
        in_shape = shapes.get(layer.inputs[0]) if layer.inputs else None
        attrs = _attrs(layer.kind, dict(layer.attrs), in_shape, model)
        position[layer.name] = len(out)
        out.append(CanonicalLayer(layer.name, layer.kind, tuple(position[s] for s in src), attrs,
                                  _tensors(model, layer)))
    return out


def structural_diff(a: IRModel, b: IRModel, *, rtol: float = 0.0, atol: float = 0.0,
                    limit: int = 20) -> list[str]:
    """Every difference between ``a`` and ``b`` in canonical form (at most ``limit``): input shape,
    layer count, and per position kind, wiring, attributes, tensor roles, shapes and values
    (``np.allclose`` with ``rtol`` / ``atol``; the defaults ask for equal weights)."""
    problems: list[str] = []
    if tuple(a.graph.input.shape) != tuple(b.graph.input.shape):
        problems.append(f"input {tuple(a.graph.input.shape)} vs {tuple(b.graph.input.shape)}")
    ca, cb = canonical(a), canonical(b)
    if len(ca) != len(cb):
        problems.append(f"{len(ca)} vs {len(cb)} layers after folding "
                        f"({[l.kind for l in ca]} vs {[l.kind for l in cb]})")
    for i, (x, y) in enumerate(zip(ca, cb)):
        where = f"layer {i} ({x.name} / {y.name})"
        if x.kind != y.kind:
            problems.append(f"{where}: kind {x.kind} vs {y.kind}")
            continue
        if x.inputs != y.inputs:
            problems.append(f"{where}: reads layers {x.inputs} vs {y.inputs}")
        for key in sorted(set(x.attrs) | set(y.attrs)):
            if x.attrs.get(key) != y.attrs.get(key):
                problems.append(f"{where}: {key} {x.attrs.get(key)!r} vs {y.attrs.get(key)!r}")
        if set(x.tensors) != set(y.tensors):
            problems.append(f"{where}: tensors {sorted(x.tensors)} vs {sorted(y.tensors)}")
        for role in sorted(set(x.tensors) & set(y.tensors)):
            ta, tb = x.tensors[role], y.tensors[role]
            if ta.shape != tb.shape:
                problems.append(f"{where}: {role} shape {ta.shape} vs {tb.shape}")
            elif not np.allclose(ta, tb, rtol=rtol, atol=atol):
                diff = float(np.abs(ta.astype(np.float64) - tb.astype(np.float64)).max())
                problems.append(f"{where}: {role} values differ (max |Δ| {diff:.3g})")
    return problems[:limit]


def assert_same_structure(a: IRModel, b: IRModel, **tolerances) -> None:
    """Raise AssertionError listing :func:`structural_diff` when it is not empty."""
    problems = structural_diff(a, b, **tolerances)
    if problems:
        raise AssertionError("the models differ: " + "; ".join(problems))
