"""Build Caffe test files: prototxts for tiny VGG-style nets and ``.caffemodel`` files with
seeded random blobs, in both encodings Caffe has written over the years:

* ``"layer"``: ``NetParameter.layer`` (LayerParameter, field 100), blob shapes as
  ``BlobShape`` — what current Caffe writes;
* ``"layers"``: legacy ``NetParameter.layers`` (V1LayerParameter, field 2, type as an
  enum), blob shapes as num/channels/height/width, InnerProduct weights 1×1×out×in.

The files are serialised NetParameter messages (one message per layer, written one
after another: concatenated messages are one message on the wire, so a full-size
VGG16 never sits in memory twice). Weights are returned as Caffe shapes them:
conv (O, I, kh, kw), dense (out, in), bias (O,).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from crossmodal.readers import caffe_schema as schema

#: 3×20×28 input; three 2×2/2 max pools, the last on a 5×7 map where Caffe's ceil
#: rounding gives 3×4 (floor: 2×3). Pre-fc map (C, H, W) = (2, 3, 4), all distinct.
TINY_PROTOTXT = """\
name: "tiny-vgg"
input: "data"
input_dim: 1
input_dim: 3
input_dim: 20
input_dim: 28
{convs}
layer {{ name: "fc6" type: "InnerProduct" bottom: "{last}" top: "fc6"
  param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
  inner_product_param {{ num_output: 16 weight_filler {{ type: "gaussian" std: 0.01 }} }} }}
