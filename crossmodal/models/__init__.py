"""Network definitions: what is specific to an architecture lives here, nowhere else.

Each family module (``vgg.py`` …) holds its cfg tables, graph builder, checkpoint key
layouts and the names other frameworks give its layers. Readers and emitters know layer
kinds only; they ask this package for architecture facts through the functions below.
"""
from __future__ import annotations

from typing import Callable

#: Functions graph → {IR layer: Keras layer name}, or None when the graph is not theirs;
#: the first that answers names a graph that carries no ``keras_names`` yet.
KERAS_NAMERS: list[Callable] = []


def keras_namer(fn: Callable) -> Callable:
    KERAS_NAMERS.append(fn)
    return fn


def keras_names_for(graph) -> dict[str, str]:
    """The Keras layer names of ``graph``'s architecture ({} when no family claims it:
    the emitter then keeps the IR names)."""
    from crossmodal.models import densenet, resnet, vgg  # noqa: F401  (register their namers)
    for namer in KERAS_NAMERS:
        names = namer(graph)
        if names is not None:
            return names
    return {}


def annotate(graph) -> None:
    """Fill in ``graph.keras_names`` from its family when it has none (readers of generic
    formats, e.g. Caffe, and IR files older than format 1.2)."""
    if not graph.keras_names:
        graph.keras_names = keras_names_for(graph)
