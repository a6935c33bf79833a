"""ONNX Runtime provider selection: auto, fall-back, TensorRT, provider reporting (fake ORT),
and the CUDA paths themselves where a working GPU is present (skipped with the reason elsewhere)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from crossmodal.runtime.ort_session import CPU, CUDA, TRT, choose_providers, open_session, provider_names
from crossmodal.errors import InputError


# --------------------------------------------------------------------------- choose_providers (pure)
def test_cpu_is_cpu_whatever_is_installed():
    assert choose_providers("cpu", [TRT, CUDA, CPU]) == [CPU]


def test_auto_without_cuda_provider_is_cpu_and_cuda_is_an_error():
    assert choose_providers("auto", [CPU]) == [CPU]
    with pytest.raises(InputError, match="no CUDA execution provider"):
        choose_providers("cuda", [CPU])


def test_cuda_first_tf32_off_unless_asked_and_device_index():
    got = choose_providers("cuda:1", [CUDA, CPU])
    assert provider_names(got) == [CUDA, CPU]
    assert got[0][1] == {"device_id": 1, "use_tf32": 0}
    assert choose_providers("auto", [CUDA, CPU], allow_tf32=True)[0][1]["use_tf32"] == 1


def test_trt_options_fp16_cache_and_profile(tmp_path):
    got = choose_providers("cuda", [TRT, CUDA, CPU], trt=True, precision="fp16", trt_cache=tmp_path / "trt",
                           trt_input="input", trt_shape=(3, 224, 224), max_batch=128)
    assert provider_names(got) == [TRT, CUDA, CPU]
    opts = got[0][1]
    assert opts["trt_fp16_enable"] is True and opts["trt_engine_cache_enable"] is True
    assert opts["trt_engine_cache_path"] == str(tmp_path / "trt") and (tmp_path / "trt").is_dir()
    assert opts["trt_profile_min_shapes"] == "input:1x3x224x224"
    assert opts["trt_profile_max_shapes"] == "input:128x3x224x224"
    assert choose_providers("cuda", [TRT, CUDA, CPU], trt=True)[0][1]["trt_fp16_enable"] is False


def test_trt_needs_a_gpu_and_the_provider():
    with pytest.raises(InputError, match="needs a GPU"):
        choose_providers("cpu", [TRT, CUDA, CPU], trt=True)
    with pytest.raises(InputError, match="no TensorRT"):
        choose_providers("auto", [CUDA, CPU], trt=True)
    with pytest.raises(InputError, match="TensorRT"):
        choose_providers("auto", [CPU], trt=True)


# --------------------------------------------------------------------------- open_session (fake ORT)
class FakeORT:
    """Stands in for onnxruntime: ``available`` providers; ``start`` what a GPU session gets
    ('ok', 'raise', 'cpu-only', 'cuda-only'), ``warm`` whether its first run succeeds."""

    def __init__(self, available, start="ok", warm=True):
        self.available, self.start, self.warm, self.created = available, start, warm, []
        ort = self

        class SessionOptions:
            log_severity_level = 0
            intra_op_num_threads = 0

            def add_session_config_entry(self, *a):
                pass

        class Input:
            name, shape, type = "input", ["N", 3, 4, 4], "tensor(float)"

        class Session:
            def __init__(self, source, opts, providers):
                names = provider_names(providers)
                ort.created.append(names)
                if names != [CPU]:
                    if ort.start == "raise":
                        raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
                    names = {"cpu-only": [CPU], "cuda-only": [CUDA, CPU]}.get(ort.start, names)
                self.providers, self.runs = names, []

            def get_providers(self):
                return self.providers

            def get_inputs(self):
                return [Input()]

            def run(self, outputs, feed):
                self.runs.append({k: v.shape for k, v in feed.items()})
                if self.providers[0] != CPU and not ort.warm:
                    raise RuntimeError("cudaErrorNoKernelImageForDevice")
                return [np.zeros(1)]

        self.SessionOptions, self.InferenceSession = SessionOptions, Session

    def get_available_providers(self):
        return list(self.available)

    def set_default_logger_severity(self, level):
        pass


def test_auto_keeps_cuda_only_after_a_warm_up_succeeded():
    ort = FakeORT([CUDA, CPU])
    sess, info = open_session(b"model", "auto", ort=ort)
    assert info.providers == [CUDA, CPU] and info.on_gpu and info.warm_up and info.fallback is None
    assert sess.runs == [{"input": (1, 3, 4, 4)}]  # one zero image, dynamic batch set to 1


@pytest.mark.parametrize("start,warm,why", [("raise", True, "no CUDA-capable device"),
                                            ("cpu-only", True, "did not start"),
                                            ("ok", False, "cudaErrorNoKernelImageForDevice")])
def test_auto_falls_back_to_cpu_and_says_why(start, warm, why):
    ort = FakeORT([CUDA, CPU], start=start, warm=warm)
    sess, info = open_session(b"model", "auto", ort=ort)
    assert info.providers == [CPU] and not info.on_gpu
    assert why in info.fallback and info.requested == [CUDA, CPU]
    assert ort.created[-1] == [CPU]
    assert info.to_dict()["fallback"] == info.fallback


@pytest.mark.parametrize("start,warm", [("raise", True), ("cpu-only", True), ("ok", False)])
def test_explicit_cuda_that_does_not_work_is_an_error(start, warm):
    with pytest.raises(InputError, match="cuda was asked for"):
        open_session(b"model", "cuda", ort=FakeORT([CUDA, CPU], start=start, warm=warm))


def test_trt_that_gives_way_to_cuda_is_reported(tmp_path, tiny_converted):
    onnx_path = Path(tiny_converted.artifacts[0].path).parent / "model.onnx"
    ort = FakeORT([TRT, CUDA, CPU], start="cuda-only")
    sess, info = open_session(str(onnx_path), "cuda", trt=True, trt_cache=tmp_path / "trt", ort=ort)
    assert info.requested == [TRT, CUDA, CPU] and info.providers == [CUDA, CPU]
    assert "TensorrtExecutionProvider did not start" in info.fallback


def test_cpu_session_runs_no_warm_up():
    sess, info = open_session(b"model", "cpu", ort=FakeORT([CUDA, CPU]))
    assert info.providers == [CPU] and sess.runs == [] and not info.warm_up


# --------------------------------------------------------------------------- the real backend
@pytest.fixture
def model_dir(tmp_path, tiny_converted):
    out = tmp_path / "model"
    shutil.copytree(Path(tiny_converted.artifacts[0].path).parent, out)
    return out


def test_backend_reports_the_providers_its_session_really_has(model_dir):
    from crossmodal.runtime.engine import open_engine

    with open_engine("onnx", model_dir, ["logits"], device="auto") as b:
        info = b.describe()
        assert info["providers"] == list(b.sess.get_providers())
        assert info["precision"] == "fp32" and "providers_requested" in info
        if info["providers"][0] == CPU:  # this machine: no working GPU
            assert info["device"] == "cpu" and not b.io_binding
            if CUDA in info["providers_requested"]:
                assert info["fallback"]  # onnxruntime-gpu without a GPU: the reason is stated


def test_io_binding_path_gives_the_plain_run_results(model_dir):
    """The bound path (device input reused across batches, outputs read back) on the CPU
    provider gives exactly what a plain run gives, for changing batch sizes."""
    from crossmodal.runtime.engine import open_engine

    rng = np.random.default_rng(0)
    with open_engine("onnx", model_dir, ["logits", "pool2"], device="cpu") as plain, \
            open_engine("onnx", model_dir, ["logits", "pool2"], device="cpu", io_binding=True) as bound:
        assert bound.io_binding and not bound.pinned
        for n in (3, 3, 1):
            x = rng.standard_normal((n, 3, 20, 28)).astype(np.float32)
            a, b = plain.run(x), bound.run(x)
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])


def _cuda_reason() -> str | None:
    """None when ONNX Runtime really runs on a GPU here, else why not."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    if CUDA not in ort.get_available_providers():
        return "onnxruntime has no CUDA execution provider (CPU build)"
    try:
        import torch
        if not torch.cuda.is_available():
            return "no CUDA GPU visible (torch.cuda.is_available() is False)"
    except ImportError:
        pass
    return None


