"""Robust image decoding and preprocessing, shared by ``verify`` and ``baseline``.

Layouts:

* :func:`load_rgb` returns a ``PIL.Image`` in mode ``"RGB"`` (H×W×3 uint8 when
  viewed with ``numpy.asarray``), upright (EXIF orientation applied).
* :func:`preprocess` returns one ``float32`` sample of shape ``(C, H, W)``
  (channel-first, the model's channel order), with ``(H, W) = spec.crop`` and
  ``C = spec.channels``: 3, or 1 for a grayscale spec (``channel_order`` ``"L"``: the
  RGB image converted with PIL's ITU-R 601-2 luma before resizing).
* :func:`load_batch` returns ``(B, C, H, W)`` ``float32`` — one row per image
  that decoded, in input order — and the list of ``(path, reason)`` failures.

Decoding rules of :func:`load_rgb` (CMPlaces mixes every kind of file):

* grayscale (``L``), 1-bit (``1``), ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` → RGB;
* anything with transparency (``RGBA``, ``LA``, ``PA``, ``RGBa``, palette or
  grayscale/RGB with a ``transparency`` key) is composited on **white** — clip
  art and sketches are drawn on white; compositing on black would invert them;
* 16-bit (``I;16*``) and 32-bit integer (``I``) images are taken as 16-bit data
  and scaled to 8 bits with ``round(v * 255 / 65535)`` (values clipped to
  ``[0, 65535]``); float (``F``) images are taken as ``0..1`` when their maximum
  is ≤ 1, else as ``0..255``, and clipped;
* animated GIF/WebP: the first frame;
* truncated, empty, unreadable or non-image files raise :class:`ImageDecodeError`
  (an :class:`~crossmodal.errors.InputError`) naming the file and the cause.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from crossmodal.ir.preprocess import Preprocess
from crossmodal.errors import InputError

#: File extensions :func:`list_images` accepts (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

#: ``Preprocess.interpolation`` names → PIL resampling filters ("area" is PIL's box filter).
INTERPOLATIONS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "area": Image.Resampling.BOX,
    "box": Image.Resampling.BOX,
}

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


class ImageDecodeError(InputError):
    """An image file that cannot be decoded (truncated, empty, not an image...).

    Batch loaders catch it, skip the file and count it; ``str(err)`` is
    ``"<path>: <cause>"``, ``err.path`` the file and ``err.reason`` the cause.
    """

    def __init__(self, reason: str, path: object | None = None):
        self.reason = reason
        super().__init__(reason, path)


# --------------------------------------------------------------------------- decode
def load_rgb(path: str | os.PathLike, draft_for: int | Sequence[int] | None = None) -> Image.Image:
    """Decode ``path`` into an upright RGB image (see the module docstring for the rules).

    ``draft_for``, optional: the ``Preprocess.resize`` the image will go through
    next (int shorter side, or (H, W)). For JPEGs at least twice that size, PIL's
    ``draft`` then lets libjpeg decode directly at 1/2, 1/4 or 1/8 scale, never
    below the resize target (both sides stay ≥ it), and only when the resize that
    follows yields the **same output size** as from the full image (otherwise the
    file is decoded in full). Pixel values still differ slightly from a full decode
    + resize (DCT-domain scaling instead of PIL's filter), so it is opt-in:
    pipelines that must match a reference exactly leave it ``None``.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageDecodeError("empty file (0 bytes)", path)
        im = Image.open(path)
        try:
            if draft_for is not None and im.format == "JPEG" and not _apply_draft(im, draft_for):
                im.close()
                im = Image.open(path)  # draft would change the geometry: decode in full
            im.load()
            try:
                upright = ImageOps.exif_transpose(im)
            except Exception:  # a broken EXIF block must not lose the image
                upright = im
            return to_rgb(upright)
        finally:
            im.close()
    except ImageDecodeError:
        raise
    except FileNotFoundError:
        raise ImageDecodeError("file not found", path) from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image file PIL can identify", path) from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"refused as a decompression bomb ({exc})", path) from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError) as exc:
        cause = str(exc) or type(exc).__name__
        raise ImageDecodeError(f"cannot decode image: {cause}", path) from None


def _apply_draft(im: Image.Image, resize: int | Sequence[int]) -> bool:
    """Configure JPEG draft decoding for ``resize``; False if that changed the resize result.

    Called before ``load()``; ``draft`` only changes the decoder setup and ``im.size``.
    """
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:
        orientation = 1
    swap = orientation in _TRANSPOSING_ORIENTATIONS

    def upright(size: tuple[int, int]) -> tuple[int, int]:
        return (size[1], size[0]) if swap else size

    if isinstance(resize, (int, np.integer)) or len(resize) == 1:
        side = int(resize if isinstance(resize, (int, np.integer)) else resize[0])
        want = (side, side)
    else:
        want = (int(resize[1]), int(resize[0]))
    want = upright(want)  # in stored orientation
    before = im.size
    if before[0] < 2 * want[0] or before[1] < 2 * want[1]:
        return True  # no reduction possible: nothing to do
    im.draft(None, want)  # PIL keeps the decoded size >= want in both dimensions
    return resized_size(upright(im.size), resize) == resized_size(upright(before), resize)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode → ``"RGB"``; transparency composited on white; 16-bit scaled to 8-bit."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im.copy()
    if mode.startswith("I;16") or mode == "I":
        data = np.asarray(im, dtype=np.int64) if mode == "I" else np.asarray(im).astype(np.int64)
        data = np.clip(data, 0, 65535)
        eight = ((data * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(eight, mode="L").convert("RGB")
    if mode == "F":
        data = np.asarray(im, dtype=np.float64)
        finite = data[np.isfinite(data)]
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        eight = np.clip(np.nan_to_num(data * scale), 0, 255).round().astype(np.uint8)
        return Image.fromarray(eight, mode="L").convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


# --------------------------------------------------------------------------- preprocess
def resized_size(size: tuple[int, int], resize: int | Sequence[int]) -> tuple[int, int]:
    """The (width, height) an image of ``size`` (width, height) is resized to.

    ``resize`` int: the shorter side becomes ``resize``, the longer one
    ``int(resize * long / short)`` (truncated, as torchvision does);
    ``(H, W)``: exactly that.
    """
    width, height = size
    if not isinstance(resize, (int, np.integer)) and len(resize) == 1:
        resize = resize[0]  # [S] means S, as in torchvision
    if isinstance(resize, (int, np.integer)):
        resize = int(resize)
        if width <= height:
            return resize, int(resize * height / width)
        return int(resize * width / height), resize
    h, w = resize
    return int(w), int(h)


def _center_crop(arr: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """Center crop an (H, W, C) array to ``crop`` (H, W), zero-padding first if it is smaller.

    Same offsets as torchvision: ``top = int(round((H - ch) / 2.0))`` (Python's
    round, half to even), same for ``left``; padding splits ``(c - n) // 2`` before
    and ``(c - n + 1) // 2`` after.
    """
    ch, cw = crop
    h, w = arr.shape[:2]
    if ch > h or cw > w:
        pad_top, pad_left = max(ch - h, 0) // 2, max(cw - w, 0) // 2
        pad_bottom, pad_right = (max(ch - h, 0) + 1) // 2, (max(cw - w, 0) + 1) // 2
        arr = np.pad(arr, ((pad_top, pad_bottom), (pad_left, pad_right), (0, 0)))
        h, w = arr.shape[:2]
    top = int(round((h - ch) / 2.0))
    left = int(round((w - cw) / 2.0))
    return arr[top:top + ch, left:left + cw]


def crop_mean_image(mean_image: np.ndarray, crop: tuple[int, int], channels: int = 3) -> np.ndarray:
    """Center-crop a (C, Hm, Wm) mean image to (C, ch, cw) the way Caffe does (C = ``channels``).

    Caffe's test-phase offset is ``(Hm - ch) // 2`` (floor), ``(Wm - cw) // 2``.
    """
    mean_image = np.asarray(mean_image, dtype=np.float32)
    if mean_image.ndim != 3 or mean_image.shape[0] != channels:
        raise InputError(f"mean image must have shape ({channels}, H, W), not {mean_image.shape}")
    ch, cw = crop
    _, hm, wm = mean_image.shape
    if hm < ch or wm < cw:
        raise InputError(f"mean image {hm}x{wm} is smaller than the crop {ch}x{cw}")
    top, left = (hm - ch) // 2, (wm - cw) // 2
    return mean_image[:, top:top + ch, left:left + cw]


def preprocess(img: Image.Image, spec: Preprocess, mean_image: np.ndarray | None = None) -> np.ndarray:
    """One image → a float32 ``(C, H, W)`` sample, ``(H, W) = spec.crop``, ``C = spec.channels``.

    Follows :class:`~crossmodal.ir.preprocess.Preprocess` in its documented order:
    to RGB → resize (PIL, ``spec.interpolation``) → center crop → float in
    ``spec.value_range`` → channel order → subtract the mean → divide by ``std``.

    The mean is ``mean_image`` when one is given (a ``(3, Hm, Wm)`` array in the
    model channel order and value units, center-cropped Caffe style to the crop
    size; it replaces ``spec.mean``), else ``spec.mean`` per channel. A grayscale spec
    converts the (RGB) image to ``L`` first. A spec that
    names a ``mean_image`` requires the array. All arithmetic is float32.
    """
    spec.validate()
    if spec.mean_image is not None and mean_image is None:
        raise InputError(f"preprocessing needs the mean image {spec.mean_image!r}, none was given")
    try:
        resample = INTERPOLATIONS[spec.interpolation.lower()]
    except KeyError:
        raise InputError(f"unknown interpolation {spec.interpolation!r}; "
                         f"known: {sorted(INTERPOLATIONS)}") from None
    if img.mode != "RGB" or "transparency" in img.info:
        img = to_rgb(img)
    channels = spec.channels
    if channels == 1:
        img = img.convert("L")
    target = resized_size(img.size, spec.resize)
    if target[0] < 1 or target[1] < 1:
        raise InputError(f"image of size {img.size} cannot be resized to {spec.resize}")
    img = img.resize(target, resample)
    crop = (int(spec.crop[0]), int(spec.crop[1]))
    pixels = _center_crop(np.asarray(img).reshape(img.size[1], img.size[0], channels), crop)  # (H, W, C) uint8
    x = pixels.astype(np.float32)
    if spec.value_range == "0-1":
        x /= np.float32(255.0)
    if spec.channel_order == "BGR":
        x = x[:, :, ::-1]
    x = np.ascontiguousarray(x.transpose(2, 0, 1))  # (C, H, W)
    if mean_image is not None:
        x -= crop_mean_image(mean_image, crop, channels)
    else:
        x -= np.asarray(spec.mean, dtype=np.float32).reshape(channels, 1, 1)
    x /= np.asarray(spec.std, dtype=np.float32).reshape(channels, 1, 1)
    return x


# --------------------------------------------------------------------------- batches
def load_image(path: str | os.PathLike, spec: Preprocess, mean_image: np.ndarray | None = None,
               draft: bool = False) -> np.ndarray:
    """Decode + preprocess one file → float32 ``(C, H, W)``; raises :class:`ImageDecodeError`."""
    img = load_rgb(path, spec.resize if draft else None)
    return preprocess(img, spec, mean_image)


def load_batch(paths: Iterable[str | os.PathLike], spec: Preprocess,
               mean_image: np.ndarray | None = None, workers: int | None = None,
               draft: bool = False) -> tuple[np.ndarray, list[tuple[Path, str]]]:
    """Decode and preprocess ``paths`` on a thread pool (PIL releases the GIL while decoding).

    Returns ``(batch, failures)``: ``batch`` is float32 ``(B, C, H, W)`` holding the
    images that decoded, **in input order** (B = len(paths) - len(failures); the
    i-th row belongs to the i-th path not listed in ``failures``), and
    ``failures`` lists ``(path, reason)`` for files that raised
    :class:`ImageDecodeError`. Other errors (a bad spec) propagate.
    ``workers``: threads (default ``min(8, cpu count)``; ≤ 1 decodes serially).
    ``draft``: allow JPEG draft decoding (see :func:`load_rgb`); off by default.
    """
    paths = [Path(p) for p in paths]
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    mean_crop = None if mean_image is None else crop_mean_image(mean_image, tuple(spec.crop), spec.channels)

    def one(path: Path) -> np.ndarray | str:
        try:
            # mean_crop is already (C, ch, cw); cropping it again is a no-op.
            return load_image(path, spec, mean_crop, draft)
        except ImageDecodeError as exc:
            return exc.reason

    if workers <= 1 or len(paths) <= 1:
        results = [one(p) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(paths))) as pool:
            results = list(pool.map(one, paths))
    arrays = [r for r in results if isinstance(r, np.ndarray)]
    failures = [(p, r) for p, r in zip(paths, results) if isinstance(r, str)]
    ch, cw = spec.crop
    batch = np.stack(arrays) if arrays else np.zeros((0, spec.channels, ch, cw), dtype=np.float32)
    return batch, failures


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder``, recursively, sorted by their path relative to it.

    Extensions: :data:`IMAGE_EXTENSIONS`, case-insensitive. Hidden files and
    folders (name starting with ``.``, e.g. macOS ``._x.jpg`` resource forks) are
    skipped. A missing folder raises :class:`InputError`.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError("image folder not found", root)
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                full = Path(dirpath, name)
                found.append((full.relative_to(root).as_posix(), full))
    return [p for _, p in sorted(found)]
