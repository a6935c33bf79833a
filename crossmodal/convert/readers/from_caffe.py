"""Caffe VGG-style networks (deploy ``.prototxt`` + ``.caffemodel``) → IR, without Caffe.

The prototxt gives the graph, the caffemodel (a binary ``NetParameter``) the weights,
matched by layer name; see :mod:`caffe_schema` for the messages. Both encodings of
a caffemodel are read: ``layer`` (LayerParameter, blob shapes as ``BlobShape``) and
the legacy ``layers`` (V1LayerParameter, blob shapes as num/channels/height/width;
InnerProduct weights stored 1×1×out×in are reshaped to (out, in)).

Layers: Convolution (group 1, no dilation) → ``conv2d`` (weights OIHW, as Caffe
stores them); Pooling MAX/AVE → ``max_pool2d``/``avg_pool2d`` with ``ceil_mode``
(Caffe rounds up unless ``round_mode: FLOOR``); InnerProduct → ``dense`` (out, in)
with an IR ``flatten`` recording (C, H, W) before the first one (Caffe flattens
channel-first, as the IR does); ReLU, Dropout, Softmax, Flatten; Input layers,
``input``/``input_shape``/``input_dim``. Anything else is listed, all at once, in
one :class:`UnsupportedError`.

train_val prototxts are read as Caffe's TEST net: layers whose include/exclude
rules leave them out of phase TEST are dropped, the Data/ImageData layer becomes the
input (3 × crop_size × crop_size from ``transform_param``, or the deprecated copy in
``data_param``/``image_data_param``; ImageData without a crop: new_height × new_width),
Accuracy is skipped and SoftmaxWithLoss becomes an inference softmax ``prob``; each
step is a provenance note. ``transform_param.scale`` other than 1 and grayscale data
are refused; ``mean_value`` becomes the per-channel mean (unless a mean file or a
preprocessing spec is given) and a ``mean_file`` path is noted, not read.

Blob names follow Caffe: ``graph.blobs[top]`` is the IR layer whose output is that
blob's final value at inference, so with in-place ReLU ``fc7`` is ``relu7`` (an
in-place Dropout is the identity and does not take the name, which keeps the blob
addressable in engines without dropout layers, such as Keras). ``logits`` is the
last InnerProduct, ``prob`` the last softmax; IR ``outputs`` are [logits, prob]. A net
without a ``pool5`` blob (a smaller VGG) gets ``pool5`` for the map its classifier
flattens, as the PyTorch reader names it.

Weights are float32 NumPy views of the caffemodel's bytes, read once into a
writable buffer (no per-tensor copy; a full VGG16 reads in ~0.6 s at ~0.55 GB peak).

Preprocessing is data in the IR (:mod:`caffe_preprocess`): the ``caffe`` preset (BGR, 0–255, per-channel
mean, resize 256×256), or a given spec, which must say BGR (RGB only with
``rgb_input``) and 0–255; either with the means of a ``.binaryproto`` per channel
or as a 3×H×W mean image (tensor ``preprocess.mean_image``; mean mode ``image``
needs the file). The crop is always the network's input size. Only ``rgb_input``
folds the BGR order into the first convolution's weights (``w[:, ::-1]``); the
preprocessing, means included, then becomes RGB and its name ends in ``-rgb``.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossmodal.convert.ir import (
    PREPROCESS_PRESETS, TENSOR_LAYOUTS, Graph, InputSpec, IRModel, Layer, Preprocess, Provenance,
    TensorSpec, pool_output_size, validate,
)
from crossmodal.convert.readers import caffe_schema as schema
from crossmodal.convert.readers.caffe_preprocess import (  # noqa: F401  (read_mean_file: public here too)
    MEAN_MODES, caffe_preprocessing, read_mean_file, rgb_conv as _rgb_conv,
)
from crossmodal.errors import InputError, UnsupportedError

_TEST = 1  # caffe.Phase.TEST
_DATA_TYPES = ("Data", "ImageData")
_SKIPPED_TYPES = ("Accuracy", "Silence")
_SUPPORTED = {"Input", "Convolution", "Pooling", "InnerProduct", "ReLU", "Dropout", "Softmax",
              "Flatten", "Split", "SoftmaxWithLoss", *_DATA_TYPES, *_SKIPPED_TYPES}


@dataclass
class CaffeNet:
    """A prototxt read into an IR graph (tensor specs, no weights).

    ``expected``: Caffe layer → [(IR tensor name, role, shape as the caffemodel stores
    it)]; ``transposed``: InnerProduct layers with ``transpose: true`` (stored (in, out));
    ``no_bias``: layers with ``bias_term: false`` (the IR gets a zero bias).
    """

    graph: Graph
    expected: dict[str, list[tuple[str, str, tuple[int, ...]]]]
    transposed: set[str] = field(default_factory=set)
    no_bias: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    sha256: str = ""
    data_mean: tuple[float, float, float] | None = None  # a train_val Data layer's mean_value (BGR)


@dataclass
class _CLayer:
    """One Caffe layer, whichever encoding: ``msg`` holds the ``*_param`` fields."""

    name: str
    type: str
    bottom: list[str]
    top: list[str]
    msg: object

    def param(self, name: str):
        if name in self.msg.DESCRIPTOR.fields_by_name:
            return getattr(self.msg, name)
        return schema.message(_PARAM_TYPES[name])()


_PARAM_TYPES = {"input_param": "InputParameter", "flatten_param": "FlattenParameter"}  # absent from V1


# --- prototxt ----------------------------------------------------------------------------------
def read_prototxt(prototxt: Path) -> CaffeNet:
    """Parse and check a prototxt; the graph gets the ``caffe`` preprocessing preset."""
    path = Path(prototxt)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", path) from None
    except UnicodeDecodeError:
        raise InputError("not a text prototxt (binary data; is this the .caffemodel?)", path) from None
    net, layers = _parse(text, path)
    result = _build(net, layers, path)
    result.sha256 = hashlib.sha256(raw).hexdigest()
    return result


def _parse(text: str, path: Path):
    from google.protobuf import text_format

    try:
        net = schema.parse_prototxt(text)
    except text_format.ParseError as exc:
        where = f"line {exc.GetLine()} column {exc.GetColumn()}: " if exc.GetLine() else ""
        problem = where + str(exc).split(" : ", 1)[-1]
    else:
        layers = _layers(net, path)
        _check_supported(layers, path)
        return net, layers
    if "has no field named" in problem:  # perhaps the parameters of a layer type we lack:
        try:                             # then the unsupported layers are the better message
            lenient = schema.parse_prototxt(text, allow_unknown_field=True)
        except text_format.ParseError:
            lenient = None
        if lenient is not None:
            _check_supported(_layers(lenient, path), path, f" ({problem})")
    raise InputError(problem, path)


def _layers(net, path: Path) -> list[_CLayer]:
    if len(net.layer) and len(net.layers):
        raise InputError("mixes 'layer' and legacy 'layers' entries", path)
    out = []
    for msg in net.layer:
        if _included(msg):
            out.append(_CLayer(msg.name, msg.type, list(msg.bottom), list(msg.top), msg))
    for msg in net.layers:
        if _included(msg):
            out.append(_CLayer(msg.name, schema.v1_type_name(msg), list(msg.bottom), list(msg.top), msg))
    names = [l.name for l in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"duplicate layer names {dupes}", path)
    return out


def _included(msg) -> bool:
    """Caffe's NetStateRule check for the deploy state: phase TEST, level 0, no stages."""
    def meets(rule) -> bool:
        return not ((rule.HasField("phase") and rule.phase != _TEST)
                    or (rule.HasField("min_level") and rule.min_level > 0)
                    or (rule.HasField("max_level") and rule.max_level < 0)
                    or len(rule.stage))
    if len(msg.include):
        return any(meets(r) for r in msg.include)
    return not any(meets(r) for r in msg.exclude)


