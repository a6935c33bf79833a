"""The Places365 family's layer kinds (format 1.2): each against an independent computation,
and a small DAG holding all of them run by every engine against the NumPy reference."""
from __future__ import annotations

import numpy as np
import pytest

from crossmodal.ir import reference
from crossmodal.ir.graph import Graph, InputSpec, IRModel, Layer, TensorSpec
from crossmodal.ir.preprocess import Preprocess
from crossmodal.ir.kinds import infer_shapes
from crossmodal.ir.validation import validate, with_hashes
from helpers import emitted_engine
from crossmodal.errors import InputError


def _t(name, shape, layout="C"):
    return TensorSpec(name, tuple(shape), layout)


def _dag(rng) -> IRModel:
    """input 3×9×11 → conv (bias-free) → BN (no affine) → Scale → ReLU → LRN →
    {grouped conv g=2 | dilated conv} → concat → leaky ReLU → eltwise (sum with coeffs,
    prod, max) of three branches → BN (affine) → max pool (ceil) → GAP → dense → softmax."""
    w = {}
    layers = []

    def add(name, kind, inputs, attrs=None, **tensors):
        specs = {}
        for role, arr in tensors.items():
            w[f"{name}.{role}"] = arr.astype(np.float32)
            specs[role] = _t(f"{name}.{role}", arr.shape, "OIHW" if arr.ndim == 4 else "C")
        layers.append(Layer(name, kind, list(inputs), attrs or {}, specs))

    conv = lambda o, i, k: rng.normal(0, 0.3, (o, i, k, k))  # noqa: E731
    add("conv1", "conv2d", ["input"], {"kernel": (3, 3), "stride": (1, 1), "pad": (1, 1), "in_channels": 3,
                                       "out_channels": 8}, weight=conv(8, 3, 3))
    add("bn1", "batch_norm", ["conv1"], {"eps": 1e-5}, mean=rng.normal(0, 1, 8), var=rng.uniform(0.5, 2, 8))
    add("scale1", "scale", ["bn1"], weight=rng.uniform(0.5, 1.5, 8), bias=rng.normal(0, 0.2, 8))
    add("relu1", "relu", ["scale1"])
    add("norm1", "lrn", ["relu1"], {"size": 5, "alpha": 1e-1, "beta": 0.75, "k": 2.0})
    add("branch_g", "conv2d", ["norm1"], {"kernel": (3, 3), "stride": (1, 1), "pad": (1, 1), "in_channels": 8,
                                          "out_channels": 6, "groups": 2},
        weight=conv(6, 4, 3), bias=rng.normal(0, 0.1, 6))
    add("branch_d", "conv2d", ["norm1"], {"kernel": (3, 3), "stride": (1, 1), "pad": (2, 2), "dilation": (2, 2),
                                          "in_channels": 8, "out_channels": 4},
        weight=conv(4, 8, 3), bias=rng.normal(0, 0.1, 4))
    add("cat", "concat", ["branch_g", "branch_d"], {"axis": 1})
    add("leaky", "relu", ["cat"], {"negative_slope": 0.1})
    add("a", "conv2d", ["leaky"], {"kernel": (1, 1), "stride": (1, 1), "pad": (0, 0), "in_channels": 10,
                                   "out_channels": 10}, weight=conv(10, 10, 1), bias=rng.normal(0, 0.1, 10))
    add("sum", "eltwise", ["leaky", "a"], {"op": "sum", "coeffs": (1.0, -0.5)})
    add("prod", "eltwise", ["sum", "a", "leaky"], {"op": "prod"})
    add("max", "eltwise", ["prod", "sum"], {"op": "max"})
    add("bn2", "batch_norm", ["max"], {"eps": 1e-3}, mean=rng.normal(0, 0.1, 10), var=rng.uniform(0.5, 2, 10),
        weight=rng.uniform(0.5, 1.5, 10), bias=rng.normal(0, 0.1, 10))
    add("relu2", "relu", ["bn2"])
    add("pool", "max_pool2d", ["relu2"], {"kernel": (3, 3), "stride": (2, 2), "pad": (0, 0), "ceil_mode": True})
    add("gap", "global_avg_pool2d", ["pool"])
    add("fc", "dense", ["gap"], {"in_features": 10, "out_features": 5},
        weight=rng.normal(0, 0.3, (5, 10)), bias=rng.normal(0, 0.1, 5))
    add("prob", "softmax", ["fc"], {"axis": 1})
    graph = Graph("dag", InputSpec(shape=(3, 9, 11)), layers, ["fc", "prob"],
                  preprocess=Preprocess(resize=(9, 11), crop=(9, 11), name="tiny"),
                  blobs={"logits": "fc", "prob": "prob", "features": "gap"}, feature_blob="features")
    return with_hashes(IRModel(graph, w))


