"""The ONNX reader's state while it walks the graph: what each ONNX tensor holds in IR terms
(:class:`Value`), the IR layers made so far, their weights and shapes.

An ONNX tensor is either a constant (folded, :mod:`onnx_fold`) or a :class:`Value`: an IR layer's
output seen through a *view* the reader has not yet turned into layers — a transpose of the map
(``perm``: an NHWC input, or the Transpose tf2onnx writes before a Flatten), a vector ONNX holds as
(F, 1, 1) (``pseudo``: after GlobalAveragePool), a pending zero ``pad`` (folded into the next conv or
pooling), a flatten in HWC order (``hwc``: the dense layer after it takes its rows in that order).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from crossmodal.errors import InputError, UnsupportedError
from crossmodal.ir.graph import Layer, TensorSpec
from crossmodal.ir.kinds import SHAPE_RULES, TENSOR_LAYOUTS
from crossmodal.readers.onnx_load import Node, OnnxFile

NHWC = (0, 2, 3, 1)   # an ONNX tensor in NHWC holding an IR (C, H, W) map


def layer_name(node_name: str) -> str:
    """An IR layer name from an ONNX node name: ``/`` (exporters' scopes, HDF5's group separator)
    becomes ``.`` (``/layer1/layer1.0/conv1/Conv`` → ``layer1.layer1.0.conv1.Conv``)."""
    name = ".".join(part for part in node_name.split("/") if part)
    return name or "node"


@dataclass(frozen=True)
class Value:
    """An ONNX tensor holding IR layer ``layer``'s output (per-sample IR ``shape``) through a view."""

    layer: str
    shape: tuple[int, ...]
    perm: tuple[int, ...] | None = None
    pseudo: bool = False
    pad: tuple[tuple[int, int], tuple[int, int]] | None = None
    hwc: tuple[int, int, int] | None = None
    nonneg: bool = False
    fresh: str | None = None      # kind of the layer just made from this tensor's node (bias folding)

    @property
    def canonical(self) -> bool:
        """Whether the ONNX tensor equals the IR layer's output (maps NCHW, vectors (N, F))."""
        return self.perm is None and self.pad is None and self.hwc is None

    @property
    def onnx_shape(self) -> tuple[int, ...]:
        """The per-sample shape as ONNX sees it."""
        if self.pseudo:
            return (*self.shape, 1, 1)
        if self.perm is not None:
            full = (0, *self.shape)
            return tuple(full[p] for p in self.perm[1:])
        return self.shape

    def viewed(self, **changes) -> "Value":
        return dataclasses.replace(self, **{"fresh": None, **changes})