CUDA_REASON = _cuda_reason()
needs_cuda = pytest.mark.skipif(CUDA_REASON is not None, reason=f"needs a working CUDA GPU: {CUDA_REASON}")


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_backend_io_binding_matches_cpu(model_dir, precision):
    from crossmodal.runtime.engine import open_engine

    x = np.random.default_rng(0).standard_normal((4, 3, 20, 28)).astype(np.float32)
    with open_engine("onnx", model_dir, ["logits", "fc7", "pool2"], device="cpu") as cpu:
        want = cpu.run(x)
    with open_engine("onnx", model_dir, ["logits", "fc7", "pool2"], device="cuda", precision=precision) as gpu:
        info = gpu.describe()
        assert info["providers"][0] == CUDA and info["io_binding"] and info["warm_up"]
        got = gpu.run(x)
        got2 = gpu.run(x)  # the device input is reused
    limit = 1e-5 if precision == "fp32" else 1e-2
    for k in want:
        assert np.abs(got[k] - want[k]).max() / np.abs(want[k]).max() < limit
        np.testing.assert_array_equal(got[k], got2[k])


@needs_cuda
def test_cuda_verify_fp16_gate(model_dir, tiny_ckpt):
    from crossmodal.verify.job import run_verify
    report = run_verify(model_dir, source=tiny_ckpt[0], random=4, device="cuda", precision="fp16",
                        engines=("torch", "onnx"))
    assert report.passed
    assert report.to_json()["engines"]["onnx"]["providers"][0] == CUDA


