"""The Caffe reader: prototxt + caffemodel (both encodings) → IR, checked against PyTorch
(ceil-mode pools, same weights), the NumPy reference, ONNX Runtime and Keras."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from caffe_fixtures import (
    ODD_INPUT, ODD_POOLS, random_blobs, tiny_prototxt, tiny_shapes, to_v1, vgg16_shapes, write_caffemodel,
)
from crossmodal.convert import reference
from crossmodal.convert.ir import infer_shapes
from crossmodal.convert.readers import caffe_schema as schema
from crossmodal.convert.readers.from_caffe import read_caffe, read_mean_file, read_prototxt
from crossmodal.errors import InputError, UnsupportedError
from helpers import rel_err

PLACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "places365"


def places_file(name: str) -> Path:
    path = PLACES / name
    if not path.is_file():
        pytest.skip(f"real Places365 file not available: {path} (../shared/data/places365 is absent)")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny net in both encodings: {encoding: (prototxt, caffemodel, weights)}."""
    root = tmp_path_factory.mktemp("caffe-tiny")
    proto = root / "tiny.prototxt"
    proto.write_text(tiny_prototxt())
    out = {}
    for enc in ("layer", "layers"):
        model = root / f"tiny-{enc}.caffemodel"
        out[enc] = (proto, model, write_caffemodel(tiny_prototxt(), model, tiny_shapes(), encoding=enc, seed=5))
    return out


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).standard_normal((3, 3, 20, 28)).astype(np.float32) * 50


