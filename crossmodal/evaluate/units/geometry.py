"""Where a unit's maximum lies: its receptive field as a box in the crop and in the original image.

Boxes are ``(x0, y0, x1, y1)`` floats, x1 / y1 exclusive, pixel ``p`` covering ``[p, p + 1)``.
:func:`crop_box`: the receptive field of position ``(i, j)`` of an ``(h, w)`` grid in the network's
crop, clipped to it. :func:`original_box`: that box undone through the preprocessing (center crop,
then resize: :func:`crossmodal.data.images.resized_size` and the center-crop offsets of
:func:`crossmodal.data.images.preprocess`), in the decoded (EXIF-upright) image's pixels, clipped.
:func:`denormalise`: a preprocessed ``(B, C, H, W)`` batch back to ``(B, H, W, 3)`` uint8.
"""
from __future__ import annotations

import numpy as np

from crossmodal.data.images import crop_mean_image, resized_size
from crossmodal.ir.preprocess import Preprocess
from crossmodal.ir.receptive_field import ReceptiveField


def crop_box(rf: ReceptiveField, position: int, grid: tuple[int, int], crop: tuple[int, int]) -> tuple:
    """The window of flat ``position`` (``i·w + j``) on ``grid`` (h, w), clipped to ``crop`` (H, W)."""
    i, j = divmod(int(position), int(grid[1]))
    return rf.box(i, j, crop)


def crop_origin(size: tuple[int, int], spec: Preprocess) -> tuple[tuple[int, int], int, int]:
    """For an image of ``size`` (width, height): the resized (width, height) and the crop's left and
    top offset in it (negative where the crop was padded), as :func:`preprocess` crops."""
    rw, rh = resized_size(size, spec.resize)
    ch, cw = int(spec.crop[0]), int(spec.crop[1])
    pad_top, pad_left = max(ch - rh, 0) // 2, max(cw - rw, 0) // 2
    h, w = max(rh, ch), max(rw, cw)
    top, left = int(round((h - ch) / 2.0)) - pad_top, int(round((w - cw) / 2.0)) - pad_left
    return (rw, rh), left, top


def original_box(box, size: tuple[int, int], spec: Preprocess) -> tuple[float, float, float, float]:
    """A crop box → the original image's pixels (``size`` = (width, height)), clipped to the image."""
    (rw, rh), left, top = crop_origin(size, spec)
    sx, sy = size[0] / rw, size[1] / rh
    x0, y0, x1, y1 = box
    out = ((x0 + left) * sx, (y0 + top) * sy, (x1 + left) * sx, (y1 + top) * sy)
    return (max(0.0, out[0]), max(0.0, out[1]), min(float(size[0]), out[2]), min(float(size[1]), out[3]))


def image_size(path) -> tuple[int, int]:
    """(width, height) of an image file as decoded upright (EXIF orientations 5–8 swap them), from
    its header."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        try:
            orientation = im.getexif().get(0x0112, 1)
        except Exception:
            orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def denormalise(x: np.ndarray, spec: Preprocess, mean_image: np.ndarray | None = None) -> np.ndarray:
    """Preprocessed ``(B, C, H, W)`` → ``(B, H, W, 3)`` uint8 RGB: std, mean (or mean image), channel
    order and value range undone, clipped to 0–255 (a grayscale spec repeats its one channel)."""
    x = np.asarray(x, np.float32)
    c = x.shape[1]
    x = x * np.asarray(spec.std, np.float32).reshape(1, c, 1, 1)
    if mean_image is not None:
        x = x + crop_mean_image(mean_image, tuple(spec.crop), c)[None]
    else:
        x = x + np.asarray(spec.mean, np.float32).reshape(1, c, 1, 1)
    if spec.channel_order == "BGR":
        x = x[:, ::-1]
    if spec.value_range == "0-1":
        x = x * 255.0
    if c == 1:
        x = np.repeat(x, 3, axis=1)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
