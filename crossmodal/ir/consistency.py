"""Refuse a model that cannot consume the images its own preprocessing makes.

Three things must agree on the number of input channels C:

* the input spec, ``Graph.input.shape`` (C, H, W);
* the preprocessing: ``len(mean)`` and ``len(std)`` (3 for RGB/BGR, 1 for grayscale ``L``)
  and, when there is one, the mean image (C, Hm, Wm);
* every first layer: each layer that reads the graph input (found by wiring, not by
  name, so it holds for DAGs with several consumers of the input), by the channels it
  takes (``conv2d``: ``in_channels`` and its weight's second dimension; other kinds
  take whatever the input has and are checked through the input spec).

:func:`check` raises :class:`~crossmodal.errors.InputError` with one line naming the
layer, its channel count and the preprocessing. It runs in the convert pipeline
before anything is written, and where ``verify``, ``baseline`` and ``retrieval`` load
an IR folder (one written by hand or by another version of the toolkit).
"""
from __future__ import annotations

from crossmodal.ir.graph import Graph, Layer
from crossmodal.errors import InputError


def first_layers(graph: Graph) -> list[Layer]:
    """The layers that read the graph input, in graph order."""
    return [layer for layer in graph.layers if graph.input.name in layer.inputs]


def layer_channels(layer: Layer) -> int | None:
    """The input channels ``layer`` takes, or None when it takes whatever it is given."""
    if layer.kind == "conv2d":
        if "in_channels" in layer.attrs:
            return int(layer.attrs["in_channels"])
        weight = layer.tensors.get("weight")
        return int(weight.shape[1]) if weight is not None else None
    return None


def _describe_preprocess(graph: Graph) -> str:
    p = graph.preprocess
    values = lambda v: "[" + ", ".join(f"{x:g}" for x in v) + "]"  # noqa: E731
    text = (f"preprocessing {p.name!r} makes {p.channels}-channel {p.channel_order} images "
            f"(mean {values(p.mean)}, std {values(p.std)}")
    if p.mean_image:
        spec = graph.tensors.get(p.mean_image)
        shape = "×".join(map(str, spec.shape)) if spec is not None else "?"
        text += f", mean image {p.mean_image} {shape}"
    return text + ")"


def _fix(channels: int) -> str:
    if channels == 1:
        return ('give a grayscale spec, e.g. --preprocess \'{"channel_order": "L", "mean": [0.5], '
                '"std": [0.25], ...}\'')
    if channels == 3:
        return "give an RGB or BGR spec with three mean and std values (--preprocess)"
    return f"no image preprocessing makes {channels} channels (only 1, grayscale, or 3, colour)"


def check(graph: Graph, source: object = None) -> None:
    """Raise :class:`InputError` unless the input spec, the preprocessing (mean/std values,
    the mean image's shape) and every first layer agree on the input channels."""
    pre = graph.preprocess
    c_input = int(graph.input.shape[0])
    firsts = first_layers(graph)
    if not firsts:
        raise InputError(f"no layer reads the graph input {graph.input.name!r}", source)
    for layer in firsts:
        c_layer = layer_channels(layer)
        if c_layer is None:
            continue
        weight = layer.tensors.get("weight")
        if weight is not None and len(weight.shape) == 4 and int(weight.shape[1]) != c_layer:
            raise InputError(f"layer {layer.name!r} ({layer.kind}) says it takes {c_layer} input channels, but its "
                             f"weight {weight.name} has shape {tuple(weight.shape)}", source)
        if c_layer != c_input or c_layer != pre.channels or len(pre.mean) != c_layer or len(pre.std) != c_layer:
            raise InputError(f"layer {layer.name!r} ({layer.kind}, the first layer) takes {c_layer} input channel"
                             f"{'s' if c_layer != 1 else ''}, the input spec says {c_input}, and the "
                             f"{_describe_preprocess(graph)}: {_fix(c_layer)}", source)
    if pre.channels != c_input or len(pre.mean) != c_input or len(pre.std) != c_input:
        name = firsts[0].name
        raise InputError(f"the input spec says {c_input} channels (read first by layer {name!r}), but the "
                         f"{_describe_preprocess(graph)}: {_fix(c_input)}", source)
    if pre.mean_image:
        spec = graph.tensors.get(pre.mean_image)
        if spec is not None and (len(spec.shape) != 3 or int(spec.shape[0]) != c_input
                                 or spec.shape[1] < pre.crop[0] or spec.shape[2] < pre.crop[1]):
            raise InputError(f"the mean image {pre.mean_image} has shape {tuple(spec.shape)}, but the input "
                             f"(read first by layer {firsts[0].name!r}) is {c_input}×{pre.crop[0]}×{pre.crop[1]}: "
                             f"it needs shape ({c_input}, ≥{pre.crop[0]}, ≥{pre.crop[1]})", source)