def torch_net(weights, pools, pre_fc):
    """The tiny net written independently in PyTorch, Caffe pooling = ceil_mode=True."""
    import torch
    import torch.nn as nn

    layers, cin = [], 3
    for block, (width, (kind, k, s, pad)) in enumerate(zip((4, 5, 2), pools), start=1):
        conv = nn.Conv2d(cin, width, 3, padding=1)
        w, b = weights[f"conv{block}_1"]
        conv.weight.data, conv.bias.data = torch.from_numpy(w.copy()), torch.from_numpy(b.copy())
        pool = (nn.MaxPool2d(k, s, pad, ceil_mode=True) if kind == "MAX"
                else nn.AvgPool2d(k, s, pad, ceil_mode=True, count_include_pad=True))
        layers += [conv, nn.ReLU(), pool]
        cin = width
    fcs = []
    for name, fin, fout in (("fc6", int(np.prod(pre_fc)), 16), ("fc7", 16, 16), ("fc8a", 16, 10)):
        fc = nn.Linear(fin, fout)
        fc.weight.data, fc.bias.data = (torch.from_numpy(a.copy()) for a in weights[name])
        fcs.append(fc)
    features = nn.Sequential(*layers)

    def run(x):
        with torch.no_grad():
            f = features(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
            assert tuple(f.shape[1:]) == tuple(pre_fc)
            fc7 = torch.relu(fcs[1](torch.relu(fcs[0](f.flatten(1)))))
            return {"logits": fcs[2](fc7).numpy(), "fc7": fc7.numpy(), "pool5": f.numpy()}
    return run


def test_checked_in_caffe_proto_is_the_schema_table():
    proto = Path(schema.__file__).with_name("caffe.proto")
    assert proto.read_text() == schema.proto_source(), "regenerate: caffe.proto = caffe_schema.proto_source()"
    assert "repeated float data = 5 [packed = true];" in proto.read_text()
    assert "repeated LayerParameter layer = 100;" in proto.read_text()


# --- the real prototxts -------------------------------------------------------------------------
def test_real_deploy_prototxt_is_the_vgg16_graph_with_caffe_blobs():
    from crossmodal.models.vgg import build_graph, create_spec
    net = read_prototxt(places_file("deploy_vgg16_places365.prototxt"))
    g, ref = net.graph, build_graph(create_spec("vgg16_places365"))
    assert g.name == "VGG-Places365" and g.input.shape == (3, 224, 224) and g.input.channel_order == "BGR"
    assert [l.name for l in g.layers] == [l.name for l in ref.layers]
    for mine, theirs in zip(g.layers, ref.layers):
        assert (mine.kind, mine.inputs, mine.tensors) == (theirs.kind, theirs.inputs, theirs.tensors), mine.name
        floor = {k: v for k, v in mine.attrs.items() if k != "ceil_mode"}
        assert floor == {k: v for k, v in theirs.attrs.items() if k != "ceil_mode"}, mine.name
    assert all(l.attrs["ceil_mode"] for l in g.layers if l.kind == "max_pool2d")  # Caffe rounds up
    assert g.outputs == ["fc8a", "prob"]
    assert {k: g.blobs[k] for k in ("fc6", "fc7", "pool5", "logits", "prob", "conv5_3")} == {
        "fc6": "relu6", "fc7": "relu7", "pool5": "pool5", "logits": "fc8a", "prob": "prob", "conv5_3": "relu5_3"}
    assert g.parameter_count() == 135_755_949
    hybrid = read_prototxt(places_file("deploy_vgg16_hybrid1365.prototxt")).graph
    assert hybrid.num_classes == 1365


def test_train_val_prototxt_reads_as_the_test_phase_net():
    deploy = read_prototxt(places_file("deploy_vgg16_places365.prototxt")).graph
    net = read_prototxt(places_file("train_val_vgg16.prototxt"))
    assert [(l.name, l.kind, l.inputs, l.attrs) for l in net.graph.layers] == \
        [(l.name, l.kind, l.inputs, l.attrs) for l in deploy.layers]
    assert net.graph.input.shape == (3, 224, 224) and net.graph.blobs["fc7"] == "relu7"
    text = " | ".join(net.notes)
    assert "Data layer 'data'" in text and "Accuracy" in text and "SoftmaxWithLoss 'loss'" in text


def test_legacy_v1_prototxt_text_gives_the_same_graph(tmp_path):
    from google.protobuf import text_format
    new = schema.parse_prototxt(tiny_prototxt())
    old = schema.message("NetParameter")(name=new.name, input=new.input, input_dim=new.input_dim)
    for layer in new.layer:
        old.layers.append(to_v1(layer))
    (tmp_path / "v1.prototxt").write_text(text_format.MessageToString(old))
    assert "type: CONVOLUTION" in (tmp_path / "v1.prototxt").read_text()
    (tmp_path / "new.prototxt").write_text(tiny_prototxt())
    a, b = read_prototxt(tmp_path / "v1.prototxt").graph, read_prototxt(tmp_path / "new.prototxt").graph
    assert a.layers == b.layers and a.blobs == b.blobs


# --- the tiny net: numbers ------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["layer", "layers"])
def test_tiny_caffemodel_matches_pytorch_and_keeps_every_weight(tiny, batch, encoding):
    proto, caffemodel, written = tiny[encoding]
    model = read_caffe(proto, caffemodel)
    g = model.graph
    for name, (w, b) in written.items():
        assert np.array_equal(model.weights[f"{name}.weight"], w) and np.array_equal(model.weights[f"{name}.bias"], b)
    assert g.layer("flatten").attrs["shape"] == (2, 3, 4)
    assert infer_shapes(g)["pool3"] == (2, 3, 4)  # ceil: a floor pool would give 2×2×3
    assert g.provenance.source_format == "caffe" and g.provenance.reader.endswith(f"({encoding} encoding)")
    out = reference.run(model, batch, [g.resolve("logits"), g.resolve("fc7"), g.resolve("pool5")])
    want = torch_net(written, (("MAX", 2, 2, 0),) * 3, (2, 3, 4))(batch)
    for blob in ("logits", "fc7", "pool5"):
        assert rel_err(want[blob], out[g.resolve(blob)]) <= 1e-5, blob
    assert out[g.resolve("fc7")].min() >= 0  # Caffe's fc7 blob is post-ReLU (in place)


def test_input_layer_bias_term_false_and_transposed_inner_product(tmp_path, batch):
    text = tiny_prototxt().replace(
        'input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 20\ninput_dim: 28\n',
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 20 dim: 28 } } }\n')
    text = text.replace("num_output: 16 }", "num_output: 16 bias_term: false }")   # fc7
    text = text.replace("num_output: 10 }", "num_output: 10 transpose: true }")   # fc8a
    assert text.count("bias_term: false") == 1 and text.count("transpose: true") == 1
    proto, caffemodel = tmp_path / "t.prototxt", tmp_path / "t.caffemodel"
    proto.write_text(text)
    shapes = {**tiny_shapes(), "fc7": [(16, 16), None], "fc8a": [(16, 10), (10,)]}
    written = write_caffemodel(text, caffemodel, shapes, seed=4)
    model = read_caffe(proto, caffemodel)
    assert model.graph.input.shape == (3, 20, 28)
    assert np.array_equal(model.weights["fc7.bias"], np.zeros(16, np.float32))
    assert np.array_equal(model.weights["fc8a.weight"], written["fc8a"][0].T)
    assert any("fc7: bias_term false" in n for n in model.graph.provenance.notes)
    want = torch_net({**written, "fc7": [written["fc7"][0], np.zeros(16, np.float32)],
                      "fc8a": [written["fc8a"][0].T, written["fc8a"][1]]}, (("MAX", 2, 2, 0),) * 3, (2, 3, 4))
    assert rel_err(want(batch)["logits"], reference.run(model, batch)["fc8a"]) <= 1e-5


