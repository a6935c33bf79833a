"""The ONNX opsets the emitter writes: the default, the oldest, and the newest both the installed
``onnx`` and ``onnxruntime`` handle (probed once)."""
from __future__ import annotations

import functools

from crossmodal.errors import InputError

DEFAULT_OPSET = 21
MIN_OPSET = 13  # Softmax with per-axis semantics


@functools.lru_cache(maxsize=1)
def max_opset() -> tuple[int, str]:
    """The newest opset both the installed ``onnx`` and ``onnxruntime`` handle, and why.

    ``onnx.defs.onnx_opset_version()`` bounds what the checker knows. onnxruntime has
    no API for its own bound, so it is probed: a one-node model per opset, newest
    first, until a session opens (a few milliseconds each). Without onnxruntime the
    onnx bound alone counts.
    """
    import onnx
    newest = onnx.defs.onnx_opset_version()
    try:
        import onnxruntime as ort
    except ImportError:
        return newest, f"onnx {onnx.__version__} knows up to {newest}"
    from onnx import TensorProto, helper
    for opset in range(newest, MIN_OPSET - 1, -1):
        ids = [helper.make_opsetid("", opset)]
        vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("x", "y")]
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", vi[:1], vi[1:])
        proto = helper.make_model(graph, opset_imports=ids, ir_version=helper.find_min_ir_version_for(ids))
        try:
            ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:  # onnxruntime refuses opsets newer than its kernels with its own errors
            continue
        return opset, f"onnx {onnx.__version__} knows up to {newest}, onnxruntime {ort.__version__} runs up to {opset}"
    return MIN_OPSET, f"onnxruntime {ort.__version__} runs no opset from {MIN_OPSET}"


def check_opset(opset: object) -> int:
    """``opset`` as an int, or InputError naming the supported range."""
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise InputError(f"ONNX opset must be an integer, not {opset!r}")
    if opset < MIN_OPSET:
        newest, _ = max_opset()
        raise InputError(f"ONNX opset {opset} is too old: this emitter writes opsets {MIN_OPSET}..{newest} "
                         f"(Softmax needs {MIN_OPSET} or newer)")
    import onnx
    if opset > onnx.defs.onnx_opset_version() or (opset > _runs_without_probe() and opset > max_opset()[0]):
        newest, why = max_opset()
        raise InputError(f"ONNX opset {opset} is not supported: choose {MIN_OPSET}..{newest} ({why})")
    return opset


def _runs_without_probe() -> int:
    """The newest opset the installed onnxruntime is known to run from its version alone (1.18
    and newer run opset 21), so the default opset needs no probe session (an import of
    onnxruntime, 0.2 s); 0 when unknown."""
    from importlib import metadata
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            major, minor = (int(x) for x in metadata.version(dist).split(".")[:2])
        except (metadata.PackageNotFoundError, ValueError):
            continue
        return 21 if (major, minor) >= (1, 18) else 0
    return 0
