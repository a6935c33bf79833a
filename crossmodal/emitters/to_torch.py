"""IR → PyTorch ``nn.Module``: one module per IR layer, in graph order.

Weights are copied bit for bit (``state_dict`` keys ``layers.{layer}.weight``, a ``.`` in a
layer name written ``__``: torch module names cannot hold dots), so ``module.state_dict()``
round-trips the IR tensors exactly. The module takes the
preprocessed batch (N, C, H, W) and returns the logits; :func:`run_layers` returns
any layers' outputs. Serves the ``torch`` backend and ``verify``.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from crossmodal.ir.graph import IRModel, Layer
from crossmodal.ir.kinds import is_symmetric, padding, pool_output_size
from crossmodal.emitters.registry import check_supported, converter, lookup


def _tensor(model: IRModel, layer: Layer, role: str):
    import torch
    return torch.from_numpy(np.array(model.tensor(layer, role), dtype=np.float32, copy=True))


def _torch_pads(attrs) -> tuple[int, int, int, int]:
    """``F.pad``'s order: (left, right, top, bottom)."""
    (t, b), (l, r) = padding(attrs)
    return l, r, t, b


@converter("conv2d", "torch")
def _conv(model: IRModel, layer: Layer):
    """``nn.Conv2d``; asymmetric padding (``pad_end``) as an explicit zero pad inside the same
    module, so the state dict keys stay ``layers.{name}.weight``."""
    import torch.nn as nn
    import torch.nn.functional as F
    a = layer.attrs
    symmetric = is_symmetric(a)

    class Conv2d(nn.Conv2d):
        pads = _torch_pads(a)

        def forward(self, x):
            return super().forward(x if symmetric else F.pad(x, self.pads))
    m = Conv2d(a["in_channels"], a["out_channels"], tuple(a["kernel"]), stride=tuple(a["stride"]),
               padding=tuple(a["pad"]) if symmetric else 0, dilation=tuple(a.get("dilation", (1, 1))),
               groups=int(a.get("groups", 1)), bias="bias" in layer.tensors)
    m.weight.data = _tensor(model, layer, "weight")
    if "bias" in layer.tensors:
        m.bias.data = _tensor(model, layer, "bias")
    return m


def _pool(layer: Layer, cls_name: str, fill: float, **extra):
    """``nn.MaxPool2d`` / ``nn.AvgPool2d``; asymmetric padding as an explicit pad (−inf for max
    pooling, which ignores padding; zeros for average pooling, which counts it)."""
    import torch.nn as nn
    import torch.nn.functional as F
    a = layer.attrs
    kernel, stride, ceil = tuple(a["kernel"]), tuple(a["stride"]), bool(a.get("ceil_mode", False))
    if is_symmetric(a):
        return getattr(nn, cls_name)(kernel, stride, tuple(a["pad"]), ceil_mode=ceil, **extra)
    pads = _torch_pads(a)
    (t, b), (l, r) = padding(a)
    pool = getattr(nn, cls_name)(kernel, stride, 0, ceil_mode=ceil, **extra)

    class PaddedPool(nn.Module):
        def forward(self, x):
            y = pool(F.pad(x, pads, value=fill))
            # torch keeps a last ceil-mode window that starts in the end padding; the IR does not
            ho = pool_output_size(x.shape[2], kernel[0], stride[0], t, ceil, b)
            wo = pool_output_size(x.shape[3], kernel[1], stride[1], l, ceil, r)
            return y[:, :, :ho, :wo]
    return PaddedPool()


@converter("max_pool2d", "torch")
def _max_pool(model, layer):
    return _pool(layer, "MaxPool2d", float("-inf"))


@converter("avg_pool2d", "torch")
def _avg_pool(model, layer):
    return _pool(layer, "AvgPool2d", 0.0, count_include_pad=True)


@converter("relu", "torch")
def _relu(model, layer):
    """ReLU, LeakyReLU, ReLU6, or a leaky/clipped one as a small module."""
    import torch
    import torch.nn as nn
    slope = float(layer.attrs.get("negative_slope", 0.0))
    top = layer.attrs.get("max_value")
    if top is None:
        return nn.ReLU() if slope == 0 else nn.LeakyReLU(slope)
    if slope == 0:
        return nn.ReLU6() if float(top) == 6.0 else nn.Hardtanh(0.0, float(top))

    class ClippedLeakyReLU(nn.Module):
        def forward(self, x):
            return torch.clamp(nn.functional.leaky_relu(x, slope), max=float(top))
    return ClippedLeakyReLU()


