"""IR format 1.3: asymmetric padding (``pad_end``), the clipped ReLU (``max_value``) and the ``rescale``
kind, each against a hand-written expectation, then a network holding all of them on every engine
against the NumPy reference; a 1.2 file still loads and means what it meant."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from crossmodal.errors import InputError
from crossmodal.ir import reference
from crossmodal.ir.graph import FORMAT_VERSION, Graph, InputSpec, IRModel, Layer, TensorSpec
from crossmodal.ir.kinds import infer_shapes
from crossmodal.ir.preprocess import Preprocess
from crossmodal.ir.validation import with_hashes
from helpers import emitted_engine


def _one(layer: Layer, shape, weights=None) -> IRModel:
    return IRModel(Graph("g", InputSpec(shape=shape), [layer], [layer.name]), weights or {})


def test_same_stride_2_conv_pads_one_cell_at_the_end_only(rng):
    """TensorFlow's SAME, 3×3 stride 2 on 4×4: no padding before, one row/column after."""
    x = rng.normal(size=(1, 2, 4, 4))
    w = rng.normal(size=(3, 2, 3, 3))
    layer = Layer("c", "conv2d", ["input"], {"kernel": (3, 3), "stride": (2, 2), "pad": (0, 0), "pad_end": (1, 1),
                                             "in_channels": 2, "out_channels": 3},
                  {"weight": TensorSpec("c.weight", (3, 2, 3, 3), "OIHW")})
    got = reference.run(_one(layer, (2, 4, 4), {"c.weight": w}), x, ["c"])["c"]
    padded = np.zeros((1, 2, 5, 5))
    padded[:, :, :4, :4] = x
    want = np.zeros((1, 3, 2, 2))
    for o in range(3):
        for i in range(2):
            for j in range(2):
                want[0, o, i, j] = (padded[0, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3] * w[o]).sum()
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert infer_shapes(_one(layer, (2, 4, 4)).graph)["c"] == (3, 2, 2)


def test_asymmetric_pooling_max_ignores_and_average_counts_the_padding():
    x = -np.arange(1, 17, dtype=np.float64).reshape(1, 1, 4, 4)  # all negative: padding must not win
    mx = Layer("m", "max_pool2d", ["input"], {"kernel": (3, 3), "stride": (2, 2), "pad": (0, 0), "pad_end": (1, 1)})
    got = reference.run(_one(mx, (1, 4, 4)), x, ["m"])["m"]
    want = [[x[0, 0, 0:3, 0:3].max(), x[0, 0, 0:3, 2:4].max()], [x[0, 0, 2:4, 0:3].max(), x[0, 0, 2:4, 2:4].max()]]
    np.testing.assert_array_equal(got[0, 0], want)
    av = Layer("a", "avg_pool2d", ["input"], {"kernel": (2, 2), "stride": (2, 2), "pad": (1, 0), "pad_end": (0, 1)})
    got = reference.run(_one(av, (1, 4, 4)), x, ["a"])["a"]  # rows: 1 zero row on top; columns: 1 zero at the end
    assert got.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(got[0, 0, 0], [x[0, 0, 0, 0:2].sum() / 4, x[0, 0, 0, 2:4].sum() / 4])
    np.testing.assert_allclose(got[0, 0, 1], [x[0, 0, 1:3, 0:2].sum() / 4, x[0, 0, 1:3, 2:4].sum() / 4])


def test_clipped_relu_and_rescale():
    x = np.array([[-4.0, -0.5, 0.0, 3.0, 6.0, 9.0]])
    six = Layer("r", "relu", ["input"], {"max_value": 6.0})
    np.testing.assert_array_equal(reference.REFERENCE_OPS["relu"](x, six, None, np.float64),
                                  [[0, 0, 0, 3, 6, 6]])
    leaky = Layer("r", "relu", ["input"], {"negative_slope": 0.25, "max_value": 4.0})
    np.testing.assert_array_equal(reference.REFERENCE_OPS["relu"](x, leaky, None, np.float64),
                                  [[-1, -0.125, 0, 3, 4, 4]])
    rescale = Layer("s", "rescale", ["input"], {"scale": 1 / 127.5, "offset": -1.0})
    np.testing.assert_allclose(reference.REFERENCE_OPS["rescale"](np.array([[0.0, 127.5, 255.0]]), rescale, None,
                                                                   np.float64), [[-1, 0, 1]])
    with pytest.raises(InputError, match="max_value > 0"):
        infer_shapes(_one(Layer("r", "relu", ["input"], {"max_value": 0.0}), (6,)).graph)


