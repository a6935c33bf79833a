"""Helpers shared by the zoo's model definitions (ResNet, DenseNet, AlexNet).

:class:`GraphBuilder` appends IR layers whose names are the torchvision module paths
(``layer1.0.conv1``, ``features.denseblock1.denselayer1.norm1`` …), so an IR tensor
``{layer}.{role}`` maps onto its torchvision key by the role alone (:func:`torchvision_key`):
batch norm's ``mean``/``var`` are ``running_mean``/``running_var``, every other role keeps
its name. Layers without parameters that torchvision runs through shared or functional
modules (the ReLU after each batch norm, a residual sum) get names beside them
(``layer1.0.relu1``, ``layer1.0.add``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from crossmodal.ir.kinds import TENSOR_LAYOUTS

from crossmodal.ir.graph import Graph, InputSpec, Layer, TensorSpec

from crossmodal.ir.preprocess import Preprocess

#: IR tensor role → torchvision's suffix (roles not listed keep their name).
TORCH_ROLE = {"mean": "running_mean", "var": "running_var"}


def torchvision_key(tensor_name: str) -> str:
    """IR tensor name ``{layer}.{role}`` → torchvision key (``bn1.mean`` → ``bn1.running_mean``)."""
    layer, _, role = tensor_name.rpartition(".")
    return f"{layer}.{TORCH_ROLE.get(role, role)}"


@dataclass
class GraphBuilder:
    """Appends layers in order; each method returns the new layer's name."""

    layers: list[Layer] = field(default_factory=list)

    def _add(self, name: str, kind: str, inputs: list[str], attrs: dict | None = None,
             shapes: dict[str, tuple[int, ...]] | None = None) -> str:
        tensors = {role: TensorSpec(f"{name}.{role}", tuple(shape), TENSOR_LAYOUTS[(kind, role)])
                   for role, shape in (shapes or {}).items()}
        self.layers.append(Layer(name, kind, list(inputs), dict(attrs or {}), tensors))
        return name

    def conv(self, name: str, x: str, cin: int, cout: int, k: int, stride: int = 1, pad: int = 0,
             bias: bool = False) -> str:
        shapes = {"weight": (cout, cin, k, k)}
        if bias:
            shapes["bias"] = (cout,)
        return self._add(name, "conv2d", [x], {"kernel": (k, k), "stride": (stride, stride), "pad": (pad, pad),
                                                "in_channels": cin, "out_channels": cout}, shapes)

    def bn(self, name: str, x: str, c: int, eps: float = 1e-5) -> str:
        return self._add(name, "batch_norm", [x], {"eps": eps},
                         {"weight": (c,), "bias": (c,), "mean": (c,), "var": (c,)})

    def relu(self, name: str, x: str) -> str:
        return self._add(name, "relu", [x])

    def max_pool(self, name: str, x: str, k: int, stride: int, pad: int = 0) -> str:
        return self._add(name, "max_pool2d", [x], {"kernel": (k, k), "stride": (stride, stride),
                                                   "pad": (pad, pad), "ceil_mode": False})

    def avg_pool(self, name: str, x: str, k: int, stride: int) -> str:
        return self._add(name, "avg_pool2d", [x], {"kernel": (k, k), "stride": (stride, stride),
                                                   "pad": (0, 0), "ceil_mode": False})

    def global_avg_pool(self, name: str, x: str) -> str:
        return self._add(name, "global_avg_pool2d", [x])

    def add(self, name: str, xs: list[str]) -> str:
        return self._add(name, "eltwise", xs, {"op": "sum"})

    def concat(self, name: str, xs: list[str]) -> str:
        return self._add(name, "concat", xs, {"axis": 1})

    def flatten(self, name: str, x: str, chw: tuple[int, int, int]) -> str:
        return self._add(name, "flatten", [x], {"shape": tuple(chw)})

    def dense(self, name: str, x: str, fin: int, fout: int) -> str:
        return self._add(name, "dense", [x], {"in_features": fin, "out_features": fout},
                         {"weight": (fout, fin), "bias": (fout,)})

    def dropout(self, name: str, x: str, rate: float = 0.5) -> str:
        return self._add(name, "dropout", [x], {"rate": rate})

    def softmax(self, name: str, x: str) -> str:
        return self._add(name, "softmax", [x], {"axis": 1})

    def graph(self, name: str, input_shape: tuple[int, int, int], preprocess: Preprocess | None,
              blobs: dict[str, str], feature_blob: str, logits: str) -> Graph:
        pre = preprocess or Preprocess()
        return Graph(name=name, input=InputSpec(shape=tuple(input_shape), channel_order=pre.channel_order,
                                                value_range=pre.value_range),
                     layers=self.layers, outputs=[logits, "prob"], preprocess=pre,
                     blobs={**blobs, "logits": logits, "prob": "prob"}, feature_blob=feature_blob)


def torchvision_keys_of(graph: Graph) -> dict[str, str]:
    """IR tensor name → torchvision key, for a graph built with :class:`GraphBuilder`."""
    return {t.name: torchvision_key(t.name) for l in graph.layers for t in l.tensors.values()}
