"""Crafted checkpoint and caffemodel files: what a hostile download could hold, written byte for
byte the way torch.save and Caffe write theirs (no torch.save involved, so any size, stride or
zip layout can be declared).

A torch.save zip holds ``<name>/data.pkl`` (the object, tensors as persistent storage ids) and
``<name>/data/<key>`` (each storage's bytes); the pickle's tensors are
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)``.
"""
from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np


class Storage:
    """A float32 storage of ``numel`` elements under ``key`` (bytes written by :func:`write_zip`)."""

    def __init__(self, key: str, numel: int, data: bytes | None = None) -> None:
        self.key, self.numel = key, int(numel)
        self.data = data if data is not None else bytes(4 * self.numel)


class Tensor:
    """A tensor view of ``storage``: pickles as torch's rebuild call."""

    def __init__(self, storage: Storage, size, stride=None, offset: int = 0) -> None:
        self.storage, self.size, self.offset = storage, tuple(size), int(offset)
        if stride is None:
            stride, acc = [], 1
            for n in reversed(self.size):
                stride.insert(0, acc)
                acc *= n
        self.stride = tuple(stride)

    def __reduce__(self):
        return (_rebuild(), (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()))


def _rebuild():
    """``torch._utils._rebuild_tensor_v2``, the global torch.save pickles tensors as."""
    import torch._utils
    return torch._utils._rebuild_tensor_v2


def pickle_object(obj) -> bytes:
    """``obj`` pickled as torch.save pickles it (protocol 2, storages as persistent ids)."""
    import torch

    class P(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, Storage):
                return ("storage", torch.FloatStorage, o.key, "cpu", o.numel)
            return None
    buf = io.BytesIO()
    P(buf, protocol=2).dump(obj)
    return buf.getvalue()


def storages_of(obj, found=None, seen=None) -> dict[str, Storage]:
    """The storages ``obj`` refers to, each shared object visited once."""
    found, seen = ({} if found is None else found), (set() if seen is None else seen)
    if id(obj) in seen:
        return found
    seen.add(id(obj))
    if isinstance(obj, Tensor):
        found[obj.storage.key] = obj.storage
    elif isinstance(obj, (dict, list, tuple)):
        for v in (obj.values() if isinstance(obj, dict) else obj):
            storages_of(v, found, seen)
    return found


def write_zip(path: Path, obj=None, *, pickled: bytes | None = None, storages: dict[str, Storage] | None = None,
              compress: dict[str, int] | None = None, name: str = "archive") -> Path:
    """A torch.save zip of ``obj`` (or of the ``pickled`` bytes given), every member stored unless
    ``compress`` names it (member → zipfile compression)."""
    pickled = pickle_object(obj) if pickled is None else pickled
    storages = storages_of(obj) if storages is None else storages
    compress = compress or {}
    with zipfile.ZipFile(path, "w") as zf:
        def put(member: str, data: bytes) -> None:
            zf.writestr(zipfile.ZipInfo(f"{name}/{member}"), data, compress_type=compress.get(member, zipfile.ZIP_STORED))
        put("data.pkl", pickled)
        put("byteorder", b"little")
        for key, s in storages.items():
            put(f"data/{key}", s.data)
        put("version", b"3\n")
    return Path(path)


def write_zip_bomb(path: Path, inflated_bytes: int = 1 << 30, name: str = "archive") -> Path:
    """A zip whose ``data/0`` is ``inflated_bytes`` of zeros deflated (about 1 MB per GB) and declared
    as one float32 tensor of that many bytes."""
    numel = inflated_bytes // 4
    obj = {"w": Tensor(Storage("0", numel, data=b""), (numel,))}
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(zipfile.ZipInfo(f"{name}/data.pkl"), pickle_object(obj), compress_type=zipfile.ZIP_STORED)
        zf.writestr(zipfile.ZipInfo(f"{name}/byteorder"), b"little", compress_type=zipfile.ZIP_STORED)
        info = zipfile.ZipInfo(f"{name}/data/0")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as member:
            for _ in range(inflated_bytes // len(chunk)):
                member.write(chunk)
        zf.writestr(zipfile.ZipInfo(f"{name}/version"), b"3\n", compress_type=zipfile.ZIP_STORED)
    return Path(path)


def shared_nesting(depth: int):
    """``{"w": node}`` where each node is a list holding the node below twice: 2**depth references
    to a handful of objects (a pickle of about 2 KB at depth 40)."""
    node: object = [0.0]
    for _ in range(depth):
        node = [node, node]
    return {"w": node}


def caffemodel_with_blob(path: Path, shape, values) -> Path:
    """A caffemodel of one InnerProduct layer whose one blob has ``shape`` (any ints) and ``values``."""
    from crossmodal.readers import caffe_schema as schema
    net = schema.message("NetParameter")(name="crafted")
    layer = net.layer.add(name="fc", type="InnerProduct")
    blob = layer.blobs.add()
    blob.shape.dim.extend(int(d) for d in shape)
    blob.data.extend(np.asarray(values, np.float32).tolist())
    Path(path).write_bytes(net.SerializeToString())
    return Path(path)