def _net(rng) -> IRModel:
    """rescale → SAME stride-2 conv → ReLU6 → SAME max pool → conv → clipped leaky ReLU →
    asymmetric average pool → GAP → dense → softmax, on a 3×9×8 input."""
    w, layers = {}, []

    def add(name, kind, inputs, attrs, **tensors):
        for role, arr in tensors.items():
            w[f"{name}.{role}"] = arr.astype(np.float32)
        layers.append(Layer(name, kind, inputs, attrs, {r: TensorSpec(f"{name}.{r}", a.shape, "OIHW" if a.ndim == 4
                                                                      else "OI" if a.ndim == 2 else "O")
                                                        for r, a in tensors.items()}))
    add("scale_in", "rescale", ["input"], {"scale": 2.0, "offset": -1.0})
    add("conv1", "conv2d", ["scale_in"], {"kernel": (3, 3), "stride": (2, 2), "pad": (1, 0), "pad_end": (1, 1),
                                          "in_channels": 3, "out_channels": 6},
        weight=rng.normal(0, 0.4, (6, 3, 3, 3)), bias=rng.normal(0, 0.1, 6))
    add("relu6", "relu", ["conv1"], {"max_value": 6.0})
    add("pool1", "max_pool2d", ["relu6"], {"kernel": (3, 3), "stride": (2, 2), "pad": (1, 0), "pad_end": (1, 1)})
    add("conv2", "conv2d", ["pool1"], {"kernel": (1, 1), "stride": (1, 1), "pad": (0, 0), "in_channels": 6,
                                       "out_channels": 4}, weight=rng.normal(0, 0.5, (4, 6, 1, 1)))
    add("leaky6", "relu", ["conv2"], {"negative_slope": 0.1, "max_value": 0.5})
    add("pool2", "avg_pool2d", ["leaky6"], {"kernel": (2, 2), "stride": (1, 1), "pad": (0, 1), "pad_end": (1, 0)})
    add("gap", "global_avg_pool2d", ["pool2"], {})
    add("fc", "dense", ["gap"], {"in_features": 4, "out_features": 3},
        weight=rng.normal(0, 0.5, (3, 4)), bias=rng.normal(0, 0.1, 3))
    add("prob", "softmax", ["fc"], {"axis": 1})
    graph = Graph("grown", InputSpec(shape=(3, 9, 8)), layers, ["fc", "prob"],
                  preprocess=Preprocess(resize=(9, 8), crop=(9, 8), name="tiny"),
                  blobs={"logits": "fc", "prob": "prob", "features": "gap"}, feature_blob="features")
    return with_hashes(IRModel(graph, w))


@pytest.mark.parametrize("engine", ["torch", "onnx", "keras"])
def test_every_engine_runs_the_new_features_like_the_reference(engine, tmp_path, rng):
    model = _net(np.random.default_rng(3))
    x = rng.uniform(-1, 1, size=(3, 3, 9, 8)).astype(np.float32)
    eng = emitted_engine(engine, model, tmp_path)
    names = [l.name for l in model.graph.layers]
    got, ref = eng.run(x, names), reference.run(model, x, names)
    assert {"conv1", "relu6", "pool1", "leaky6", "pool2", "fc"} - {"conv1"} <= set(got)
    for name in got:
        assert got[name].shape == ref[name].shape, (engine, name)
        scale = max(np.abs(ref[name]).max(), 1e-6)
        assert np.abs(got[name] - ref[name]).max() / scale < 2e-5, (engine, name)
    assert infer_shapes(model.graph)["pool1"] == (6, 3, 2)


def test_keras_writes_same_padding_for_tensorflow_same_layers():
    """conv1 and pool1 pad as TensorFlow's SAME does (odd cell at the end): Keras' own ``same``."""
    from crossmodal.emitters.to_keras import build_keras
    kmodel, _ = build_keras(_net(np.random.default_rng(0)))
    assert kmodel.get_layer("conv1").padding == "same" and kmodel.get_layer("pool1").padding == "same"
    assert not any(l.name.endswith("_pad") for l in kmodel.layers if l.name.startswith(("conv1", "pool1")))
    other = _net(np.random.default_rng(0))
    other.graph.layer("conv1").attrs.update(pad=(0, 0), pad_end=(1, 0))  # not SAME: explicit padding
    kmodel, _ = build_keras(other)
    assert kmodel.get_layer("conv1").padding == "valid"
    assert kmodel.get_layer("conv1_pad").padding == ((0, 1), (0, 0))


def test_a_format_1_2_file_loads_and_runs_as_before(tiny_converted, tmp_path, rng):
    from crossmodal.ir.store import load_ir, save_ir
    src = Path(tiny_converted.artifacts[0].path).parent
    old = tmp_path / "old"
    shutil.copytree(src, old)
    data = json.loads((old / "model.json").read_text())
    data["format_version"] = "1.2"
    assert not any("pad_end" in l["attrs"] or "max_value" in l["attrs"] for l in data["layers"])
    (old / "model.json").write_text(json.dumps(data))
    model = load_ir(old)
    assert model.graph.format_version == "1.2"
    x = rng.normal(size=(1, *model.graph.input.shape)).astype(np.float32)
    want = reference.run(load_ir(src), x)
    got = reference.run(model, x)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    resaved = tmp_path / "new"
    resaved.mkdir()
    save_ir(model, resaved)
    assert json.loads((resaved / "model.json").read_text())["format_version"] == FORMAT_VERSION == "1.3"


def test_new_attributes_survive_save_and_load(tmp_path):
    from crossmodal.ir.store import load_ir, save_ir
    model = _net(np.random.default_rng(1))
    save_ir(model, tmp_path)
    back = load_ir(tmp_path)
    assert back.graph.layer("conv1").attrs["pad_end"] == (1, 1)
    assert back.graph.layer("relu6").attrs["max_value"] == 6.0
    assert back.graph.layer("scale_in").attrs == {"scale": 2.0, "offset": -1.0}