def test_zero_copy_decoding_equals_protobuf_parsing(tiny):
    for enc in ("layer", "layers"):
        data = tiny[enc][1].read_bytes()
        fast, enc_fast = schema.decode_caffemodel(bytearray(data))
        slow, enc_slow = schema.decode_caffemodel_protobuf(data)
        assert enc_fast == enc_slow == enc
        assert [l.name for l, _ in fast] == [l.name for l, _ in slow]
        for (_, a), (_, b) in zip(fast, slow):
            assert len(a) == len(b) and all(np.array_equal(x, y) and x.shape == y.shape for x, y in zip(a, b))


def test_ceil_pools_keras_cannot_express_match_pytorch(tmp_path):
    proto, caffemodel = tmp_path / "odd.prototxt", tmp_path / "odd.caffemodel"
    proto.write_text(tiny_prototxt(ODD_POOLS, ODD_INPUT))
    written = write_caffemodel(proto.read_text(), caffemodel, tiny_shapes((2, 4, 5)), seed=2)
    model = read_caffe(proto, caffemodel)
    shapes = infer_shapes(model.graph)
    assert shapes["pool2"] == (5, 6, 8) and shapes["pool3"] == (2, 4, 5)  # floor: 5×7 and 3×4
    assert model.graph.layer("pool3").kind == "avg_pool2d"
    x = np.random.default_rng(1).standard_normal((2, 3, *ODD_INPUT)) * 50
    out = reference.run(model, x, ["fc8a", "pool3"])
    want = torch_net(written, ODD_POOLS, (2, 4, 5))(x)
    assert rel_err(want["pool5"], out["pool3"]) <= 1e-5 and rel_err(want["logits"], out["fc8a"]) <= 1e-5


def test_convert_emits_onnx_and_keras_that_match_the_reference(tiny, batch, tmp_path):
    import keras
    import onnxruntime as ort

    from crossmodal.convert.ir_io import load_ir
    from crossmodal.convert.pipeline import convert
    proto, caffemodel, _ = tiny["layer"]
    result = convert(proto, tmp_path, caffemodel=caffemodel, targets=["ir", "keras", "onnx"])
    paths = {a.kind: a.path for a in result.artifacts}
    ir = load_ir(tmp_path)
    assert ir.graph.provenance.source_sha256 == result.model.graph.provenance.source_sha256
    ref = reference.run(ir, batch, ["fc8a", "relu7", "prob"])
    sess = ort.InferenceSession(paths["onnx"], providers=["CPUExecutionProvider"])
    logits, prob, fc7 = sess.run(["logits", "prob", "fc7"], {"input": batch})
    assert rel_err(logits, ref["fc8a"]) <= 1e-5 and rel_err(prob, ref["prob"]) <= 1e-5
    assert rel_err(fc7, ref["relu7"]) <= 1e-5
    kmodel = keras.saving.load_model(paths["keras"], safe_mode=True)
    assert rel_err(kmodel(batch.transpose(0, 2, 3, 1)).numpy(), ref["fc8a"]) <= 1e-5


def test_verify_uses_the_caffemodel_as_its_reference(tiny, tmp_path):
    from crossmodal.convert.pipeline import convert
    from crossmodal.convert.verify import run_verify
    proto, caffemodel, _ = tiny["layers"]
    convert(proto, tmp_path, caffemodel=caffemodel, targets=["ir", "onnx"], rgb_input=True)
    report = run_verify(tmp_path, engines=("ir", "onnx"), source=caffemodel, prototxt=proto, random=2)
    assert report.passed, report.to_json()


# --- preprocessing -------------------------------------------------------------------------------
def test_real_mean_file_per_channel_and_as_an_image(tiny):
    mean_file = places_file("places365CNN_mean.binaryproto")
    mean = read_mean_file(mean_file)
    assert mean.shape == (3, 256, 256)
    np.testing.assert_allclose(mean.mean(axis=(1, 2)), (104.05, 112.51, 116.68), atol=0.01)
    proto, caffemodel, _ = tiny["layer"]
    per = read_caffe(proto, caffemodel, mean_file=mean_file, mean_mode="channel").graph
    assert per.preprocess.name == "caffe-mean-channel" and per.preprocess.mean_image is None
    np.testing.assert_allclose(per.preprocess.mean, (104.05, 112.51, 116.68), atol=0.01)
    img = read_caffe(proto, caffemodel, mean_file=mean_file, mean_mode="image")
    pre = img.graph.preprocess
    assert (pre.name, pre.mean_image, pre.mean, pre.channel_order) == (
        "caffe-mean-image", "preprocess.mean_image", (0.0, 0.0, 0.0), "BGR")
    assert img.weights["preprocess.mean_image"].shape == (3, 256, 256)
    assert any("mean: image 3×256×256" in n for n in img.graph.provenance.notes)
    with pytest.raises(InputError, match="mean mode"):
        read_caffe(proto, caffemodel, mean_file=mean_file, mean_mode="pixel")


