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

This module is pure: no file I/O (see :mod:`crossmodal.ir.store`). The preprocessing spec is
:mod:`crossmodal.ir.preprocess`, whole-model checks :mod:`crossmodal.ir.validation`, the layer kinds
and their shape rules :mod:`crossmodal.ir.kinds`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from crossmodal.errors import InputError
from crossmodal.ir.preprocess import Preprocess

#: 1.1 added ``tensors``: the SHA-256 of tensors no layer owns (the Caffe mean image).
#: 1.2 added the kinds of the Places365 family (grouped/dilated and bias-free convolution,
#: LRN, batch norm, scale, element-wise and concat layers, global average pooling, leaky
#: ReLU), ``keras_names`` and ``feature_blob``. 1.3 added, for networks read from ONNX and Keras,
#: asymmetric padding (``pad_end`` of conv and pooling layers), the clipped ReLU (``max_value``)
#: and the ``rescale`` kind (x · scale + offset). Older 1.x files still load (the new attributes
#: have defaults that mean what those files meant).
#:
#: The compatibility rule: a *minor* version (1.2 → 1.3) only adds optional fields, so a reader
#: loads a file of a newer minor version, ignoring the fields it does not know with a note
#: (:class:`~crossmodal.errors.FormatNote`), while the same unknown field in a file of its own or an
#: older version is an error (a malformed file); a *major* version (2.x) changes meanings and is
#: refused with a message naming both versions.
FORMAT_VERSION = "1.3"


def _version(text: str) -> tuple[int, int] | None:
    try:
        major, minor = (int(v) for v in (str(text).split(".") + ["0"])[:2])
    except ValueError:
        return None
    return major, minor

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
        theirs, ours = _version(version), _version(FORMAT_VERSION)
        if theirs is None or theirs[0] != ours[0]:
            raise InputError(f"IR format version {version or '(none)'} was written by another major version "
                             f"of crossmodal; this one reads format {ours[0]}.x (its own is {FORMAT_VERSION}): "
                             "convert the model again with this version", source)
        ignored: list[str] = []
        keep = _known_fields(theirs > ours, ignored)
        try:
            layers = [
                Layer(
                    name=l["name"], kind=l["kind"], inputs=list(l["inputs"]),
                    attrs=_untuple(l.get("attrs", {})),
                    tensors={r: TensorSpec(**keep(TensorSpec, {**t, "shape": tuple(t["shape"])}, "tensor"))
                             for r, t in l.get("tensors", {}).items()},
                    **{k: v for k, v in keep(Layer, l, "layer").items()
                       if k not in ("name", "kind", "inputs", "attrs", "tensors")},
                )
                for l in d["layers"]
            ]
            inp = d["input"]
            keep(cls, d, "graph")  # top-level fields this version does not know: only noted
            graph = cls(
                name=d["name"],
                input=InputSpec(**keep(InputSpec, {**inp, "shape": tuple(inp["shape"])}, "input")),
                layers=layers,
                outputs=list(d["outputs"]),
                preprocess=Preprocess.from_dict(keep(Preprocess, d["preprocess"], "preprocess"), source),
                labels=None if d.get("labels") is None else Labels(**keep(Labels, d["labels"], "labels")),
                provenance=Provenance(**keep(Provenance, d.get("provenance", {}), "provenance")),
                blobs=dict(d.get("blobs", {})),
                tensors={n: TensorSpec(**keep(TensorSpec, {**t, "shape": tuple(t["shape"])}, "tensor"))
                         for n, t in (d.get("tensors") or {}).items()},
                keras_names=dict(d.get("keras_names") or {}),
                feature_blob=str(d.get("feature_blob") or "fc7"),
                format_version=version,
            )
        except (KeyError, TypeError) as exc:
            raise InputError(f"malformed IR graph: {exc!r}", source) from None
        if ignored:
            import warnings
            from crossmodal.errors import FormatNote
            where = f"{source}: " if source else ""
            warnings.warn(FormatNote(f"{where}IR format {version} is newer than this crossmodal's {FORMAT_VERSION}; "
                                     f"ignored the fields it does not know: {', '.join(sorted(set(ignored)))}"),
                          stacklevel=2)
        return graph


def _known_fields(newer: bool, ignored: list[str]):
    """``keep(cls, data, where)`` → ``data`` without the keys ``cls`` does not have, each recorded in
    ``ignored`` — but only for a file of a newer minor version; otherwise ``data`` as it is (an unknown
    key then fails as malformed)."""
    def keep(cls, data: Mapping[str, Any], where: str) -> dict[str, Any]:
        data = dict(data)
        if not newer:
            return data
        names = {f.name for f in dataclasses.fields(cls)} | {"format"}
        for key in [k for k in data if k not in names]:
            ignored.append(f"{where}.{key}")
            del data[key]
        return data
    return keep


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