def _unsupported_reason(layer: _CLayer) -> str | None:
    t = layer.type
    if t not in _SUPPORTED:
        return ""
    if t == "Convolution":
        p = layer.param("convolution_param")
        if p.group != 1:
            return f"group {p.group}"
        if any(d != 1 for d in p.dilation):
            return f"dilation {list(p.dilation)}"
        if p.axis != 1:
            return f"axis {p.axis}"
    elif t == "Pooling":
        p = layer.param("pooling_param")
        if p.pool not in (0, 1):
            return "stochastic pooling"
    elif t == "InnerProduct" and layer.param("inner_product_param").axis != 1:
        return f"axis {layer.param('inner_product_param').axis}"
    elif t == "ReLU" and layer.param("relu_param").negative_slope != 0:
        return f"negative_slope {layer.param('relu_param').negative_slope:g}"
    elif t == "Softmax" and layer.param("softmax_param").axis != 1:
        return f"axis {layer.param('softmax_param').axis}"
    elif t == "Flatten":
        p = layer.param("flatten_param")
        if p.axis != 1 or p.end_axis != -1:
            return f"axis {p.axis}..{p.end_axis}"
    return None


def _check_supported(layers: list[_CLayer], path: Path, suffix: str = "") -> None:
    bad = []
    for layer in layers:
        reason = _unsupported_reason(layer)
        if reason is not None:
            bad.append(f"{layer.name} ({layer.type}{': ' + reason if reason else ''})")
    if bad:
        raise UnsupportedError(f"{len(bad)} unsupported Caffe layer(s): {', '.join(bad)}{suffix}", path)


