"""The Caffe reader: prototxt + caffemodel (both encodings) → IR, checked against PyTorch
(ceil-mode pools, same weights), the NumPy reference, ONNX Runtime and Keras."""
from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from caffe_fixtures import (
    IMAGE_DATA, ODD_INPUT, ODD_POOLS, TRAIN_VAL_DATA, random_blobs, tiny_prototxt, tiny_shapes, tiny_train_val,
    to_v1, vgg16_shapes, write_caffemodel,
)
from crossmodal.ir import reference
from crossmodal.ir.preprocess import PREPROCESS_PRESETS
from crossmodal.ir.kinds import infer_shapes
from crossmodal.readers import caffe_schema as schema
from crossmodal.readers import caffe_wire
from crossmodal.readers.from_caffe import read_caffe, read_mean_file, read_prototxt
from crossmodal.errors import InputError, UnsupportedError
from helpers import rel_err, shared_file


def places_file(name: str) -> Path:
    """A real Places365 file from ``helpers.SHARED_DATA / "places365"`` (skips when absent)."""
    return shared_file("places365", name)


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
    assert "mean_file '/xxx/places2CNN365_mean.binaryproto' (not read" in text and net.data_mean is None


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


# --- train_val data layers (real-shaped snippets) -----------------------------------------------
def test_train_val_mean_value_becomes_the_per_channel_mean(tmp_path, batch):
    transform = "crop_size: 20\n    mean_value: 104\n    mean_value: 117\n    mean_value: 123"
    text = tiny_train_val(TRAIN_VAL_DATA.format(transform=transform))
    proto, caffemodel = tmp_path / "train_val.prototxt", tmp_path / "tv.caffemodel"
    proto.write_text(text)
    written = write_caffemodel(text, caffemodel, tiny_shapes((2, 3, 3)), seed=3)  # 20×20: pool3 is 3×3
    model = read_caffe(proto, caffemodel)
    g, pre = model.graph, model.graph.preprocess
    assert g.input.shape == (3, 20, 20) and [l.name for l in g.layers][-1] == "prob"
    assert (pre.name, pre.mean, pre.channel_order, pre.crop) == ("caffe-mean-value", (104.0, 117.0, 123.0), "BGR",
                                                                 (20, 20))
    notes = " | ".join(g.provenance.notes)
    assert "3×20×20 input (crop_size)" in notes and "mean_value (104.0, 117.0, 123.0) (BGR)" in notes
    assert "mean: train_val mean_value per-channel" in notes
    assert np.array_equal(model.weights["fc6.weight"], written["fc6"][0])
    rgb = read_caffe(proto, caffemodel, rgb_input=True).graph.preprocess
    assert (rgb.name, rgb.mean, rgb.channel_order) == ("caffe-mean-value-rgb", (123.0, 117.0, 104.0), "RGB")
    given = read_caffe(proto, caffemodel, preprocess=dataclasses.replace(PREPROCESS_PRESETS["caffe"],
                                                                         crop=(20, 20))).graph
    assert given.preprocess.mean == PREPROCESS_PRESETS["caffe"].mean
    assert any("mean_value is not used" in n for n in given.provenance.notes)
    one = tmp_path / "one.prototxt"
    one.write_text(text.replace("mean_value: 117\n    mean_value: 123", ""))
    assert read_prototxt(one).data_mean == (104.0, 104.0, 104.0)  # one value: every channel


@pytest.mark.parametrize("transform, error, match", [
    ("crop_size: 20\n    scale: 0.00390625", UnsupportedError, r"transform_param\.scale 0\.00390625 .*std is 1/scale"),
    ("crop_size: 20\n    force_gray: true", UnsupportedError, "grayscale input"),
    ('crop_size: 20\n    mean_file: "m.binaryproto"\n    mean_value: 104', InputError,
     "transform_param has both mean_file and mean_value"),
    ("crop_size: 20\n    mean_value: 104\n    mean_value: 117", InputError, "2 mean_value entries"),
    ("", InputError, "no transform_param.crop_size"),
])
def test_train_val_transforms_the_reader_cannot_carry_are_refused(tmp_path, transform, error, match):
    proto = tmp_path / "train_val.prototxt"
    proto.write_text(tiny_train_val(TRAIN_VAL_DATA.format(transform=transform)))
    with pytest.raises(error, match=r"train_val\.prototxt: layer data \(Data\)(: | has )" + match):
        read_prototxt(proto)


