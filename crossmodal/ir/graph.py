"""The intermediate representation (IR): a framework-neutral, versioned model graph.

An :class:`IRModel` is a :class:`Graph` (plain data, saved as ``model.json``) plus
a mapping of tensor name → ``numpy.ndarray`` (saved as ``weights.h5``).

Conventions (the IR's own, whatever the source framework):

* activations are **NCHW** (batch, channels, height, width), float32;
* ``conv2d`` weights are **OIHW** (out channels, in channels, kernel H, kernel W),
  biases ``(O,)``;
* ``dense`` weights are **(out, in)** and a ``dense`` that follows ``flatten``
  reads its input in **CHW** order (channel-first flatten, as PyTorch and Caffe do);
  the ``flatten`` layer records the pre-flatten ``(C, H, W)`` it expects;
* every layer's output is addressed by the layer's name; ``Graph.blobs`` maps
  public feature names (``fc7``, ``pool5``, ``logits``, ``prob``) onto layer names.

This module is pure: no file I/O (see :mod:`crossmodal.ir.store`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from crossmodal.ir.kinds import (  # noqa: F401  (re-exported: the IR's public names)
    LAYER_KINDS, MULTI_INPUT_KINDS, OPTIONAL_ROLES, TENSOR_LAYOUTS, expected_tensor_shapes, infer_shapes,
    pool_output_size,
)
from crossmodal.errors import InputError, UnsupportedError

#: 1.1 added ``tensors``: the SHA-256 of tensors no layer owns (the Caffe mean image).
#: 1.2 added the kinds of the Places365 family (grouped/dilated and bias-free convolution,
#: LRN, batch norm, scale, element-wise and concat layers, global average pooling, leaky
#: ReLU), ``keras_names`` and ``feature_blob``. Older 1.x files still load.
FORMAT_VERSION = "1.2"

@dataclass(frozen=True)
class TensorSpec:
    """A stored tensor: its name in ``weights.h5``, shape, layout and SHA-256."""

    name: str
    shape: tuple[int, ...]
    layout: str
    dtype: str = "float32"
    sha256: str = ""


@dataclass
class Layer:
    """One node of the graph: ``inputs`` name the graph input or earlier layers (several
    for ``eltwise`` and ``concat``); ``attrs`` and ``tensors`` by kind are described in
    :mod:`crossmodal.ir.kinds`."""

    name: str
    kind: str
    inputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, TensorSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class InputSpec:
    """The network input: ``shape`` is (C, H, W) per sample, batch excluded."""

    name: str = "input"
    shape: tuple[int, int, int] = (3, 224, 224)
    layout: str = "NCHW"
    channel_order: str = "RGB"
    value_range: str = "0-1"


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the network input, as data.

    Steps, in order: decode to RGB (``channel_order`` ``"L"``: then to grayscale, PIL's
    ITU-R 601-2 luma) → resize → center crop → to float in ``value_range`` ("0-1":
    pixel/255, "0-255": pixel) → reorder channels to ``channel_order`` → subtract mean
    (``mean`` per channel, or the tensor named ``mean_image`` of shape (C, H, W),
    already in ``channel_order``, center-cropped to the crop size) → divide by ``std``.

    The spec makes ``C = len(mean)`` channels: 3 (``RGB`` / ``BGR``) or 1 (``L``,
    grayscale); ``std`` has as many values. :mod:`crossmodal.ir.consistency`
    checks that C is what the network's first layer takes.

    ``resize`` is either an int (the shorter side becomes this, aspect kept) or
    ``(H, W)`` (exact size, aspect not kept). ``crop`` is (H, W).
    ``mean`` and ``std`` are in ``channel_order`` and in units of ``value_range``.
    """

    resize: int | tuple[int, int] = 256
    crop: tuple[int, int] = (224, 224)
    interpolation: str = "bilinear"
    channel_order: str = "RGB"
    value_range: str = "0-1"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    mean_image: str | None = None
    name: str = "torchvision"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["resize"] = list(self.resize) if isinstance(self.resize, tuple) else self.resize
        d["crop"], d["mean"], d["std"] = list(self.crop), list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: object = None) -> "Preprocess":
        """A spec from JSON data, every field type-checked (InputError naming the field).

        ``resize``: a positive int or [H, W] ([S] means S); ``crop``: a positive int
        (square) or [H, W]; ``mean``: three numbers (one for a grayscale spec); ``std``: as
        many non-zero numbers. Fields left out take the torchvision defaults, except
        ``name``, which is ``"custom"`` for a spec that does not name itself, and
        ``channel_order``, which is ``"L"`` for a spec whose mean has one value.
        """
        if not isinstance(d, Mapping):
            raise InputError("preprocessing spec must be a JSON object", source)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown preprocessing keys {unknown}; known: {sorted(known)}", source)
        kw = {key: _PREPROCESS_FIELDS[key](value, key, source) for key, value in d.items()}
        kw.setdefault("name", "custom")
        if len(kw.get("mean", (0, 0, 0))) == 1:
            kw.setdefault("channel_order", "L")
        spec = cls(**kw)
        spec.validate(source)
        return spec

    @property
    def channels(self) -> int:
        """How many channels the images this spec makes have: 1 (``L``) or 3."""
        return 1 if self.channel_order == "L" else 3

    def validate(self, source: object = None) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise InputError(f"channel_order must be RGB, BGR or L (grayscale), not {self.channel_order!r}", source)
        if self.value_range not in ("0-1", "0-255"):
            raise InputError(f"value_range must be '0-1' or '0-255', not {self.value_range!r}", source)
        n = self.channels
        if len(self.mean) != n or len(self.std) != n or any(s == 0 for s in self.std):
            want = "one value each (grayscale, channel_order L)" if n == 1 else "three values each"
            raise InputError(f"mean and std need {want}, std non-zero; got {len(self.mean)} and "
                             f"{len(self.std)} for channel_order {self.channel_order}", source)

    def check_fits(self, input_shape: tuple[int, ...], source: object = None) -> None:
        """Refuse a spec whose crop (H, W) is not the network input's (C, H, W) size."""
        h, w = int(input_shape[-2]), int(input_shape[-1])
        if tuple(int(v) for v in self.crop) != (h, w):
            raise InputError(f"preprocessing {self.name!r} crops {self.crop[0]}×{self.crop[1]}, but the "
                             f"network takes {h}×{w}: give a spec whose \"crop\" is [{h}, {w}]", source)


