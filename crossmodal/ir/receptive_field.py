"""Receptive fields of a layer's units, in input pixels, from the IR alone (pure, like :mod:`.flops`).

Per axis a layer's units are described by three numbers (Araujo et al. 2019, "Computing receptive
fields of convolutional neural networks"):

* ``size`` r: how many input pixels one unit sees;
* ``stride`` j: how far (input pixels) the window moves from one unit to the next;
* ``start`` s: the first input pixel of unit 0's window (negative where it reaches into padding);
  ``offset`` = s + (r − 1) / 2 is the centre of unit 0's window, so unit ``i``'s window is
  ``[s + i·j, s + i·j + r)`` with centre ``offset + i·j`` (pixel indices, pixel ``p`` covering
  ``[p, p + 1)``).

One rule per layer kind, from the input's (r, j, s):

* ``conv2d`` / ``max_pool2d`` / ``avg_pool2d`` with kernel k, stride t, pad p, dilation d
  (pooling: d = 1): r' = r + (d·(k − 1))·j, j' = j·t, s' = s − p·j. Ceil mode only adds a last
  position whose window runs past the input (its box is clipped to the crop), so it changes the
  number of units, not the rule;
* element-wise kinds (``relu``, ``batch_norm``, ``scale``, ``lrn``, ``dropout``, ``softmax``,
  ``rescale``):
  unchanged;
* ``eltwise`` / ``concat`` (a DAG's merge): the union of the branches' windows — the widest
  path — r' = max end − min start, j' = the largest stride, s' = the smallest start;
* ``global_avg_pool2d``, ``flatten``, ``dense``: no spatial map (the whole input), not a
  receptive field we report.

VGG16 ``relu5_3``: 196 px, stride 16, start −90 (centre of unit 0 at 7.5); AlexNet ``conv5``
163 / 16, ``pool5`` 195 / 32.
"""
from __future__ import annotations

from dataclasses import dataclass

from crossmodal.errors import InputError
from crossmodal.ir.graph import Graph
from crossmodal.ir.heads import find_pooled_head
from crossmodal.ir.kinds import infer_shapes

WINDOW_KINDS = ("conv2d", "max_pool2d", "avg_pool2d")
PASS_KINDS = ("relu", "batch_norm", "scale", "lrn", "dropout", "softmax", "rescale")
MERGE_KINDS = ("eltwise", "concat")
NO_FIELD_KINDS = ("global_avg_pool2d", "flatten", "dense")  # no spatial map below them


@dataclass(frozen=True)
class ReceptiveField:
    """Per axis (H, W): ``size``, ``stride``, ``start`` in input pixels (module docstring)."""

    size: tuple[int, int]
    stride: tuple[int, int]
    start: tuple[int, int]

    @property
    def offset(self) -> tuple[float, float]:
        """Centre of unit (0, 0)'s window, (y, x) in input pixels."""
        return tuple(s + (r - 1) / 2 for s, r in zip(self.start, self.size))

    def center(self, i: int, j: int) -> tuple[float, float]:
        """Centre (y, x) of unit (i, j)'s window."""
        return (self.offset[0] + i * self.stride[0], self.offset[1] + j * self.stride[1])

    def box(self, i: int, j: int, crop: tuple[int, int] | None = None) -> tuple[float, float, float, float]:
        """Unit (i, j)'s window as ``(x0, y0, x1, y1)`` (x1, y1 exclusive), clipped to ``crop`` (H, W)."""
        y0, x0 = self.start[0] + i * self.stride[0], self.start[1] + j * self.stride[1]
        y1, x1 = y0 + self.size[0], x0 + self.size[1]
        if crop is not None:
            h, w = crop
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        return (float(x0), float(y0), float(x1), float(y1))

    def to_dict(self) -> dict:
        """JSON: size, stride, offset (centre of unit (0, 0)), start; square fields as one number."""
        def one(v):
            return v[0] if v[0] == v[1] else list(v)
        return {"size": one(self.size), "stride": one(self.stride), "offset": one(self.offset),
                "start": one(self.start)}


def _pair(value, default: int) -> tuple[int, int]:
    if value is None:
        return (default, default)
    if isinstance(value, (int, float)):
        return (int(value), int(value))
    v = tuple(int(x) for x in value)
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def receptive_fields(graph: Graph) -> dict[str, ReceptiveField]:
    """Every layer with a spatial output → its receptive field (the input's: size 1, stride 1)."""
    unit = ReceptiveField((1, 1), (1, 1), (0, 0))
    fields: dict[str, ReceptiveField] = {graph.input.name: unit}
    for layer in graph.layers:
        srcs = [fields.get(s) for s in layer.inputs]
        if any(f is None for f in srcs) or not srcs:
            continue  # below a non-spatial layer
        if layer.kind in WINDOW_KINDS:
            a, f = layer.attrs, srcs[0]
            k, t, p = _pair(a.get("kernel"), 1), _pair(a.get("stride"), 1), _pair(a.get("pad"), 0)
            d = _pair(a.get("dilation"), 1) if layer.kind == "conv2d" else (1, 1)
            fields[layer.name] = ReceptiveField(
                tuple(f.size[x] + d[x] * (k[x] - 1) * f.stride[x] for x in range(2)),
                tuple(f.stride[x] * t[x] for x in range(2)),
                tuple(f.start[x] - p[x] * f.stride[x] for x in range(2)))
        elif layer.kind in PASS_KINDS:
            fields[layer.name] = srcs[0]
        elif layer.kind in MERGE_KINDS:
            start = tuple(min(f.start[x] for f in srcs) for x in range(2))
            end = tuple(max(f.start[x] + f.size[x] for f in srcs) for x in range(2))
            fields[layer.name] = ReceptiveField(tuple(end[x] - start[x] for x in range(2)),
                                                tuple(max(f.stride[x] for f in srcs) for x in range(2)), start)
    return fields


def spatial_layers(graph: Graph, shapes: dict | None = None) -> list[str]:
    """Layers whose output is a map ``(C, h, w)`` with h·w > 1 and a receptive field, in graph order."""
    shapes = shapes if shapes is not None else infer_shapes(graph)
    fields = receptive_fields(graph)
    return [l.name for l in graph.layers if l.name in fields and len(shapes.get(l.name, ())) == 3
            and shapes[l.name][1] * shapes[l.name][2] > 1]


def default_layer(graph: Graph, shapes: dict | None = None) -> str:
    """Grad-CAM's default: the map a global-average-pooling head pools (ResNet's last block,
    GoogLeNet's ``inception_5b/output``), else the last spatial ``relu`` (VGG16 ``relu5_3``),
    else the last spatial layer."""
    shapes = shapes if shapes is not None else infer_shapes(graph)
    spatial = spatial_layers(graph, shapes)
    if not spatial:
        raise InputError("the network has no spatial layer (a map with h × w > 1)")
    head = find_pooled_head(graph, shapes)
    if head is not None and head.features in spatial:
        return head.features
    relus = [n for n in spatial if graph.layer(n).kind == "relu"]
    return (relus or spatial)[-1]


def check_layer(graph: Graph, name: str, shapes: dict | None = None) -> str:
    """``name`` (a layer or blob) → a spatial layer, or InputError naming the spatial ones."""
    shapes = shapes if shapes is not None else infer_shapes(graph)
    layer = graph.resolve(name)
    spatial = spatial_layers(graph, shapes)
    if layer not in spatial:
        raise InputError(f"layer {name!r} has no spatial map (output {shapes.get(layer)}): a map needs "
                         f"(C, h, w) with h·w > 1; spatial layers end with {', '.join(spatial[-6:])}")
    return layer