@pytest.fixture(scope="module")
def dag():
    return _dag(np.random.default_rng(7))


def test_shapes_of_the_dag(dag):
    shapes = infer_shapes(dag.graph)
    assert shapes["branch_g"] == (6, 9, 11) and shapes["branch_d"] == (4, 9, 11)  # 9 + 2·2 − 2·2 = 9
    assert shapes["cat"] == (10, 9, 11) and shapes["pool"] == (10, 4, 5) and shapes["gap"] == (10,)
    validate(dag)


def test_reference_matches_torch_functional(dag, rng):
    """Every layer against torch.nn.functional, written out here from the IR's definitions."""
    import torch
    import torch.nn.functional as F

    x = rng.normal(size=(2, 3, 9, 11)).astype(np.float32)
    names = [l.name for l in dag.graph.layers]
    ref = reference.run(dag, x, names)
    W = {k: torch.from_numpy(v.astype(np.float64)) for k, v in dag.weights.items()}
    v = {"input": torch.from_numpy(x.astype(np.float64))}
    v["conv1"] = F.conv2d(v["input"], W["conv1.weight"], padding=1)
    v["bn1"] = F.batch_norm(v["conv1"], W["bn1.mean"], W["bn1.var"], eps=1e-5)
    v["scale1"] = v["bn1"] * W["scale1.weight"][:, None, None] + W["scale1.bias"][:, None, None]
    v["relu1"] = F.relu(v["scale1"])
    v["norm1"] = F.local_response_norm(v["relu1"], 5, alpha=1e-1, beta=0.75, k=2.0)
    v["branch_g"] = F.conv2d(v["norm1"], W["branch_g.weight"], W["branch_g.bias"], padding=1, groups=2)
    v["branch_d"] = F.conv2d(v["norm1"], W["branch_d.weight"], W["branch_d.bias"], padding=2, dilation=2)
    v["cat"] = torch.cat([v["branch_g"], v["branch_d"]], 1)
    v["leaky"] = F.leaky_relu(v["cat"], 0.1)
    v["a"] = F.conv2d(v["leaky"], W["a.weight"], W["a.bias"])
    v["sum"] = v["leaky"] - 0.5 * v["a"]
    v["prod"] = v["sum"] * v["a"] * v["leaky"]
    v["max"] = torch.maximum(v["prod"], v["sum"])
    v["bn2"] = F.batch_norm(v["max"], W["bn2.mean"], W["bn2.var"], W["bn2.weight"], W["bn2.bias"], eps=1e-3)
    v["relu2"] = F.relu(v["bn2"])
    v["pool"] = F.max_pool2d(v["relu2"], 3, 2, ceil_mode=True)
    v["gap"] = v["pool"].mean((2, 3))
    v["fc"] = F.linear(v["gap"], W["fc.weight"], W["fc.bias"])
    v["prob"] = F.softmax(v["fc"], 1)
    for name in names:
        np.testing.assert_allclose(ref[name], v[name].numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_strided_dilated_conv_is_exact_in_numpy_and_refused_by_keras(rng):
    import torch
    import torch.nn.functional as F

    from crossmodal.emitters.to_keras import keras_gaps
    w = rng.normal(size=(4, 3, 3, 3))
    layer = Layer("c", "conv2d", ["input"], {"kernel": (3, 3), "stride": (2, 3), "pad": (2, 1), "dilation": (2, 1),
                                             "in_channels": 3, "out_channels": 4},
                  {"weight": _t("c.weight", w.shape, "OIHW")})
    model = IRModel(Graph("g", InputSpec(shape=(3, 9, 11)), [layer], ["c"]), {"c.weight": w})
    x = rng.normal(size=(2, 3, 9, 11))
    want = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=(2, 3), padding=(2, 1), dilation=(2, 1))
    np.testing.assert_allclose(reference.run(model, x, ["c"])["c"], want.numpy(), rtol=1e-10)
    assert any("stride > 1 with dilation > 1" in gap for gap in keras_gaps(model.graph))


