"""Receptive fields from the IR (``crossmodal/ir/receptive_field.py``): against hand computation for
the published networks, and against the gradient's support in a two-branch network with dilation,
padding and a ceil-mode pool (an independent check: which input pixels can move a unit at all)."""
from __future__ import annotations

import numpy as np
import pytest

from crossmodal.ir.graph import Graph, InputSpec, IRModel, Labels, Layer
from crossmodal.ir.receptive_field import check_layer, default_layer, receptive_fields, spatial_layers
from crossmodal.errors import InputError
from helpers import require_shared
from units_fixtures import PLAIN, conv, dense


def _rf(graph, name):
    f = receptive_fields(graph)[name]
    return f.size[0], f.stride[0], f.start[0]


def test_vgg16_relu5_3_is_196_px_stride_16():
    from crossmodal.models import vgg
    g = vgg.build_graph(vgg.vgg16_places365())
    # by hand: 13 3×3 convolutions and 4 2×2 pools: 1 + 2·2 + 1·… = 196; start −(1+1+2·2+4·3+8·3+16·3) = −90
    assert _rf(g, "relu5_3") == (196, 16, -90)
    assert receptive_fields(g)["relu5_3"].offset == (7.5, 7.5)
    assert default_layer(g) == "relu5_3"
    assert _rf(g, "pool5") == (212, 32, -90)


def test_alexnet_conv5_163_and_pool5_195():
    from crossmodal.models import alexnet
    g = alexnet.build_graph(alexnet.alexnet())
    assert _rf(g, "conv5")[:2] == (163, 16)  # 11 → 19 → 51 → 67 → 99 → 131 → 163
    assert _rf(g, "pool5")[:2] == (195, 32)
    assert default_layer(g) == "relu5"


def test_resnet18_last_block_and_its_default():
    from crossmodal.models import resnet
    g = resnet.build_graph(resnet.resnet18())
    layer = default_layer(g)
    assert layer == "layer4.1.out"  # the map the global-average-pooling head pools
    # stem 7/2 (7), pool 3/2 (11, stride 4), 8 basic blocks of two 3×3 (the widest path), strides 1,2,2,2:
    # 11 + 4·(2+2) + [2·4 + 2·8 + 2·8] + [2·16 + 2·16] + ... = 435, stride 32
    assert _rf(g, layer)[:2] == (435, 32)


def test_googlenet_default_is_inception_5b_output():
    from crossmodal.readers.from_caffe import read_prototxt
    g = read_prototxt(require_shared("places365", "deploy_googlenet_places365.prototxt")).graph
    assert default_layer(g) == "inception_5b/output"
    assert receptive_fields(g)["inception_5b/output"].stride == (32, 32)


def _two_branch() -> IRModel:
    """32 × 32 input → c0 3×3/2 pad 1 → (a: 3×3 dilation 2 pad 2 | b: avg-pool 3/1 pad 1) → sum →
    avg-pool 3/2 ceil mode (16 → 8) → c3 3×3 pad 1. Linear, positive weights: no cancellation."""
    layers = [conv("c0", "input", 3, 2, k=3, stride=2, pad=1), conv("a", "c0", 2, 2, k=3, pad=2, dilation=2),
              Layer("b", "avg_pool2d", ["c0"], {"kernel": (3, 3), "stride": (1, 1), "pad": (1, 1)}),
              Layer("sum", "eltwise", ["a", "b"], {"op": "sum"}),
              Layer("p", "avg_pool2d", ["sum"], {"kernel": (3, 3), "stride": (2, 2), "pad": (0, 0), "ceil_mode": True}),
              conv("c3", "p", 2, 2, k=3, pad=1), Layer("flat", "flatten", ["c3"], {"shape": (2, 8, 8)}),
              dense("fc", "flat", 128, 2)]
    rng = np.random.default_rng(0)
    w = {}
    for l in layers:
        for role, t in l.tensors.items():
            w[t.name] = rng.uniform(0.1, 1.0, t.shape).astype(np.float32)
    graph = Graph(name="branches", input=InputSpec(shape=(3, 32, 32)), layers=layers, outputs=["fc"],
                  preprocess=PLAIN, labels=Labels(["x", "y"]), blobs={"logits": "fc"}, feature_blob="flat")
    return IRModel(graph, w)


def test_two_branch_dag_by_hand_and_by_gradient_support():
    import torch
    from crossmodal.emitters.to_torch import build_torch

    model = _two_branch()
    # by hand: c0 (3, 2, −1); a: 3 + 4·2 = 11, start −1 − 2·2 = −5; b: 3 + 2·2 = 7, start −3;
    # union: 11 from −5; p: 11 + 2·2 = 15, stride 4; c3: 15 + 2·4 = 23, start −5 − 4 = −9
    rf = receptive_fields(model.graph)["c3"]
    assert (rf.size, rf.stride, rf.start) == ((23, 23), (4, 4), (-9, -9))
    module = build_torch(model)
    x = torch.zeros((1, 3, 32, 32), requires_grad=True)
    out = module.forward_layers(x, {"c3"}, stop="c3")["c3"]
    assert tuple(out.shape[2:]) == (8, 8)
    for i, j in [(0, 0), (3, 5), (7, 7), (7, 0), (4, 4)]:  # (7, ·): the ceil-mode pool's last window
        (g,) = torch.autograd.grad(out[0, 0, i, j], x, retain_graph=True)
        ys, xs = np.nonzero(g[0].abs().sum(0).numpy())
        support = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert rf.box(i, j, (32, 32)) == tuple(float(v) for v in support), (i, j)


def test_spatial_layers_and_bad_layer():
    model = _two_branch()
    g = model.graph
    assert spatial_layers(g) == ["c0", "a", "b", "sum", "p", "c3"]
    assert default_layer(g) == "c3"  # no ReLU: the last spatial layer
    with pytest.raises(InputError, match="no spatial map"):
        check_layer(g, "flat")
    with pytest.raises(InputError, match="no layer or blob"):
        check_layer(g, "nope")


def test_every_layer_kind_has_a_receptive_field_rule():
    """A kind added to the IR without a rule here would silently end every map below it
    (``units`` and ``explain`` would find no spatial layer)."""
    from crossmodal.ir import receptive_field as rf
    from crossmodal.ir.kinds import LAYER_KINDS
    ruled = set(rf.WINDOW_KINDS) | set(rf.PASS_KINDS) | set(rf.MERGE_KINDS) | set(rf.NO_FIELD_KINDS)
    assert set(LAYER_KINDS) <= ruled, set(LAYER_KINDS) - ruled


def test_a_rescaling_input_layer_keeps_every_map_below_it():
    """A model read from Keras or ONNX often starts with ``rescale`` (Keras ``Rescaling``)."""
    layers = [Layer("scale_in", "rescale", ["input"], {"scale": 1 / 255, "offset": 0.0}),
              conv("c1", "scale_in", 3, 4, k=3, pad=1), Layer("r1", "relu", ["c1"], {}),
              Layer("gap", "global_avg_pool2d", ["r1"], {}), dense("fc", "gap", 4, 2)]
    g = Graph(name="rescaled", input=InputSpec(shape=(3, 8, 8)), layers=layers, outputs=["fc"], preprocess=PLAIN,
              labels=Labels(["x", "y"]), blobs={"logits": "fc"}, feature_blob="gap")
    assert spatial_layers(g) == ["scale_in", "c1", "r1"]
    assert default_layer(g) == "r1"  # the map the pooled head averages
    assert receptive_fields(g)["r1"].size == (3, 3)