def test_deprecated_data_param_transform_fields_are_honoured(tmp_path):
    """Old prototxts keep crop_size/scale/mean_file in data_param; Caffe moves them to transform_param."""
    text = tiny_train_val(TRAIN_VAL_DATA.format(transform=""))
    proto = tmp_path / "old.prototxt"
    proto.write_text(text.replace("batch_size: 12", 'batch_size: 12 crop_size: 24 mean_file: "/m.binaryproto"'))
    net = read_prototxt(proto)
    assert net.graph.input.shape == (3, 24, 24) and any("mean_file '/m.binaryproto'" in n for n in net.notes)
    proto.write_text(text.replace("batch_size: 12", "batch_size: 12\n    crop_size: 24\n    scale: 0.5"))
    with pytest.raises(UnsupportedError, match="scale 0.5"):
        read_prototxt(proto)
    proto.write_text(text.replace("mirror: false", "mirror: false crop_size: 16")
                     .replace("batch_size: 12", "batch_size: 12\n    crop_size: 24"))
    assert read_prototxt(proto).graph.input.shape == (3, 16, 16)  # transform_param wins


def test_image_data_layers_parse_and_fix_the_input(tmp_path, tiny, batch):
    proto = tmp_path / "image_data.prototxt"
    # no crop: the input is the new_height × new_width image, and the deploy caffemodel fits it
    proto.write_text(tiny_train_val(IMAGE_DATA.format(transform="", params="new_height: 20\n    new_width: 28")))
    _, caffemodel, written = tiny["layer"]
    model = read_caffe(proto, caffemodel)
    assert model.graph.input.shape == (3, 20, 28)
    assert any("ImageData layer 'data' read as a 3×20×28 input (new_height/new_width" in n
               for n in model.graph.provenance.notes)
    deploy = read_caffe(tiny["layer"][0], caffemodel)
    assert rel_err(reference.run(model, batch)["fc8a"], reference.run(deploy, batch)["fc8a"]) == 0
    for transform, params, hw in (("crop_size: 16", "new_height: 24 new_width: 32", (16, 16)),
                                  ("", "new_height: 24 new_width: 32 crop_size: 12", (12, 12))):
        proto.write_text(tiny_train_val(IMAGE_DATA.format(transform=transform, params=params)))
        assert read_prototxt(proto).graph.input.shape == (3, *hw)
    proto.write_text(tiny_train_val(IMAGE_DATA.format(transform="crop_size: 16", params="is_color: false")))
    with pytest.raises(UnsupportedError, match=r"layer data \(ImageData\): grayscale"):
        read_prototxt(proto)
    proto.write_text(tiny_train_val(IMAGE_DATA.format(transform="", params="")))
    with pytest.raises(InputError, match="no transform_param.crop_size"):
        read_prototxt(proto)
    # the legacy encoding: V1 type IMAGE_DATA, image_data_param = 15
    from google.protobuf import text_format
    new = schema.parse_prototxt(tiny_prototxt())
    old = schema.message("NetParameter")(name=new.name)
    data = old.layers.add(name="data", top=["data", "label"])
    data.type = data.DESCRIPTOR.fields_by_name["type"].enum_type.values_by_name["IMAGE_DATA"].number
    data.image_data_param.source, data.image_data_param.new_height, data.image_data_param.new_width = "x", 20, 28
    for layer in new.layer:
        old.layers.append(to_v1(layer))
    proto.write_text(text_format.MessageToString(old))
    assert "type: IMAGE_DATA" in proto.read_text() and "image_data_param {" in proto.read_text()
    assert read_prototxt(proto).graph.layers == deploy.graph.layers


