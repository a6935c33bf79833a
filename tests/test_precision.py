"""Reduced precision: the fp16 ONNX cache, the fp16/bf16 engines and backends, the parity gate."""
from __future__ import annotations

import json
import os
import shutil
import stat

from pathlib import Path

import numpy as np
import pytest

from crossmodal.runtime import precision as P
from crossmodal.errors import InputError


@pytest.fixture
def model_dir(tmp_path, tiny_converted):
    """A private copy of the tiny converted model (the fp16 model is written into it)."""
    out = tmp_path / "model"
    shutil.copytree(_folder(tiny_converted), out)
    return out


def _folder(converted):
    from pathlib import Path
    return Path(converted.artifacts[0].path).parent


def _onnx_inputs(path):
    import onnx
    proto = onnx.load(str(path))
    init_types = {onnx.TensorProto.DataType.Name(t.data_type) for t in proto.graph.initializer}
    io = {v.name: onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)
          for v in [*proto.graph.input, *proto.graph.output]}
    meta = {p.key: p.value for p in proto.metadata_props}
    return init_types, io, meta


def test_check_precision_and_gate_arithmetic():
    assert P.check_precision("FP16") == "fp16" and P.check_precision("bfloat16") == "bf16"
    with pytest.raises(InputError, match="unknown precision"):
        P.check_precision("fp8")
    # agreement ≥ 99 %: floor(1 % of n) disagreements allowed
    assert [P.reduced_gate(n) for n in (2, 99, 100, 250, 1000)] == [0, 0, 1, 2, 10]
    assert P.unsupported("onnx", "bf16") and "fp16" in P.unsupported("onnx", "bf16")
    assert P.unsupported("onnx", "fp16") is None and P.unsupported("torch", "bf16") is None
    assert P.unsupported("ir", "fp16") and P.unsupported("ir", "fp32") is None


def test_fp16_model_is_built_once_beside_fp32_and_keyed_by_its_fingerprint(model_dir):
    path = P.fp16_onnx(model_dir)
    assert path == model_dir / "model.fp16.onnx"
    inits, io, meta = _onnx_inputs(path)
    assert inits == {"FLOAT16"}                                  # weights halved
    assert set(io.values()) == {"FLOAT"}                          # fp32 input and outputs kept
    sidecar = json.loads((model_dir / "model.fp16.onnx.json").read_text())
    from crossmodal.io.hashing import file_sha256
    assert sidecar["key"]["source_sha256"] == file_sha256(model_dir / "model.onnx")
    from crossmodal.ir.graph import IRModel
    from crossmodal.ir.store import load_ir
    assert sidecar["key"]["ir_fingerprint"] == load_ir(model_dir).fingerprint()
    assert meta["crossmodal.fp16_key"] == sidecar["key_sha256"]
    assert meta["crossmodal.ir_fingerprint"] == IRModel(load_ir(model_dir).graph, {}).fingerprint()

    stamp = path.stat().st_mtime_ns
    assert P.fp16_onnx(model_dir) == path and path.stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert not list(model_dir.glob(".*tmp*"))                                   # no temporary left


def test_a_cached_fp16_model_edited_after_it_was_made_is_rebuilt_not_trusted(model_dir):
    """The cache key names the fp32 source; the cached file's own SHA-256 is checked before reuse,
    so a damaged or replaced model.fp16.onnx (its key still valid) is remade."""
    import onnx

    path = P.fp16_onnx(model_dir)
    good = path.read_bytes()
    proto = onnx.load(str(path))
    w = next(t for t in proto.graph.initializer if t.name == "fc8.bias")
    arr = onnx.numpy_helper.to_array(w).copy()
    arr[0] += np.float16(5.0)
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    onnx.save(proto, str(path))  # same key in the sidecar, other weights
    notes = []
    assert P.fp16_onnx(model_dir, log=notes.append) == path
    assert any("SHA-256 differs" in n for n in notes) and path.read_bytes() == good


