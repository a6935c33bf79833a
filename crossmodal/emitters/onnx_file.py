"""Writing an ONNX model to disk in bounded memory (:func:`save_onnx`): the skeleton's structure is
checked by ``onnx.checker`` (:func:`check_structure`), then the protobuf is written with every
initializer's bytes streamed from its array (no serialised copy of a model of hundreds of
megabytes), hashed as it is written, atomically; beyond protobuf's 2 GiB the bytes go to
``NAME.data`` beside it (external data).
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np

from crossmodal.io.protowire import len_field

PROTOBUF_LIMIT = 2 * 1024 ** 3 - 64 * 1024 ** 2  # leave headroom below protobuf's 2 GiB


def _le_float32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype="<f4")


_RAW_DATA, _INITIALIZER, _GRAPH = 9, 5, 7  # TensorProto.raw_data, GraphProto.initializer, ModelProto.graph


def _write_inline(proto, arrays: dict[str, np.ndarray], f) -> None:
    """Serialise ``proto`` with each initializer's bytes streamed from ``arrays``.

    Protobuf lets fields come in any order and concatenates repeated ones, so the
    model is written as: model fields, then the graph field whose payload is the
    graph's other fields followed by one initializer record per tensor.
    """
    from onnx import GraphProto, ModelProto
    graph = GraphProto()
    graph.CopyFrom(proto.graph)
    inits = list(graph.initializer)
    graph.ClearField("initializer")
    model = ModelProto()
    model.CopyFrom(proto)
    model.ClearField("graph")
    records, graph_len = [], len(graph.SerializeToString())
    for t in inits:
        data = _le_float32(arrays[t.name])
        if data.size != math.prod(t.dims):  # the structure check trusts the dims: keep them true
            raise ValueError(f"initializer {t.name}: {data.size} values but dims {tuple(t.dims)}")
        head = t.SerializeToString() + len_field(_RAW_DATA, data.nbytes)
        size = len(head) + data.nbytes
        records.append((len_field(_INITIALIZER, size) + head, data))
        graph_len += len(records[-1][0]) + data.nbytes
    f.write(model.SerializeToString())
    f.write(len_field(_GRAPH, graph_len))
    f.write(graph.SerializeToString())
    for head, data in records:
        f.write(head)
        f.write(memoryview(data.reshape(-1)).cast("B"))


def _write_external(proto, arrays: dict[str, np.ndarray], f, data_path: Path) -> None:
    """Serialise ``proto`` with initializer bytes in ``data_path`` (beyond 2 GiB)."""
    from onnx import ModelProto, TensorProto
    model = ModelProto()
    model.CopyFrom(proto)
    offset = 0
    with open(data_path, "wb") as data_file:
        for t in model.graph.initializer:
            data = _le_float32(arrays[t.name])
            data_file.write(memoryview(data.reshape(-1)).cast("B"))
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_path.name), ("offset", str(offset)), ("length", str(data.nbytes))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            offset += data.nbytes
    f.write(model.SerializeToString())


class _HashingFile:
    """A binary file that hashes (SHA-256) what is written to it, in a second thread while the
    bytes are written (hashlib releases the GIL), so the artifact's hash costs no second read of
    a file of hundreds of megabytes. ``data`` must stay unchanged until :meth:`hexdigest`."""

    def __init__(self, f) -> None:
        from concurrent.futures import ThreadPoolExecutor
        self.f, self.hash = f, hashlib.sha256()
        self.pool = ThreadPoolExecutor(1)  # one worker: updates keep their order

    def write(self, data) -> int:
        self.pool.submit(self.hash.update, data)
        return self.f.write(data)

    def hexdigest(self) -> str:
        self.pool.shutdown(wait=True)
        return self.hash.hexdigest()


def check_structure(proto) -> None:
    """``onnx.checker`` (full check, strict shape inference) on a skeleton's structure: a copy
    whose data-less initializers are graph inputs of the same type and shape. Their bytes are
    streamed by :func:`save_onnx` from arrays checked against those dims, so reading a
    file of hundreds of megabytes back (and parsing it twice over in memory) checks nothing
    more."""
    import onnx
    from onnx import TensorProto, helper
    light = onnx.ModelProto()
    light.CopyFrom(proto)
    kept, moved = [], []
    for t in light.graph.initializer:
        empty = not (t.raw_data or t.float_data or t.int64_data or t.int32_data or t.double_data
                     or t.data_location == TensorProto.EXTERNAL)
        (moved if empty else kept).append(t)
    light.graph.ClearField("initializer")
    light.graph.initializer.extend(kept)
    light.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in moved)
    onnx.checker.check_model(light, full_check=True)


def save_onnx(proto, path: Path, *, arrays: dict[str, np.ndarray] | None = None, check: bool = True,
              digests: dict[Path, str] | None = None) -> list[Path]:
    """Write the model atomically: one file, or ``NAME.data`` beside it beyond 2 GiB.

    ``proto`` is a skeleton from :func:`build_onnx_skeleton` with ``arrays``, or a
    complete proto (its initializer data is then taken from it). Returns the files
    written. ``onnx.checker`` (full check, with strict shape inference) runs on the
    model's structure before anything is written (:func:`check_structure`); the
    initializers' bytes are streamed from the arrays. ``digests``: filled with each written
    file's SHA-256, computed as it is written.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if arrays is None:  # a complete proto: move its data apart
        arrays = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        skeleton = onnx.ModelProto()
        skeleton.CopyFrom(proto)
        for t in skeleton.graph.initializer:
            t.ClearField("raw_data")
            t.ClearField("float_data")
        proto = skeleton
    if check:
        check_structure(proto)
    size = sum(int(np.prod(a.shape)) * 4 for a in arrays.values())
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
    data_path = path.with_name(path.name + ".data")
    external = size > PROTOBUF_LIMIT
    try:
        with open(tmp, "wb") as raw:
            f = _HashingFile(raw)
            if external:
                _write_external(proto, arrays, f, data_path)
            else:
                _write_inline(proto, arrays, f)
        os.replace(tmp, path)
    except BaseException:
        if external:
            data_path.unlink(missing_ok=True)
        raise
    finally:
        tmp.unlink(missing_ok=True)
        if "f" in locals():
            digest = f.hexdigest()  # also ends the hashing thread
    if digests is not None and not external:
        digests[path] = digest
    return [path, data_path] if external else [path]