def test_corrupt_mean_file_is_an_input_error(tmp_path):
    bad = tmp_path / "mean.binaryproto"
    bad.write_bytes(b"\x3a\xff\xff\x0f garbage")
    with pytest.raises(InputError, match="mean file"):
        read_mean_file(bad)
    blob = schema.message("BlobProto")(num=1, channels=3, height=4, width=4, data=[1.0] * 47)
    bad.write_bytes(blob.SerializeToString())
    with pytest.raises(InputError, match="47 values"):
        read_mean_file(bad)


def test_rgb_input_folds_the_channel_order_into_conv1_1(tiny, batch):
    proto, caffemodel, _ = tiny["layer"]
    mean_file = places_file("places365CNN_mean.binaryproto")
    bgr = read_caffe(proto, caffemodel, mean_file=mean_file, mean_mode="image")
    rgb = read_caffe(proto, caffemodel, mean_file=mean_file, mean_mode="image", rgb_input=True)
    assert rgb.graph.preprocess.channel_order == rgb.graph.input.channel_order == "RGB"
    assert np.array_equal(rgb.weights["preprocess.mean_image"], bgr.weights["preprocess.mean_image"][::-1])
    assert any("reversed along input channels" in n for n in rgb.graph.provenance.notes)
    a = reference.run(bgr, batch)["fc8a"]
    b = reference.run(rgb, np.ascontiguousarray(batch[:, ::-1]))["fc8a"]
    assert rel_err(b, a) <= 1e-12
    plain = read_caffe(proto, caffemodel, rgb_input=True).graph.preprocess
    assert plain.mean == (116.676, 112.514, 104.051) and plain.name == "caffe-rgb"


# --- bad input -----------------------------------------------------------------------------------
def test_prototxt_syntax_error_names_line_and_column(tmp_path, tiny):
    bad = tmp_path / "deploy.prototxt"
    bad.write_text(tiny_prototxt().replace('num_output: 5', 'num_outptu: 5'))
    with pytest.raises(InputError, match=r"deploy\.prototxt: line 1\d column \d+: .*num_outptu"):
        read_caffe(bad, tiny["layer"][1])
    bad.write_text(tiny_prototxt().replace('top: "fc7" inner', 'top: "fc7 inner'))
    with pytest.raises(InputError, match=r"line \d+ column \d+"):
        read_prototxt(bad)


def test_unsupported_layers_are_all_listed_at_once(tmp_path):
    text = tiny_prototxt().replace(
        'layer { name: "fc6"',
        'layer { name: "norm3" type: "LRN" bottom: "pool3" top: "norm3" lrn_param { local_size: 5 } }\n'
        'layer { name: "sig" type: "Sigmoid" bottom: "norm3" top: "sig" }\nlayer { name: "fc6"')
    text = text.replace("num_output: 5 pad: 1", "num_output: 5 group: 2 pad: 1")
    proto = tmp_path / "x.prototxt"
    proto.write_text(text)
    with pytest.raises(UnsupportedError) as err:
        read_prototxt(proto)
    msg = str(err.value)
    assert "3 unsupported" in msg and "norm3 (LRN)" in msg and "sig (Sigmoid)" in msg
    assert "conv2_1 (Convolution: group 2)" in msg


def test_blobs_that_disagree_with_the_prototxt_are_all_listed(tmp_path):
    proto, model = tmp_path / "t.prototxt", tmp_path / "t.caffemodel"
    proto.write_text(tiny_prototxt())
    shapes = tiny_shapes()
    shapes["conv2_1"] = [(5, 3, 3, 3), (5,)]     # wrong input channels
    shapes["fc6"] = [(16, 30), (17,)]            # wrong flattened size and bias
    write_caffemodel(proto.read_text(), model, shapes, omit=["fc7"])
    with pytest.raises(InputError) as err:
        read_caffe(proto, model)
    msg = str(err.value)
    assert "missing from the caffemodel: fc7" in msg
    assert "conv2_1 weight is 5x3x3x3, the prototxt needs 5x4x3x3" in msg
    assert "fc6 weight is 16x30, the prototxt needs 16x24" in msg and "fc6 bias is 17" in msg


