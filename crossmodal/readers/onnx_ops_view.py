"""ONNX op → IR converters of the ops that only change how a tensor is seen, and of arithmetic.

* Identity, Dropout (inference): no layer;
* Transpose: composed into the tensor's view; transposes that cancel leave it canonical (an NHWC
  input's Transpose to NCHW, tf2onnx's pairs around each convolution);
* Flatten, and Reshape / Squeeze / Unsqueeze where they only flatten (or add / drop the 1×1 of a
  pooled vector): a ``flatten`` layer for a map, nothing for a vector; a flatten of an NHWC view is
  recorded so the dense layer after it takes its rows in HWC order;
* Slice that cuts nothing the IR holds (the emitter's ceil-mode pooling helper);
* Add / Sum / Sub / Mul / Max of activations: an ``eltwise`` layer; Add / Sub / Mul / Div of an
  activation and a constant: the bias of the conv / dense layer just before (when only this node
  reads it), else ``rescale`` (a scalar) or ``scale`` (per channel).
"""
from __future__ import annotations

import numpy as np

from crossmodal.errors import UnsupportedError
from crossmodal.readers.onnx_fold import BATCH
from crossmodal.readers.onnx_load import Node
from crossmodal.readers.onnx_ops import converts
from crossmodal.readers.onnx_state import NHWC, OnnxBuilder, Value


@converts("Identity", "Dropout")
def identity(b: OnnxBuilder, node: Node) -> None:
    if node.op == "Dropout" and len(node.inputs) > 2 and node.inputs[2]:
        mode = b.const(node.inputs[2])
        if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
            raise UnsupportedError("dropout in training mode")
    if len(node.outputs) > 1 and node.outputs[1] and b.uses.get(node.outputs[1]):
        raise UnsupportedError("its mask output is read")
    b.set(node, b.value(node.inputs[0]).viewed())


@converts("Transpose")
def transpose(b: OnnxBuilder, node: Node) -> None:
    x = b.value(node.inputs[0])
    rank = len(x.onnx_shape) + 1
    perm = tuple(int(p) for p in node.attrs.get("perm", range(rank - 1, -1, -1)))
    if rank == 2 and perm == (0, 1):
        b.set(node, x.viewed())
        return
    if rank != 4 or len(x.shape) != 3 or x.pseudo or x.pad is not None or perm[0] != 0:
        raise UnsupportedError(f"a transpose {list(perm)} of an N×{'×'.join(map(str, x.onnx_shape))} tensor")
    old = x.perm or (0, 1, 2, 3)
    combined = tuple(old[p] for p in perm)
    b.set(node, x.viewed(perm=None if combined == (0, 1, 2, 3) else combined))


def _flatten(b: OnnxBuilder, node: Node, x: Value) -> None:
    """(N, ...) → (N, F)."""
    if x.pad is not None:
        raise UnsupportedError("a flatten of a padded map")
    if len(x.shape) == 1:  # a vector (or the N×F×1×1 of a pooled one): nothing to do
        b.set(node, x.viewed(pseudo=False))
        return
    if x.perm not in (None, NHWC):
        raise UnsupportedError(f"a flatten of a map transposed {list(x.perm)}")
    out = b.add(node, "flatten", [x], {"shape": tuple(x.shape)})
    b.set(node, out.viewed(hwc=tuple(x.shape) if x.perm == NHWC else None, nonneg=x.nonneg))


@converts("Flatten")
def flatten(b: OnnxBuilder, node: Node) -> None:
    x = b.value(node.inputs[0])
    axis = int(node.attrs.get("axis", 1))
    if axis % (len(x.onnx_shape) + 1) != 1:
        raise UnsupportedError(f"a flatten from axis {axis} (only from axis 1, keeping the batch)")
    _flatten(b, node, x)


