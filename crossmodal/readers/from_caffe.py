"""Caffe networks (deploy ``.prototxt`` + ``.caffemodel``) → IR, without Caffe.

The prototxt gives the graph, the caffemodel (a binary ``NetParameter``) the weights,
matched by layer name; see :mod:`caffe_schema` for the messages. Both encodings of
a caffemodel are read: ``layer`` (LayerParameter, blob shapes as ``BlobShape``) and
the legacy ``layers`` (V1LayerParameter, blob shapes as num/channels/height/width;
InnerProduct weights stored 1×1×out×in are reshaped to (out, in)).

The graph is read generically, one converter per Caffe layer type
(:mod:`caffe_layers`: Convolution with group/dilation/bias_term, Pooling MAX/AVE with
Caffe's ceil rounding and global pooling, LRN, ReLU, Dropout, Concat, Eltwise,
BatchNorm, Scale, InnerProduct, Flatten, Softmax, Split, in-place layers; Input layers,
``input``/``input_shape``/``input_dim``), so any network built from these types reads,
the six official Places365 ones included. Anything else is listed, all at once, in one
:class:`UnsupportedError`; a prototxt whose shapes do not add up fails naming the layer.

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
without a ``pool5`` blob (a smaller VGG, GoogLeNet's ``pool5/7x7_s1``) gets ``pool5`` for
the map its classifier flattens, as the PyTorch reader names it. ``graph.feature_blob`` is
the blob the classifier reads (``fc7`` in AlexNet/VGG, ``pool5`` in GoogLeNet/ResNet).

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

from crossmodal.ir.preprocess import PREPROCESS_PRESETS, Preprocess

from crossmodal.ir.graph import Graph, InputSpec, IRModel, Layer, Provenance

from crossmodal.ir.validation import validate
from crossmodal.readers import caffe_schema as schema
from crossmodal.readers.caffe_weights import load_weights
from crossmodal.readers.caffe_layers import CONVERTERS, LIMITS, MULTI_BOTTOM, NetBuilder
from crossmodal.readers.caffe_preprocess import (  # noqa: F401  (read_mean_file: public here too)
    MEAN_MODES, caffe_preprocessing, read_mean_file, rgb_conv as _rgb_conv,
)
from crossmodal.errors import InputError, UnsupportedError

_TEST = 1  # caffe.Phase.TEST
_DATA_TYPES = ("Data", "ImageData")
_SKIPPED_TYPES = ("Accuracy", "Silence")
_SUPPORTED = {"Input", "SoftmaxWithLoss", *CONVERTERS, *_DATA_TYPES, *_SKIPPED_TYPES}


@dataclass
class CaffeNet:
    """A prototxt read into an IR graph (tensor specs, no weights).

    ``expected``: Caffe layer → [(IR tensor name or None, role, shape as the caffemodel
    stores it)]; ``transposed``: InnerProduct layers with ``transpose: true`` (stored (in, out));
    ``no_bias``: InnerProduct layers with ``bias_term: false`` (the IR gets a zero bias);
    ``batch_norms``: BatchNorm layers (mean and var divided by the scale-factor blob).
    """

    graph: Graph
    expected: dict[str, list[tuple[str | None, str, tuple[int, ...]]]]
    transposed: set[str] = field(default_factory=set)
    no_bias: set[str] = field(default_factory=set)
    batch_norms: set[str] = field(default_factory=set)
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


_PARAM_TYPES = {"input_param": "InputParameter", "flatten_param": "FlattenParameter",  # absent from V1
                "batch_norm_param": "BatchNormParameter", "scale_param": "ScaleParameter"}


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
    if layer.type not in _SUPPORTED:
        return ""
    limit = LIMITS.get(layer.type)
    return limit(layer) if limit else None


def _check_supported(layers: list[_CLayer], path: Path, suffix: str = "") -> None:
    bad = []
    for layer in layers:
        reason = _unsupported_reason(layer)
        if reason is not None:
            bad.append(f"{layer.name} ({layer.type}{': ' + reason if reason else ''})")
    if bad:
        raise UnsupportedError(f"{len(bad)} unsupported Caffe layer(s): {', '.join(bad)}{suffix}", path)


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
    b = NetBuilder(path, taken={l.name for l in layers} | {"input"})
    result = CaffeNet(Graph("", InputSpec(), [], []), b.expected)

    def set_input(blob: str, dims, what: str) -> None:
        dims = [int(d) for d in dims]
        if "input" in b.ir_shapes:
            raise UnsupportedError(f"more than one network input ({what})", path)
        if len(dims) != 4 or min(dims[1:]) < 1:
            raise InputError(f"{what}: input shape {dims} is not N×C×H×W", path)
        b.set_input(blob, tuple(dims[1:]))

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
        unknown = [x for x in layer.bottom if x not in b.wire]
        if unknown and not (t == "SoftmaxWithLoss" and layer.bottom[0] in b.wire):
            raise InputError(f"layer {name} reads blob {unknown[0]!r}, which no earlier layer writes", path)
        n_bottom, n_top = len(layer.bottom), len(layer.top)
        if t in MULTI_BOTTOM:
            ok, want = n_bottom >= 2 and n_top == 1, "two or more bottom blobs and one top"
        elif t == "SoftmaxWithLoss":
            ok, want = n_bottom == 2 and n_top == 1, "two bottom blobs (scores, label) and one top"
        else:
            ok, want = n_bottom == 1 and (t == "Split" or n_top == 1), "one bottom and one top blob"
        if not ok:
            raise InputError(f"layer {name} ({t}) has {n_bottom} bottom and {n_top} top blobs; {t} takes {want}",
                             path)
        if t == "SoftmaxWithLoss":
            ir_name = b.fresh("prob")
            b.add(Layer(ir_name, "softmax", [b.src(layer.bottom[0])], {"axis": 1}), layer.top[0], expose=False)
            notes.append(f"train_val: SoftmaxWithLoss {name!r} became the inference softmax {ir_name!r}")
            continue
        CONVERTERS[t](b, layer)

    if "input" not in b.ir_shapes:
        raise InputError("declares no input (input/input_dim, an Input layer or a Data layer)", path)
    ir = b.layers
    dense = [l.name for l in ir if l.kind == "dense"]
    if not dense:
        raise UnsupportedError("has no InnerProduct layer; the IR holds classification networks", path)
    softmax = [l.name for l in ir if l.kind == "softmax"]
    blobs = {blob: b.value[blob] for blob in b.public}
    blobs.update({"logits": dense[-1], **({"prob": softmax[-1]} if softmax else {})})
    flat = next((l for l in ir if l.kind == "flatten"), None)
    if flat is not None:  # the map before the classifier, named as the PyTorch reader names it
        blobs.setdefault("pool5", _through_dropout(ir, flat.inputs[0]))
    pre = PREPROCESS_PRESETS["caffe"]
    result.graph = Graph(
        name=net.name or path.stem,
        input=InputSpec(shape=b.ir_shapes["input"], channel_order=pre.channel_order, value_range=pre.value_range),
        layers=ir, outputs=[dense[-1]] + softmax[-1:], preprocess=pre, blobs=blobs,
        feature_blob=_feature_blob(ir, blobs, dense[-1]))
    result.notes, result.transposed, result.no_bias = notes, b.transposed, b.zero_bias
    result.batch_norms = b.batch_norms
    return result


def _through_dropout(ir: list[Layer], name: str) -> str:
    """The layer whose value ``name`` passes on (dropout is the identity at inference)."""
    by_name = {l.name: l for l in ir}
    while name in by_name and by_name[name].kind == "dropout":
        name = by_name[name].inputs[0]
    return name


def _feature_blob(ir: list[Layer], blobs: dict[str, str], classifier: str) -> str:
    """The public blob the classifier (the last InnerProduct) reads: ``fc7`` in AlexNet and VGG,
    the pooled map in GoogLeNet and ResNet (``pool5``, through the flatten Caffe does implicitly)."""
    src = _through_dropout(ir, next(l for l in ir if l.name == classifier).inputs[0])
    layer = next((l for l in ir if l.name == src), None)
    if layer is not None and layer.kind == "flatten":
        src = _through_dropout(ir, layer.inputs[0])
    names = [blob for blob, target in blobs.items() if target == src and blob not in ("logits", "prob")]
    if "pool5" in names:
        return "pool5"
    if names:
        return names[-1]
    blobs["features"] = src
    return "features"


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
        reader=f"crossmodal.readers.from_caffe ({encoding} encoding)",
        framework_versions={"protobuf": google.protobuf.__version__}, notes=notes)
    model = IRModel(graph, {**weights, **extra})
    validate(model)
    return model
