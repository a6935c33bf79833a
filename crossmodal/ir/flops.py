"""Floating-point operations of one forward pass, per layer, from the IR alone.

Counted per image, with a multiply-add as 2 FLOPs (the convention of GPU peak figures):

* ``conv2d``: 2 · C_out · H_out · W_out · (C_in / groups) · k_h · k_w, plus one add per
  output for the bias;
* ``dense``: 2 · in · out, plus ``out`` for the bias;
* ``max_pool2d`` / ``avg_pool2d``: k_h · k_w per output (comparisons or adds);
* ``relu``: one per element; ``softmax``: ~5 per element (max, subtract, exp, sum, divide);
* ``global_avg_pool2d``: one add per input element;
* ``batch_norm``: 2 per element (inference folds it to one multiply-add per element);
  ``scale``: 1 per element, 2 with a bias;
* ``lrn``: ``size`` + 3 per element (square, window sum, power, divide);
* ``eltwise``: one per element per input after the first, plus one per coefficient ≠ 1;
* ``flatten`` / ``dropout`` / ``concat``: 0 (no arithmetic at inference).

``matmul`` is the part that runs on tensor cores (convolutions and dense layers
without their bias adds): the figure to hold against a GPU's dense fp16/fp32 peak.
Kinds not listed here are reported in ``uncounted`` rather than guessed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from crossmodal.ir.graph import Graph

from crossmodal.ir.kinds import infer_shapes


@dataclass
class FlopCount:
    """Per-image FLOPs: ``total``, ``matmul`` (tensor-core work), ``by_layer`` name → FLOPs,
    ``uncounted``: layer names whose kind has no rule."""

    total: int = 0
    matmul: int = 0
    by_layer: dict[str, int] = field(default_factory=dict)
    uncounted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"total": self.total, "matmul": self.matmul, "by_layer": self.by_layer,
                "uncounted": self.uncounted, "convention": "per image; a multiply-add is 2 FLOPs"}


def _numel(shape) -> int:
    return math.prod(int(d) for d in shape)


def count_flops(graph: Graph) -> FlopCount:
    """FLOPs of every layer of ``graph`` for one image (module docstring)."""
    shapes = infer_shapes(graph)
    out = FlopCount()
    for layer in graph.layers:
        a, kind = layer.attrs, layer.kind
        o_shape = shapes[layer.name]
        mm = 0
        if kind == "conv2d":
            kh, kw = a["kernel"]
            groups = int(a.get("groups", 1))
            mm = 2 * _numel(o_shape) * (int(a["in_channels"]) // groups) * kh * kw
            flops = mm + (_numel(o_shape) if "bias" in layer.tensors else 0)
        elif kind == "dense":
            mm = 2 * int(a["in_features"]) * int(a["out_features"])
            flops = mm + int(a["out_features"])
        elif kind in ("max_pool2d", "avg_pool2d"):
            kh, kw = a["kernel"]
            flops = _numel(o_shape) * kh * kw
        elif kind == "relu":
            flops = (1 if a.get("max_value") is None else 2) * _numel(o_shape)
        elif kind == "rescale":
            flops = (1 if not float(a.get("offset", 0.0)) else 2) * _numel(o_shape)
        elif kind == "softmax":
            flops = 5 * _numel(o_shape)
        elif kind == "global_avg_pool2d":
            flops = _numel(shapes[layer.inputs[0]])
        elif kind == "batch_norm":
            flops = 2 * _numel(o_shape)
        elif kind == "scale":
            flops = (2 if "bias" in layer.tensors else 1) * _numel(o_shape)
        elif kind == "lrn":
            flops = (int(a["size"]) + 3) * _numel(o_shape)
        elif kind == "eltwise":
            extra = sum(1 for c in (a.get("coeffs") or ()) if float(c) != 1.0)
            flops = (len(layer.inputs) - 1 + extra) * _numel(o_shape)
        elif kind in ("flatten", "dropout", "concat"):
            flops = 0
        else:
            out.uncounted.append(layer.name)
            continue
        out.by_layer[layer.name] = flops
        out.total += flops
        out.matmul += mm
    return out
