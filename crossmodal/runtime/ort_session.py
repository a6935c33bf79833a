"""ONNX Runtime sessions: which execution providers, and proof that the chosen one works.

One builder for every ONNX Runtime session that runs a model (:mod:`crossmodal.runtime.onnx_engine`,
the benchmarks); only the ONNX emitter's self-check opens one elsewhere.

Providers (:func:`choose_providers`, pure, unit-tested on fake provider lists):

* ``cpu`` → ``CPUExecutionProvider``;
* ``cuda`` / ``cuda:N`` → CUDA (``use_tf32`` off unless asked), then CPU; an error
  when onnxruntime has no CUDA provider;
* ``auto`` → as ``cuda`` when onnxruntime lists CUDA, else the CPU;
* ``trt=True`` puts ``TensorrtExecutionProvider`` first (fp16 kernels at
  ``precision="fp16"``, engine and timing caches in ``trt_cache``, an optimisation
  profile from batch 1 to ``max_batch``); it needs a GPU and a TensorRT provider.

onnxruntime-gpu lists CUDA (and TensorRT) wherever it is installed, GPU or not, and a
session may even start and then fail on its first run. So :func:`open_session` runs a
**warm-up** (one zero image through the whole graph) before it accepts a GPU session:
with ``auto``, any failure (start or warm-up) falls back to a CPU session and the
reason is returned; with ``cuda`` it is an :class:`InputError`. The providers
returned are the session's own list (``sess.get_providers()``): what really runs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossmodal.errors import InputError
from crossmodal.runtime.devices import cuda_index

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def choose_providers(device: str, available: list[str], *, allow_tf32: bool = False, trt: bool = False,
                     precision: str = "fp32", trt_cache: str | os.PathLike | None = None,
                     trt_input: str | None = None, trt_shape: tuple[int, ...] | None = None,
                     max_batch: int = 256) -> list:
    """The provider list to ask ONNX Runtime for (module docstring). ``available``:
    ``onnxruntime.get_available_providers()``. ``trt_input`` / ``trt_shape`` (C, H, W):
    the input's name and shape, for TensorRT's optimisation profile."""
    if device == "cpu":
        if trt:
            raise InputError("--trt needs a GPU: TensorRT does not run on --device cpu")
        return [CPU]
    if CUDA not in available:
        if device.startswith("cuda") or trt:
            what = "TensorRT (--trt)" if trt else "CUDA"
            raise InputError(f"{what} was asked for, but onnxruntime has no CUDA execution provider here "
                             f"(install onnxruntime-gpu); it has {', '.join(available) or 'none'}")
        return [CPU]
    dev_id = cuda_index(device)
    providers: list = []
    if trt:
        if TRT not in available:
            raise InputError("--trt: onnxruntime has no TensorRT execution provider here (it needs "
                             "onnxruntime-gpu and the TensorRT libraries); run without --trt for CUDA")
        opts = {"device_id": dev_id, "trt_fp16_enable": precision == "fp16",
                "trt_engine_cache_enable": True, "trt_timing_cache_enable": True}
        if trt_cache is not None:
            Path(trt_cache).mkdir(parents=True, exist_ok=True)
            opts["trt_engine_cache_path"] = str(trt_cache)
            opts["trt_timing_cache_path"] = str(trt_cache)
        if trt_input and trt_shape:
            dims = "x".join(str(int(d)) for d in trt_shape)
            opts["trt_profile_min_shapes"] = f"{trt_input}:1x{dims}"
            opts["trt_profile_opt_shapes"] = f"{trt_input}:{max_batch}x{dims}"
            opts["trt_profile_max_shapes"] = f"{trt_input}:{max_batch}x{dims}"
        providers.append((TRT, opts))
    providers.append((CUDA, {"device_id": dev_id, "use_tf32": int(allow_tf32)}))
    providers.append(CPU)
    return providers


def provider_names(providers: list) -> list[str]:
    return [p[0] if isinstance(p, tuple) else p for p in providers]


@dataclass
class SessionInfo:
    """What :func:`open_session` got: the providers the session really uses, the ones asked
    for, and why a GPU was dropped (``fallback``, ``None`` when it was not)."""

    providers: list[str]
    requested: list[str]
    fallback: str | None = None
    warm_up: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def on_gpu(self) -> bool:
        return bool(self.providers) and self.providers[0] in (CUDA, TRT)

    def to_dict(self) -> dict:
        out = {"providers": self.providers, "providers_requested": self.requested, "warm_up": self.warm_up}
        if self.fallback:
            out["fallback"] = self.fallback
        return out


def warm_up(sess) -> None:
    """One zero input (dynamic dimensions set to 1) through the whole session."""
    feed = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        dtype = np.float16 if "float16" in str(inp.type) else np.float32
        feed[inp.name] = np.zeros(shape, dtype=dtype)
    sess.run(None, feed)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:200] if text else exc.__class__.__name__)


def open_session(source, device: str = "cpu", *, allow_tf32: bool = False, threads: int | None = None,
                 spinning: bool | None = None, trt: bool = False, precision: str = "fp32",
                 trt_cache=None, max_batch: int = 256, check: bool = True, ort=None):
    """An ``InferenceSession`` on ``source`` (path or serialized bytes) for ``device``;
    returns (session, :class:`SessionInfo`).

    ``threads``: intra-op threads (default ORT's, one per physical core); ``spinning``:
    whether idle intra-op threads busy-wait (default ORT's). ``check``: run the warm-up on
    a GPU session (module docstring). ``ort``: the onnxruntime module (tests pass a fake).
    """
    if ort is None:
        import onnxruntime as ort

    def options():
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
        if spinning is not None:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        return opts

    def load_error(exc):
        where = source if isinstance(source, (str, os.PathLike)) else None
        return InputError(f"ONNX Runtime cannot load the model ({_first_line(exc)})", where)

    trt_input = trt_shape = None
    if trt:
        trt_input, trt_shape = _input_of(source)
    providers = choose_providers(device, list(ort.get_available_providers()), allow_tf32=allow_tf32, trt=trt,
                                 precision=precision, trt_cache=trt_cache, trt_input=trt_input,
                                 trt_shape=trt_shape, max_batch=max_batch)
    requested = provider_names(providers)
    if requested == [CPU]:
        try:
            sess = ort.InferenceSession(source, options(), providers=[CPU])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise load_error(exc) from None
        return sess, SessionInfo(list(sess.get_providers()), requested)
    if device == "auto":  # an expected failure to start: its reason goes into ``fallback``, not the log
        ort.set_default_logger_severity(4)
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None and _has_nvidia_wheels():  # CUDA / cuDNN from the nvidia-* wheels (torch's)
        try:
            preload()
        except Exception:  # nothing to preload: the session says what is missing
            pass
    why = None
    try:
        sess = ort.InferenceSession(source, options(), providers=providers)
        got = list(sess.get_providers())
        if got[0] not in (CUDA, TRT):
            why = f"{requested[0]} did not start (the session has {', '.join(got)})"
        elif check:
            warm_up(sess)
    except Exception as exc:
        why = f"{requested[0]} failed: {_first_line(exc)}"
    if device == "auto":
        ort.set_default_logger_severity(3)
    if why is None:  # on the GPU; TensorRT may have given way to CUDA: said, not hidden
        info = SessionInfo(got, requested, warm_up=check)
        if got[0] != requested[0]:
            info.fallback = f"{requested[0]} did not start; running on {got[0]}"
        return sess, info
    if device != "auto":
        raise InputError(f"{device} was asked for, but ONNX Runtime cannot use it here: {why}")
    try:
        sess = ort.InferenceSession(source, options(), providers=[CPU])
    except Exception as exc:
        raise load_error(exc) from None
    return sess, SessionInfo(list(sess.get_providers()), requested, fallback=why)


def _has_nvidia_wheels() -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec("nvidia") is not None
    except (ImportError, ValueError):
        return False


def _input_of(source) -> tuple[str, tuple[int, ...]]:
    """The first graph input's name and its (C, H, W), read from the model (for TensorRT's profile)."""
    import onnx

    proto = onnx.load_model_from_string(source) if isinstance(source, bytes) else \
        onnx.load(str(source), load_external_data=False)
    inp = proto.graph.input[0]
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim][1:]
    return inp.name, tuple(dims)