def test_unknown_fields_in_a_caffemodel_still_decode(tiny, tmp_path):
    """Fields outside the schema (another fork's parameters) are skipped, not errors."""
    from caffe_fixtures import _varint
    _, caffemodel, written = tiny["layer"]

    def field(number: int, payload: bytes) -> bytes:
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload
    unknown_varint = _varint(99 << 3) + _varint(7)  # field 99 (not in ImageDataParameter), value 7
    layer = (field(1, b"data") + field(2, b"ImageData") + field(115, field(1, b"x") + unknown_varint)
             + field(9999, b"fork parameter"))
    extra = tmp_path / "extra.caffemodel"
    extra.write_bytes(field(100, layer) + caffemodel.read_bytes() + field(4242, b"net-level unknown"))
    decoded, _ = caffe_wire.decode_caffemodel(bytearray(extra.read_bytes()))
    assert decoded[0][0].image_data_param.source == "x" and decoded[0][1] == []
    model = read_caffe(tiny["layer"][0], extra)
    assert np.array_equal(model.weights["conv1_1.weight"], written["conv1_1"][0])


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
        fast, enc_fast = caffe_wire.decode_caffemodel(bytearray(data))
        slow, enc_slow = caffe_wire.decode_caffemodel_protobuf(data)
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

    from crossmodal.ir.store import load_ir
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
    from crossmodal.verify.job import run_verify
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


def test_a_given_preprocessing_must_fit_the_caffe_network(tiny):
    """Only rgb_input folds BGR→RGB; a user's spec saying RGB without it, or 0-1, is refused."""
    proto, caffemodel, written = tiny["layer"]
    w1 = written["conv1_1"][0]
    with pytest.raises(InputError, match=r"tiny\.prototxt: preprocessing 'places365' does not fit this Caffe "
                                         r"network: channel order RGB.*--rgb-input.*; value range 0-1"):
        read_caffe(proto, caffemodel, preprocess=PREPROCESS_PRESETS["places365"])
    rgb_spec = dataclasses.replace(PREPROCESS_PRESETS["caffe"], channel_order="RGB", mean=(116.7, 112.5, 104.1),
                                   crop=(20, 28), name="mine")
    with pytest.raises(InputError, match="channel order RGB") as err:
        read_caffe(proto, caffemodel, preprocess=rgb_spec)
    assert "value range" not in str(err.value)
    model = read_caffe(proto, caffemodel, preprocess=rgb_spec, rgb_input=True)
    pre = model.graph.preprocess
    assert (pre.channel_order, pre.mean, pre.crop, pre.name) == ("RGB", (116.7, 112.5, 104.1), (20, 28), "mine-rgb")
    assert model.graph.input.channel_order == "RGB" and np.array_equal(model.weights["conv1_1.weight"], w1[:, ::-1])
    bgr_spec = dataclasses.replace(PREPROCESS_PRESETS["caffe"], name="mine-bgr")  # crop 224×224
    with pytest.raises(InputError, match="'mine-bgr' crops 224×224, but the network takes 20×28"):
        read_caffe(proto, caffemodel, preprocess=bgr_spec)  # a spec the user wrote is not changed silently
    bgr_spec = dataclasses.replace(bgr_spec, crop=(20, 28))
    model = read_caffe(proto, caffemodel, preprocess=bgr_spec)
    pre, notes = model.graph.preprocess, model.graph.provenance.notes
    assert (pre.channel_order, pre.crop, pre.name, model.graph.input.channel_order) == ("BGR", (20, 28), "mine-bgr",
                                                                                        "BGR")
    assert np.array_equal(model.weights["conv1_1.weight"], w1) and not any("reversed" in n for n in notes)
    assert not any(n.startswith("preprocess: crop") for n in notes)
    pre = read_caffe(proto, caffemodel, preprocess=bgr_spec, rgb_input=True).graph.preprocess
    assert (pre.channel_order, pre.mean, pre.name) == ("RGB", (116.676, 112.514, 104.051), "mine-bgr-rgb")
    with pytest.raises(InputError, match="value range 0-1, but the Caffe network takes 0-255"):
        read_caffe(proto, caffemodel, preprocess=dataclasses.replace(bgr_spec, value_range="0-1"), rgb_input=True)