def test_missing_and_truncated_caffemodels_are_input_errors(tiny, tmp_path):
    proto, caffemodel, _ = tiny["layer"]
    with pytest.raises(InputError, match="holds no weights"):
        read_caffe(proto)
    with pytest.raises(InputError, match="no such file"):
        read_caffe(proto, tmp_path / "absent.caffemodel")
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(caffemodel.read_bytes()[: caffemodel.stat().st_size * 2 // 3])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_caffe(proto, cut)


@pytest.mark.parametrize("case", ["truncated", "unsupported-by-keras"])
def test_failed_convert_leaves_no_files(tiny, tmp_path, case):
    from crossmodal.convert.pipeline import convert
    proto, caffemodel, _ = tiny["layer"]
    out = tmp_path / "out"
    if case == "truncated":
        cut = tmp_path / "cut.caffemodel"
        cut.write_bytes(caffemodel.read_bytes()[:-7])
        with pytest.raises(InputError):
            convert(proto, out, caffemodel=cut, targets=["ir", "keras", "onnx"])
    else:  # IR and ONNX are written before Keras refuses the 3×3/2 ceil pool
        odd, model = tmp_path / "odd.prototxt", tmp_path / "odd.caffemodel"
        odd.write_text(tiny_prototxt(ODD_POOLS, ODD_INPUT))
        write_caffemodel(odd.read_text(), model, tiny_shapes((2, 4, 5)))
        with pytest.raises(UnsupportedError):
            convert(odd, out, caffemodel=model, targets=["ir", "onnx", "keras"])
    assert list(out.iterdir()) == []


# --- full size ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full(tmp_path_factory):
    proto = places_file("deploy_vgg16_places365.prototxt")
    root = tmp_path_factory.mktemp("caffe-vgg16")
    model = root / "vgg16_places365.caffemodel"
    write_caffemodel(proto.read_text(), model, vgg16_shapes(), seed=7, keep=False)
    return proto, model


def assert_same_as_written(weights, seed: int = 7) -> None:
    """Regenerate the written blobs layer by layer (no second 550 MB copy held) and compare."""
    for name, (w, b) in random_blobs(vgg16_shapes(), seed):
        assert np.array_equal(weights[f"{name}.weight"], w) and np.array_equal(weights[f"{name}.bias"], b), name


@pytest.mark.slow
def test_full_vgg16_caffemodel_converts_and_matches_pytorch(full, tmp_path):
    import keras
    import onnxruntime as ort
    import torch

    from crossmodal.convert.pipeline import convert
    from crossmodal.models.vgg import build_torch_module, create_spec, torchvision_keys
    proto, caffemodel = full
    result = convert(proto, tmp_path, caffemodel=caffemodel, targets=["ir", "keras", "onnx"])
    model = result.model
    assert model.graph.parameter_count() == 135_755_949
    assert_same_as_written(model.weights)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32) * 50
    ref = reference.run(model, x, ["fc8a", "relu7"], dtype=np.float32)["fc8a"]
    spec = create_spec("vgg16_places365")
    net = build_torch_module(spec).eval()
    keys = torchvision_keys(spec)
    net.load_state_dict({keys[k]: torch.from_numpy(v) for k, v in model.weights.items() if k in keys})
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    del net
    assert rel_err(ref, want) <= 1e-5
    paths = {a.kind: a.path for a in result.artifacts}
    sess = ort.InferenceSession(paths["onnx"], providers=["CPUExecutionProvider"])
    assert rel_err(sess.run(["logits"], {"input": x})[0], want) <= 1e-5
    del sess
    kmodel = keras.saving.load_model(paths["keras"], safe_mode=True)
    assert rel_err(kmodel(x.transpose(0, 2, 3, 1)).numpy(), want) <= 1e-5


@pytest.mark.slow
def test_full_vgg16_legacy_encoding_gives_the_same_weights(full, tmp_path):
    proto, _ = full
    legacy = tmp_path / "legacy.caffemodel"
    write_caffemodel(proto.read_text(), legacy, vgg16_shapes(), encoding="layers", seed=7, keep=False)
    model = read_caffe(proto, legacy)
    assert model.graph.provenance.reader.endswith("(layers encoding)")
    assert model.weights["fc6.weight"].shape == (4096, 25088)
    assert_same_as_written(model.weights)
