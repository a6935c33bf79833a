"""Keras, ONNX and PyTorch emitters on a tiny VGG whose pre-flatten map is 3×5×7."""
from __future__ import annotations

import json

import numpy as np
import pytest

from crossmodal.ir import reference
from crossmodal.emitters import onnx_file, to_onnx
from crossmodal.ir.kinds import LAYER_KINDS
from crossmodal.ir.graph import Labels, Layer
from crossmodal.ir.store import load_ir
from crossmodal.emitters.registry import TARGETS, check_supported, converter, coverage
from crossmodal.errors import InputError, UnsupportedError
from helpers import rel_err


@pytest.fixture(scope="module")
def tiny_ir(tiny_converted):
    return load_ir(tiny_converted.artifacts[0].path.rsplit("/", 1)[0])


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).standard_normal((3, 3, 20, 28)).astype(np.float32)


@pytest.fixture(scope="module")
def ref(tiny_ir, batch):
    g = tiny_ir.graph
    out = reference.run(tiny_ir, batch, [g.resolve("logits"), g.resolve("fc7"), g.resolve("prob")])
    return {"logits": out[g.resolve("logits")], "fc7": out[g.resolve("fc7")], "prob": out[g.resolve("prob")]}


def _path(result, kind):
    return next(a.path for a in result.artifacts if a.kind == kind)


def test_every_target_covers_every_layer_kind():
    for target in TARGETS:
        assert coverage(target) == set(LAYER_KINDS), target


def test_registering_a_converter_twice_raises():
    with pytest.raises(ValueError, match="registered twice"):
        converter("relu", "onnx")(lambda ctx, layer: None)


def test_unsupported_layers_are_listed_in_one_pass(tiny_ir):
    import copy
    graph = copy.deepcopy(tiny_ir.graph)
    graph.layers[1].kind = "lrn_fake"
    graph.layers[4].kind = "lrn_fake"
    with pytest.raises(UnsupportedError) as err:
        check_supported(graph, ["keras", "onnx"])
    text = str(err.value)
    assert text.startswith("4 unsupported layer(s)") and "relu1_1" in text and "relu2_1" in text


def test_keras_model_matches_reference_on_a_non_square_map(tiny_converted, batch, ref):
    import keras
    model = keras.saving.load_model(_path(tiny_converted, "keras"), safe_mode=True)
    out = model(batch.transpose(0, 2, 3, 1)).numpy()
    assert rel_err(out, ref["logits"]) < 1e-5
    names = [l.name for l in model.layers]
    assert names == ["input", "block1_conv1", "block1_pool", "block2_conv1", "block2_pool", "flatten",
                     "fc1", "fc2", "predictions"]
    assert model.get_layer("flatten").output.shape[1:] == (5 * 7 * 3,)
    assert all(l.__class__.__name__ not in ("Lambda", "Permute") for l in model.layers)


def test_keras_weights_file_loads_into_a_rebuilt_model_by_name(tiny_converted, batch, ref):
    import keras
    src = keras.saving.load_model(_path(tiny_converted, "keras"), safe_mode=True)
    clone = keras.models.clone_model(src)  # same architecture, fresh random weights
    assert rel_err(clone(batch.transpose(0, 2, 3, 1)).numpy(), ref["logits"]) > 1e-2
    clone.load_weights(_path(tiny_converted, "keras-weights"))
    assert rel_err(clone(batch.transpose(0, 2, 3, 1)).numpy(), ref["logits"]) < 1e-5


def test_keras_without_the_fc6_permutation_would_be_wrong(tiny_ir, batch, ref, monkeypatch):
    """The permutation is what makes a 3×5×7 map right: skipping it must break the output."""
    from crossmodal.ir import layouts
    from crossmodal.emitters.to_keras import build_keras
    monkeypatch.setattr(layouts, "dense_chw_oi_to_hwc_io", lambda w, chw: layouts.dense_oi_to_io(w))
    model, _ = build_keras(tiny_ir)
    assert rel_err(model(batch.transpose(0, 2, 3, 1)).numpy(), ref["logits"]) > 1e-2


