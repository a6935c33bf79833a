"""IR → PyTorch ``nn.Module``: one module per IR layer, in graph order.

Weights are copied bit for bit (``state_dict`` keys ``{layer}.weight``), so
``module.state_dict()`` round-trips the IR tensors exactly. The module takes the
preprocessed batch (N, C, H, W) and returns the logits; :func:`run_layers` returns
any layers' outputs. Serves the ``torch`` backend and ``verify``.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from crossmodal.convert.ir import IRModel, Layer
from crossmodal.convert.registry import check_supported, converter, lookup


def _tensor(model: IRModel, layer: Layer, role: str):
    import torch
    return torch.from_numpy(np.array(model.tensor(layer, role), dtype=np.float32, copy=True))


@converter("conv2d", "torch")
def _conv(model: IRModel, layer: Layer):
    import torch.nn as nn
    m = nn.Conv2d(layer.attrs["in_channels"], layer.attrs["out_channels"], tuple(layer.attrs["kernel"]),
                  stride=tuple(layer.attrs["stride"]), padding=tuple(layer.attrs["pad"]))
    m.weight.data, m.bias.data = _tensor(model, layer, "weight"), _tensor(model, layer, "bias")
    return m


@converter("max_pool2d", "torch")
def _max_pool(model, layer):
    import torch.nn as nn
    return nn.MaxPool2d(tuple(layer.attrs["kernel"]), tuple(layer.attrs["stride"]), tuple(layer.attrs["pad"]),
                        ceil_mode=bool(layer.attrs.get("ceil_mode", False)))


@converter("avg_pool2d", "torch")
def _avg_pool(model, layer):
    import torch.nn as nn
    return nn.AvgPool2d(tuple(layer.attrs["kernel"]), tuple(layer.attrs["stride"]), tuple(layer.attrs["pad"]),
                        ceil_mode=bool(layer.attrs.get("ceil_mode", False)), count_include_pad=True)


@converter("relu", "torch")
def _relu(model, layer):
    import torch.nn as nn
    return nn.ReLU()


@converter("dropout", "torch")
def _dropout(model, layer):
    import torch.nn as nn
    return nn.Dropout(float(layer.attrs.get("rate", 0.5)))


@converter("flatten", "torch")
def _flatten(model, layer):
    import torch.nn as nn
    return nn.Flatten(1)


@converter("dense", "torch")
def _dense(model, layer):
    import torch.nn as nn
    m = nn.Linear(layer.attrs["in_features"], layer.attrs["out_features"])
    m.weight.data, m.bias.data = _tensor(model, layer, "weight"), _tensor(model, layer, "bias")
    return m


@converter("softmax", "torch")
def _softmax(model, layer):
    import torch.nn as nn
    return nn.Softmax(dim=int(layer.attrs.get("axis", 1)))


def build_torch(model: IRModel):
    """An ``nn.Module`` (eval mode) computing the IR's logits from an NCHW batch."""
    import torch.nn as nn

    graph = model.graph
    check_supported(graph, ["torch"])
    logits = graph.resolve("logits")

    class IRModule(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleDict({l.name: lookup(l.kind, "torch")(model, l) for l in graph.layers})

        def forward_layers(self, x, wanted: set[str] | None = None, stop: str | None = None):
            values, out = {graph.input.name: x}, {}
            for layer in graph.layers:
                values[layer.name] = self.layers[layer.name](values[layer.inputs[0]])
                if wanted is None or layer.name in wanted:
                    out[layer.name] = values[layer.name]
                if layer.name == stop:
                    break
            return out

        def forward(self, x):
            return self.forward_layers(x, {logits}, stop=logits)[logits]

    module = IRModule().eval()
    return module


def run_layers(module, x: np.ndarray, names: Iterable[str]) -> dict[str, np.ndarray]:
    """Run ``module`` (from :func:`build_torch`) on ``x`` and return the named layers' outputs."""
    import torch
    wanted = set(names)
    with torch.inference_mode():
        out = module.forward_layers(torch.from_numpy(np.ascontiguousarray(x, np.float32)), wanted)
    return {k: v.numpy() for k, v in out.items()}


def state_dict_to_ir_weights(state) -> dict[str, np.ndarray]:
    """``module.state_dict()`` keys ``layers.{name}.{role}`` → IR tensor names ``{name}.{role}``."""
    return {k[len("layers."):]: v.detach().cpu().numpy() for k, v in state.items()}