def test_mean_mode_image_needs_a_mean_file(tiny):
    proto, caffemodel, _ = tiny["layer"]
    with pytest.raises(InputError, match=r"tiny\.prototxt: mean mode 'image' needs a mean image.*--mean-file"):
        read_caffe(proto, caffemodel, mean_mode="image")


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
        'layer { name: "norm3" type: "LRN" bottom: "pool3" top: "norm3" lrn_param { local_size: 5 norm_region: WITHIN_CHANNEL } }\n'
        'layer { name: "sig" type: "Sigmoid" bottom: "norm3" top: "sig" }\nlayer { name: "fc6"')
    text = text.replace("num_output: 5 pad: 1", "num_output: 5 axis: 2 pad: 1")
    proto = tmp_path / "x.prototxt"
    proto.write_text(text)
    with pytest.raises(UnsupportedError) as err:
        read_prototxt(proto)
    msg = str(err.value)
    assert "3 unsupported" in msg and "norm3 (LRN: WITHIN_CHANNEL" in msg and "sig (Sigmoid)" in msg
    assert "conv2_1 (Convolution: axis 2)" in msg


def test_unpadded_pool_with_stride_over_kernel_is_refused(tmp_path):
    """Without padding Caffe keeps a ceil-rounded last window that starts past the input (an
    empty window; PyTorch and the IR drop it): the shapes would disagree, so it is refused."""
    proto = tmp_path / "x.prototxt"
    proto.write_text(tiny_prototxt((("MAX", 2, 2, 0), ("MAX", 2, 2, 0), ("MAX", 1, 3, 0))))  # 5×7 map
    with pytest.raises(UnsupportedError, match=r"x\.prototxt: layer pool3: pooling kernel \(1, 1\) stride \(3, 3\) "
                                               r"without pad on a \(2, 5, 7\) map"):
        read_prototxt(proto)
    proto.write_text(tiny_prototxt((("MAX", 2, 2, 0), ("MAX", 2, 2, 0), ("MAX", 2, 3, 1))))  # padded: as PyTorch
    assert infer_shapes(read_prototxt(proto).graph)["pool3"] == (2, 2, 3)  # the window past the pad is dropped


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


def test_a_caffemodel_that_changes_while_it_is_read_is_refused(tiny, tmp_path, monkeypatch):
    """The weights are views of the mapped file and its hash was taken first: a file rewritten
    meanwhile (a download still running) would give weights the recorded hash does not describe."""
    import os
    import shutil

    from crossmodal.readers import caffe_wire
    proto, caffemodel, _ = tiny["layer"]
    growing = shutil.copy(caffemodel, tmp_path / "growing.caffemodel")
    decode = caffe_wire.decode_caffemodel

    def decode_while_written(buf):
        out = decode(buf)
        with open(growing, "ab") as f:  # as a download appends its next chunk
            f.write(b"\0" * 16)
        os.utime(growing, ns=(0, 0))
        return out
    monkeypatch.setattr(caffe_wire, "decode_caffemodel", decode_while_written)
    with pytest.raises(InputError, match="changed while it was being read"):
        read_caffe(proto, growing)


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
    assert_nothing_written(out)


def assert_nothing_written(out: Path) -> None:
    """A failed convert leaves no file (the folder itself may be removed again)."""
    assert not out.exists() or list(out.iterdir()) == [], sorted(p.name for p in out.iterdir())