#: Channel orders a preprocessing spec may make: colour (3 channels) or grayscale ``L`` (1 channel).
CHANNEL_ORDERS = ("RGB", "BGR", "L")

#: Resampling filters an image may be resized with (see crossmodal.data.images).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "area", "box")


def _bad(key: str, want: str, value: Any, source: object) -> InputError:
    return InputError(f"preprocessing field {key!r} must be {want}, not {json.dumps(value)}", source)


def _int(value: Any) -> int | None:
    """A positive int from JSON (an integral float counts), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value) if value > 0 else None


def _size(value: Any, key: str, source: object, *, square: bool) -> int | tuple[int, int]:
    """``resize``: int or (H, W); ``crop`` (``square``): always (H, W)."""
    want = "a positive integer or [H, W] of positive integers"
    if isinstance(value, (list, tuple)):
        sizes = [_int(v) for v in value]
        if len(sizes) not in (1, 2) or None in sizes:
            raise _bad(key, want, list(value), source)
        if len(sizes) == 2:
            return (sizes[0], sizes[1])
        value = sizes[0]
    n = _int(value)
    if n is None:
        raise _bad(key, want, value, source)
    return (n, n) if square else n


def _choice(options: tuple[str, ...], *, lower: bool = False):
    def check(value: Any, key: str, source: object) -> str:
        if not isinstance(value, str) or (value.lower() if lower else value) not in options:
            raise _bad(key, "one of " + ", ".join(repr(o) for o in options), value, source)
        return value
    return check


def _triple(nonzero: bool):
    def check(value: Any, key: str, source: object) -> tuple[float, ...]:
        want = "three " + ("non-zero " if nonzero else "") + "numbers (one for a grayscale spec)"
        if (not isinstance(value, (list, tuple)) or len(value) not in (1, 3)
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                       or (nonzero and v == 0) for v in value)):
            raise _bad(key, want, list(value) if isinstance(value, tuple) else value, source)
        return tuple(float(v) for v in value)
    return check


def _text(optional: bool):
    def check(value: Any, key: str, source: object) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise _bad(key, "a non-empty string" + (" or null" if optional else ""), value, source)
        return value
    return check


_PREPROCESS_FIELDS: dict[str, Any] = {
    "resize": lambda v, k, s: _size(v, k, s, square=False),
    "crop": lambda v, k, s: _size(v, k, s, square=True),
    "interpolation": _choice(INTERPOLATIONS, lower=True),
    "channel_order": _choice(CHANNEL_ORDERS),
    "value_range": _choice(("0-1", "0-255")),
    "mean": _triple(nonzero=False),
    "std": _triple(nonzero=True),
    "mean_image": _text(optional=True),
    "name": _text(optional=False),
}


#: Named preprocessing presets (``--preprocess NAME``).
PREPROCESS_PRESETS: dict[str, Preprocess] = {
    # torchvision's ImageNet recipe: shorter side 256, center crop 224.
    "torchvision": Preprocess(),
    # The Places365 authors' PyTorch demo scripts: Resize((256, 256)), CenterCrop(224).
    "places365": Preprocess(resize=(256, 256), name="places365"),
    # Caffe: BGR, 0-255, per-channel mean of places365CNN_mean.binaryproto, 256×256 then crop.
    "caffe": Preprocess(
        resize=(256, 256), channel_order="BGR", value_range="0-255",
        mean=(104.051, 112.514, 116.676), std=(1.0, 1.0, 1.0), name="caffe",
    ),
}


@dataclass
class Labels:
    """Class names in output order, with optional indoor(1)/outdoor(2) flags."""

    names: list[str]
    indoor_outdoor: list[int] | None = None
    source: str | None = None


@dataclass
class Provenance:
    """Where the IR came from."""

    source_file: str = ""
    source_sha256: str = ""
    source_format: str = ""
    reader: str = ""
    tool_version: str = ""
    framework_versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    notes: list[str] = field(default_factory=list)
    #: What the weights are (see :mod:`crossmodal.ir.identity`): ``{"kind": "random", "seed": N}``,
    #: ``{"kind": "card", "card": NAME, ...}`` or ``{"kind": "unknown", "sha256": ...}``; empty in an
    #: IR written before it was recorded (read as unknown).
    weights_identity: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """The model graph: layers in topological (here: sequential) order."""

    name: str
    input: InputSpec
    layers: list[Layer]
    outputs: list[str]
    preprocess: Preprocess = field(default_factory=Preprocess)
    labels: Labels | None = None
    provenance: Provenance = field(default_factory=Provenance)
    blobs: dict[str, str] = field(default_factory=dict)
    #: Tensors no layer owns, by name: the Caffe mean image ``preprocess.mean_image``
    #: (3, H, W), layout ``CHW``, in the preprocessing's channel order and value units.
    tensors: dict[str, TensorSpec] = field(default_factory=dict)
    #: IR layer → the Keras layer name the emitter gives it (``block1_conv1`` for VGG16, as
    #: ``keras.applications`` names it); set by the model definitions in ``crossmodal.models``.
    #: Layers not listed keep their IR name (``/`` and other characters Keras refuses become ``_``).
    keras_names: dict[str, str] = field(default_factory=dict)
    #: The public blob that is the network's feature vector (retrieval's and probe's default
    #: layer, the ONNX model's third output): ``fc7`` for VGG/AlexNet, the pooled features else.
    feature_blob: str = "fc7"
    format_version: str = FORMAT_VERSION

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def resolve(self, name: str) -> str:
        """A public blob name (``fc7``, ``logits``) or a layer name → the layer name.

        Blob names win: ``fc7`` is the post-ReLU feature (Caffe's in-place blob), not
        the dense layer also called ``fc7`` (address that one by listing all layers).
        """
        if name in self.blobs:
            return self.blobs[name]
        if any(layer.name == name for layer in self.layers):
            return name
        raise InputError(f"no layer or blob named {name!r}; known: {[l.name for l in self.layers]}")

    @property
    def num_classes(self) -> int:
        last_dense = [l for l in self.layers if l.kind == "dense"][-1]
        return int(last_dense.attrs["out_features"])

    def parameter_count(self) -> int:
        return sum(int(np.prod(t.shape)) for l in self.layers for t in l.tensors.values())

    # --- (de)serialisation of the JSON part -------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON form, always in the current format version (what the writer writes)."""
        return {
            "format": "crossmodal-ir",
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "input": {**dataclasses.asdict(self.input), "shape": list(self.input.shape)},
            "preprocess": self.preprocess.to_dict(),
            "layers": [
                {
                    "name": l.name,
                    "kind": l.kind,
                    "inputs": list(l.inputs),
                    "attrs": _jsonable(l.attrs),
                    "tensors": {
                        role: {**dataclasses.asdict(t), "shape": list(t.shape)}
                        for role, t in l.tensors.items()
                    },
                }
                for l in self.layers
            ],
            "outputs": list(self.outputs),
            "blobs": dict(self.blobs),
            "tensors": {name: {**dataclasses.asdict(t), "shape": list(t.shape)} for name, t in self.tensors.items()},
            "keras_names": dict(self.keras_names),
            "feature_blob": self.feature_blob,
            "labels": None if self.labels is None else dataclasses.asdict(self.labels),
            "provenance": dataclasses.asdict(self.provenance),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: object = None) -> "Graph":
        if d.get("format") != "crossmodal-ir":
            raise InputError("not a crossmodal IR graph (missing 'format': 'crossmodal-ir')", source)
        version = str(d.get("format_version", ""))
        if version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
            raise InputError(f"IR format version {version} is not readable by this version "
                             f"(reads {FORMAT_VERSION.split('.')[0]}.x)", source)
        try:
            layers = [
                Layer(
                    name=l["name"], kind=l["kind"], inputs=list(l["inputs"]),
                    attrs=_untuple(l.get("attrs", {})),
                    tensors={r: TensorSpec(**{**t, "shape": tuple(t["shape"])})
                             for r, t in l.get("tensors", {}).items()},
                )
                for l in d["layers"]
            ]
            inp = d["input"]
            graph = cls(
                name=d["name"],
                input=InputSpec(**{**inp, "shape": tuple(inp["shape"])}),
                layers=layers,
                outputs=list(d["outputs"]),
                preprocess=Preprocess.from_dict(d["preprocess"], source),
                labels=None if d.get("labels") is None else Labels(**d["labels"]),
                provenance=Provenance(**d.get("provenance", {})),
                blobs=dict(d.get("blobs", {})),
                tensors={n: TensorSpec(**{**t, "shape": tuple(t["shape"])})
                         for n, t in (d.get("tensors") or {}).items()},
                keras_names=dict(d.get("keras_names") or {}),
                feature_blob=str(d.get("feature_blob") or "fc7"),
                format_version=version,
            )
        except (KeyError, TypeError) as exc:
            raise InputError(f"malformed IR graph: {exc!r}", source) from None
        return graph


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _untuple(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in attrs.items()}


def tensor_sha256(array: np.ndarray) -> str:
    """SHA-256 of a tensor's bytes as stored: C order, little-endian, its own dtype."""
    arr = np.ascontiguousarray(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return hashlib.sha256(memoryview(arr).cast("B")).hexdigest()


@dataclass
class IRModel:
    """A graph plus its tensors (name → array in the layout the graph records)."""

    graph: Graph
    weights: dict[str, np.ndarray]

    def tensor(self, layer: Layer, role: str) -> np.ndarray:
        return self.weights[layer.tensors[role].name]

    def fingerprint(self) -> str:
        """SHA-256 over the graph's structure and every tensor's hash (cache keys)."""
        h = hashlib.sha256()
        for layer in self.graph.layers:
            h.update(json.dumps([layer.name, layer.kind, _jsonable(layer.attrs)], sort_keys=True).encode())
            for role in sorted(layer.tensors):
                spec = layer.tensors[role]
                h.update((spec.sha256 or tensor_sha256(self.weights[spec.name])).encode())
        return h.hexdigest()


def validate(model: IRModel) -> None:
    """Check kinds, wiring, tensor presence and shapes; list *every* problem at once."""
    graph, problems = model.graph, []
    seen = {graph.input.name}
    unknown = sorted({l.kind for l in graph.layers if l.kind not in LAYER_KINDS})
    if unknown:
        raise UnsupportedError(f"unsupported layer kinds {unknown}")
    try:
        shapes = infer_shapes(graph)
    except InputError as exc:
        problems.append(str(exc))
        shapes = {}
    for layer in graph.layers:
        for src in layer.inputs:
            if src not in seen:
                problems.append(f"layer {layer.name!r} reads {src!r}, which comes later or not at all")
        seen.add(layer.name)
        required, optional = set(LAYER_KINDS[layer.kind]), set(OPTIONAL_ROLES.get(layer.kind, ()))
        if not required <= set(layer.tensors) <= required | optional:
            problems.append(f"layer {layer.name!r} ({layer.kind}) has tensors {sorted(layer.tensors)}, "
                            f"expected {sorted(required)}" + (f" and optionally {sorted(optional)}" if optional else ""))
            continue
        in_shape = shapes.get(layer.inputs[0]) if layer.inputs else None
        want = expected_tensor_shapes(layer.kind, layer.attrs, in_shape) if in_shape else {}
        for role, spec in layer.tensors.items():
            arr = model.weights.get(spec.name)
            if arr is None:
                problems.append(f"tensor {spec.name!r} of layer {layer.name!r} is missing")
            elif tuple(arr.shape) != tuple(spec.shape):
                problems.append(f"tensor {spec.name!r} has shape {tuple(arr.shape)}, graph says {spec.shape}")
            elif role in want and tuple(arr.shape) != tuple(want[role]):
                problems.append(f"tensor {spec.name!r} has shape {tuple(arr.shape)}, layer {layer.name!r} "
                                f"({layer.kind}) needs {tuple(want[role])}")
    for name, spec in graph.tensors.items():
        arr = model.weights.get(name)
        if arr is None:
            problems.append(f"tensor {name!r} is recorded in the graph but missing")
        elif tuple(arr.shape) != tuple(spec.shape):
            problems.append(f"tensor {name!r} has shape {tuple(arr.shape)}, graph says {spec.shape}")
    for out in graph.outputs:
        if out not in seen:
            problems.append(f"output {out!r} is not a layer")
    for blob, target in graph.blobs.items():
        if target not in seen:
            problems.append(f"blob {blob!r} points at unknown layer {target!r}")
    if graph.labels is not None and len(graph.labels.names) != graph.num_classes:
        problems.append(f"{len(graph.labels.names)} labels for {graph.num_classes} classes")
    if problems:
        raise InputError("invalid IR: " + "; ".join(dict.fromkeys(problems)))


def layer_tensor_names(graph: Graph) -> set[str]:
    return {t.name for l in graph.layers for t in l.tensors.values()}


def with_hashes(model: IRModel) -> IRModel:
    """Fill in the SHA-256 of every tensor that has none yet (returns a new graph).

    Covers the layers' tensors and every other array in ``model.weights`` (e.g. the
    Caffe mean image), which gets a record in ``Graph.tensors``. Hashes already
    present are kept: they were computed from these arrays when the model was
    read (``load_ir`` checks them against the file).
    """
    from concurrent.futures import ThreadPoolExecutor

    graph = model.graph
    owned = layer_tensor_names(graph)
    extra = {name: graph.tensors.get(name) or TensorSpec(name, tuple(arr.shape), "CHW" if arr.ndim == 3 else "",
                                                         str(arr.dtype))
             for name, arr in model.weights.items() if name not in owned}
    todo = [t.name for l in graph.layers for t in l.tensors.values() if not t.sha256]
    todo += [name for name, t in extra.items() if not t.sha256]
    with ThreadPoolExecutor(max_workers=2) as pool:  # hashlib releases the GIL on large buffers
        hashes = dict(zip(todo, pool.map(lambda n: tensor_sha256(model.weights[n]), todo)))

    def filled(t: TensorSpec) -> TensorSpec:
        return t if t.sha256 else dataclasses.replace(t, sha256=hashes[t.name], dtype=str(model.weights[t.name].dtype))
    layers = [dataclasses.replace(l, tensors={r: filled(t) for r, t in l.tensors.items()}) for l in graph.layers]
    tensors = {name: filled(t) for name, t in extra.items()}
    return IRModel(dataclasses.replace(graph, layers=layers, tensors=tensors), model.weights)
