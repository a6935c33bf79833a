"""Keras, ONNX and PyTorch emitters on a tiny VGG whose pre-flatten map is 3×5×7."""
from __future__ import annotations

import json

import numpy as np
import pytest

from crossmodal.convert import reference
from crossmodal.convert.emitters import to_onnx
from crossmodal.convert.ir import LAYER_KINDS, Labels, Layer
from crossmodal.convert.ir_io import load_ir
from crossmodal.convert.registry import TARGETS, check_supported, converter, coverage
from crossmodal.errors import UnsupportedError
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
    from crossmodal.convert import layouts
    from crossmodal.convert.emitters.to_keras import build_keras
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
    to_onnx.save_onnx(proto, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": batch})))
    assert out["pool5"].shape == (3, 3, 5, 7)
    assert rel_err(out["logits"], ref["logits"]) < 1e-5


def test_onnx_beyond_the_protobuf_limit_uses_external_data(tiny_ir, tmp_path, batch, ref, monkeypatch):
    import onnxruntime as ort
    monkeypatch.setattr(to_onnx, "PROTOBUF_LIMIT", 1000)
    files = to_onnx.save_onnx(to_onnx.build_onnx(tiny_ir), tmp_path / "big.onnx")
    assert [f.name for f in files] == ["big.onnx", "big.onnx.data"] and files[1].stat().st_size > 1000
    sess = ort.InferenceSession(str(files[0]), providers=["CPUExecutionProvider"])
    assert rel_err(sess.run(["logits"], {"input": batch})[0], ref["logits"]) < 1e-5


def test_too_old_opset_is_refused(tiny_ir):
    with pytest.raises(ValueError, match="too old"):
        to_onnx.build_onnx(tiny_ir, opset=9)


def test_torch_emitter_round_trips_weights_bit_for_bit(tiny_ir, batch, ref):
    import torch
    from crossmodal.convert.emitters.to_torch import build_torch, run_layers, state_dict_to_ir_weights
    module = build_torch(tiny_ir)
    back = state_dict_to_ir_weights(module.state_dict())
    assert set(back) == {t.name for l in tiny_ir.graph.layers for t in l.tensors.values()}
    for name, arr in back.items():
        assert arr.dtype == np.float32 and np.array_equal(arr, tiny_ir.weights[name]), name
    with torch.inference_mode():
        logits = module(torch.from_numpy(batch)).numpy()
    assert rel_err(logits, ref["logits"]) < 1e-5
    assert rel_err(run_layers(module, batch, ["relu7"])["relu7"], ref["fc7"]) < 1e-5


def test_ceil_pooling_that_keras_cannot_express_is_refused(tiny_ir):
    import copy
    from crossmodal.convert.emitters.to_keras import build_keras
    model = copy.deepcopy(tiny_ir)
    pool = model.graph.layer("pool1")
    pool.attrs = {**pool.attrs, "kernel": (3, 3), "ceil_mode": True}
    with pytest.raises(UnsupportedError, match="pool1"):
        build_keras(model)
