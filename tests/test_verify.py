"""``verify`` catches real conversion faults, each injected into a tiny model, and gates CI."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from crossmodal.cli import main
from crossmodal.verify.job import run_verify
from crossmodal.verify.results import LayerStats
from helpers import require_module

SIZE = (21, 29)  # odd, so that ceil and floor pooling differ at pool1 (10×14 vs 11×15)


@pytest.fixture(scope="module")
def odd_model(tmp_path_factory):
    """A tiny VGG taking 3×21×29, converted to every target: (checkpoint, model dir)."""
    from crossmodal.ir.preprocess import Preprocess
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
    assert set(report.comparisons) == {"torch", "ir", "keras", "onnx"}
    assert report.reference.startswith("torch-source")
    assert all(v is None for v in report.first_divergence().values())
    # the IR emitted to torch and the checkpoint in a plain torchvision VGG: same ops, same bits
    assert all(s.max_abs == 0.0 for s in report.comparisons["torch"].values())
    assert {"conv1_1", "relu1_1", "pool1", "flatten", "fc6", "drop7", "prob"} <= set(report.comparisons["torch"])
    assert report.comparisons["onnx"]["conv1_1"].rel < 1e-5
    assert "conv1_1" not in report.comparisons["keras"]  # fused into block1_conv1 with its ReLU


def test_fc6_left_in_chw_order_fails_at_fc6(model_copy):
    source, model_dir = model_copy
    _edit_keras(model_dir / "model.keras", "fc1", lambda w: [
        # undo the CHW→HWC row permutation: the classic converter bug
        __import__("crossmodal.ir.layouts", fromlist=["x"]).dense_hwc_rows_to_chw(w[0].T, (3, 5, 7)).T, w[1]])
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
    # every row of every table has its header's cells (a bare | inside "max|Δ|" would split one)
    cells = lambda row: len(re.split(r"(?<!\\)\|", row)) - 2  # noqa: E731
    tables = [t.splitlines() for t in re.findall(r"(?:^\|.*\n?)+", md, re.M)]
    assert len(tables) >= 4
    for table in tables:
        assert {cells(row) for row in table} == {cells(table[0])}, table

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
    require_module("tf2onnx", "the test extra; verify's optional cross-check")
    _, model_dir = model_copy
    report = run_verify(model_dir, engines=["ir", "tf2onnx"], random=2)
    assert report.passed and "tf2onnx" in report.comparisons
    assert report.comparisons["tf2onnx"]["relu7"].rel < 1e-5  # fc7, via TensorFlow's own graph
    assert "conv1_1" not in report.comparisons["tf2onnx"]  # NHWC inside: only flat layers compared


def test_a_failing_tf2onnx_is_reported_and_the_rest_still_runs(model_copy, monkeypatch):
    from crossmodal.runtime import tf2onnx_engine

    def broken(*args, **kwargs):
        raise MemoryError("tf2onnx needed more memory than there is")
    monkeypatch.setattr(tf2onnx_engine, "Tf2OnnxEngine", broken)
    _, model_dir = model_copy
    report = run_verify(model_dir, engines=["ir", "onnx", "tf2onnx"], random=1)
    assert report.passed and "onnx" in report.comparisons
    assert report.errors["tf2onnx"].startswith("MemoryError")


# --- the reference is independent of the conversion --------------------------------------------
def test_a_reader_fault_fails_against_the_independent_torch_source(odd_model, tmp_path, monkeypatch):
    """A reader that transposes conv2_1 H↔W inside ``to_ir`` is caught, even while it is still
    patched during verify: the source reference never goes through the reader's IR."""
    from crossmodal.ir.preprocess import Preprocess
    from crossmodal.convert.pipeline import convert
    from crossmodal.readers import from_torch
    source = odd_model[0]
    real_to_ir = from_torch.to_ir

    def faulty_to_ir(*args, **kwargs):
        model = real_to_ir(*args, **kwargs)
        model.weights["conv2_1.weight"] = np.ascontiguousarray(model.weights["conv2_1.weight"].transpose(0, 1, 3, 2))
        return model
    monkeypatch.setattr(from_torch, "to_ir", faulty_to_ir)
    convert(source, tmp_path / "model", input_size=SIZE, preprocess=Preprocess(resize=SIZE, crop=SIZE, name="t"))
    report = _verify(tmp_path / "model", source)
    assert not report.passed and report.reference.startswith("torch-source")
    assert report.first_divergence() == {"torch": "conv2_1", "ir": "conv2_1", "onnx": "conv2_1", "keras": "relu2_1"}
    assert report.comparisons["torch"]["pool1"].max_abs == 0.0