# --------------------------------------------------------------------------- FLOPs (for the GPU peak fraction)
def test_vgg16_flops_from_the_ir_match_the_architecture():
    from crossmodal.ir.flops import count_flops
    from crossmodal.models.vgg import build_graph, create_spec

    # by hand: 3×3 convs at 224, 112, 56, 28, 14 with VGG16's channel plan; then the classifier
    plan = [(224, 3, 64), (224, 64, 64), (112, 64, 128), (112, 128, 128), (56, 128, 256), (56, 256, 256),
            (56, 256, 256), (28, 256, 512), (28, 512, 512), (28, 512, 512), (14, 512, 512), (14, 512, 512),
            (14, 512, 512)]
    macs = sum(s * s * ci * co * 9 for s, ci, co in plan) + 25088 * 4096 + 4096 * 4096 + 4096 * 365
    f = count_flops(build_graph(create_spec("vgg16_places365")))
    assert f.matmul == 2 * macs and not f.uncounted
    assert abs(f.matmul / 2 - 15.47e9) / 15.47e9 < 2e-3  # the published 15.5 GMACs of VGG16
    assert f.total > f.matmul and sum(f.by_layer.values()) == f.total


def test_trt_fp16_that_falls_back_to_cuda_is_refused_not_mislabelled(model_dir, monkeypatch):
    """--trt --precision fp16 runs the fp32 model (TensorRT makes the fp16 kernels): if TensorRT
    does not start, CUDA would run it at fp32 under an fp16 label; the backend refuses instead."""
    from crossmodal.runtime import ort_session
    from crossmodal.runtime.engine import open_engine

    real = ort_session.open_session

    def fake(source, device, **kw):
        sess, _ = real(source, "cpu")
        return sess, ort_session.SessionInfo([CUDA, CPU], [TRT, CUDA, CPU],
                                             fallback="TensorrtExecutionProvider did not start; running on CUDA")
    monkeypatch.setattr(ort_session, "open_session", fake)
    with pytest.raises(InputError, match="TensorRT did not start"):
        open_engine("onnx", model_dir, ["logits"], device="cuda", precision="fp16", trt=True)
    with open_engine("onnx", model_dir, ["logits"], device="cuda", precision="fp32", trt=True, io_binding=False) as b:
        assert b.describe()["fallback"].startswith("TensorrtExecutionProvider did not start")