def _per_sample(b: OnnxBuilder, dims: list[int]) -> list[int] | None:
    """The per-sample part of a target shape whose first entry is the batch (the folded
    Shape's batch, 0 = copy, −1, or the input's own static batch), else None."""
    static = b.file.input_dims[0] if isinstance(b.file.input_dims[0], int) else None
    if dims and (dims[0] in (BATCH, 0, -1) or (static is not None and dims[0] == static)):
        return dims[1:]
    return None


@converts("Reshape")
def reshape(b: OnnxBuilder, node: Node) -> None:
    x = b.value(node.inputs[0])
    target = b.needs_const(node, 1, "shape") if b.opset >= 5 else np.asarray(node.attrs["shape"])
    dims = [int(d) for d in np.asarray(target).reshape(-1)]
    rest = _per_sample(b, dims)
    size = int(np.prod(x.shape))
    if rest is not None and (rest == [-1] or rest == [size]):
        _flatten(b, node, x)
        return
    if rest is not None and x.pad is None and [d for d in rest] == list(x.onnx_shape):
        b.set(node, x.viewed())
        return
    if rest is not None and len(x.shape) == 1 and x.perm is None and rest == [size, 1, 1]:
        b.set(node, x.viewed(pseudo=True))
        return
    raise UnsupportedError(f"a reshape of N×{'×'.join(map(str, x.onnx_shape))} to {dims} (only flattening "
                           "is supported)")


def _axes(b: OnnxBuilder, node: Node) -> list[int] | None:
    if b.opset >= 13:
        return None if len(node.inputs) < 2 or not node.inputs[1] else \
            [int(a) for a in b.needs_const(node, 1, "axes").reshape(-1)]
    axes = node.attrs.get("axes")
    return None if axes is None else [int(a) for a in axes]


@converts("Squeeze")
def squeeze(b: OnnxBuilder, node: Node) -> None:
    x = b.value(node.inputs[0])
    axes = _axes(b, node)
    if x.pseudo and (axes is None or sorted(a % 4 for a in axes) == [2, 3]):
        b.set(node, x.viewed(pseudo=False))
        return
    raise UnsupportedError(f"a squeeze of axes {axes} of an N×{'×'.join(map(str, x.onnx_shape))} tensor "
                           "(only the 1×1 of a pooled vector)")


@converts("Unsqueeze")
def unsqueeze(b: OnnxBuilder, node: Node) -> None:
    x = b.value(node.inputs[0])
    axes = _axes(b, node)
    if len(x.shape) == 1 and not x.pseudo and x.perm is None and sorted(a % 4 for a in axes or ()) == [2, 3]:
        b.set(node, x.viewed(pseudo=True))
        return
    raise UnsupportedError(f"an unsqueeze at axes {axes} of an N×{'×'.join(map(str, x.onnx_shape))} tensor")