def test_fp16_model_is_rebuilt_when_the_fp32_model_changes(model_dir):
    import onnx

    path = P.fp16_onnx(model_dir)
    old_key = P.cached_fp16_key(path)
    proto = onnx.load(str(model_dir / "model.onnx"))
    w = next(t for t in proto.graph.initializer if t.name == "fc8.bias")
    arr = onnx.numpy_helper.to_array(w).copy()
    arr[0] += 7.0  # a re-converted fp32 model: another fc8 bias
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    onnx.save(proto, str(model_dir / "model.onnx"))

    P.fp16_onnx(model_dir)
    assert P.cached_fp16_key(path) != old_key
    rebuilt = onnx.load(str(path))
    bias = next(t for t in rebuilt.graph.initializer if t.name == "fc8.bias")
    assert onnx.numpy_helper.to_array(bias)[0] == np.float16(arr[0])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_fp16_model_goes_to_the_cache_when_the_model_folder_is_read_only(model_dir, tmp_path):
    os.chmod(model_dir, stat.S_IRUSR | stat.S_IXUSR)
    try:
        path = P.fp16_onnx(model_dir, cache_dir=tmp_path / "cache")
    finally:
        os.chmod(model_dir, stat.S_IRWXU)
    assert path.parent.parent == tmp_path / "cache" / "fp16" and path.is_file()