def test_lrn_against_a_loop_over_channels(rng):
    """Caffe's ACROSS_CHANNELS LRN: alpha divided by the window size, zero beyond the edges."""
    x = rng.uniform(0, 3, (1, 7, 2, 3))
    layer = Layer("n", "lrn", ["input"], {"size": 5, "alpha": 1e-4 * 50, "beta": 0.75, "k": 1.0})
    got = reference.REFERENCE_OPS["lrn"](x, layer, None, np.float64)
    want = np.empty_like(x)
    for c in range(7):
        lo, hi = max(0, c - 2), min(7, c + 3)
        want[:, c] = x[:, c] / (1.0 + 1e-4 * 50 / 5 * (x[:, lo:hi] ** 2).sum(1)) ** 0.75
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_bad_shapes_name_the_layer():
    conv = Layer("down", "conv2d", ["input"], {"kernel": (3, 3), "stride": (2, 2), "pad": (1, 1), "in_channels": 3,
                                               "out_channels": 3}, {"weight": _t("down.weight", (3, 3, 3, 3), "OIHW")})
    for layer, message in (
            (Layer("cat", "concat", ["input", "down"], {"axis": 1}), "'cat': concatenated inputs differ beyond"),
            (Layer("sum", "eltwise", ["input", "down"], {"op": "sum"}), "'sum': element-wise sum of different shapes"),
            (Layer("fc", "dense", ["down"], {"in_features": 48, "out_features": 2}), "'fc': a dense layer of 48")):
        with pytest.raises(InputError, match=message):
            infer_shapes(Graph("g", InputSpec(shape=(3, 8, 8)), [conv, layer], []))


def test_even_lrn_and_wrong_tensor_shapes_are_refused(dag):
    with pytest.raises(InputError, match="LRN size must be odd"):
        infer_shapes(Graph("g", InputSpec(shape=(3, 4, 4)), [Layer("n", "lrn", ["input"],
                                                                  {"size": 4, "alpha": 1, "beta": 1})], []))
    weights = dict(dag.weights)
    weights["bn1.var"] = weights["bn1.var"][:7]
    g = dag.graph
    spec = g.layer("bn1").tensors["var"]
    import dataclasses
    layers = [dataclasses.replace(l, tensors={**l.tensors, "var": dataclasses.replace(spec, shape=(7,))})
              if l.name == "bn1" else l for l in g.layers]
    with pytest.raises(InputError, match=r"'bn1.var' has shape \(7,\), layer 'bn1' \(batch_norm\) needs \(8,\)"):
        validate(IRModel(dataclasses.replace(g, layers=layers), weights))


@pytest.mark.parametrize("engine", ["torch", "onnx", "keras"])
def test_every_engine_runs_the_dag_like_the_reference(dag, engine, tmp_path, rng):
    x = rng.normal(size=(3, 3, 9, 11)).astype(np.float32)
    eng = emitted_engine(engine, dag, tmp_path)
    names = [l.name for l in dag.graph.layers]
    got = eng.run(x, names)
    ref = reference.run(dag, x, names)
    observed = [n for n in names if n in got]
    assert {"fc", "gap", "cat", "norm1", "max", "bn2"} <= set(observed) | ({"bn2"} if engine == "keras" else set())
    for name in observed:
        scale = max(np.abs(ref[name]).max(), 1e-6)
        assert np.abs(got[name] - ref[name]).max() / scale < 2e-5, (engine, name)


@pytest.mark.slow
def test_keras_model_with_lrn_loads_in_a_fresh_process_after_import_crossmodal(dag, tmp_path, rng):
    """``import crossmodal`` (which does not import Keras) is enough for safe_mode loading."""
    import os
    import subprocess
    import sys

    from crossmodal.emitters.keras_weights import save_keras
    from crossmodal.emitters.to_keras import build_keras
    kmodel, _ = build_keras(dag)
    save_keras(kmodel, tmp_path / "m.keras")
    x = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = ("import sys, numpy as np, crossmodal\n"
              "assert 'keras' not in sys.modules\n"
              "import keras\n"
              "m = keras.saving.load_model(sys.argv[1], safe_mode=True, compile=False)\n"
              "np.save(sys.argv[3], np.asarray(m(np.load(sys.argv[2]))))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "CROSSMODAL"))}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "m.keras"), str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True, env=env, cwd=tmp_path, timeout=300)
    want = reference.run(dag, x.transpose(0, 3, 1, 2), ["fc"])["fc"]
    got = np.load(tmp_path / "y.npy")
    assert np.abs(got - want).max() / np.abs(want).max() < 2e-5


def test_flops_count_every_kind(dag):
    from crossmodal.ir.flops import count_flops
    f = count_flops(dag.graph)
    assert f.uncounted == []
    assert f.by_layer["conv1"] == 2 * 8 * 9 * 11 * 3 * 3 * 3  # no bias: no adds beyond the products
    assert f.by_layer["branch_g"] == 2 * 6 * 9 * 11 * 4 * 3 * 3 + 6 * 9 * 11  # 8 channels in 2 groups
    assert f.by_layer["bn1"] == 2 * 8 * 9 * 11 and f.by_layer["cat"] == 0
    assert f.by_layer["sum"] == 2 * 10 * 9 * 11 and f.by_layer["prod"] == 2 * 10 * 9 * 11  # coeff −0.5; 3 inputs