@converter("rescale", "torch")
def _rescale(model, layer):
    import torch.nn as nn
    scale, offset = float(layer.attrs["scale"]), float(layer.attrs.get("offset", 0.0))

    class Rescale(nn.Module):
        """x · scale + offset (Keras' Rescaling)."""

        def forward(self, x):
            return x * scale + offset if offset else x * scale
    return Rescale()


@converter("global_avg_pool2d", "torch")
def _global_avg_pool(model, layer):
    import torch.nn as nn
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


@converter("lrn", "torch")
def _lrn(model, layer):
    import torch.nn as nn
    a = layer.attrs
    return nn.LocalResponseNorm(int(a["size"]), alpha=float(a["alpha"]), beta=float(a["beta"]), k=float(a.get("k", 1)))


@converter("batch_norm", "torch")
def _batch_norm(model, layer):
    import torch.nn as nn
    mean = _tensor(model, layer, "mean")
    affine = "weight" in layer.tensors or "bias" in layer.tensors

    class BatchNorm(nn.BatchNorm2d):
        """Inference batch norm over axis 1 of maps (N, C, H, W) or vectors (N, C)."""

        def _check_input_dim(self, x):
            if x.dim() not in (2, 4):
                raise ValueError(f"expected a 2-D or 4-D input, got {x.dim()}-D")
    m = BatchNorm(len(mean), eps=float(layer.attrs.get("eps", 1e-5)), affine=affine)
    m.running_mean.data, m.running_var.data = mean, _tensor(model, layer, "var")
    if affine:
        import torch
        m.weight.data = _tensor(model, layer, "weight") if "weight" in layer.tensors else torch.ones(len(mean))
        m.bias.data = _tensor(model, layer, "bias") if "bias" in layer.tensors else torch.zeros(len(mean))
    return m


def _channel_view(t, ndim: int):
    return t.reshape((1, -1) + (1,) * (ndim - 2))


def _scale_module(weight, bias):
    import torch.nn as nn

    class ChannelScale(nn.Module):
        """Per-channel ``x · weight (+ bias)`` (Caffe's Scale layer)."""

        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(weight, requires_grad=False)
            self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

        def forward(self, x):
            y = x * _channel_view(self.weight, x.dim())
            return y if self.bias is None else y + _channel_view(self.bias, x.dim())
    return ChannelScale()


@converter("scale", "torch")
def _scale(model, layer):
    return _scale_module(_tensor(model, layer, "weight"),
                         _tensor(model, layer, "bias") if "bias" in layer.tensors else None)


@converter("eltwise", "torch")
def _eltwise(model, layer):
    import torch
    import torch.nn as nn
    op, coeffs = layer.attrs.get("op", "sum"), layer.attrs.get("coeffs")

    class Eltwise(nn.Module):
        def forward(self, *xs):
            if op == "sum":
                return sum(x * float(c) if c is not None and float(c) != 1.0 else x
                           for c, x in zip(coeffs or [None] * len(xs), xs))
            out = xs[0]
            for x in xs[1:]:
                out = out * x if op == "prod" else torch.maximum(out, x)
            return out
    return Eltwise()


@converter("concat", "torch")
def _concat(model, layer):
    import torch
    import torch.nn as nn

    class Concat(nn.Module):
        def forward(self, *xs):
            return torch.cat(xs, dim=1)
    return Concat()


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


def module_key(layer_name: str) -> str:
    """The ModuleDict key of an IR layer (``layer1.0.conv1`` → ``layer1__0__conv1``)."""
    return layer_name.replace(".", "__")


def build_torch(model: IRModel):
    """An ``nn.Module`` (eval mode) computing the IR's logits from an NCHW batch."""
    import torch.nn as nn

    graph = model.graph
    check_supported(graph, ["torch"])
    logits = graph.resolve("logits")

    class IRModule(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleDict({module_key(l.name): lookup(l.kind, "torch")(model, l) for l in graph.layers})

        def forward_layers(self, x, wanted: set[str] | None = None, stop: str | None = None):
            values, out = {graph.input.name: x}, {}
            for layer in graph.layers:
                values[layer.name] = self.layers[module_key(layer.name)](*(values[src] for src in layer.inputs))
                if wanted is None or layer.name in wanted:
                    out[layer.name] = values[layer.name]
                if layer.name == stop:
                    break
            return out

        def forward(self, x):
            return self.forward_layers(x, {logits}, stop=logits)[logits]

        def layer(self, name: str) -> nn.Module:
            """The sub-module computing IR layer ``name`` (stored under :func:`module_key`)."""
            return self.layers[module_key(name)]

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
    out = {}
    for k, v in state.items():
        layer, _, role = k[len("layers."):].rpartition(".")
        out[f"{layer.replace('__', '.')}.{role}"] = v.detach().cpu().numpy()
    return out
