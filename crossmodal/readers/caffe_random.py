"""Seeded random caffemodels for any prototxt the Caffe reader reads.

:func:`write_random_caffemodel` writes a ``.caffemodel`` with seeded random blobs (every
blob shape comes from the prototxt), in the ``layer`` encoding Caffe writes today or the
legacy V1 ``layers`` encoding. Used by ``crossmodal demo --arch``, the tests, the
benchmarks and CI's parity step, where the real weights cannot be downloaded: the
predictions are meaningless, but every conversion and verification step runs on them
exactly as on real weights. It lives beside the reader because it writes the reader's
format from the reader's own parse of the prototxt.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from crossmodal.errors import InputError
from crossmodal.io.hashing import file_sha256
from crossmodal.io.protowire import len_field
from crossmodal.ir.identity import write_origin
from crossmodal.readers import caffe_schema as schema
from crossmodal.readers.caffe_layers import SCALE_FACTOR
from crossmodal.readers.from_caffe import read_prototxt


def random_blobs(net, seed: int = 0):
    """Caffe layer → [blob arrays as Caffe stores them] for a read prototxt (``CaffeNet``).

    Convolutions He-normal (fan-in per group; the layer reading the input 64× smaller, as
    Caffe's inputs are 0–255 pixels, so activations stay O(1) and the logits moderate: a
    softmax far from saturation), InnerProducts N(0, 2/in), biases N(0, 0.01);
    BatchNorm: means N(0, 0.1), variances U(0.5, 1.5), both multiplied by a scale factor
    U(0.5, 2) stored as the third blob (as Caffe's moving averages are); Scale weights
    U(0.4, 0.6) (keeps a deep residual stack's activations bounded), biases N(0, 0.1).
    """
    rng = np.random.default_rng(seed)
    kinds = {l.name: l.kind for l in net.graph.layers}
    first = {l.name for l in net.graph.layers if net.graph.input.name in l.inputs}
    out = {}
    for name, wanted in net.expected.items():
        kind, arrays = kinds[name], []
        if kind == "batch_norm":
            c = wanted[0][2]
            factor = np.float32(rng.uniform(0.5, 2.0))
            mean = rng.normal(0, 0.1, c).astype(np.float32) * factor
            var = rng.uniform(0.5, 1.5, c).astype(np.float32) * factor
            out[name] = [mean, var, np.array([factor], np.float32)]
            assert wanted[2][1] == SCALE_FACTOR
            continue
        for _, role, shape in wanted:
            if role == "weight" and kind == "scale":
                a = rng.uniform(0.4, 0.6, shape).astype(np.float32)
            elif role == "weight":
                fan_in = int(np.prod(shape[1:])) if kind == "conv2d" else shape[1]
                if name in net.transposed:
                    fan_in = shape[0]
                a = rng.standard_normal(shape, dtype=np.float32)
                a *= np.float32(np.sqrt(2.0 / fan_in) / (64 if name in first else 1))
            else:
                a = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.1 if kind == "scale" else 0.01)
            arrays.append(a)
        out[name] = arrays
    return out


def fill_blob(blob, array: np.ndarray, legacy: bool) -> None:
    """BlobProto ``blob`` ← ``array``: packed float ``data`` (merged as raw bytes, at memcpy
    speed) and ``shape``, or for ``legacy`` the 4-D num/channels/height/width."""
    raw = np.ascontiguousarray(array, dtype="<f4")
    blob.MergeFromString(b"".join([len_field(5, raw.nbytes), memoryview(raw).cast("B")]))  # BlobProto.data = 5
    if legacy:
        if array.ndim > 4:
            raise ValueError(f"a {array.ndim}-D blob has no legacy 4-D form")
        blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - array.ndim) + tuple(array.shape)
    else:
        blob.shape.dim.extend(array.shape)


def write_random_caffemodel(prototxt: Path, path: Path, *, seed: int = 0, encoding: str = "layer") -> int:
    """Write a caffemodel with seeded random blobs for ``prototxt`` (any net the reader reads).

    Every layer of the prototxt is written, in order, with its blobs (as Caffe does);
    ``encoding``: ``"layer"`` (LayerParameter, BlobShape) or ``"layers"`` (legacy
    V1LayerParameter: type enum, 4-D blob dims; refused for types V1 lacks, e.g.
    BatchNorm). Written to a temporary sibling, then renamed; ``<path>.origin.json`` records
    that the weights are random (:mod:`crossmodal.ir.identity`), so reports carry the
    random-weights banner. Returns the number of values written.
    """
    if encoding not in ("layer", "layers"):
        raise ValueError(f"encoding must be 'layer' or 'layers', not {encoding!r}")
    net = read_prototxt(Path(prototxt))
    text = schema.parse_prototxt(Path(prototxt).read_text())
    if len(text.layers):
        raise InputError("is written with legacy 'layers'; write_random_caffemodel reads 'layer' prototxts",
                         prototxt)
    blobs = random_blobs(net, seed)
    v1_names = {v: k for k, v in schema.V1_TYPE_NAMES.items()}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    count = 0
    try:
        with open(tmp, "wb") as f:
            f.write(schema.message("NetParameter")(name=text.name).SerializeToString())
            for layer in text.layer:
                chunk = schema.message("NetParameter")()
                if encoding == "layer":
                    out = chunk.layer.add()
                    out.CopyFrom(layer)
                else:
                    out = chunk.layers.add(name=layer.name, bottom=layer.bottom, top=layer.top)
                    enum = out.DESCRIPTOR.fields_by_name["type"].enum_type.values_by_name
                    if v1_names.get(layer.type) not in enum:
                        raise InputError(f"layer {layer.name}: type {layer.type} has no legacy V1 form", prototxt)
                    out.type = enum[v1_names[layer.type]].number
                    for field, value in layer.ListFields():
                        if field.name.endswith("_param") and field.name in out.DESCRIPTOR.fields_by_name:
                            getattr(out, field.name).CopyFrom(value)
                for array in blobs.get(layer.name, []):
                    fill_blob(out.blobs.add(), array, legacy=encoding == "layers")
                    count += array.size
                f.write(chunk.SerializeToString())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    write_origin(path, {"kind": "random", "seed": int(seed)}, file_sha256(path))  # the banner's source
    return count