def test_only_the_ir_in_torch_against_a_pth_source_is_compared(model_copy):
    source, model_dir = model_copy
    result = CliRunner().invoke(main, ["verify", str(model_dir), "--source", str(source), "--engines", "torch",
                                       "--json", "-q"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data["comparisons"]) == {"torch"} and {g["engine"] for g in data["gates"]} == {"torch"}
    assert len(data["gates"]) == 3 and all(g["passed"] for g in data["gates"])


@pytest.mark.parametrize("layout", ["named", "safetensors", "safetensors-named-pth"])
def test_the_torch_source_reads_every_checkpoint_layout(layout, tmp_path, tiny_spec, tiny_preprocess):
    """Whatever the reader converts, the reference loads: the format is read from the bytes."""
    from crossmodal.convert.pipeline import convert
    from crossmodal.models.synthetic import write_checkpoint
    ckpt = tmp_path / ("tiny.safetensors" if layout == "safetensors" else "tiny.pth")
    write_checkpoint(tiny_spec, ckpt, layout=layout.split("-")[0], seed=4)
    convert(ckpt, tmp_path / "model", targets=["ir", "onnx"], input_size=tiny_spec.input_shape[1:],
            preprocess=tiny_preprocess)
    report = run_verify(tmp_path / "model", engines=["torch", "onnx"], source=ckpt, random=2)
    assert report.passed and report.reference.startswith("torch-source"), report.to_json()["gates"]
    assert report.comparisons["torch"]["fc8"].max_abs == 0.0


def _caffe_model(root, rgb_input=True):
    from caffe_fixtures import tiny_prototxt, tiny_shapes, write_caffemodel
    from crossmodal.convert.pipeline import convert
    proto, caffemodel = root / "tiny.prototxt", root / "tiny.caffemodel"
    if not caffemodel.exists():
        proto.write_text(tiny_prototxt())
        write_caffemodel(tiny_prototxt(), caffemodel, tiny_shapes(), seed=5)
    out = root / f"model-{len(list(root.glob('model-*')))}"
    convert(proto, out, caffemodel=caffemodel, targets=["ir", "onnx"], rgb_input=rgb_input)
    return proto, caffemodel, out


def test_the_rgb_fold_is_checked_against_caffes_own_bgr_network(tmp_path, monkeypatch):
    from crossmodal.readers import from_caffe
    proto, caffemodel, good = _caffe_model(tmp_path)
    report = run_verify(good, engines=("ir", "onnx"), source=caffemodel, prototxt=proto, random=2)
    assert report.passed and report.reference.startswith("caffe-source"), report.to_json()["gates"]
    assert "BGR" in report.engines["caffe-source"]["input"]

    # a fold that does nothing: the reader finds no convolution to reverse
    monkeypatch.setattr(from_caffe, "_rgb_conv", lambda *args, **kwargs: None)
    _, _, unfolded = _caffe_model(tmp_path)
    report = run_verify(unfolded, engines=("ir", "onnx"), source=caffemodel, prototxt=proto, random=2)
    assert not report.passed and report.first_divergence() == {"ir": "conv1_1", "onnx": "conv1_1"}


def test_a_bgr_caffe_conversion_needs_no_channel_reversal(tmp_path):
    proto, caffemodel, bgr = _caffe_model(tmp_path, rgb_input=False)
    report = run_verify(bgr, engines=("ir",), source=caffemodel, prototxt=proto, random=2)
    assert report.passed and report.engines["caffe-source"]["input"] == "BGR, as the IR"
    # OpenCV computes in float32, the IR's evaluator in float64: rounding apart, no more
    assert report.comparisons["ir"]["conv1_1"].rel < 1e-6


# --- non-finite outputs, unobservable gates, nothing to compare --------------------------------
def test_nan_in_an_output_is_an_infinite_error(model_copy):
    source, model_dir = model_copy

    def edit(proto, nh):
        t = _initializer(proto, "fc7.bias")
        b = nh.to_array(t).copy()
        b[0] = np.nan
        t.CopyFrom(nh.from_array(b, t.name))
    _edit_onnx(model_dir / "model.onnx", edit)
    report = _verify(model_dir, source, engines=["onnx"])
    assert not report.passed and report.first_divergence() == {"onnx": "fc7"}
    fc7 = report.comparisons["onnx"]["fc7"]
    assert fc7.rel == float("inf") and fc7.nonfinite == 3 and fc7.cosine_min == -float("inf")
    data = report.to_json()
    json.dumps(data, allow_nan=False)  # JSON gets null, never NaN
    assert data["comparisons"]["onnx"]["fc7"]["nonfinite"] == 3 and data["comparisons"]["onnx"]["fc7"]["rel"] is None


def test_layer_stats_non_finite_values():
    s = LayerStats()
    ref = np.ones((2, 3))
    s.update(ref, ref)
    assert s.rel == 0.0
    out = ref.copy()
    out[1, 2] = np.nan
    s.update(ref, out)
    assert s.rel == float("inf") and s.nonfinite == 1 and s.to_dict()["mean_abs"] is None
    both = LayerStats()
    nan_ref = ref.copy()
    nan_ref[0, 0] = np.nan
    both.update(nan_ref, nan_ref.copy())  # the same NaN on both sides is agreement
    assert both.rel == 0.0 and both.nonfinite == 0
    inf_out = LayerStats()
    inf_out.update(ref, np.where(ref > 0, np.inf, 0))
    assert inf_out.rel == float("inf")


def test_an_engine_that_cannot_observe_the_gated_layers_fails_with_the_reason(model_copy, monkeypatch):
    from crossmodal.runtime import onnx_engine
    from crossmodal.verify.report import console, markdown
    real = onnx_engine.OnnxEngine

    def blind(*args, **kwargs):
        engine = real(*args, **kwargs)
        engine.observable -= {"fc8", "relu7"}
        return engine
    monkeypatch.setattr(onnx_engine, "OnnxEngine", blind)
    source, model_dir = model_copy
    report = _verify(model_dir, source, engines=["onnx"])
    assert not report.passed
    failed = [g for g in report.gates() if not g["passed"]]
    assert {g["check"] for g in failed} == {"logits max|Δ|/max|ref|", "fc7 max|Δ|/max|ref|", "top-1 disagreements"}
    assert all("cannot observe" in g["reason"] for g in failed)
    assert "onnx       FAILS logits max|Δ|/max|ref|: onnx cannot observe fc8 (logits)" in console(report)
    assert "not observed: onnx cannot observe relu7 (fc7)" in markdown(report)


def test_nothing_to_compare_is_a_clear_input_error(model_copy):
    _, model_dir = model_copy
    result = CliRunner().invoke(main, ["verify", str(model_dir), "--engines", "ir", "-q"])
    assert result.exit_code == 2 and "nothing to compare" in result.output and result.output.count("\n") == 1


# --- tf2onnx is optional -------------------------------------------------------------------------
def test_tf2onnx_without_model_keras_is_reported_and_the_rest_still_runs(model_copy):
    _, model_dir = model_copy
    (model_dir / "model.keras").unlink()
    report = run_verify(model_dir, engines=["ir", "onnx", "tf2onnx"], random=1)
    assert report.passed and set(report.comparisons) == {"onnx"}
    assert "missing model.keras" in report.errors["tf2onnx"]


def test_tf2onnx_failing_while_it_runs_is_reported_and_the_rest_still_runs(model_copy, monkeypatch):
    from crossmodal.runtime import tf2onnx_engine
    from crossmodal.runtime.engine import FunctionEngine
    from crossmodal.verify.report import console

    def run(x, layers):
        raise MemoryError("std::bad_alloc")
    monkeypatch.setattr(tf2onnx_engine, "Tf2OnnxEngine", lambda model_dir, graph, outputs, **k: FunctionEngine(
        "tf2onnx", graph, run, {"fc8", "relu7"}, path="model.keras"))
    _, model_dir = model_copy
    report = run_verify(model_dir, engines=["ir", "onnx", "tf2onnx"], random=3, batch_size=2)
    assert report.passed and set(report.comparisons) == {"onnx"} and "tf2onnx" not in report.engines
    assert "MemoryError: std::bad_alloc" in report.errors["tf2onnx"]
    assert "tf2onnx    did not run (optional cross-check)" in console(report)


def test_tf2onnx_output_that_onnx_runtime_cannot_load_is_reported(model_copy, monkeypatch):
    require_module("tf2onnx", "the test extra; verify's optional cross-check")
    from crossmodal.errors import InputError
    from crossmodal.runtime import ort_session

    def refuse(source, *args, **kwargs):
        raise InputError("ONNX Runtime cannot load the model (InvalidGraph)")
    monkeypatch.setattr(ort_session, "open_session", refuse)
    source, model_dir = model_copy
    report = _verify(model_dir, source, engines=["ir", "tf2onnx"])
    assert report.passed and set(report.comparisons) == {"ir"}
    assert "cannot load" in report.errors["tf2onnx"]


# --- unexpected engine errors are bad input, not breaches ----------------------------------------
def test_a_keras_file_of_another_model_is_a_one_line_input_error(model_copy):
    import keras
    _, model_dir = model_copy
    inp = keras.Input((SIZE[0], SIZE[1], 3))
    keras.Model(inp, keras.layers.Dense(2, name="other")(keras.layers.Flatten(name="flat")(inp))).save(
        model_dir / "model.keras")
    result = CliRunner().invoke(main, ["verify", str(model_dir), "--engines", "keras", "-q"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "model.keras: has none of the Keras layers" in result.output


def test_an_engine_crashing_on_the_batch_is_a_one_line_input_error(model_copy, monkeypatch):
    from crossmodal.runtime import onnx_engine
    real = onnx_engine.OnnxEngine

    def crashing(*args, **kwargs):
        engine = real(*args, **kwargs)

        def run(x, layers):
            raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions\nmore")
        engine.run = run
        return engine
    monkeypatch.setattr(onnx_engine, "OnnxEngine", crashing)
    _, model_dir = model_copy
    result = CliRunner().invoke(main, ["verify", str(model_dir), "--engines", "onnx", "-q"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "model.onnx: engine onnx (onnx) failed" in result.output and "RuntimeError" in result.output


# --- options and the recorded environment --------------------------------------------------------
def test_allow_tf32_top1_limit_cpu_and_device_are_reported(model_copy, tmp_path):
    source, model_dir = model_copy
    runner = CliRunner()
    result = runner.invoke(main, ["verify", str(model_dir), "--source", str(source), "--engines", "keras,onnx",
                                  "--allow-tf32", "--max-top1-disagreements", "1", "-q",
                                  "--report", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")])
    assert result.exit_code == 0, result.output
    assert "TF32 ALLOWED" in result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["allow_tf32"] is True and data["tolerance"]["top1_disagreements"] == 1
    assert {g["limit"] for g in data["gates"] if g["check"] == "top-1 disagreements"} == {1}
    assert data["environment"]["cpu"] and data["engines"]["keras"]["tf_device"] == "/CPU:0"
    assert "TF32 ALLOWED" in (tmp_path / "r.md").read_text().split("## Gates")[0]
    plain = run_verify(model_dir, engines=["onnx"], random=1)
    assert plain.to_json()["allow_tf32"] is False


def test_top1_disagreements_can_be_allowed(model_copy):
    source, model_dir = model_copy

    def edit(proto, nh):  # a large bias on one class: the argmax flips, the logits differ
        t = _initializer(proto, "fc8.bias")
        b = nh.to_array(t).copy()
        b[0] += 1e3
        t.CopyFrom(nh.from_array(b, t.name))
    _edit_onnx(model_dir / "model.onnx", edit)
    strict = _verify(model_dir, source, engines=["onnx"])
    flips = strict.classifier["onnx"].n - strict.classifier["onnx"].top1_agree
    assert flips > 0
    loose = _verify(model_dir, source, engines=["onnx"], max_top1_disagreements=flips)
    top1 = [g for g in loose.gates() if g["check"] == "top-1 disagreements"]
    assert top1 == [{"engine": "onnx", "check": "top-1 disagreements", "value": flips, "limit": flips,
                     "passed": True}]


def test_images_and_random_are_mutually_exclusive(model_copy):
    from helpers import shared_file
    _, model_dir = model_copy
    result = CliRunner().invoke(main, ["verify", str(model_dir), "--images", str(shared_file("images")),
                                       "--random", "3"])
    assert result.exit_code == 2 and "mutually exclusive" in result.output
