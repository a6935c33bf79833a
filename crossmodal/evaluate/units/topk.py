"""A unit's score on an image and the top-K images per unit, in memory O(units × K).

Layouts: a layer's maps ``(B, C, h, w)``; per image and unit its maximum ``values`` ``(B, C)``
float32 and the flat position of that maximum ``positions`` ``(B, C)`` int32 (``i·w + j``;
the first position on ties, as ``argmax``). :class:`TopK` keeps, per unit, the K largest
values seen so far with the image index and position: ``values`` ``(U, K)`` (−inf where fewer
than K images were seen), ``images`` ``(U, K)`` int64 (−1 there), ``positions`` ``(U, K)``.
Ties go to the image seen first, so the result equals a stable sort of all images by
descending value, whatever the batch size.
"""
from __future__ import annotations

import numpy as np


def unit_max(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(B, C, h, w)`` → ``(values (B, C) float32, positions (B, C) int32)``: max over positions."""
    maps = np.asarray(maps)
    if maps.ndim != 4:
        raise ValueError(f"maps must be (B, C, h, w), got {maps.shape}")
    flat = maps.reshape(maps.shape[0], maps.shape[1], -1)
    pos = flat.argmax(axis=2)
    val = np.take_along_axis(flat, pos[..., None], axis=2)[..., 0]
    return val.astype(np.float32), pos.astype(np.int32)


class TopK:
    """The ``k`` largest values per unit, with image index and position (module docstring)."""

    def __init__(self, units: int, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        self.k = int(k)
        self.values = np.full((units, k), -np.inf, np.float32)
        self.images = np.full((units, k), -1, np.int64)
        self.positions = np.zeros((units, k), np.int32)

    def update(self, values: np.ndarray, positions: np.ndarray, images: np.ndarray) -> None:
        """Add a block of images: ``values`` / ``positions`` ``(B, U)``, ``images`` ``(B,)`` indices
        (increasing across calls, so that ties keep the earlier image)."""
        if len(images) == 0:
            return
        v = np.concatenate([self.values, np.asarray(values, np.float32).T], axis=1)      # (U, K + B)
        im = np.concatenate([self.images, np.broadcast_to(np.asarray(images, np.int64), v[:, self.k:].shape)], 1)
        ps = np.concatenate([self.positions, np.asarray(positions, np.int32).T], axis=1)
        order = np.argsort(-v, axis=1, kind="stable")[:, :self.k]
        self.values = np.take_along_axis(v, order, 1)
        self.images = np.take_along_axis(im, order, 1)
        self.positions = np.take_along_axis(ps, order, 1)

    def entries(self, unit: int) -> list[tuple[int, float, int]]:
        """``[(image, value, position)]`` of ``unit``, best first, without the empty slots."""
        return [(int(i), float(v), int(p)) for i, v, p in zip(self.images[unit], self.values[unit],
                                                               self.positions[unit]) if i >= 0]