@converts("Slice")
def slice_(b: OnnxBuilder, node: Node) -> None:
    """Only a slice that keeps all of every axis (``[0:n]`` or beyond)."""
    x = b.value(node.inputs[0])
    if b.opset < 10:
        starts, ends, axes, steps = node.attrs["starts"], node.attrs["ends"], node.attrs.get("axes"), None
    else:
        starts, ends = b.needs_const(node, 1, "starts"), b.needs_const(node, 2, "ends")
        axes = b.const(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else None
        steps = b.const(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else None
    starts, ends = [int(v) for v in np.asarray(starts).reshape(-1)], [int(v) for v in np.asarray(ends).reshape(-1)]
    rank = len(x.onnx_shape) + 1
    axes = list(range(len(starts))) if axes is None else [int(a) % rank for a in np.asarray(axes).reshape(-1)]
    steps = [1] * len(starts) if steps is None else [int(s) for s in np.asarray(steps).reshape(-1)]
    full = (0, *x.onnx_shape)
    if all(a == 0 or (s == 0 and st == 1 and e >= full[a]) for a, s, e, st in zip(axes, starts, ends, steps)):
        b.set(node, x.viewed())
        return
    raise UnsupportedError(f"a slice {starts}:{ends} on axes {axes} that cuts the tensor")


# --- arithmetic -------------------------------------------------------------------------------
def _channels(x: Value, c: np.ndarray) -> np.ndarray | None:
    """A constant that broadcasts over ``x`` as one value per channel (axis 1 of the IR's
    layout), as a (C,) vector; None when it does not."""
    c = np.asarray(c, np.float32)
    n = x.shape[0]
    onnx = x.onnx_shape
    if c.ndim > len(onnx) + 1:
        return None
    shape = (1,) * (len(onnx) + 1 - c.ndim) + c.shape
    axis = 1 if x.perm is None else x.perm.index(1)
    if shape[axis] in (1, n) and all(d == 1 for i, d in enumerate(shape) if i != axis):
        return np.broadcast_to(c.reshape(-1), (n,)).copy() if c.size in (1, n) else None
    return None


def _merge_rescale(b: OnnxBuilder, node: Node, x: Value, scale: float, offset: float) -> bool:
    """Fold ``· scale + offset`` into the rescale layer just before, when only this node reads it."""
    if x.fresh != "rescale" or not b.single_use(node, 0):
        return False
    layer = b.layer(x.layer)
    s, o = float(layer.attrs["scale"]), float(layer.attrs.get("offset", 0.0))
    layer.attrs.update(scale=s * scale, offset=o * scale + offset)
    b.set(node, x.viewed(fresh="rescale"))
    return True


def _affine(b: OnnxBuilder, node: Node, x: Value, const_index: int, scale, offset) -> None:
    """y = x · scale + offset with constant ``scale`` and ``offset`` (arrays, scalars or per channel)."""
    scale_c, offset_c = np.asarray(scale, np.float32), np.asarray(offset, np.float32)
    if x.pad is not None:
        raise UnsupportedError("arithmetic between a Pad and the layer it pads")
    if scale_c.size == 1 and offset_c.size == 1:
        s, o = float(scale_c.reshape(-1)[0]), float(offset_c.reshape(-1)[0])
        if x.fresh in ("conv2d", "dense") and s == 1 and b.single_use(node, 0):  # a bias: into the layer
            layer = b.layer(x.layer)
            c = layer.attrs.get("out_channels", layer.attrs.get("out_features"))
            bias = b.weights.get(f"{layer.name}.bias", np.zeros(c, np.float32)) + o
            b.set_tensor(layer, "bias", bias)
            b.set(node, x.viewed())
            return
        if not _merge_rescale(b, node, x, s, o):
            out = b.add(node, "rescale", [x], {"scale": s, "offset": o} if o else {"scale": s})
            b.set(node, out.viewed(perm=x.perm, pseudo=x.pseudo, hwc=x.hwc, fresh="rescale"))
        return
    if x.hwc is not None:
        raise UnsupportedError("per-feature arithmetic on an HWC-order flatten")
    s = _channels(x, scale_c if scale_c.size > 1 else np.full(1, float(scale_c.reshape(-1)[0])))
    o = _channels(x, offset_c if offset_c.size > 1 else np.full(1, float(offset_c.reshape(-1)[0])))
    if s is None or o is None:
        raise UnsupportedError(f"arithmetic with a constant of shape {list(np.shape(scale if scale_c.size > 1 else offset))} "
                               f"that is not per channel of an N×{'×'.join(map(str, x.onnx_shape))} tensor")
    if x.fresh in ("conv2d", "dense") and np.all(s == 1) and b.single_use(node, 0):
        layer = b.layer(x.layer)
        b.set_tensor(layer, "bias", b.weights.get(f"{layer.name}.bias", np.zeros(len(o), np.float32)) + o)
        b.set(node, x.viewed())
        return
    if x.fresh == "scale" and b.single_use(node, 0):  # Mul then Add per channel: one scale layer
        layer = b.layer(x.layer)
        w0 = b.weights[f"{layer.name}.weight"]
        b.set_tensor(layer, "weight", w0 * s)
        bias = b.weights.get(f"{layer.name}.bias", np.zeros(len(o), np.float32)) * s + o
        if np.any(bias != 0):
            b.set_tensor(layer, "bias", bias)
        b.set(node, x.viewed(fresh="scale"))
        return
    tensors = {"weight": s} if np.all(o == 0) else {"weight": s, "bias": o}
    out = b.add(node, "scale", [x], {}, tensors)
    b.set(node, out.viewed(perm=x.perm, pseudo=x.pseudo, fresh="scale"))


@converts("Add", "Sub", "Mul", "Div", "Sum", "Max")
def arithmetic(b: OnnxBuilder, node: Node) -> None:
    consts = [b.const(n) for n in node.inputs]
    if all(c is None for c in consts):
        xs = [b.value(n) for n in node.inputs]
        if any(not x.canonical for x in xs) or len({(x.shape, x.pseudo) for x in xs}) != 1:
            raise UnsupportedError("element-wise arithmetic of tensors of different shapes or layouts")
        if node.op == "Div":
            raise UnsupportedError("a division of two activations")
        op = {"Add": "sum", "Sum": "sum", "Sub": "sum", "Mul": "prod", "Max": "max"}[node.op]
        if node.op == "Sub" and len(xs) != 2:
            raise UnsupportedError("Sub of more than two tensors")
        coeffs = [1.0, -1.0] if node.op == "Sub" else [1.0] * len(xs)
        if op == "sum":  # an input scaled just before (only for this sum) becomes its coefficient
            for i, x in enumerate(xs):
                layer = b.layer(x.layer) if x.fresh == "rescale" else None
                if layer is not None and not layer.attrs.get("offset") and b.single_use(node, i):
                    coeffs[i] *= float(layer.attrs["scale"])
                    xs[i] = Value(layer.inputs[0], x.shape, pseudo=x.pseudo)
                    b.drop(layer.name)
        if op != "sum" or all(c == 1.0 for c in coeffs):  # a chain of binary ops: one layer
            merged: list[Value] = []
            for i, x in enumerate(xs):
                layer = b.layer(x.layer) if x.fresh == "eltwise" else None
                if (layer is not None and layer.attrs.get("op") == op and not layer.attrs.get("coeffs")
                        and b.single_use(node, i)):
                    merged += [Value(src, x.shape, pseudo=x.pseudo) for src in layer.inputs]
                    b.drop(layer.name)
                else:
                    merged.append(x)
            xs, coeffs = merged, [1.0] * len(merged)
        attrs = {"op": op, **({"coeffs": tuple(coeffs)} if any(c != 1.0 for c in coeffs) else {})}
        nonneg = all(x.nonneg for x in xs) and op != "sum" or (op == "sum" and node.op != "Sub" and
                                                              all(x.nonneg for x in xs))
        b.set(node, b.add(node, "eltwise", xs, attrs, pseudo=xs[0].pseudo, nonneg=nonneg))
        return
    if len(node.inputs) != 2 or node.op in ("Sum", "Max"):
        raise UnsupportedError(f"{node.op} of an activation and a constant")
    i = 0 if consts[0] is None else 1
    x, c = b.value(node.inputs[i]), consts[1 - i]
    if node.op == "Add":
        _affine(b, node, x, 1 - i, 1.0, c)
    elif node.op == "Mul":
        _affine(b, node, x, 1 - i, c, 0.0)
    elif node.op == "Sub":
        _affine(b, node, x, 1 - i, 1.0 if i == 0 else -1.0, -c if i == 0 else c)
    elif i == 0:  # x / c
        if np.any(np.asarray(c) == 0):
            raise UnsupportedError("a division by zero")
        _affine(b, node, x, 1, 1.0 / np.asarray(c, np.float64), 0.0)
    else:
        raise UnsupportedError("a constant divided by an activation")
