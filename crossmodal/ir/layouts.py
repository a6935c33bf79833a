"""Pure NumPy weight layout changes between the IR (source layout) and targets.

The IR stores conv kernels OIHW and dense weights (out, in) with a channel-first
flatten; Keras wants conv HWIO, dense (in, out), and flattens channel-last (HWC).
"""
from __future__ import annotations

import numpy as np


def conv_oihw_to_hwio(w: np.ndarray) -> np.ndarray:
    """(O, I, kH, kW) → (kH, kW, I, O)."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def conv_hwio_to_oihw(w: np.ndarray) -> np.ndarray:
    """(kH, kW, I, O) → (O, I, kH, kW)."""
    return np.ascontiguousarray(w.transpose(3, 2, 0, 1))


def dense_oi_to_io(w: np.ndarray) -> np.ndarray:
    """(out, in) → (in, out)."""
    return np.ascontiguousarray(w.T)


def dense_chw_rows_to_hwc(w: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """Reorder the input axis of a dense weight (out, C·H·W) from CHW to HWC order.

    A dense layer after a channel-first flatten reads feature ``c·H·W + h·W + w``;
    after a channel-last flatten the same value sits at ``h·W·C + w·C + c``.
    Returns (out, H·W·C).
    """
    c, h, wd = chw
    out = w.shape[0]
    if w.shape[1] != c * h * wd:
        raise ValueError(f"dense weight has {w.shape[1]} inputs, the map {chw} has {c * h * wd}")
    return np.ascontiguousarray(w.reshape(out, c, h, wd).transpose(0, 2, 3, 1).reshape(out, -1))


def dense_hwc_rows_to_chw(w: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`dense_chw_rows_to_hwc`: (out, H·W·C) → (out, C·H·W)."""
    c, h, wd = chw
    out = w.shape[0]
    return np.ascontiguousarray(w.reshape(out, h, wd, c).transpose(0, 3, 1, 2).reshape(out, -1))


def dense_chw_oi_to_hwc_io(w: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """(out, C·H·W) in CHW order → Keras kernel (H·W·C, out) in HWC order, in one copy.

    Equal to ``dense_oi_to_io(dense_chw_rows_to_hwc(w, chw))`` without the intermediate
    (fc6 of VGG16 is 411 MB).
    """
    c, h, wd = chw
    out = w.shape[0]
    if w.shape[1] != c * h * wd:
        raise ValueError(f"dense weight has {w.shape[1]} inputs, the map {chw} has {c * h * wd}")
    return np.ascontiguousarray(w.reshape(out, c, h, wd).transpose(2, 3, 1, 0)).reshape(h * wd * c, out)