def _pair(values, h_field, w_field, msg, default, what: str, path: Path) -> tuple[int, int]:
    """Caffe's ``x_h``/``x_w`` override ``x`` (repeated: one value for both, or h then w)."""
    if msg.HasField(h_field) or msg.HasField(w_field):
        return int(getattr(msg, h_field)), int(getattr(msg, w_field))
    values = [int(v) for v in values]
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    if not values and default is not None:
        return default
    raise InputError(f"{what}: needs 1 or 2 values, has {values}", path)


def _data_layer(layer: _CLayer, path: Path, notes: list[str]) -> tuple[tuple[int, int], tuple | None]:
    """A train_val Data/ImageData layer: the input (H, W) its TEST transform gives, and
    its ``mean_value`` (BGR, or None). ``transform_param`` fields win over the deprecated
    copies in ``data_param``/``image_data_param``, as Caffe's upgrade moves them."""
    t, name, where = layer.type, layer.name, f"layer {layer.name} ({layer.type})"
    tp, legacy = layer.param("transform_param"), layer.param("data_param" if t == "Data" else "image_data_param")

    def pick(field_name: str):
        msg = tp if tp.HasField(field_name) or not legacy.HasField(field_name) else legacy
        return getattr(msg, field_name)
    scale, crop, mean_file = float(pick("scale")), int(pick("crop_size")), pick("mean_file")
    means = tuple(float(v) for v in tp.mean_value)
    if scale != 1:
        raise UnsupportedError(f"{where}: transform_param.scale {scale:g} (pixels scaled after the mean); "
                               "the reader takes 0-255 networks (scale 1): convert the deploy prototxt with "
                               "a --preprocess spec whose std is 1/scale", path)
    if tp.force_gray or (t == "ImageData" and not legacy.is_color):
        raise UnsupportedError(f"{where}: grayscale input (force_gray / is_color: false); the IR's "
                               "preprocessing is 3-channel", path)
    if mean_file and means:
        raise InputError(f"{where}: transform_param has both mean_file and mean_value (Caffe refuses it)", path)
    if len(means) not in (0, 1, 3):
        raise InputError(f"{where}: {len(means)} mean_value entries; Caffe takes 1 or one per channel (3)", path)
    if crop:
        hw, how = (crop, crop), "crop_size"
    elif t == "ImageData" and legacy.new_height and legacy.new_width:
        hw, how = (int(legacy.new_height), int(legacy.new_width)), "new_height/new_width, no crop"
    else:
        raise InputError(f"{where} has no transform_param.crop_size to fix the input size; use the deploy "
                         "prototxt", path)
    notes.append(f"train_val: {t} layer {name!r} read as a 3×{hw[0]}×{hw[1]} input ({how})")
    if mean_file:
        notes.append(f"train_val: {t} layer {name!r} names mean_file {mean_file!r} (not read; give a local "
                     "copy with --mean-file to use it)")
    if means:
        means = means * 3 if len(means) == 1 else means
        notes.append(f"train_val: {t} layer {name!r} mean_value {means} (BGR)")
    return hw, means or None