layer {{ name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }}
layer {{ name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" dropout_param {{ dropout_ratio: 0.5 }} }}
layer {{ name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7" inner_product_param {{ num_output: 16 }} }}
layer {{ name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }}
layer {{ name: "drop7" type: "Dropout" bottom: "fc7" top: "fc7" dropout_param {{ dropout_ratio: 0.5 }} }}
layer {{ name: "fc8a" type: "InnerProduct" bottom: "fc7" top: "fc8a" inner_product_param {{ num_output: 10 }} }}
layer {{ name: "prob" type: "Softmax" bottom: "fc8a" top: "prob" }}
"""


def _conv(name: str, bottom: str, out: int) -> str:
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}"\n'
            f'  convolution_param {{ num_output: {out} pad: 1 kernel_size: 3 }} }}\n'
            f'layer {{ name: "{name.replace("conv", "relu")}" type: "ReLU" bottom: "{name}" top: "{name}" }}')


def _pool(name: str, bottom: str, kind: str = "MAX", k: int = 2, s: int = 2, pad: int = 0) -> str:
    pad_text = f" pad: {pad}" if pad else ""
    return (f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}"\n'
            f'  pooling_param {{ pool: {kind} kernel_size: {k} stride: {s}{pad_text} }} }}')


def tiny_prototxt(pools: Iterable[tuple] = (("MAX", 2, 2, 0),) * 3, input_hw: tuple[int, int] = (20, 28)) -> str:
    """Three blocks conv(3×3, pad 1)+ReLU+pool: widths 4, 5, 2, then fc6/fc7 (16) and fc8a (10).

    ``pools``: (MAX|AVE, kernel, stride, pad) per block.
    """
    parts, prev = [], "data"
    for block, (width, (kind, k, s, pad)) in enumerate(zip((4, 5, 2), pools), start=1):
        parts += [_conv(f"conv{block}_1", prev, width), _pool(f"pool{block}", f"conv{block}_1", kind, k, s, pad)]
        prev = f"pool{block}"
    text = TINY_PROTOTXT.format(convs="\n".join(parts), last=prev)
    return text.replace("input_dim: 20\ninput_dim: 28", f"input_dim: {input_hw[0]}\ninput_dim: {input_hw[1]}")


#: The two Data layers of the real train_val_vgg16.prototxt (TRAIN and TEST), as written there;
#: ``{transform}`` is extra ``transform_param`` text for the TEST layer.
TRAIN_VAL_DATA = """\
layer {{
  name: "data"
  type: "Data"
  top: "data"
  top: "label"
  include {{
    phase: TRAIN
  }}
  transform_param {{
    crop_size: 224
    mean_file: "/xxx/places2CNN365_mean.binaryproto"
    mirror: true
  }}
  data_param {{
    source: "/xxx/places2_maxTrain5000_places2new/train_image_lmdb"
    backend: LMDB
    batch_size: 48
  }}
}}
layer {{
  name: "data"
  type: "Data"
  top: "data"
  top: "label"
  include {{
    phase: TEST
  }}
  transform_param {{
    mirror: false
    {transform}
  }}
  data_param {{
    source: "/xxx/places2_maxTrain5000_places2new/val_image_lmdb"
    batch_size: 12
    backend: LMDB
  }}
}}
"""

#: An ImageData layer (TEST phase) as Caffe's examples write it; ``{params}`` goes into
#: ``image_data_param``, ``{transform}`` into ``transform_param``.
IMAGE_DATA = """\
layer {{
  name: "data"
  type: "ImageData"
  top: "data"
  top: "label"
  include {{ phase: TEST }}
  transform_param {{ mirror: false {transform} }}
  image_data_param {{
    source: "/xxx/val.txt"
    root_folder: "/xxx/images/"
    batch_size: 50
    shuffle: false
    {params}
  }}
}}
"""


def tiny_train_val(data_layers: str) -> str:
    """:func:`tiny_prototxt` as a train_val: ``data_layers`` instead of the input lines, and the
    real train_val's tail (SoftmaxWithLoss ``loss``, Accuracy in phase TEST) instead of ``prob``."""
    text = tiny_prototxt()
    head = 'input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 20\ninput_dim: 28\n'
    tail = 'layer { name: "prob" type: "Softmax" bottom: "fc8a" top: "prob" }\n'
    assert head in text and tail in text
    return text.replace(head, data_layers).replace(tail, (
        'layer {\n  name: "loss"\n  type: "SoftmaxWithLoss"\n  bottom: "fc8a"\n  bottom: "label"\n'
        '  top: "loss"\n}\nlayer {\n  name: "accuracy"\n  type: "Accuracy"\n  bottom: "fc8a"\n'
        '  bottom: "label"\n  top: "accuracy"\n  include {\n    phase: TEST\n  }\n}\n'))


#: Reader-only variant (Keras cannot express these pools): 3×24×32 input, pool2 a 3×3/2
#: ceil max pool on 12×16 (→ 6×8; floor 5×7), pool3 a 3×3/2 pad-1 ceil average pool on
#: 6×8 (→ 4×5; floor 3×4). Pre-fc map (2, 4, 5).
ODD_POOLS = (("MAX", 2, 2, 0), ("MAX", 3, 2, 0), ("AVE", 3, 2, 1))
ODD_INPUT = (24, 32)


def tiny_shapes(pre_fc: tuple[int, int, int] = (2, 3, 4)) -> dict[str, list[tuple[int, ...]]]:
    """Caffe blob shapes of :func:`tiny_prototxt`'s weighted layers, written out by hand."""
    c, h, w = pre_fc
    return {
        "conv1_1": [(4, 3, 3, 3), (4,)], "conv2_1": [(5, 4, 3, 3), (5,)], "conv3_1": [(2, 5, 3, 3), (2,)],
        "fc6": [(16, c * h * w), (16,)], "fc7": [(16, 16), (16,)], "fc8a": [(10, 16), (10,)],
    }


def vgg16_shapes(num_classes: int = 365) -> dict[str, list[tuple[int, ...]]]:
    """Blob shapes of the deploy VGG16 from the repo's own VGG table (not from the reader)."""
    from crossmodal.models.vgg import build_graph, create_spec
    graph = build_graph(create_spec("vgg16_places365", num_classes=num_classes))
    return {l.name: [l.tensors["weight"].shape, l.tensors["bias"].shape] for l in graph.layers if l.tensors}


def random_blobs(shapes: dict[str, list[tuple[int, ...]]], seed: int = 0):
    """Yield (layer, [weight, bias]) with He-normal weights and small biases, in order
    (a bias shape of None: weight only, for ``bias_term: false``)."""
    rng = np.random.default_rng(seed)
    for name, (wshape, bshape) in shapes.items():
        fan_in = int(np.prod(wshape[1:]))
        w = rng.standard_normal(wshape, dtype=np.float32)
        w *= np.float32(np.sqrt(2.0 / fan_in))
        if bshape is None:
            yield name, [w]
        else:
            yield name, [w, rng.standard_normal(bshape, dtype=np.float32) * np.float32(0.01)]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def fill_blob(blob, array: np.ndarray, legacy: bool):
    """Fill BlobProto ``blob`` with ``array``: packed ``data`` plus ``shape`` (or legacy 4-D dims).

    The data are merged in as an already-packed field 5 (tag 0x2A), which protobuf
    parses at memcpy speed (``data.extend`` takes ~20 s for fc6's 102 M floats).
    """
    raw = np.ascontiguousarray(array, dtype="<f4")
    blob.MergeFromString(b"".join([b"\x2a", _varint(raw.nbytes), memoryview(raw).cast("B")]))
    if legacy:
        dims = (1,) * (4 - array.ndim) + tuple(array.shape)
        blob.num, blob.channels, blob.height, blob.width = dims
    else:
        blob.shape.dim.extend(array.shape)
    return blob


_V1_TYPES = {"Convolution": "CONVOLUTION", "Pooling": "POOLING", "InnerProduct": "INNER_PRODUCT",
             "ReLU": "RELU", "Dropout": "DROPOUT", "Softmax": "SOFTMAX", "LRN": "LRN", "Concat": "CONCAT",
             "Eltwise": "ELTWISE"}
_PARAMS = ("convolution_param", "pooling_param", "inner_product_param", "dropout_param", "lrn_param",
           "concat_param", "eltwise_param", "relu_param")


def to_v1(layer):
    """A LayerParameter as a legacy V1LayerParameter (type enum, same sub-parameters)."""
    v1 = schema.message("V1LayerParameter")(name=layer.name, bottom=layer.bottom, top=layer.top)
    v1.type = v1.DESCRIPTOR.fields_by_name["type"].enum_type.values_by_name[_V1_TYPES[layer.type]].number
    for p in _PARAMS:
        if layer.HasField(p):
            getattr(v1, p).CopyFrom(getattr(layer, p))
    return v1


def write_caffemodel(prototxt_text: str, path: Path, shapes: dict[str, list[tuple[int, ...]]], *,
                     encoding: str = "layer", seed: int = 0, omit: Iterable[str] = (),
                     keep: bool = True) -> dict[str, list[np.ndarray]]:
    """Write a caffemodel for ``prototxt_text`` with random blobs of ``shapes``.

    Every prototxt layer is written (as Caffe does), with blobs where ``shapes`` has
    them; layers named in ``omit`` are left out. Returns layer → [weight, bias] as
    written (``keep=False``: an empty dict, for a full-size file written to disk only).
    """
    net = schema.parse_prototxt(prototxt_text)
    blobs = random_blobs(shapes, seed)
    pending = dict.fromkeys(shapes)
    written: dict[str, list[np.ndarray]] = {}
    path = Path(path)
    with open(path, "wb") as f:
        f.write(schema.message("NetParameter")(name=net.name).SerializeToString())
        for layer in net.layer:
            if layer.name in pending:
                name, arrays = next(blobs)
                assert name == layer.name, (name, layer.name)
            else:
                arrays = []
            if layer.name in omit:
                continue
            chunk = schema.message("NetParameter")()
            if encoding == "layer":
                out = chunk.layer.add()
                out.CopyFrom(layer)
            elif encoding == "layers":
                out = chunk.layers.add()
                out.CopyFrom(to_v1(layer))
            else:
                raise ValueError(encoding)
            for array in arrays:
                fill_blob(out.blobs.add(), array, legacy=encoding == "layers")
            f.write(chunk.SerializeToString())
            del chunk, out
            if keep and arrays:
                written[layer.name] = arrays
    return written


#: The blob shapes of the Places365 AlexNet (CaffeNet) deploy prototxt, written out by hand from
#: the network's definition: conv2, conv4 and conv5 are grouped (group 2: half the input channels
#: per filter); fc6 reads pool5's 256×6×6.
ALEXNET_SHAPES: dict[str, list[tuple[int, ...]]] = {
    "conv1": [(96, 3, 11, 11), (96,)], "conv2": [(256, 48, 5, 5), (256,)], "conv3": [(384, 256, 3, 3), (384,)],
    "conv4": [(384, 192, 3, 3), (384,)], "conv5": [(256, 192, 3, 3), (256,)],
    "fc6": [(4096, 9216), (4096,)], "fc7": [(4096, 4096), (4096,)], "fc8": [(365, 4096), (365,)],
}


def write_blobs(prototxt_text: str, path: Path, blobs: dict[str, list[np.ndarray]], *,
                encoding: str = "layer") -> None:
    """A caffemodel holding exactly ``blobs`` (layer → arrays, any count and shape) for every
    prototxt layer (layers not in ``blobs`` are written without blobs, as Caffe does)."""
    net = schema.parse_prototxt(prototxt_text)
    out_net = schema.message("NetParameter")(name=net.name)
    for layer in net.layer:
        if encoding == "layer":
            out = out_net.layer.add()
            out.CopyFrom(layer)
        else:
            out = out_net.layers.add()
            out.CopyFrom(to_v1(layer))
        for array in blobs.get(layer.name, []):
            fill_blob(out.blobs.add(), np.asarray(array, np.float32), legacy=encoding == "layers")
    Path(path).write_bytes(out_net.SerializeToString())
