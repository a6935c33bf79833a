"""The official Caffe Places365 networks: their prototxts, and seeded random caffemodels for them.

The graph of each network is read from its own deploy prototxt (published by the
Places365 authors; ``$CROSSMODAL_SHARED_DATA/places365/`` here) by the generic Caffe
reader; what is specific to a network is only which file it is and its class count.
:func:`write_random_caffemodel` writes a ``.caffemodel`` with seeded random blobs for
*any* prototxt the reader reads (every blob shape comes from the prototxt), in the
``layer`` encoding Caffe writes today or the legacy V1 ``layers`` encoding. Used by
``crossmodal demo --arch``, the tests, the benchmarks and CI's parity step, where the
real weights cannot be downloaded: the predictions are meaningless, but every
conversion and verification step runs on them exactly as on real weights.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossmodal.errors import InputError
from crossmodal.io.protowire import len_field


@dataclass(frozen=True)
class CaffeArch:
    """A published Caffe network: its deploy prototxt's file name and its class count."""

    name: str
    prototxt: str
    num_classes: int
    labels: str = "categories_places365.txt"


#: ``crossmodal demo --arch NAME`` → the network.
CAFFE_ARCHS: dict[str, CaffeArch] = {a.name: a for a in (
    CaffeArch("alexnet-caffe", "deploy_alexnet_places365.prototxt", 365),
    CaffeArch("googlenet-caffe", "deploy_googlenet_places365.prototxt", 365),
    CaffeArch("resnet152-caffe", "deploy_resnet152_places365.prototxt", 365),
    CaffeArch("resnet152-hybrid1365-caffe", "deploy_resnet152_hybrid1365.prototxt", 1365, "categories_hybrid1365.txt"),
    CaffeArch("vgg16-caffe", "deploy_vgg16_places365.prototxt", 365),
    CaffeArch("vgg16-hybrid1365-caffe", "deploy_vgg16_hybrid1365.prototxt", 1365, "categories_hybrid1365.txt"),
)}


def shared_places365() -> Path:
    """``$CROSSMODAL_SHARED_DATA/places365`` (default ``../shared/data/places365`` beside the checkout)."""
    root = os.environ.get("CROSSMODAL_SHARED_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data"
    return Path(root) / "places365"


def find_prototxt(arch: str, prototxt: Path | None = None) -> Path:
    """The deploy prototxt of ``arch``: ``prototxt`` when given, else the one in the shared data."""
    if arch not in CAFFE_ARCHS:
        raise InputError(f"unknown Caffe architecture {arch!r}; known: {sorted(CAFFE_ARCHS)}")
    if prototxt is not None:
        if not Path(prototxt).is_file():
            raise InputError("no such file", prototxt)
        return Path(prototxt)
    path = shared_places365() / CAFFE_ARCHS[arch].prototxt
    if not path.is_file():
        raise InputError(f"{arch} needs its deploy prototxt {CAFFE_ARCHS[arch].prototxt}: give --prototxt PATH, "
                         "or set CROSSMODAL_SHARED_DATA to the folder whose places365/ holds it", path.parent)
    return path


def random_blobs(net, seed: int = 0):
    """Caffe layer → [blob arrays as Caffe stores them] for a read prototxt (``CaffeNet``).

    Convolutions He-normal (fan-in per group; the layer reading the input 64× smaller, as
    Caffe's inputs are 0–255 pixels, so activations stay O(1) and the logits moderate: a
    softmax far from saturation), InnerProducts N(0, 2/in), biases N(0, 0.01);
    BatchNorm: means N(0, 0.1), variances U(0.5, 1.5), both multiplied by a scale factor
    U(0.5, 2) stored as the third blob (as Caffe's moving averages are); Scale weights
    U(0.4, 0.6) (keeps a deep residual stack's activations bounded), biases N(0, 0.1).
    """
    from crossmodal.readers.caffe_layers import SCALE_FACTOR

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
    from crossmodal.readers import caffe_schema as schema
    from crossmodal.readers.from_caffe import read_prototxt

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
    from crossmodal.ir.identity import write_origin
    from crossmodal.io.hashing import file_sha256
    write_origin(path, {"kind": "random", "seed": int(seed)}, file_sha256(path))  # the banner's source
    return count
