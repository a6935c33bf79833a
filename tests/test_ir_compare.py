"""The structural comparison of two IR models modulo what emitters fold away (crossmodal.ir.compare)."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from crossmodal.ir.compare import assert_same_structure, canonical, structural_diff
from crossmodal.ir.graph import IRModel, Layer


@pytest.fixture
def model(tiny_converted) -> IRModel:
    return copy.deepcopy(tiny_converted.model)


def _without(model: IRModel, kinds) -> IRModel:
    """``model`` with every layer of ``kinds`` removed and its consumers rewired (an emitter's folding)."""
    alias, layers = {}, []
    for layer in model.graph.layers:
        src = [alias.get(s, s) for s in layer.inputs]
        if layer.kind in kinds:
            alias[layer.name] = src[0]
            continue
        layers.append(dataclasses.replace(layer, inputs=src))
    blobs = {k: alias.get(v, v) for k, v in model.graph.blobs.items()}
    graph = dataclasses.replace(model.graph, layers=layers, blobs=blobs,
                                outputs=[alias.get(o, o) for o in model.graph.outputs])
    return IRModel(graph, model.weights)


def test_dropout_and_softmax_are_folded_and_names_do_not_matter(model):
    assert any(l.kind == "dropout" for l in model.graph.layers)
    folded = _without(model, ("dropout", "softmax"))
    assert structural_diff(model, folded) == []
    renamed = copy.deepcopy(folded)
    new = {l.name: f"node_{i}" for i, l in enumerate(renamed.graph.layers)}
    for layer in renamed.graph.layers:
        layer.name, layer.inputs = new[layer.name], [new.get(s, s) for s in layer.inputs]
    renamed.graph.blobs, renamed.graph.outputs = {}, []
    assert structural_diff(model, renamed) == []
    assert [l.kind for l in canonical(renamed)] == [l.kind for l in canonical(model)]


def test_a_fused_relu_equals_a_separate_one(model):
    convs = [l for l in canonical(model) if l.kind == "conv2d"]
    assert convs and all(l.attrs.get("activation") == "relu" for l in convs)
    assert not any(l.kind == "relu" for l in canonical(model))


def test_changed_weights_kinds_and_defaults(model):
    other = copy.deepcopy(model)
    conv = next(l for l in other.graph.layers if l.kind == "conv2d")
    other.weights[conv.tensors["weight"].name] = other.weights[conv.tensors["weight"].name] + 1e-3
    problems = structural_diff(model, other)
    assert len(problems) == 1 and "weight values differ (max |Δ| 0.001)" in problems[0]
    assert structural_diff(model, other, atol=2e-3) == []
    conv.attrs["pad_end"] = tuple(conv.attrs["pad"])  # the default written out: the same layer
    conv.attrs["dilation"] = (1, 1)
    assert structural_diff(model, other, atol=2e-3) == []
    assert tuple(conv.attrs["pad"]) == (1, 1)
    conv.attrs.update(pad=(0, 1), pad_end=(2, 1))  # the same shapes, another computation
    with pytest.raises(AssertionError, match="padding"):
        assert_same_structure(model, other, atol=2e-3)
    pool = next(l for l in other.graph.layers if l.kind == "max_pool2d")
    pool.kind = "avg_pool2d"
    assert any("kind max_pool2d vs avg_pool2d" in p for p in structural_diff(model, other))


def test_a_batch_norm_without_affine_part_equals_unit_affine(rng):
    from crossmodal.ir.graph import Graph, InputSpec, TensorSpec
    c = 4
    w = {"bn.mean": rng.normal(size=c).astype(np.float32), "bn.var": rng.uniform(1, 2, c).astype(np.float32)}
    bare = Layer("bn", "batch_norm", ["input"], {"eps": 1e-5},
                 {r: TensorSpec(f"bn.{r}", (c,), "C") for r in ("mean", "var")})
    full = Layer("bn", "batch_norm", ["input"], {"eps": float(np.float32(1e-5))},
                 {r: TensorSpec(f"bn.{r}", (c,), "C") for r in ("mean", "var", "weight", "bias")})
    w2 = {**w, "bn.weight": np.ones(c, np.float32), "bn.bias": np.zeros(c, np.float32)}
    g = lambda layer: Graph("g", InputSpec(shape=(c, 2, 2)), [layer], ["bn"])  # noqa: E731
    assert structural_diff(IRModel(g(bare), w), IRModel(g(full), w2)) == []
