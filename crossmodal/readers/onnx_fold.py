"""Constant folding for the ONNX reader: a small NumPy evaluator of the nodes whose inputs are all
known (initializers, ``Constant`` nodes, shapes), so that the shape chains exporters write around
the batch size read as plain constants.

``Shape`` of an activation gives its dimensions with the batch as :data:`BATCH` (a sentinel, not a
number): ``Shape → Gather(0) → Unsqueeze → Concat([·, −1]) → Reshape`` then reads as a reshape to
(batch, −1), which the reader takes as a flatten. Arithmetic on the sentinel is refused (the
network would depend on the batch size). Every folded result is bounded
(:data:`MAX_FOLDED_ELEMENTS`). Pure: NumPy only.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from crossmodal.errors import UnsupportedError

#: The batch dimension in a folded shape.
BATCH = -(1 << 40)
MAX_FOLDED_ELEMENTS = 1 << 24

Fold = Callable[[dict, list, int], list]
FOLDERS: dict[str, Fold] = {}


class FoldError(UnsupportedError):
    """A constant subgraph this evaluator does not take (the reader lists it with the node)."""


def folds(*ops: str):
    def register(fn: Fold) -> Fold:
        for op in ops:
            FOLDERS[op] = fn
        return fn
    return register


def _arg(args: list, i: int, default=None):
    return args[i] if len(args) > i and args[i] is not None else default


def _axes(attrs: dict, args: list, index: int, opset: int, since: int):
    """Axes from the attribute (before ``since``) or the input ``index`` (from ``since`` on)."""
    if opset >= since:
        value = _arg(args, index)
        return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]
    return attrs.get("axes")


def _no_batch(*arrays) -> None:
    if any(np.issubdtype(np.asarray(a).dtype, np.integer) and (np.asarray(a) == BATCH).any() for a in arrays):
        raise FoldError("arithmetic on the batch size")


@folds("Constant")
def _constant(attrs, args, opset):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in attrs:
            arr = np.asarray(attrs[key])
            return [arr.astype(np.float32) if key.startswith("value_float") else
                    arr.astype(np.int64) if key.startswith("value_int") else arr]
    raise FoldError("Constant without a numeric value")


@folds("ConstantOfShape")
def _constant_of_shape(attrs, args, opset):
    shape = [int(v) for v in np.asarray(args[0]).reshape(-1)]
    _no_batch(args[0])
    if any(d < 0 for d in shape) or int(np.prod(shape, dtype=np.int64)) > MAX_FOLDED_ELEMENTS:
        raise FoldError(f"ConstantOfShape of shape {shape}")
    value = np.asarray(attrs.get("value", np.zeros(1, np.float32))).reshape(-1)[:1]
    return [np.full(shape, value[0] if value.size else 0, dtype=value.dtype)]


@folds("Identity")
def _identity(attrs, args, opset):
    return [args[0]]


@folds("Cast")
def _cast(attrs, args, opset):
    from onnx import helper
    dtype = helper.tensor_dtype_to_np_dtype(int(attrs["to"]))
    if np.issubdtype(dtype, np.floating):
        _no_batch(args[0])
    return [np.asarray(args[0]).astype(dtype)]


@folds("Gather")
def _gather(attrs, args, opset):
    return [np.take(np.asarray(args[0]), np.asarray(args[1]).astype(np.int64), axis=int(attrs.get("axis", 0)))]


@folds("Concat")
def _concat(attrs, args, opset):
    return [np.concatenate([np.asarray(a) for a in args], axis=int(attrs.get("axis", 0)))]


@folds("Unsqueeze")
def _unsqueeze(attrs, args, opset):
    x, axes = np.asarray(args[0]), _axes(attrs, args, 1, opset, 13)
    rank = x.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        x = np.expand_dims(x, a)
    return [x]


@folds("Squeeze")
def _squeeze(attrs, args, opset):
    x, axes = np.asarray(args[0]), _axes(attrs, args, 1, opset, 13)
    return [np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(a % x.ndim for a in axes))]


@folds("Reshape")
def _reshape(attrs, args, opset):
    x = np.asarray(args[0])
    shape = [int(v) for v in np.asarray(args[1] if opset >= 5 else attrs["shape"]).reshape(-1)]
    _no_batch(np.asarray(shape))
    shape = [x.shape[i] if d == 0 and not attrs.get("allowzero") else d for i, d in enumerate(shape)]
    return [x.reshape(shape)]


@folds("Flatten")
def _flatten(attrs, args, opset):
    x, axis = np.asarray(args[0]), int(attrs.get("axis", 1))
    axis %= max(x.ndim, 1) if axis < 0 else x.ndim + 1
    return [x.reshape(int(np.prod(x.shape[:axis])), -1)]


@folds("Slice")
def _slice(attrs, args, opset):
    x = np.asarray(args[0])
    if opset < 10:
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts, ends = np.asarray(args[1]).reshape(-1), np.asarray(args[2]).reshape(-1)
        axes, steps = _arg(args, 3), _arg(args, 4)
    axes = list(range(len(starts))) if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
    steps = [1] * len(starts) if steps is None else [int(s) for s in np.asarray(steps).reshape(-1)]
    index = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, starts, ends, steps):
        index[a % x.ndim] = slice(int(s), int(max(min(int(e), 1 << 62), -(1 << 62))), st)
    return [x[tuple(index)]]


@folds("Transpose")
def _transpose(attrs, args, opset):
    perm = attrs.get("perm")
    return [np.transpose(np.asarray(args[0]), perm)]


_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": None, "Pow": np.power,
           "Max": np.maximum, "Min": np.minimum, "Equal": np.equal}


def _make_binary(op: str) -> Fold:
    def fold(attrs, args, opset):
        a, b = (np.asarray(v) for v in args[:2])
        _no_batch(a, b)
        if op == "Div":
            if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
                return [np.trunc(a / b).astype(a.dtype)]
            return [np.divide(a, b)]
        out = _BINARY[op](a, b)
        for extra in args[2:]:  # Max / Min / Sum take several
            out = _BINARY[op](out, np.asarray(extra))
        return [out]
    return fold


for _op in _BINARY:
    FOLDERS[_op] = _make_binary(_op)


def _make_unary(fn) -> Fold:
    def unary(attrs, args, opset):
        _no_batch(args[0])
        return [fn(np.asarray(args[0]))]
    return unary


for _op, _fn in (("Neg", np.negative), ("Sqrt", np.sqrt), ("Reciprocal", np.reciprocal), ("Abs", np.abs),
                 ("Floor", np.floor), ("Ceil", np.ceil)):
    FOLDERS[_op] = _make_unary(_fn)


def fold(op: str, attrs: dict, args: list, opset: int) -> list:
    """Evaluate one node on known inputs; FoldError for an op it does not take or a result that
    is too large."""
    fn = FOLDERS.get(op)
    if fn is None:
        raise FoldError(f"{op} on constants is not folded")
    try:
        out = fn(attrs, args, opset)
    except FoldError:
        raise
    except (ValueError, IndexError, TypeError, KeyError) as exc:
        raise FoldError(f"{op} on constants: {str(exc)[:100]}") from None
    for arr in out:
        if np.asarray(arr).size > MAX_FOLDED_ELEMENTS:
            raise FoldError(f"{op} makes a constant of {np.asarray(arr).size:,} elements")
    return out