def test_onnx_model_is_checked_and_matches_reference(tiny_converted, batch, ref):
    import onnx
    import onnxruntime as ort
    path = _path(tiny_converted, "onnx")
    onnx.checker.check_model(path, full_check=True)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["logits", "prob", "fc7"]
    assert sess.get_inputs()[0].shape == ["N", 3, 20, 28]
    logits, prob, fc7 = sess.run(None, {"input": batch})
    assert rel_err(logits, ref["logits"]) < 1e-5
    assert rel_err(fc7, ref["fc7"]) < 1e-5 and fc7.min() >= 0  # post-ReLU, as Caffe's fc7 blob
    assert rel_err(prob, ref["prob"]) < 1e-5
    assert sess.run(["logits"], {"input": batch[:1]})[0].shape == (1, 10)  # dynamic batch


def test_onnx_metadata_carries_labels_and_preprocessing(tiny_ir):
    tiny_ir.graph.labels = Labels([f"/c/c{i}" for i in range(10)])
    proto = to_onnx.build_onnx(tiny_ir)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["crossmodal.labels"])[3] == "/c/c3"
    assert json.loads(meta["crossmodal.preprocess"])["crop"] == [20, 28]
    assert meta["crossmodal.ir_fingerprint"] == tiny_ir.fingerprint()
    tiny_ir.graph.labels = None


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_onnx_opsets_all_run(tiny_ir, tmp_path, batch, ref, opset):
    import onnxruntime as ort
    proto = to_onnx.build_onnx(tiny_ir, opset=opset, extra_outputs=["fc7", "pool5"])
    path = tmp_path / "m.onnx"
    onnx_file.save_onnx(proto, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": batch})))
    assert out["pool5"].shape == (3, 3, 5, 7)
    assert rel_err(out["logits"], ref["logits"]) < 1e-5


def test_onnx_beyond_the_protobuf_limit_uses_external_data(tiny_ir, tmp_path, batch, ref, monkeypatch):
    import onnxruntime as ort
    monkeypatch.setattr(onnx_file, "PROTOBUF_LIMIT", 1000)
    files = onnx_file.save_onnx(to_onnx.build_onnx(tiny_ir), tmp_path / "big.onnx")
    assert [f.name for f in files] == ["big.onnx", "big.onnx.data"] and files[1].stat().st_size > 1000
    sess = ort.InferenceSession(str(files[0]), providers=["CPUExecutionProvider"])
    assert rel_err(sess.run(["logits"], {"input": batch})[0], ref["logits"]) < 1e-5


def test_opsets_outside_the_supported_range_are_refused_with_the_range(tiny_ir):
    import onnx
    newest, why = to_onnx.max_opset()
    assert to_onnx.MIN_OPSET <= to_onnx.DEFAULT_OPSET <= newest <= onnx.defs.onnx_opset_version()
    assert "onnxruntime" in why
    for bad in (9, newest + 1, onnx.defs.onnx_opset_version() + 1):
        with pytest.raises(InputError, match=rf"opset {bad} .*{to_onnx.MIN_OPSET}\.\.{newest}"):
            to_onnx.build_onnx(tiny_ir, opset=bad)
    with pytest.raises(InputError, match="integer"):
        to_onnx.check_opset("21")


def test_newest_supported_opset_runs(tiny_ir, tmp_path, batch, ref):
    import onnxruntime as ort
    newest, _ = to_onnx.max_opset()
    path = tmp_path / "new.onnx"
    onnx_file.save_onnx(to_onnx.build_onnx(tiny_ir, opset=newest), path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert rel_err(sess.run(["logits"], {"input": batch})[0], ref["logits"]) < 1e-5


def test_onnx_producer_is_recorded(tiny_ir):
    from crossmodal._version import __version__
    proto = to_onnx.build_onnx(tiny_ir)
    assert (proto.producer_name, proto.producer_version) == ("crossmodal", __version__)


def test_torch_emitter_round_trips_weights_bit_for_bit(tiny_ir, batch, ref):
    import torch
    from crossmodal.emitters.to_torch import build_torch, run_layers, state_dict_to_ir_weights
    module = build_torch(tiny_ir)
    back = state_dict_to_ir_weights(module.state_dict())
    assert set(back) == {t.name for l in tiny_ir.graph.layers for t in l.tensors.values()}
    for name, arr in back.items():
        assert arr.dtype == np.float32 and np.array_equal(arr, tiny_ir.weights[name]), name
    with torch.inference_mode():
        logits = module(torch.from_numpy(batch)).numpy()
    assert rel_err(logits, ref["logits"]) < 1e-5
    assert rel_err(run_layers(module, batch, ["relu7"])["relu7"], ref["fc7"]) < 1e-5


# --------------------------------------------------------------------------- Keras pooling
def _pool_net(kind="max_pool2d", k=3, s=3, p=0, ceil=True, relu=True, hw=(13, 14), pools=1, cin=2):
    """input cin×H×W → conv 3×3 (pad 1) [→ relu] → ``pools`` × pooling → flatten → dense(4)."""
    from crossmodal.ir.graph import Graph, InputSpec, IRModel, TensorSpec
    from crossmodal.ir.preprocess import Preprocess
    from crossmodal.ir.kinds import infer_shapes
    rng = np.random.default_rng(5)
    conv = {"weight": TensorSpec("conv1.weight", (3, cin, 3, 3), "OIHW"), "bias": TensorSpec("conv1.bias", (3,), "O")}
    layers = [Layer("conv1", "conv2d", ["input"], {"kernel": (3, 3), "stride": (1, 1), "pad": (1, 1),
                                                   "in_channels": cin, "out_channels": 3}, conv)]
    if relu:
        layers.append(Layer("relu1", "relu", ["conv1"]))
    for i in range(1, pools + 1):
        layers.append(Layer(f"pool{i}", kind, [layers[-1].name],
                            {"kernel": (k, k), "stride": (s, s), "pad": (p, p), "ceil_mode": ceil}))
    last = layers[-1].name
    inp = InputSpec(shape=(cin, *hw))
    chw = infer_shapes(Graph("net", inp, layers, []))[last]
    n = int(np.prod(chw))
    fc = {"weight": TensorSpec("fc.weight", (4, n), "OI"), "bias": TensorSpec("fc.bias", (4,), "O")}
    layers += [Layer("flatten", "flatten", [last], {"shape": chw}),
               Layer("fc", "dense", ["flatten"], {"in_features": n, "out_features": 4}, fc)]
    graph = Graph("poolnet", inp, layers, ["fc"], Preprocess(resize=hw, crop=hw), blobs={"logits": "fc"})
    weights = {t.name: rng.standard_normal(t.shape).astype(np.float32)
               for l in layers for t in l.tensors.values()}
    return IRModel(graph, weights)


def _keras_matches_reference(model, layer="pool1"):
    import keras
    from crossmodal.emitters.to_keras import build_keras
    x = np.random.default_rng(1).standard_normal((2, *model.graph.input.shape)).astype(np.float32)
    kmodel, names = build_keras(model)
    probe = keras.Model(kmodel.input, [kmodel.get_layer(names[layer]).output, kmodel.output])
    pooled, logits = (t.numpy() for t in probe(x.transpose(0, 2, 3, 1)))
    ref = reference.run(model, x, [layer, "fc"])
    assert pooled.transpose(0, 3, 1, 2).shape == ref[layer].shape
    return rel_err(pooled.transpose(0, 3, 1, 2), ref[layer]), rel_err(logits, ref["fc"]), kmodel


@pytest.mark.parametrize("kind,k,s,p,ceil,hw,plan", [
    ("max_pool2d", 2, 2, 0, False, (14, 14), ("valid", None)),        # VGG at 224
    ("max_pool2d", 2, 2, 0, True, (13, 15), ("same", None)),          # Caffe VGG on an odd map
    ("max_pool2d", 3, 2, 0, True, (14, 16), ("same", None)),          # one cell past the end
    ("max_pool2d", 3, 3, 0, True, (13, 14), ("valid", ((0, 2), (0, 1)))),  # two past the end: "same" would start early
    ("max_pool2d", 3, 2, 0, True, (13, 14), ("valid", ((0, 0), (0, 1)))),  # one axis "valid", the other "same"
    ("max_pool2d", 3, 2, 1, True, (13, 14), ("valid", ((1, 1), (1, 2)))),
    ("max_pool2d", 3, 2, 1, False, (13, 14), ("valid", ((1, 1), (1, 0)))),
    ("avg_pool2d", 3, 2, 0, True, (14, 16), ("same", None)),
    ("avg_pool2d", 3, 2, 1, False, (13, 14), ("valid", ((1, 1), (1, 0)))),
])
def test_keras_pooling_is_exact_where_it_is_emitted(kind, k, s, p, ceil, hw, plan):
    from crossmodal.emitters.to_keras import pool_plan
    model = _pool_net(kind, k, s, p, ceil, relu=True, hw=hw)
    layer = model.graph.layer("pool1")
    got = pool_plan(model.graph, layer, (3, *hw))
    assert (got.padding, got.zero_pad) == plan
    pooled, logits, _ = _keras_matches_reference(model)
    assert pooled < 1e-6 and logits < 1e-5, (pooled, logits)


def test_keras_ceil_pooling_k3_s3_on_13_is_exact_after_relu_not_same():
    """Keras "same" puts half of the 2-cell padding first (max|Δ| 1.73 here before the fix)."""
    model = _pool_net("max_pool2d", 3, 3, 0, True, relu=True, hw=(13, 13))
    pooled, logits, kmodel = _keras_matches_reference(model)
    assert pooled < 1e-6 and logits < 1e-5
    assert kmodel.get_layer("pool1").padding == "valid"
    assert kmodel.get_layer("pool1_pad").padding == ((0, 2), (0, 2))


def test_keras_refuses_pooling_it_cannot_express_all_in_one_pass():
    from crossmodal.emitters.to_keras import build_keras, keras_gaps
    # max pooling that needs zero end padding on an input that can be negative (no ReLU)
    model = _pool_net("max_pool2d", 3, 3, 0, True, relu=False, hw=(28, 28), pools=2)  # 28 → 10 → 4
    model.graph.layers.insert(1, Layer("norm1", "lrn_fake", ["conv1"]))
    model.graph.layer("pool1").inputs = ["norm1"]
    with pytest.raises(UnsupportedError) as err:
        build_keras(model)
    text = str(err.value)
    assert text.startswith("3 unsupported layer(s) for Keras") and "norm1 (lrn_fake) → keras" in text
    assert "layer pool1: max_pool2d k=3x3 s=3x3 pad=0x0 ceil on a 28x28 map" in text
    assert "layer pool2: max_pool2d k=3x3 s=3x3 pad=0x0 ceil on a 10x10 map" in text
    assert "can be negative" in text
    # average pooling whose ceil-mode windows run past the padding
    for hw in ((13, 13), (13, 14)):
        gaps = keras_gaps(_pool_net("avg_pool2d", 3, 3 if hw == (13, 13) else 2, 0, True, hw=hw).graph)
        assert len(gaps) == 1 and "pool1" in gaps[0] and "past the padding" in gaps[0], hw


def test_keras_refusal_comes_before_any_file_is_written(tmp_path):
    from crossmodal.ir.store import save_ir
    from crossmodal.convert.pipeline import convert
    src = tmp_path / "ir"
    src.mkdir()
    save_ir(_pool_net("max_pool2d", 3, 3, 0, True, relu=False, hw=(13, 13), cin=3), src)  # 3: RGB preprocessing
    out = tmp_path / "out"
    with pytest.raises(UnsupportedError, match="pool1"):
        convert(src, out, targets=["ir", "onnx", "keras"], onnx_outputs=())
    assert not out.exists()
    convert(src, out, targets=["ir", "onnx"], onnx_outputs=())  # ONNX pads with -inf: exact
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx", "weights.h5"]


@pytest.mark.parametrize("kind,k,s,p,n", [
    ("max_pool2d", 2, 3, 0, 6), ("max_pool2d", 2, 2, 1, 13), ("max_pool2d", 3, 3, 1, 14),
    ("avg_pool2d", 2, 2, 1, 7), ("avg_pool2d", 2, 3, 0, 6), ("max_pool2d", 3, 2, 1, 13),
])
def test_onnx_ceil_pooling_drops_a_window_that_starts_in_the_padding(tmp_path, kind, k, s, p, n):
    """Caffe/PyTorch drop a last ceil-mode window starting in the right padding;
    onnxruntime keeps it, so the emitter slices it off (the full checker runs on save)."""
    import onnxruntime as ort
    model = _pool_net(kind, k, s, p, True, hw=(n, n + 1))
    path = tmp_path / "pool.onnx"
    proto = to_onnx.build_onnx(model, extra_outputs=["pool1"])
    onnx_file.save_onnx(proto, path)
    assert set(to_onnx.layer_tensors(proto)) == {"conv1", "relu1", "pool1", "flatten", "fc"}
    x = np.random.default_rng(2).standard_normal((2, 2, n, n + 1)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x})))
    ref = reference.run(model, x, ["pool1", "fc"])
    assert out["pool1"].shape == ref["pool1"].shape
    assert rel_err(out["pool1"], ref["pool1"]) < 1e-6 and rel_err(out["logits"], ref["fc"]) < 1e-5