# --- through the CLI ------------------------------------------------------------------------------
def cli(*args):
    from click.testing import CliRunner

    from crossmodal.cli import main
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_converts_a_caffe_net_to_ir_keras_and_onnx(tiny, tmp_path, batch):
    import onnxruntime as ort
    proto, caffemodel, _ = tiny["layer"]
    out = tmp_path / "out"
    result = cli("convert", proto, "--caffemodel", caffemodel, "--out-dir", out, "-q")
    assert result.exit_code == 0, result.output
    assert "input 3×20×28 BGR 0-255 (preprocess: caffe)" in result.stdout
    assert result.stderr.startswith("note: no labels given") and result.stderr.count("\n") == 1  # -q: only that
    assert {"model.json", "weights.h5", "model.keras", "model.weights.h5", "model.onnx"} <= {
        p.name for p in out.iterdir()}
    config = json.loads(zipfile.ZipFile(out / "model.keras").read("config.json"))
    names = [l["config"]["name"] for l in config["config"]["layers"]]
    assert names == ["input", "block1_conv1", "block1_pool", "block2_conv1", "block2_pool", "block3_conv1",
                     "block3_pool", "flatten", "fc1", "fc2", "predictions"]
    graph = json.loads((out / "model.json").read_text())
    assert graph["provenance"]["source_format"] == "caffe" and graph["preprocess"]["channel_order"] == "BGR"
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    want = reference.run(read_caffe(proto, caffemodel), batch)["fc8a"]
    assert rel_err(sess.run(["logits"], {"input": batch})[0], want) <= 1e-5


def _bad_cli_case(case: str, tiny, tmp_path: Path) -> tuple[list, str]:
    """(convert arguments, message pattern) for one kind of bad Caffe input."""
    proto, caffemodel, _ = tiny["layer"]
    bad = tmp_path / "bad.prototxt"
    if case == "syntax":
        bad.write_text(tiny_prototxt().replace("num_output: 5", "num_outptu: 5"))
        return [bad, "--caffemodel", caffemodel], r"bad\.prototxt: line \d+ column \d+: .*num_outptu"
    if case == "shapes":
        model = tmp_path / "bad.caffemodel"
        write_caffemodel(tiny_prototxt(), model, {**tiny_shapes(), "conv2_1": [(5, 3, 3, 3), (5,)]})
        return ([proto, "--caffemodel", model],
                r"bad\.caffemodel: does not fit tiny\.prototxt: conv2_1 weight is 5x3x3x3, the prototxt needs 5x4x3x3")
    if case == "unsupported":
        bad.write_text(tiny_prototxt().replace(
            'layer { name: "fc6"',
            'layer { name: "norm3" type: "LRN" bottom: "pool3" top: "norm3" lrn_param { local_size: 5 norm_region: WITHIN_CHANNEL } }\n'
            'layer { name: "sig" type: "Sigmoid" bottom: "norm3" top: "sig" }\nlayer { name: "fc6"')
            .replace("num_output: 5 pad: 1", "num_output: 5 axis: 2 pad: 1"))
        return ([bad, "--caffemodel", caffemodel],
                r"bad\.prototxt: 3 unsupported Caffe layer\(s\): conv2_1 \(Convolution: axis 2\), norm3 \(LRN: "
                r"WITHIN_CHANNEL normalisation \(only ACROSS_CHANNELS is supported\)\), sig \(Sigmoid\)")
    if case == "rgb-preprocess":
        return ([proto, "--caffemodel", caffemodel, "--preprocess", "places365"],
                r"tiny\.prototxt: preprocessing 'places365' does not fit this Caffe network: channel order RGB")
    assert case == "mean-image-without-file"
    return [proto, "--caffemodel", caffemodel, "--mean-mode", "image"], r"mean mode 'image' needs a mean image"


@pytest.mark.parametrize("case", ["syntax", "shapes", "unsupported", "rgb-preprocess", "mean-image-without-file"])
def test_cli_bad_caffe_input_is_one_line_exit_2_and_no_files(tiny, tmp_path, case):
    import re
    args, pattern = _bad_cli_case(case, tiny, tmp_path)
    out = tmp_path / "out"
    result = cli("convert", *args, "--out-dir", out, "-q")
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and re.search(pattern, lines[0]), result.stderr
    assert result.stdout == ""
    assert_nothing_written(out)


@pytest.mark.parametrize("rgb", [False, True], ids=["bgr", "rgb-input"])
def test_cli_verify_takes_the_caffemodel_as_the_reference(tiny, tmp_path, rgb):
    proto, caffemodel, _ = tiny["layers"]
    out = tmp_path / "model"
    result = cli("convert", proto, "--caffemodel", caffemodel, "--out-dir", out, "--to", "ir,onnx", "-q",
                 *(["--rgb-input"] if rgb else []))
    assert result.exit_code == 0, result.output
    assert ("RGB 0-255 (preprocess: caffe-rgb)" if rgb else "BGR 0-255 (preprocess: caffe)") in result.stdout
    result = cli("verify", out, "--source", caffemodel, "--prototxt", proto, "--engines", "ir,onnx",
                 "--random", "2", "-q")
    assert result.exit_code == 0, result.output


