"""Network definitions: what is specific to an architecture lives here, nowhere else.

Each family module (``vgg.py`` …) holds its cfg tables, graph builder, checkpoint key
layouts and the names other frameworks give its layers. Readers and emitters know layer
kinds only; they ask this package for architecture facts through the functions below.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Generic, TypeVar

Spec = TypeVar("Spec")


class SpecRegistry(Generic[Spec]):
    """A family's named specs (timm style): ``@registry.register`` on a factory named after the
    model; ``create(name, **overrides)`` builds one (dataclass fields replaced)."""

    def __init__(self) -> None:
        self._factories: dict[str, Callable[[], Spec]] = {}

    def register(self, fn: Callable[[], Spec]) -> Callable[[], Spec]:
        if fn.__name__ in self._factories:
            raise ValueError(f"model {fn.__name__!r} registered twice")
        self._factories[fn.__name__] = fn
        return fn

    def create(self, name: str, **overrides) -> Spec:
        if name not in self._factories:
            raise KeyError(f"unknown model {name!r}; known: {sorted(self._factories)}")
        spec = self._factories[name]()
        return replace(spec, **overrides) if overrides else spec

    def names(self) -> list[str]:
        return sorted(self._factories)


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
