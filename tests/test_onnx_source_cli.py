"""``crossmodal convert model.onnx`` and ``verify --source model.onnx`` through the CLI: bad input is
one line, exit 2, nothing written; the preprocessing options and their default note; the feature
layer; ONNX Runtime on the source file as verify's reference."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from crossmodal.cli import main
from onnx_sources import export, plain_module


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _graph(nodes, inits, *, dims=("N", 3, 16, 16), opset=13, name="bad"):
    import onnx
    from onnx import TensorProto, helper
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.acme", 1)])
    model.ir_version = 8
    return model.SerializeToString(), onnx


def _one_line_exit_2(result, out):
    assert result.exit_code == 2, result.output
    lines = [l for l in result.stderr.splitlines() if l.startswith("Error: ")]
    others = [l for l in result.stderr.splitlines() if not l.startswith(("Error: ", "· "))]  # progress lines aside
    assert len(lines) == 1 and not others, result.stderr
    assert not out.exists()
    return lines[0]


@pytest.fixture(scope="module")
def resnet_onnx(tmp_path_factory):
    module, shape = plain_module("resnet")
    return export(module, shape, tmp_path_factory.mktemp("onnx") / "resnet.onnx")


def test_every_unsupported_op_is_named_in_one_line(tmp_path):
    from onnx import helper, numpy_helper
    w = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w")
    wt = numpy_helper.from_array(np.zeros((4, 4, 2, 2), np.float32), "wt")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("ConvTranspose", ["c", "wt"], ["u"], name="up", strides=[2, 2]),
             helper.make_node("HardSwish", ["u"], ["h"], name="swish"),
             helper.make_node("GlobalMaxPool", ["h"], ["g"], name="gmp"),
             helper.make_node("Frobnicate", ["g"], ["y"], name="custom", domain="com.acme")]
    data, _ = _graph(nodes, [w, wt])
    (tmp_path / "m.onnx").write_bytes(data)
    line = _one_line_exit_2(_cli("convert", tmp_path / "m.onnx", "-o", tmp_path / "out"), tmp_path / "out")
    assert "4 unsupported ONNX node(s)" in line
    for part in ("up (ConvTranspose: transposed convolution", "swish (HardSwish)", "gmp (GlobalMaxPool)",
                 "custom (com.acme.Frobnicate)"):
        assert part in line, line


def test_a_dynamic_spatial_size_is_refused_unless_input_size_fixes_it(tmp_path, resnet_onnx):
    import onnx
    model = onnx.load(str(resnet_onnx))
    for i, dim in enumerate(model.graph.input[0].type.tensor_type.shape.dim[2:]):
        dim.dim_param = ("H", "W")[i]
    onnx.save(model, str(tmp_path / "dyn.onnx"))
    line = _one_line_exit_2(_cli("convert", tmp_path / "dyn.onnx", "-o", tmp_path / "out"), tmp_path / "out")
    assert "dynamic spatial size (H×W)" in line and "--input-size" in line and "dyn.onnx" in line
    result = _cli("convert", tmp_path / "dyn.onnx", "-o", tmp_path / "ok", "--input-size", "32", "-q", "--to", "ir")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "ok" / "model.json").read_text())["input"]["shape"] == [3, 32, 32]


@pytest.mark.parametrize("cut", [0.5, 0.05])
def test_a_truncated_file_is_one_line(tmp_path, resnet_onnx, cut):
    data = resnet_onnx.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: int(len(data) * cut)])
    line = _one_line_exit_2(_cli("convert", tmp_path / "cut.onnx", "-o", tmp_path / "out"), tmp_path / "out")
    assert "cut.onnx" in line


def test_an_absurd_tensor_is_refused_before_it_is_read(tmp_path):
    from onnx import TensorProto, helper
    big = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 12, 3, 3])
    data, _ = _graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], [big])
    (tmp_path / "big.onnx").write_bytes(data)
    line = _one_line_exit_2(_cli("convert", tmp_path / "big.onnx", "-o", tmp_path / "out"), tmp_path / "out")
    assert "initializer 'w' has 38,654,705,664 elements" in line


def test_the_default_preprocessing_is_said_and_options_override_it(tmp_path, resnet_onnx):
    result = _cli("convert", resnet_onnx, "-o", tmp_path / "a", "--to", "ir,onnx")
    assert result.exit_code == 0, result.output
    assert "note: the file does not say how images are preprocessed: torchvision's" in result.stderr
    spec = json.loads((tmp_path / "a" / "model.json").read_text())["preprocess"]
    assert spec["name"] == "torchvision" and spec["crop"] == [32, 32]
    result = _cli("convert", resnet_onnx, "-o", tmp_path / "b", "--to", "ir", "--scale", "255",
                  "--channel-order", "BGR", "--mean", "104,117,123", "--std", "1", "--resize", "40x36")
    assert result.exit_code == 0, result.output
    assert "does not say how images" not in result.stderr
    data = json.loads((tmp_path / "b" / "model.json").read_text())
    spec = data["preprocess"]
    assert (spec["value_range"], spec["channel_order"], spec["mean"], spec["std"], spec["resize"], spec["name"]) == \
        ("0-255", "BGR", [104, 117, 123], [1, 1, 1], [40, 36], "custom")
    assert data["input"]["channel_order"] == "BGR" and data["input"]["value_range"] == "0-255"
    # the emitted model.onnx carries its preprocessing: read back, it is the default, said so
    result = _cli("convert", tmp_path / "a" / "model.onnx", "-o", tmp_path / "c", "--to", "ir")
    assert "note: preprocessing 'torchvision' from the model's crossmodal metadata" in result.stderr


def test_options_for_other_sources_are_refused(tmp_path, tiny_ckpt):
    result = _cli("convert", tiny_ckpt[0], "-o", tmp_path / "out", "--mean", "0.5")
    assert result.exit_code == 2 and "go with a source that carries no preprocessing" in result.stderr


def test_the_feature_layer_is_the_last_dense_layers_input_or_the_one_named(tmp_path, resnet_onnx):
    from crossmodal.ir.store import load_graph
    assert _cli("convert", resnet_onnx, "-o", tmp_path / "a", "--to", "ir", "-q").exit_code == 0
    g = load_graph(tmp_path / "a")
    assert g.feature_blob == "features" and g.layer(g.blobs["features"]).kind == "global_avg_pool2d"
    relu = [l.name for l in g.layers if l.kind == "relu"][-1]
    result = _cli("convert", resnet_onnx, "-o", tmp_path / "b", "--to", "ir", "-q", "--feature-layer", relu)
    assert result.exit_code == 0, result.output
    assert load_graph(tmp_path / "b").blobs["features"] == relu
    line = _one_line_exit_2(_cli("convert", resnet_onnx, "-o", tmp_path / "c", "--feature-layer", "nope"),
                            tmp_path / "c")
    assert "--feature-layer 'nope' is no layer" in line


def test_verify_takes_the_onnx_source_as_reference_layer_by_layer(tmp_path, resnet_onnx):
    assert _cli("convert", resnet_onnx, "-o", tmp_path / "m", "-q").exit_code == 0
    result = _cli("verify", tmp_path / "m", "--source", resnet_onnx, "--engines", "torch,ir,onnx",
                  "--json", "-q")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["reference"].startswith("onnx-source (resnet.onnx on ONNX Runtime")
    compared = report["comparisons"]["torch"]
    assert len(compared) >= 8 and all(v["rel"] < 1e-5 for v in compared.values())
    other = tmp_path / "other.onnx"
    module, shape = plain_module("alexnet")
    export(module, shape, other)
    line = _one_line_exit_2(_cli("verify", tmp_path / "m", "--source", other, "-q"), tmp_path / "nothing")
    assert "is not the checkpoint this IR was made from" in line
