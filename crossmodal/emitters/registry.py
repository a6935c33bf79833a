"""Layer converters: one small function per (layer kind, target), in one registry.

A target is ``"keras"``, ``"onnx"`` or ``"torch"``. Registering the same pair twice
raises (no silent override). :func:`check_supported` reports every unsupported
kind of a graph at once, before any emitter starts.
"""
from __future__ import annotations

from typing import Callable, Iterable

from crossmodal.ir.kinds import LAYER_KINDS

from crossmodal.ir.graph import Graph
from crossmodal.errors import UnsupportedError

TARGETS = ("keras", "onnx", "torch")
_CONVERTERS: dict[tuple[str, str], Callable] = {}


def converter(kind: str, target: str) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` as the converter of ``kind`` layers for ``target``."""
    if kind not in LAYER_KINDS:
        raise ValueError(f"unknown layer kind {kind!r}")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}")

    def register(fn: Callable) -> Callable:
        if (kind, target) in _CONVERTERS:
            raise ValueError(f"converter for ({kind!r}, {target!r}) registered twice")
        _CONVERTERS[(kind, target)] = fn
        return fn
    return register


def _load_emitters() -> None:
    """Import every emitter module so that its converters are registered (cheap: no frameworks)."""
    import importlib
    for target in TARGETS:
        importlib.import_module(f"crossmodal.emitters.to_{target}")


def lookup(kind: str, target: str) -> Callable:
    return _CONVERTERS[(kind, target)]


def coverage(target: str) -> set[str]:
    """The layer kinds ``target`` can emit."""
    _load_emitters()
    return {k for (k, t) in _CONVERTERS if t == target}


def check_supported(graph: Graph, targets: Iterable[str]) -> None:
    """Raise one :class:`UnsupportedError` listing every (layer, kind, target) gap."""
    _load_emitters()
    gaps = [f"{layer.name} ({layer.kind}) → {target}"
            for target in targets for layer in graph.layers
            if (layer.kind, target) not in _CONVERTERS]
    if gaps:
        raise UnsupportedError(f"{len(gaps)} unsupported layer(s): " + ", ".join(gaps))
