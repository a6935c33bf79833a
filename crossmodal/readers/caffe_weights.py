"""A ``.caffemodel``'s blobs matched to a read prototxt (:class:`~crossmodal.readers.from_caffe.CaffeNet`)
by layer name: counts and shapes checked (the legacy 4-D padding with 1s allowed), BatchNorm's
statistics divided by their scale-factor blob, every tensor a view of the file's read-only map.
"""
from __future__ import annotations

import hashlib
import mmap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crossmodal.errors import InputError
from crossmodal.readers import caffe_wire
from crossmodal.readers.caffe_layers import SCALE_FACTOR

if TYPE_CHECKING:  # the reader imports this module
    from crossmodal.readers.from_caffe import CaffeNet


def map_file_sha256(path: Path, chunk: int = 1 << 24) -> tuple[mmap.mmap | bytes, str]:
    """The whole file as a read-only map (weights become views of it, so a conversion can give its
    pages back between uses: :func:`~crossmodal.io.mapped.release_pages`) and its SHA-256.

    As for a mapped PyTorch checkpoint, the file must stay as it is while the conversion runs
    (:func:`load_weights` refuses one whose size or time changed while it was read; one cut short
    under a running conversion ends it with SIGBUS, as any mapped file would)."""
    size = path.stat().st_size
    if size == 0:
        return b"", hashlib.sha256().hexdigest()
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    digest, view = hashlib.sha256(), memoryview(mm)
    for pos in range(0, len(mm), chunk):
        digest.update(view[pos:pos + chunk])
    view.release()
    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)  # hashed: the pages come back from the page cache when decoded
    return mm, digest.hexdigest()


def _fit(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``array`` as ``shape``, allowing the legacy 4-D padding with 1s (1×1×out×in, 1×C×1×1);
    else None."""
    if tuple(array.shape) == tuple(shape):
        return array

    def core(s):
        return [d for d in s if d != 1]
    return array.reshape(shape) if core(array.shape) == core(shape) else None


def _scale_factor(array: np.ndarray) -> np.float32:
    """Caffe's BatchNorm factor: 1 / the stored moving-average sum, or 0 when that is 0."""
    f = np.float32(array.reshape(-1)[0])
    return np.float32(0) if f == 0 else np.float32(1) / f


def load_weights(net: CaffeNet, caffemodel: Path, prototxt_name: str) -> tuple[dict[str, np.ndarray], str, str]:
    """Decode ``caffemodel`` and match its blobs to ``net`` by layer name.

    Returns (IR tensor name → float32 array, the file's SHA-256, the encoding).
    Every missing layer, wrong blob count and blob whose shape disagrees with the
    prototxt is listed in one :class:`InputError`. BatchNorm means and variances come
    out divided by the layer's scale factor (0 → 0, as Caffe does).
    """
    if not caffemodel.is_file():
        raise InputError("no such file", caffemodel)
    before = caffemodel.stat()
    buf, sha = map_file_sha256(caffemodel)
    try:
        decoded, encoding = caffe_wire.decode_caffemodel(buf)
    except caffe_wire.WireError as exc:
        raise InputError(f"not a readable caffemodel, truncated or corrupt ({exc})", caffemodel) from None
    after = caffemodel.stat()
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):  # the hash may not be these bytes
        raise InputError("the file changed while it was being read (a download still running?); convert it "
                         "again once it is complete", caffemodel)
    by_name: dict[str, list[np.ndarray]] = {}
    for layer, arrays in decoded:
        by_name.setdefault(layer.name, arrays)
    missing, problems, weights = [], [], {}
    for name, wanted in net.expected.items():
        arrays = by_name.get(name)
        if arrays is None:
            missing.append(name)
            continue
        if len(arrays) != len(wanted):
            roles = ", ".join(role for _, role, _ in wanted)
            problems.append(f"{name} has {len(arrays)} blob(s), the prototxt needs {len(wanted)} ({roles})")
            continue
        fitted = {}
        for (tensor, role, shape), array in zip(wanted, arrays):
            fit = _fit(array, shape)
            if fit is None:
                problems.append(f"{name} {role} is {'x'.join(map(str, array.shape)) or 'empty'}, "
                                f"the prototxt needs {'x'.join(map(str, shape))}")
            elif name in net.transposed and role == "weight":
                fitted[role] = np.ascontiguousarray(fit.T)
            else:
                fitted[role] = fit
        if len(fitted) != len(wanted):
            continue
        if name in net.batch_norms:
            factor = _scale_factor(fitted.pop(SCALE_FACTOR))
            fitted = {role: (a * factor).astype(np.float32) for role, a in fitted.items()}
        weights.update({tensor: fitted[role] for tensor, role, _ in wanted if tensor is not None})
    if missing:
        problems.insert(0, f"layer(s) missing from the caffemodel: {', '.join(missing)}")
    if problems:
        raise InputError(f"does not fit {prototxt_name}: " + "; ".join(problems), caffemodel)
    for name in net.no_bias:
        out = net.graph.layer(name).tensors["bias"].shape
        weights[f"{name}.bias"] = np.zeros(out, np.float32)
    return weights, sha, encoding
