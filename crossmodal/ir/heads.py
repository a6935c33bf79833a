"""The pooled classifier head: "global average pooling → (flatten / dropout) → one dense = the logits".

ResNet, WideResNet, DenseNet and GoogLeNet end this way; VGG16 and AlexNet (a flatten of a 6 × 6
or 7 × 7 map into fc6) do not. Where a network has such a head, its logits are a linear function
of the pooled map's channel means, which is what CAM needs (``explain``) and what makes that map
the natural default for Grad-CAM and for unit analysis (``evaluate/units``). Pure, like
:mod:`.receptive_field`.
"""
from __future__ import annotations

from dataclasses import dataclass

from crossmodal.errors import InputError
from crossmodal.ir.graph import Graph
from crossmodal.ir.kinds import infer_shapes, padding

#: Kinds that average a whole map: ``global_avg_pool2d``, or an ``avg_pool2d`` whose window is the map.
GAP_KINDS = ("global_avg_pool2d", "avg_pool2d")
#: Kinds between the pooling and the dense layer that change neither values nor their order.
PASS_THROUGH = ("flatten", "dropout")


@dataclass(frozen=True)
class PooledHead:
    """``features`` (B, C, h, w) → ``pool`` (global average) → … → ``dense`` = logits."""

    features: str
    pool: str
    dense: str


def find_pooled_head(graph: Graph, shapes: dict[str, tuple[int, ...]] | None = None) -> PooledHead | None:
    """The pooled head of ``graph``, or None when its logits are not "GAP → dense".

    Walks back from the logits layer (a ``dense``) through ``flatten`` / ``dropout`` to a
    ``global_avg_pool2d``, or to an ``avg_pool2d`` without padding whose kernel is its input's
    (h, w). ``shapes``: per-sample output shapes by layer name (default: inferred from the graph).
    """
    try:
        dense = graph.layer(graph.resolve("logits"))
    except (InputError, KeyError):
        return None
    if dense.kind != "dense":
        return None
    prev = dense
    while True:
        if prev.inputs[0] == graph.input.name:
            return None
        prev = graph.layer(prev.inputs[0])
        if prev.kind not in PASS_THROUGH:
            break
    if prev.kind not in GAP_KINDS:
        return None
    features = prev.inputs[0]
    if prev.kind == "avg_pool2d":
        shapes = shapes if shapes is not None else infer_shapes(graph)
        (top, bottom), (left, right) = padding(prev.attrs)
        kernel = tuple(int(k) for k in prev.attrs["kernel"])
        if top or bottom or left or right or kernel != tuple(shapes.get(features, (0, 0, 0))[1:]):
            return None
    return PooledHead(features=features, pool=prev.name, dense=dense.name)