def test_fp16_location_read_only_falls_back_to_cache(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(P, "_writable", lambda folder: False)
    path = P.fp16_onnx(model_dir, cache_dir=tmp_path / "cache")
    assert path.is_relative_to(tmp_path / "cache" / "fp16") and path.is_file()
    assert not (model_dir / "model.fp16.onnx").exists()


def test_keras_mixed_policy_keeps_weights_and_computes_in_half(tiny_converted):
    import keras

    kmodel = keras.saving.load_model(_folder(tiny_converted) / "model.keras", compile=False)
    half = P.keras_with_precision(kmodel, "fp16")
    conv = next(l for l in half.layers if l.__class__.__name__ == "Conv2D")
    assert conv.compute_dtype == "float16" and conv.variable_dtype == "float32"
    for a, b in zip(kmodel.get_weights(), half.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert P.keras_with_precision(kmodel, "fp32") is kmodel


@pytest.mark.parametrize("backend,precision", [("onnx", "fp16"), ("torch", "fp16"), ("torch", "bf16"),
                                               ("keras", "fp16")])
def test_backends_at_reduced_precision_return_float32_close_to_fp32(model_dir, backend, precision):
    from crossmodal.runtime.engine import open_engine

    x = np.random.default_rng(0).standard_normal((3, 3, 20, 28)).astype(np.float32)
    layers = ["logits", "fc7", "pool2"]  # pool2: not an output of the file, added (through a cast at fp16)
    with open_engine("onnx", model_dir, layers, device="cpu") as ref:
        want = ref.run(x)
    with open_engine(backend, model_dir, layers, device="cpu", precision=precision) as b:
        got = b.run(x)
        info = b.describe()
    assert info["precision"].startswith(precision)
    limit = 1e-2 if precision == "fp16" else 5e-2  # bf16 keeps 8 bits of mantissa
    for name in layers:
        assert got[name].dtype == np.float32 and got[name].shape == want[name].shape
        assert np.abs(got[name] - want[name]).max() / np.abs(want[name]).max() < limit
        assert not np.array_equal(got[name], want[name])  # really computed at reduced precision
    if backend == "onnx":
        assert info["model_file"] == "model.fp16.onnx" and info["providers"][-1] == "CPUExecutionProvider"


def test_onnx_backend_refuses_bf16_with_the_reason(model_dir):
    from crossmodal.runtime.engine import open_engine
    with pytest.raises(InputError, match="bf16"):
        open_engine("onnx", model_dir, ["logits"], device="cpu", precision="bf16")


def test_reduced_precision_features_have_their_own_cache(model_dir, tmp_path):
    from crossmodal.data.datasets import Dataset, ImageRecord
    from crossmodal.evaluate.features import extract_features
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(imgs / f"{i}.jpg")
    ds = Dataset(name="t", root=imgs, categories=["a"],
                 records=[ImageRecord(imgs / f"{i}.jpg", 0, "a") for i in range(3)])
    full = extract_features(model_dir, ds, "onnx", ["logits"], device="cpu", cache_dir=tmp_path / "c")
    half = extract_features(model_dir, ds, "onnx", ["logits"], device="cpu", cache_dir=tmp_path / "c",
                            precision="fp16")
    assert full.cache_path != half.cache_path and half.stats["computed"] == 3
    assert half.backend["precision"] == "fp16"
    assert np.abs(half["logits"] - full["logits"]).max() / np.abs(full["logits"]).max() < 1e-2
    again = extract_features(model_dir, ds, "onnx", ["logits"], device="cpu", cache_dir=tmp_path / "c")
    assert again.stats["computed"] == 0 and again.cache_path == full.cache_path


# --------------------------------------------------------------------------- the parity gate
def test_fp16_gate_passes_for_a_sane_model(model_dir, tiny_ckpt):
    from crossmodal.verify.job import run_verify
    from crossmodal.verify.report import console, markdown

    report = run_verify(model_dir, source=tiny_ckpt[0], random=6, seed=2, precision="fp16",
                        engines=("torch", "ir", "keras", "onnx"))
    assert report.passed, console(report)
    assert report.tolerance == 1e-2 and report.max_top1_disagreements == 0  # 6 inputs: floor(6 %) = 0
    assert set(report.comparisons) == {"torch", "keras", "onnx"} and "ir" in report.skipped
    data = report.to_json()
    assert data["precision"] == "fp16" and data["engines"]["onnx"]["model_file"] == "model.fp16.onnx"
    for engine, rows in data["error_growth"].items():
        assert [r["layer"] for r in rows] == [l for l in report.layers if l in report.comparisons[engine]]
        assert all(0 < r["rel"] < 1e-2 for r in rows)  # fp16 rounding, not zero, not a breach
    md = markdown(report)
    assert "## Where the error grows" in md and "Reduced-precision gate (fp16)" in md


def test_fp16_gate_fails_on_an_injected_fault_and_shows_where_the_error_grows(model_dir, tiny_ckpt):
    import onnx

    from crossmodal.verify.job import run_verify

    path = P.fp16_onnx(model_dir)
    proto = onnx.load(str(path))
    w = next(t for t in proto.graph.initializer if t.name == "conv2_1.weight")
    arr = onnx.numpy_helper.to_array(w) * np.float16(1.05)  # a 5 % fault in one fp16 layer
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    onnx.save(proto, str(path))
    from crossmodal.io.hashing import file_sha256
    sidecar = Path(f"{path}.json")  # as if the converter itself had made the faulty model: the cache trusts it
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "sha256": file_sha256(path)}))

    report = run_verify(model_dir, source=tiny_ckpt[0], random=6, seed=2, precision="fp16",
                        engines=("torch", "onnx"))
    assert not report.passed
    gates = {(g["engine"], g["check"]): g["passed"] for g in report.gates()}
    assert gates[("torch", "logits max|Δ|/max|ref|")] and not gates[("onnx", "logits max|Δ|/max|ref|")]
    assert report.first_divergence()["onnx"] == "conv2_1"
    growth = {r["layer"]: r["growth"] for r in report.error_growth()["onnx"]}
    assert max(growth, key=lambda l: growth[l] or 0) == "conv2_1" and growth["conv2_1"] > 10


def test_bf16_verify_leaves_onnx_out_with_the_reason(model_dir):
    from crossmodal.verify.job import run_verify
    report = run_verify(model_dir, engines=("torch", "onnx"), random=2, precision="bf16")
    assert "onnx" in report.skipped and "bf16" in report.skipped["onnx"]
    assert list(report.comparisons) == ["torch"]


def test_verify_cli_precision_option(model_dir, tiny_ckpt, tmp_path):
    from click.testing import CliRunner

    from crossmodal.cli import main

    res = CliRunner().invoke(main, ["verify", str(model_dir), "--source", str(tiny_ckpt[0]), "--engines", "onnx",
                                    "--precision", "fp16", "--random", "3", "-q",
                                    "--report", str(tmp_path / "v.json")])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["precision"] == "fp16" and data["tolerance"]["rel"] == 1e-2
    assert data["engines"]["onnx"]["providers"][-1] == "CPUExecutionProvider"
