"""``verify`` catches real conversion faults, each injected into a tiny model, and gates CI."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from crossmodal.cli import main
from crossmodal.convert.verify import LayerStats, run_verify

SIZE = (21, 29)  # odd, so that ceil and floor pooling differ at pool1 (10×14 vs 11×15)


@pytest.fixture(scope="module")
def odd_model(tmp_path_factory):
    """A tiny VGG taking 3×21×29, converted to every target: (checkpoint, model dir)."""
    from crossmodal.convert.ir import Preprocess
    from crossmodal.convert.pipeline import convert
    from crossmodal.models.synthetic import write_checkpoint
    from crossmodal.models.vgg import create_spec
    root = tmp_path_factory.mktemp("odd")
    spec = create_spec("vgg_tiny", input_shape=(3, *SIZE))
    write_checkpoint(spec, root / "odd.pth", seed=11)
    convert(root / "odd.pth", root / "model", input_size=SIZE,
            preprocess=Preprocess(resize=SIZE, crop=SIZE, name="tiny-odd"))
    return root / "odd.pth", root / "model"


@pytest.fixture
def model_copy(odd_model, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(odd_model[1], dst)
    return odd_model[0], dst


def _edit_onnx(path, edit):
    import onnx
    from onnx import numpy_helper
    proto = onnx.load(str(path))
    edit(proto, numpy_helper)
    onnx.save(proto, str(path))


def _edit_keras(path, layer, edit):
    import keras
    model = keras.saving.load_model(path, safe_mode=True)
    weights = model.get_layer(layer).get_weights()
    model.get_layer(layer).set_weights(edit(weights))
    model.save(path)


def _initializer(proto, name):
    return next(t for t in proto.graph.initializer if t.name == name)


def _verify(model_dir, source, **kw):
    return run_verify(model_dir, source=source, random=3, seed=1, **kw)


def test_a_correct_conversion_passes_every_engine(model_copy):
    source, model_dir = model_copy
    report = _verify(model_dir, source)
    assert report.passed, report.to_json()["gates"]
    assert set(report.comparisons) == {"ir", "keras", "onnx"} and report.reference.startswith("torch")
    assert all(v is None for v in report.first_divergence().values())
    assert report.comparisons["onnx"]["conv1_1"].rel < 1e-5
    assert "conv1_1" not in report.comparisons["keras"]  # fused into block1_conv1 with its ReLU


def test_fc6_left_in_chw_order_fails_at_fc6(model_copy):
    source, model_dir = model_copy
    _edit_keras(model_dir / "model.keras", "fc1", lambda w: [
        # undo the CHW→HWC row permutation: the classic converter bug
        __import__("crossmodal.convert.layouts", fromlist=["x"]).dense_hwc_rows_to_chw(w[0].T, (3, 5, 7)).T, w[1]])
    report = _verify(model_dir, source, engines=["keras"])
    assert not report.passed
    assert report.first_divergence() == {"keras": "relu6"}
    assert report.comparisons["keras"]["flatten"].rel < 1e-5


def test_conv_kernel_transposed_h_w_fails_at_that_conv(model_copy):
    source, model_dir = model_copy

    def edit(proto, nh):
        t = _initializer(proto, "conv2_1.weight")
        t.CopyFrom(nh.from_array(np.ascontiguousarray(nh.to_array(t).transpose(0, 1, 3, 2)), t.name))
    _edit_onnx(model_dir / "model.onnx", edit)
    report = _verify(model_dir, source, engines=["onnx"])
    assert not report.passed and report.first_divergence() == {"onnx": "conv2_1"}


def test_rgb_bgr_swap_fails_at_the_first_layer(model_copy):
    source, model_dir = model_copy
    _edit_keras(model_dir / "model.keras", "block1_conv1", lambda w: [w[0][:, :, ::-1, :], w[1]])
    report = _verify(model_dir, source, engines=["keras"])
    assert not report.passed and report.first_divergence() == {"keras": "relu1_1"}


def test_a_dropped_bias_fails_at_its_layer(model_copy):
    source, model_dir = model_copy

    def edit(proto, nh):
        t = _initializer(proto, "fc7.bias")
        t.CopyFrom(nh.from_array(np.zeros_like(nh.to_array(t)), t.name))
    _edit_onnx(model_dir / "model.onnx", edit)
    report = _verify(model_dir, source, engines=["onnx"])
    assert not report.passed and report.first_divergence() == {"onnx": "fc7"}
    assert report.comparisons["onnx"]["relu6"].rel < 1e-5


def test_wrong_pooling_rounding_fails_at_that_pool(model_copy):
    source, model_dir = model_copy

    def edit(proto, nh):
        node = next(n for n in proto.graph.node if n.name == "pool1")
        next(a for a in node.attribute if a.name == "ceil_mode").i = 1
    _edit_onnx(model_dir / "model.onnx", edit)
    report = _verify(model_dir, source, engines=["onnx"])
    assert not report.passed and report.first_divergence() == {"onnx": "pool1"}
    assert "11, 15" in report.comparisons["onnx"]["pool1"].to_dict()["shape_mismatch"]


def test_without_source_the_ir_evaluator_is_the_reference(model_copy):
    _, model_dir = model_copy
    report = run_verify(model_dir, engines=["torch", "ir", "onnx"], random=2)
    assert report.passed and report.reference.startswith("ir")
    assert set(report.comparisons) == {"torch", "onnx"}


def test_cli_reports_and_exit_codes(model_copy, tmp_path):
    source, model_dir = model_copy
    runner = CliRunner()
    ok = runner.invoke(main, ["verify", str(model_dir), "--source", str(source), "--random", "2", "-q",
                              "--report", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")])
    assert ok.exit_code == 0, ok.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["passed"] is True and data["classifier"]["onnx"]["argmax_flips"] == 0
    assert set(data["comparisons"]["onnx"]["fc6"]) >= {"max_abs", "rel", "mean_abs", "cosine_min"}
    assert data["environment"]["seed"] == 0 and "onnxruntime" in data["environment"]
    md = (tmp_path / "r.md").read_text()
    assert "PASSED" in md and "| relu7 (fc7) |" in md and "**" in md

    def edit(proto, nh):
        t = _initializer(proto, "fc8.bias")
        t.CopyFrom(nh.from_array(nh.to_array(t) + 5, t.name))
    _edit_onnx(model_dir / "model.onnx", edit)
    bad = runner.invoke(main, ["verify", str(model_dir), "--source", str(source), "--json", "-q"])
    assert bad.exit_code == 1
    assert json.loads(bad.output)["first_divergence"]["onnx"] == "fc8"


def test_bad_input_exits_2_with_one_line(model_copy, tmp_path, tiny_ckpt):
    source, model_dir = model_copy
    runner = CliRunner()
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_bytes(b"not a jpeg")
    cases = {
        "no IR": ([str(tmp_path / "empty")], "missing model.json"),
        "other checkpoint": ([str(model_dir), "--source", str(tiny_ckpt[0])], "is not the checkpoint this IR"),
        "no images": ([str(model_dir), "--images", str(tmp_path / "empty")], "no JPEG/PNG"),
        "unreadable images": ([str(model_dir), "--images", str(tmp_path / "junk")], "could be read"),
        "unknown engine": ([str(model_dir), "--engines", "tflite"], "unknown engine"),
    }
    for name, (args, message) in cases.items():
        result = runner.invoke(main, ["verify", *args, "-q"])
        assert result.exit_code == 2, (name, result.output)
        assert message in result.output and result.output.count("\n") == 1, (name, result.output)
    (model_dir / "model.onnx").write_bytes(b"\x08\x01garbage")
    result = runner.invoke(main, ["verify", str(model_dir), "--engines", "onnx", "-q"])
    assert result.exit_code == 2 and "model.onnx" in result.output


def test_real_photos_can_be_the_inputs(model_copy):
    from helpers import shared_file
    images = shared_file("images")
    source, model_dir = model_copy
    report = _verify(model_dir, source, images=images, engines=["onnx", "keras"])
    assert report.passed and report.inputs["count"] == 2


def test_layer_stats_flag_shape_mismatch_and_cosine():
    s = LayerStats()
    a = np.ones((2, 4))
    s.update(a, a * 1.5)
    assert s.rel == pytest.approx(0.5) and s.cosine_min == pytest.approx(1.0)
    s.update(a, -a)
    assert s.cosine_min == pytest.approx(-1.0)
    s.update(a, np.ones((2, 5)))
    assert s.rel == float("inf") and s.to_dict()["rel"] is None


def test_tf2onnx_is_an_independent_cross_check(model_copy):
    pytest.importorskip("tf2onnx")
    _, model_dir = model_copy
    report = run_verify(model_dir, engines=["ir", "tf2onnx"], random=2)
    assert report.passed and "tf2onnx" in report.comparisons
    assert report.comparisons["tf2onnx"]["relu7"].rel < 1e-5  # fc7, via TensorFlow's own graph
    assert "conv1_1" not in report.comparisons["tf2onnx"]  # NHWC inside: only flat layers compared


def test_a_failing_tf2onnx_is_reported_and_the_rest_still_runs(model_copy, monkeypatch):
    from crossmodal.convert import engines

    def broken(*args, **kwargs):
        raise MemoryError("tf2onnx needed more memory than there is")
    monkeypatch.setattr(engines, "tf2onnx_engine", broken)
    _, model_dir = model_copy
    report = run_verify(model_dir, engines=["ir", "onnx", "tf2onnx"], random=1)
    assert report.passed and "onnx" in report.comparisons
    assert report.errors["tf2onnx"].startswith("MemoryError")