def test_real_hybrid1365_labels_name_a_converted_1365_class_net(tmp_path):
    from crossmodal.ir.store import load_ir
    from crossmodal.convert.pipeline import convert
    labels = places_file("categories_hybrid1365.txt")
    assert read_prototxt(places_file("deploy_vgg16_hybrid1365.prototxt")).graph.num_classes == 1365
    text = tiny_prototxt().replace("num_output: 10 }", "num_output: 1365 }")  # the hybrid classifier width
    proto, caffemodel = tmp_path / "hybrid.prototxt", tmp_path / "hybrid.caffemodel"
    proto.write_text(text)
    write_caffemodel(text, caffemodel, {**tiny_shapes(), "fc8a": [(1365, 16), (1365,)]})
    convert(proto, tmp_path / "out", caffemodel=caffemodel, labels=labels, targets=["ir"])
    names = load_ir(tmp_path / "out").graph.labels.names
    assert len(names) == 1365 and names[0] == "n01440764 tench, Tinca tinca" and names[1000] == "/a/airfield"
    assert names[2] == "n01484850 great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias"


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
    net.load_state_dict({keys[k]: torch.from_numpy(np.array(v)) for k, v in model.weights.items() if k in keys})
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
def test_full_vgg16_legacy_encoding_converts_to_the_same_model(full, tmp_path):
    import onnxruntime as ort

    from crossmodal.convert.pipeline import convert
    proto, _ = full
    legacy = tmp_path / "legacy.caffemodel"
    write_caffemodel(proto.read_text(), legacy, vgg16_shapes(), encoding="layers", seed=7, keep=False)
    result = convert(proto, tmp_path / "out", caffemodel=legacy, targets=["ir", "onnx"])
    model = result.model
    assert model.graph.provenance.reader.endswith("(layers encoding)")
    assert model.weights["fc6.weight"].shape == (4096, 25088)
    assert_same_as_written(model.weights)
    paths = {a.kind: a.path for a in result.artifacts}
    assert {"ir-graph", "ir-weights", "onnx"} <= set(paths)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32) * 50
    sess = ort.InferenceSession(paths["onnx"], providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"input": x})[0]
    del sess
    assert rel_err(got, reference.run(model, x, ["fc8a"], dtype=np.float32)["fc8a"]) <= 1e-5


def test_caffe_path_mistakes_get_a_line_that_says_what_to_give(tmp_path):
    """A .caffemodel as WEIGHTS, an image or a broken file as --mean-file: the one line says what was
    wrong and what to give; a .npy mean (3×H×W, BGR) is read as the binaryproto is."""
    from click.testing import CliRunner
    from PIL import Image

    from crossmodal.cli import main
    from crossmodal.errors import InputError
    from crossmodal.readers.caffe_preprocess import read_mean_file
    cm = tmp_path / "w.caffemodel"
    cm.write_bytes(b"\x0a\x03abc")
    r = CliRunner().invoke(main, ["convert", str(cm), "--out-dir", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 2 and "give the network's deploy prototxt as WEIGHTS and this file with --caffemodel" \
        in r.output and r.output.count("\n") == 1
    jpg = tmp_path / "mean.jpg"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(jpg)
    with pytest.raises(InputError, match="is an image, not a mean file: --mean-file takes a Caffe mean image"):
        read_mean_file(jpg)
    npy = tmp_path / "mean.npy"
    np.save(npy, np.arange(3 * 5 * 6, dtype=np.float32).reshape(3, 5, 6))
    assert read_mean_file(npy).shape == (3, 5, 6)
    np.save(npy, np.zeros((5, 6)))
    with pytest.raises(InputError, match="expected 1×3×H×W"):
        read_mean_file(npy)