def _build(net, layers: list[_CLayer], path: Path) -> CaffeNet:
    notes: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}   # Caffe blob → per-sample shape
    wire: dict[str, str] = {}                 # Caffe blob → IR layer that last wrote it
    value: dict[str, str] = {}                # … ignoring in-place dropout (graph.blobs)
    public: list[str] = []                    # Caffe blobs to expose, in order
    ir: list[Layer] = []
    expected: dict[str, list] = {}
    result = CaffeNet(Graph("", InputSpec(), [], []), expected)
    taken = {l.name for l in layers} | {"input"}

    def set_input(blob: str, dims, what: str) -> None:
        dims = [int(d) for d in dims]
        if "input" in wire.values():
            raise UnsupportedError(f"more than one network input ({what})", path)
        if len(dims) != 4 or min(dims[1:]) < 1:
            raise InputError(f"{what}: input shape {dims} is not N×C×H×W", path)
        shapes[blob], wire[blob], value[blob] = tuple(dims[1:]), "input", "input"

    def fresh(name: str) -> str:
        while name in taken:
            name += "_"
        taken.add(name)
        return name

    def add(layer: Layer, top: str, shape: tuple[int, ...], same_as: str | None = None,
            *, expose: bool = True) -> None:
        """Append ``layer``, which writes blob ``top``; ``same_as``: the IR layer whose
        value the blob then holds, when not the new layer's (in-place dropout)."""
        ir.append(layer)
        wire[top], shapes[top], value[top] = layer.name, shape, same_as or layer.name
        if expose and top not in public:
            public.append(top)

    def alias(top: str, bottom: str) -> None:  # a layer with no effect at inference
        wire[top], shapes[top], value[top] = wire[bottom], shapes[bottom], value[bottom]

    def tensors(name: str, kind: str, wshape: tuple[int, ...], out: int) -> dict[str, TensorSpec]:
        return {"weight": TensorSpec(f"{name}.weight", wshape, TENSOR_LAYOUTS[(kind, "weight")]),
                "bias": TensorSpec(f"{name}.bias", (out,), TENSOR_LAYOUTS[(kind, "bias")])}

    if len(net.input):
        if len(net.input) > 1:
            raise UnsupportedError(f"{len(net.input)} network inputs {list(net.input)}; one is supported", path)
        dims = net.input_shape[0].dim if len(net.input_shape) else net.input_dim[:4]
        set_input(net.input[0], dims, "input_dim" if not len(net.input_shape) else "input_shape")

    for layer in layers:
        t, name = layer.type, layer.name
        if t in _SKIPPED_TYPES:
            notes.append(f"train_val: {t} layer {name!r} skipped (not part of inference)")
            continue
        if not layer.top:
            raise InputError(f"layer {name} ({t}) has no top blob", path)
        if t == "Input":
            if len(layer.top) > 1:
                raise UnsupportedError(f"layer {name}: {len(layer.top)} network inputs; one is supported", path)
            shape_msgs = layer.param("input_param").shape
            set_input(layer.top[0], shape_msgs[0].dim if len(shape_msgs) else [], f"layer {name}")
            continue
        if t in _DATA_TYPES:
            hw, result.data_mean = _data_layer(layer, path, notes)
            set_input(layer.top[0], (1, 3, *hw), f"layer {name}")
            continue
        if not layer.bottom:
            raise InputError(f"layer {name} ({t}) has no bottom blob", path)
        bottom = layer.bottom[0]
        if bottom not in wire:
            raise InputError(f"layer {name} reads blob {bottom!r}, which no earlier layer writes", path)
        n_bottom = 2 if t == "SoftmaxWithLoss" else 1
        if len(layer.bottom) != n_bottom or (t != "Split" and len(layer.top) != 1):
            raise InputError(f"layer {name} ({t}) has {len(layer.bottom)} bottom and {len(layer.top)} top "
                             "blobs; VGG-style layers have one of each", path)
        top, src, shape = layer.top[0], wire[bottom], shapes[bottom]
        if t in ("Convolution", "Pooling") and len(shape) != 3:
            raise InputError(f"layer {name} ({t}) needs a C×H×W map, gets shape {shape}", path)
        if t == "Convolution":
            p = layer.param("convolution_param")
            kernel = _pair(p.kernel_size, "kernel_h", "kernel_w", p, None, f"layer {name} kernel", path)
            stride = _pair(p.stride, "stride_h", "stride_w", p, (1, 1), f"layer {name} stride", path)
            pad = _pair(p.pad, "pad_h", "pad_w", p, (0, 0), f"layer {name} pad", path)
            out_hw = [(s + 2 * pd - k) // st + 1 if st > 0 else 0
                      for s, k, st, pd in zip(shape[1:], kernel, stride, pad)]
            if not p.num_output or min(out_hw) < 1 or min(kernel) < 1:
                raise InputError(f"layer {name}: kernel {kernel} stride {stride} pad {pad} num_output "
                                 f"{p.num_output} do not fit a {shape} map", path)
            o, i = int(p.num_output), shape[0]
            add(Layer(name, "conv2d", [src], {"kernel": kernel, "stride": stride, "pad": pad,
                                              "in_channels": i, "out_channels": o},
                      tensors(name, "conv2d", (o, i, *kernel), o)), top, (o, *out_hw))
            expected[name] = [(f"{name}.weight", "weight", (o, i, *kernel))]
            if p.bias_term:
                expected[name].append((f"{name}.bias", "bias", (o,)))
            else:
                result.no_bias.add(name)
        elif t == "Pooling":
            p = layer.param("pooling_param")
            if p.global_pooling:
                kernel, stride, pad = tuple(shape[1:]), (1, 1), (0, 0)
            else:
                kernel = _pair([p.kernel_size] if p.HasField("kernel_size") else [], "kernel_h", "kernel_w", p,
                               None, f"layer {name} kernel", path)
                stride = _pair([p.stride], "stride_h", "stride_w", p, None, f"layer {name} stride", path)
                pad = _pair([p.pad], "pad_h", "pad_w", p, None, f"layer {name} pad", path)
            ceil = p.round_mode == 0
            out_hw = [pool_output_size(s, k, st, pd, ceil) if st > 0 else 0
                      for s, k, st, pd in zip(shape[1:], kernel, stride, pad)]
            if ceil and not any(pad) and min(stride) > 0 and any(
                    o != -(-(s - k) // st) + 1 for o, s, k, st in zip(out_hw, shape[1:], kernel, stride)):
                # Caffe drops a last window that starts past the input only when padded
                raise UnsupportedError(f"layer {name}: pooling kernel {kernel} stride {stride} without pad on "
                                       f"a {shape} map: Caffe's ceil rounding adds a window outside the input",
                                       path)
            if min(out_hw) < 1 or min(kernel) < 1 or any(pd >= k for pd, k in zip(pad, kernel)):
                raise InputError(f"layer {name}: pooling kernel {kernel} stride {stride} pad {pad} does not "
                                 f"fit a {shape} map", path)
            kind = "max_pool2d" if p.pool == 0 else "avg_pool2d"
            add(Layer(name, kind, [src], {"kernel": kernel, "stride": stride, "pad": pad, "ceil_mode": ceil}),
                top, (shape[0], *out_hw))
        elif t == "Flatten":
            if len(shape) == 3:
                add(Layer(name, "flatten", [src], {"shape": shape}), top, (int(np.prod(shape)),))
            else:  # already a vector: nothing to do
                alias(top, bottom)
        elif t == "InnerProduct":
            if len(shape) == 3:  # Caffe flattens C, H, W implicitly; the IR says so
                flat = fresh("flatten")
                ir.append(Layer(flat, "flatten", [src], {"shape": shape}))
                src, shape = flat, (int(np.prod(shape)),)
            p = layer.param("inner_product_param")
            o, i = int(p.num_output), shape[0]
            if not o:
                raise InputError(f"layer {name}: InnerProduct without num_output", path)
            add(Layer(name, "dense", [src], {"in_features": i, "out_features": o},
                      tensors(name, "dense", (o, i), o)), top, (o,))
            expected[name] = [(f"{name}.weight", "weight", (i, o) if p.transpose else (o, i))]
            if p.transpose:
                result.transposed.add(name)
            if p.bias_term:
                expected[name].append((f"{name}.bias", "bias", (o,)))
            else:
                result.no_bias.add(name)
        elif t == "ReLU":
            add(Layer(name, "relu", [src]), top, shape)
        elif t == "Dropout":  # identity at inference: the blob keeps its value's name
            add(Layer(name, "dropout", [src], {"rate": float(layer.param("dropout_param").dropout_ratio)}),
                top, shape, value[bottom])
        elif t == "Softmax":
            add(Layer(name, "softmax", [src], {"axis": 1}), top, shape)
        elif t == "SoftmaxWithLoss":
            ir_name = fresh("prob")
            add(Layer(ir_name, "softmax", [src], {"axis": 1}), top, shape, expose=False)
            notes.append(f"train_val: SoftmaxWithLoss {name!r} became the inference softmax {ir_name!r}")
        elif t == "Split":
            for extra in layer.top:
                alias(extra, bottom)

    if "input" not in wire.values():
        raise InputError("declares no input (input/input_dim, an Input layer or a Data layer)", path)
    dense = [l.name for l in ir if l.kind == "dense"]
    if not dense:
        raise UnsupportedError("has no InnerProduct layer; the IR holds classification networks", path)
    softmax = [l.name for l in ir if l.kind == "softmax"]
    blobs = {blob: value[blob] for blob in public}
    blobs.update({"logits": dense[-1], **({"prob": softmax[-1]} if softmax else {})})
    flat = next((l for l in ir if l.kind == "flatten"), None)
    if flat is not None:  # the map before the classifier, named as the PyTorch reader names it
        blobs.setdefault("pool5", flat.inputs[0])
    pre = PREPROCESS_PRESETS["caffe"]
    result.graph = Graph(
        name=net.name or path.stem,
        input=InputSpec(shape=shapes[next(b for b, w in wire.items() if w == "input")],
                        channel_order=pre.channel_order, value_range=pre.value_range),
        layers=ir, outputs=[dense[-1]] + softmax[-1:], preprocess=pre, blobs=blobs)
    result.notes = notes
    return result


# --- caffemodel ----------------------------------------------------------------------------------
def read_file_sha256(path: Path, chunk: int = 1 << 24) -> tuple[bytearray, str]:
    """The whole file in one writable buffer (weights become views of it) and its SHA-256."""
    size = path.stat().st_size
    buf, digest = bytearray(size), hashlib.sha256()
    view, pos = memoryview(buf), 0
    with open(path, "rb") as f:
        while pos < size:
            n = f.readinto(view[pos:pos + chunk])
            if not n:
                break
            digest.update(view[pos:pos + n])
            pos += n
    view.release()
    if pos != size:
        raise InputError(f"file shrank while being read ({pos} of {size} bytes)", path)
    return buf, digest.hexdigest()


def _fit(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``array`` as ``shape``, allowing the legacy 4-D padding with leading 1s; else None."""
    if tuple(array.shape) == tuple(shape):
        return array

    def core(s):
        s = list(s)
        while s and s[0] == 1:
            s.pop(0)
        return s
    return array.reshape(shape) if core(array.shape) == core(shape) else None


def load_weights(net: CaffeNet, caffemodel: Path, prototxt_name: str) -> tuple[dict[str, np.ndarray], str, str]:
    """Decode ``caffemodel`` and match its blobs to ``net`` by layer name.

    Returns (IR tensor name → float32 array, the file's SHA-256, the encoding).
    Every missing layer and every blob whose shape disagrees with the prototxt is
    listed in one :class:`InputError`.
    """
    if not caffemodel.is_file():
        raise InputError("no such file", caffemodel)
    buf, sha = read_file_sha256(caffemodel)
    try:
        decoded, encoding = schema.decode_caffemodel(buf)
    except schema.WireError as exc:
        raise InputError(f"not a readable caffemodel, truncated or corrupt ({exc})", caffemodel) from None
    by_name: dict[str, list[np.ndarray]] = {}
    for layer, arrays in decoded:
        by_name.setdefault(layer.name, arrays)
    missing, problems, weights = [], [], {}
    for name, wanted in net.expected.items():
        arrays = by_name.get(name)
        if arrays is None:
            missing.append(name)
            continue
        if len(arrays) != len(wanted):
            roles = " and ".join(role for _, role, _ in wanted)
            problems.append(f"{name} has {len(arrays)} blob(s), the prototxt needs {len(wanted)} ({roles})")
            continue
        for (tensor, role, shape), array in zip(wanted, arrays):
            fitted = _fit(array, shape)
            if fitted is None:
                problems.append(f"{name} {role} is {'x'.join(map(str, array.shape)) or 'empty'}, "
                                f"the prototxt needs {'x'.join(map(str, shape))}")
            elif name in net.transposed and role == "weight":
                weights[tensor] = np.ascontiguousarray(fitted.T)
            else:
                weights[tensor] = fitted
    if missing:
        problems.insert(0, f"layer(s) missing from the caffemodel: {', '.join(missing)}")
    if problems:
        raise InputError(f"does not fit {prototxt_name}: " + "; ".join(problems), caffemodel)
    for name in net.no_bias:
        out = net.graph.layer(name).tensors["bias"].shape
        weights[f"{name}.bias"] = np.zeros(out, np.float32)
    return weights, sha, encoding


# --- entry point ---------------------------------------------------------------------------------
def read_caffe(prototxt: Path, caffemodel: Path | None = None, *, mean_file: Path | None = None,
               mean_mode: str = "channel", preprocess: Preprocess | None = None,
               rgb_input: bool = False) -> IRModel:
    """Read a Caffe network (prototxt + caffemodel) into an IR model.

    ``mean_file``: a ``.binaryproto`` mean, used per channel (``mean_mode="channel"``)
    or as a 3×H×W image stored as tensor ``preprocess.mean_image`` (``"image"``);
    without it, ``preprocess`` or the ``caffe`` preset (BGR, 0–255, per-channel mean).
    ``rgb_input``: fold BGR→RGB into the first convolution so the model takes RGB.
    """
    import google.protobuf

    prototxt = Path(prototxt)
    if mean_mode not in MEAN_MODES:
        raise InputError(f"mean mode must be one of {list(MEAN_MODES)}, not {mean_mode!r}")
    if mean_mode == "image" and mean_file is None:
        raise InputError("mean mode 'image' needs a mean image: give the .binaryproto mean file "
                         "(--mean-file), or use mean mode 'channel'", prototxt)
    net = read_prototxt(prototxt)
    if caffemodel is None:
        raise InputError("a prototxt describes the network but holds no weights: give the .caffemodel "
                         "too (--caffemodel)", prototxt)
    caffemodel, graph, pre_notes = Path(caffemodel), net.graph, []
    # everything but the weights first: a bad option fails before the caffemodel is read
    spec, extra = caffe_preprocessing(graph.input.shape, net.data_mean, preprocess,
                                      None if mean_file is None else Path(mean_file), mean_mode, rgb_input,
                                      pre_notes, prototxt)
    first = _rgb_conv(graph, prototxt) if rgb_input else None
    weights, sha, encoding = load_weights(net, caffemodel, prototxt.name)
    notes = [f"prototxt {prototxt.name} (sha256 {net.sha256})", f"caffemodel encoding: {encoding}"
             + (" (legacy V1LayerParameter)" if encoding == "layers" else "")]
    notes += net.notes + [f"{n}: bias_term false, zero bias" for n in sorted(net.no_bias)] + pre_notes
    if first is not None:  # the model takes RGB: reverse the first convolution's input channels
        name = first.tensors["weight"].name
        weights[name] = np.ascontiguousarray(weights[name][:, ::-1])
        notes.append(f"input channel order: {first.name} weights reversed along input channels, "
                     "so the model takes RGB (Caffe's network takes BGR)")
    graph.preprocess = spec
    graph.input = dataclasses.replace(graph.input, channel_order=spec.channel_order, value_range=spec.value_range)
    graph.provenance = Provenance(
        source_file=caffemodel.name, source_sha256=sha, source_format="caffe",
        reader=f"crossmodal.convert.readers.from_caffe ({encoding} encoding)",
        framework_versions={"protobuf": google.protobuf.__version__}, notes=notes)
    model = IRModel(graph, {**weights, **extra})
    validate(model)
    return model