@dataclass
class OnnxBuilder:
    """The reader's state (module docstring)."""

    file: OnnxFile
    input_shape: tuple[int, int, int]
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    values: dict[str, Value] = field(default_factory=dict)
    layers: list[Layer] = field(default_factory=list)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    uses: dict[str, int] = field(default_factory=dict)          # ONNX tensor → how many nodes read it
    tensor_of: dict[str, str] = field(default_factory=dict)     # IR layer → last ONNX tensor equal to it
    history: dict[str, list[str]] = field(default_factory=dict)  # IR layer → nodes whose output equals it
    layer_of_node: dict[str, str] = field(default_factory=dict)  # ONNX node name → IR layer it made
    taken: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.consts = dict(self.file.initializers)
        self.shapes = {"input": tuple(self.input_shape)}
        self.taken = {"input"}
        for node in self.file.nodes:
            for name in node.inputs:
                if name:
                    self.uses[name] = self.uses.get(name, 0) + 1
        for name in self.file.outputs:
            self.uses[name] = self.uses.get(name, 0) + 1

    @property
    def opset(self) -> int:
        return self.file.opset

    @property
    def path(self):
        return self.file.path

    # --- reading inputs --------------------------------------------------------------------
    def const(self, name: str | None) -> np.ndarray | None:
        return self.consts.get(name) if name else None

    def needs_const(self, node: Node, index: int, what: str) -> np.ndarray:
        arr = self.const(node.inputs[index]) if len(node.inputs) > index else None
        if arr is None:
            raise UnsupportedError(f"its {what} is computed, not a constant")
        return arr

    def value(self, name: str) -> Value:
        if name not in self.values:
            raise InputError(f"tensor {name!r} is read before any node writes it", self.path)
        return self.values[name]

    def map_value(self, node: Node, index: int = 0, *, pad_ok: bool = False) -> Value:
        """Input ``index`` as a canonical (C, H, W) map (a pending pad only where ``pad_ok``)."""
        v = self.value(node.inputs[index])
        if len(v.shape) != 3 or v.pseudo:
            raise UnsupportedError(f"needs an N×C×H×W map, its input is N×{'×'.join(map(str, v.onnx_shape))}")
        if v.perm is not None:
            raise UnsupportedError(f"its input is transposed ({list(v.perm)}) and not back to NCHW")
        if v.pad is not None and not pad_ok:
            raise UnsupportedError("a Pad before it that is not followed by a convolution or pooling")
        return v

    def vector_value(self, node: Node, index: int = 0) -> Value:
        v = self.value(node.inputs[index])
        if len(v.shape) != 1 or v.perm is not None or v.pad is not None:
            raise UnsupportedError(f"needs an N×F matrix, its input is N×{'×'.join(map(str, v.onnx_shape))}")
        return v

    # --- writing ---------------------------------------------------------------------------
    def fresh_name(self, name: str) -> str:
        name = layer_name(name)
        while name in self.taken:
            name += "_"
        self.taken.add(name)
        return name

    def add(self, node: Node, kind: str, srcs: list[Value], attrs: dict, tensors: dict[str, np.ndarray] | None = None,
            **view) -> Value:
        """Append an IR layer named after ``node`` reading ``srcs``; returns its :class:`Value`."""
        name = self.fresh_name(node.name)
        tensors = tensors or {}
        layer = Layer(name, kind, [s.layer for s in srcs], attrs,
                      {role: TensorSpec(f"{name}.{role}", tuple(arr.shape), TENSOR_LAYOUTS[(kind, role)])
                       for role, arr in tensors.items()})
        try:
            shape = tuple(int(v) for v in SHAPE_RULES[kind](name, [self.shapes[s.layer] for s in srcs], attrs))
        except InputError as exc:
            raise InputError(f"node {node.name!r} ({node.op}): {exc}", self.path) from None
        except KeyError as exc:
            raise InputError(f"node {node.name!r} ({node.op}) lacks {exc}", self.path) from None
        self.layers.append(layer)
        self.shapes[name] = shape
        for role, arr in tensors.items():
            self.weights[f"{name}.{role}"] = np.ascontiguousarray(arr, dtype=np.float32)
        self.layer_of_node[node.name] = name
        return Value(name, shape, fresh=kind if kind in ("conv2d", "dense", "rescale", "scale", "eltwise") else None,
                     **view)

    def set(self, node: Node, value: Value, index: int = 0) -> None:
        out = node.outputs[index]
        self.values[out] = value
        if value.canonical:
            self.tensor_of[value.layer] = out
            self.history.setdefault(value.layer, []).append(node.name)

    def layer(self, name: str) -> Layer:
        return next(l for l in reversed(self.layers) if l.name == name)

    def drop(self, name: str) -> None:
        """Remove layer ``name`` (folded into the layer that reads it) with its weights."""
        layer = self.layer(name)
        self.layers.remove(layer)
        for spec in layer.tensors.values():
            self.weights.pop(spec.name, None)
        self.tensor_of.pop(name, None)
        self.history.pop(name, None)
        self.layer_of_node = {k: v for k, v in self.layer_of_node.items() if v != name}

    def single_use(self, node: Node, index: int) -> bool:
        return self.uses.get(node.inputs[index], 0) == 1 and node.inputs[index] not in self.file.outputs

    def set_tensor(self, layer: Layer, role: str, arr: np.ndarray) -> None:
        layer.tensors[role] = TensorSpec(f"{layer.name}.{role}", tuple(arr.shape), TENSOR_LAYOUTS[(layer.kind, role)])
        self.weights[f"{layer.name}.{role}"] = np.ascontiguousarray(arr, dtype=np.float32)

    def rename(self, mapping: dict[str, str]) -> None:
        """Rename IR layers (``old → new``) everywhere: layers, inputs, tensors, the maps."""
        if not mapping:
            return
        for layer in self.layers:
            layer.inputs = [mapping.get(s, s) for s in layer.inputs]
            if layer.name in mapping:
                new = mapping[layer.name]
                for role, spec in list(layer.tensors.items()):
                    self.weights[f"{new}.{role}"] = self.weights.pop(spec.name)
                    layer.tensors[role] = dataclasses.replace(spec, name=f"{new}.{role}")
                layer.name = new
        self.shapes = {mapping.get(k, k): v for k, v in self.shapes.items()}
        self.tensor_of = {mapping.get(k, k): v for k, v in self.tensor_of.items()}
        self.history = {mapping.get(k, k): v for k, v in self.history.items()}
        self.layer_of_node = {k: mapping.get(v, v) for k, v in self.layer_of_node.items()}
