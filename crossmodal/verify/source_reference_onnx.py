"""An ONNX source file as the reference engine for ``verify``: the file itself on ONNX Runtime.

The converted model is compared with what ONNX Runtime computes from the *source* ``.onnx`` (not the
model the converter emitted), layer by layer where a tensor of the source holds an IR layer's
values: the reader's walk of the file (deterministic, re-run here) says which tensor that is
(:attr:`~crossmodal.readers.from_onnx.OnnxRead.layer_tensors`), and those tensors are added to the
session's outputs. Values come from ONNX Runtime alone, so a converter fault shows as a divergence.
An NHWC source gets the batch transposed to NHWC; a pooled vector ONNX holds as (N, C, 1, 1) is
compared flat.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from crossmodal.errors import InputError
from crossmodal.ir.graph import IRModel
from crossmodal.runtime.engine import Engine, FunctionEngine


def onnx_source_engine(model: IRModel, source: Path, *, device: str = "cpu") -> Engine:
    """``source`` on ONNX Runtime as engine ``onnx-source`` (module docstring)."""
    import onnx

    from crossmodal.readers.from_onnx import read_onnx
    from crossmodal.runtime.onnx_engine import add_graph_outputs
    from crossmodal.runtime.ort_session import open_session

    graph = model.graph
    read = read_onnx(source, input_size=tuple(graph.input.shape[1:]))
    names = {l.name for l in graph.layers}
    tensors = {layer: t for layer, t in read.layer_tensors.items() if layer in names}
    proto = onnx.load(str(source), load_external_data=True)
    add_graph_outputs(proto, tensors.values())
    try:
        sess, info = open_session(proto.SerializeToString(), device)
    except ValueError as exc:  # a model beyond protobuf's 2 GiB cannot be serialised with extra outputs
        raise InputError(f"cannot open the source with extra outputs ({exc})", source) from None
    inp = sess.get_inputs()[0]
    nhwc = any(n.startswith("source layout NHWC") for n in read.model.graph.provenance.notes)
    dtype = np.float16 if "float16" in str(inp.type) else np.float32

    def run(x, layers):
        wanted = [l for l in layers if l in tensors]
        if not wanted:
            return {}
        feed = np.ascontiguousarray(x.transpose(0, 2, 3, 1) if nhwc else x, dtype=dtype)
        outs = sess.run([tensors[l] for l in wanted], {inp.name: feed})
        result = {}
        for layer, value in zip(wanted, outs):
            value = np.asarray(value, np.float32)
            result[layer] = value.reshape(len(x), -1) if len(read.model.graph.input.shape) and \
                value.ndim == 4 and value.shape[2:] == (1, 1) and _is_vector(graph, layer) else value
        return result
    import onnxruntime as ort
    return FunctionEngine("onnx-source", graph, run, set(tensors), device=device,
                          info={"onnxruntime": ort.__version__, "providers": info.providers, "source": str(source),
                                "layout": "NHWC" if nhwc else "NCHW"}, path=source)


def _is_vector(graph, layer: str) -> bool:
    from crossmodal.ir.kinds import infer_shapes
    return len(infer_shapes(graph)[layer]) == 1
