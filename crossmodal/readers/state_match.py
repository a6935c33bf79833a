"""Matching a checkpoint's renamed state dict to a graph's tensors: one check for every family.

Pure: a mapping of key → array in, the IR's weights out, or one InputError naming every
missing key, unexpected key, mis-shaped tensor and impossible batch-norm variance at once.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from crossmodal.ir.graph import Graph, IRModel
from crossmodal.errors import InputError


def some(keys: Iterable[str], limit: int = 8) -> str:
    """The first ``limit`` keys, comma-separated, and how many more."""
    keys = list(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def match_state(graph: Graph, key_of: Mapping[str, str], state: Mapping[str, np.ndarray],
                unexpected: Iterable[str], *, what: str, source: object = None, limit: int = 8) -> IRModel:
    """``graph`` with its tensors taken from ``state`` through ``key_of`` (IR tensor name →
    checkpoint key). ``unexpected``: the state's keys no tensor takes (the caller decides which
    keys count, e.g. ``num_batches_tracked`` does not); ``what`` names the architecture and
    layout in the error (``"resnet18 (torchvision layout)"``)."""
    missing = [k for k in key_of.values() if k not in state]
    unexpected = list(unexpected)
    problems = []
    if missing:
        problems.append(f"missing keys: {some(missing, limit)}")
    if unexpected:
        problems.append(f"unexpected keys: {some(unexpected, limit)}")
    weights: dict[str, np.ndarray] = {}
    for layer in graph.layers:
        for role, t in layer.tensors.items():
            key = key_of[t.name]
            if key not in state:
                continue
            arr = state[key]
            if tuple(arr.shape) != tuple(t.shape):
                problems.append(f"{key} has shape {tuple(arr.shape)}, expected {tuple(t.shape)}")
                continue
            if layer.kind == "batch_norm" and role == "var" and arr.size and float(np.min(arr)) < 0:
                problems.append(f"{key} holds negative variances (min {float(np.min(arr)):.3g}): not batch-norm "
                                "statistics")
            weights[t.name] = np.ascontiguousarray(arr)
    if problems:
        raise InputError(f"does not fit {what}: " + "; ".join(problems), source)
    return IRModel(graph, weights)
