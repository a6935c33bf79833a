"""The NumPy reference evaluator, op by op, against PyTorch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossmodal.ir import reference
from crossmodal.ir.graph import IRModel, Layer
from crossmodal.models.synthetic import random_state_dict
from crossmodal.models.vgg import build_graph, build_torch_module, torchvision_keys


def _run_op(layer: Layer, x: np.ndarray, weights=None) -> np.ndarray:
    model = IRModel(None, weights or {})  # graph not needed by single ops
    return reference.REFERENCE_OPS[layer.kind](x, layer, model, np.dtype(np.float64))


@pytest.mark.parametrize("kernel,stride,pad", [((3, 3), (1, 1), (1, 1)), ((3, 5), (2, 1), (0, 2)),
                                               ((1, 1), (1, 1), (0, 0))])
def test_conv2d_matches_torch(rng, kernel, stride, pad):
    x = rng.standard_normal((2, 3, 9, 11))
    w, b = rng.standard_normal((4, 3, *kernel)), rng.standard_normal(4)
    layer = Layer("c", "conv2d", ["input"], {"kernel": kernel, "stride": stride, "pad": pad,
                                             "in_channels": 3, "out_channels": 4},
                  {"weight": type("T", (), {"name": "w"})(), "bias": type("T", (), {"name": "b"})()})
    got = _run_op(layer, x, {"w": w, "b": b})
    want = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride, pad).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind,size,kernel,stride,pad,ceil", [
    ("max_pool2d", (9, 10), 2, 2, 0, False), ("max_pool2d", (9, 11), 2, 2, 0, True),
    ("max_pool2d", (13, 13), 3, 2, 0, True), ("max_pool2d", (8, 9), 3, 2, 1, True),
    ("avg_pool2d", (9, 10), 2, 2, 0, False), ("avg_pool2d", (7, 7), 3, 2, 1, False),
])
def test_pooling_matches_torch_in_floor_and_ceil_mode(rng, kind, size, kernel, stride, pad, ceil):
    x = rng.standard_normal((2, 3, *size))
    layer = Layer("p", kind, ["input"], {"kernel": (kernel, kernel), "stride": (stride, stride),
                                         "pad": (pad, pad), "ceil_mode": ceil})
    got = _run_op(layer, x)
    t = torch.from_numpy(x)
    want = (F.max_pool2d(t, kernel, stride, pad, ceil_mode=ceil) if kind == "max_pool2d"
            else F.avg_pool2d(t, kernel, stride, pad, ceil_mode=ceil, count_include_pad=True)).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_whole_network_and_intermediates_match_torch(tiny_spec, rng):
    weights = random_state_dict(tiny_spec, seed=5)
    model = IRModel(build_graph(tiny_spec), weights)
    net = build_torch_module(tiny_spec).double().eval()
    keys = torchvision_keys(tiny_spec)
    net.load_state_dict({keys[k]: torch.from_numpy(v).double() for k, v in weights.items()})
    x = rng.standard_normal((3, *tiny_spec.input_shape))
    names = {b: model.graph.resolve(b) for b in ("logits", "fc7", "pool5", "conv1_1", "prob")}
    assert names["fc7"] == "relu7"  # the public fc7 blob is post-ReLU, as in Caffe
    raw = reference.run(model, x, list(names.values()))
    out = {b: raw[layer] for b, layer in names.items()}
    with torch.no_grad():
        t = torch.from_numpy(x)
        logits = net(t).numpy()
        pool5 = net.features(t).numpy()
        fc7 = net.classifier[:5](net.features(t).flatten(1)).numpy()
        conv1 = net.features[0](t).numpy()
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["fc7"], fc7, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["pool5"], pool5, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["conv1_1"], conv1, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["prob"].sum(1), 1.0)
    assert pool5.shape[1:] == (3, 5, 7)


def test_wrong_input_size_is_refused(tiny_spec):
    from crossmodal.errors import InputError
    model = IRModel(build_graph(tiny_spec), random_state_dict(tiny_spec))
    with pytest.raises(InputError, match=r"model takes \(3, 20, 28\)"):
        reference.run(model, np.zeros((1, 3, 224, 224)))
