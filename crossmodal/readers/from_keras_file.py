"""Keras files as data: the model config (JSON) and each layer's weight arrays, read without
importing Keras or running anything the file holds.

Three containers (:func:`open_keras_file`):

* ``.keras`` (Keras 3): a zip of ``config.json`` (the model's ``get_config`` serialisation) and
  ``model.weights.h5``, whose groups are named by the *class* of each layer in the model's
  layer order (``layers/conv2d``, ``layers/conv2d_1``, …; Keras' ``_save_container_state``),
  datasets ``vars/0``, ``vars/1`` … in the layer's weight order. A stored (uncompressed) member
  is read in place through a window on the zip; a compressed one is extracted to a temporary file.
* legacy full-model HDF5 (``model.save("m.h5")``, Keras 2 or 3): root attribute ``model_config``
  (JSON), weights under ``model_weights`` in the layout below.
* weights-only HDF5 (Keras 2 ``save_weights``, e.g. the Keras port of VGG16-places365): root
  attribute ``layer_names``, a group per layer with attribute ``weight_names``
  (``block1_conv1/kernel:0`` …), datasets at those paths inside the group. No config: the
  architecture comes from ``--arch`` (:mod:`crossmodal.readers.from_keras_arch`).

Weight arrays are returned in Keras' own layouts (conv kernels HWIO, dense kernels (in, out),
depthwise kernels (kh, kw, C, multiplier)), float32, in the layer's weight order
(``kernel, bias``; batch norm ``gamma, beta, moving_mean, moving_variance``, each only if present).
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from crossmodal.errors import InputError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def snake_case(name: str) -> str:
    """Keras' ``naming.to_snake_case``: ``Conv2D`` → ``conv2d``, ``ReLU`` → ``re_lu``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


@dataclass
class KerasFile:
    """An open Keras file: ``kind`` ``keras`` | ``h5-model`` | ``h5-weights``; ``config`` the
    model's serialised config (None for weights only); ``keras_version`` as the file records it."""

    path: Path
    kind: str
    config: dict | None
    keras_version: str
    h5: object = None                                         # the open h5py.File (or group) of weights
    layer_names: list[str] = field(default_factory=list)      # h5-weights / h5-model: groups in order
    _k3_paths: dict[str, str] = field(default_factory=dict)   # .keras: layer name → weights group path

    def set_layer_order(self, layers: list[tuple[str, str]]) -> None:
        """``.keras``: the model's layers in order as (name, class name), which names the weight
        groups (``layers/{snake_case(class)}[_{i}]``)."""
        used: dict[str, int] = {}
        for name, cls in layers:
            key = snake_case(cls)
            if key in used:
                used[key] += 1
                key = f"{key}_{used[key]}"
            else:
                used[key] = 0
            self._k3_paths[name] = f"layers/{key}/vars"

    def weights(self, layer: str) -> list[np.ndarray]:
        """The layer's weight arrays in Keras' order (float32); [] for a layer without weights."""
        if self.kind == "keras":
            group = self.h5.get(self._k3_paths.get(layer, f"layers/{layer}/vars"))
            if group is None:
                return []
            keys = sorted(group.keys(), key=int)
            return [np.asarray(group[k][()], dtype=np.float32) for k in keys]
        if layer not in self.h5:
            return []
        group = self.h5[layer]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("weight_names", [])]
        try:
            return [np.asarray(group[n][()], dtype=np.float32) for n in names]
        except KeyError as exc:
            raise InputError(f"layer {layer!r}: its weight {exc} is missing (a damaged file?)", self.path) from None

    def weight_names(self, layer: str) -> list[str]:
        """Legacy HDF5: the layer's weight names without the ``:0`` suffix (``fc1/kernel``)."""
        if self.kind == "keras" or layer not in self.h5:
            return []
        raw = self.h5[layer].attrs.get("weight_names", [])
        return [(n.decode() if isinstance(n, bytes) else str(n)).split(":")[0] for n in raw]


class _Window(io.RawIOBase):
    """A read-only file of ``size`` bytes at ``offset`` inside ``raw`` (an uncompressed zip member)."""

    def __init__(self, raw, offset: int, size: int) -> None:
        self.raw, self.offset, self.size, self.pos = raw, offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = {0: pos, 1: self.pos + pos, 2: self.size + pos}[whence]
        return self.pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self.size - self.pos))
        self.raw.seek(self.offset + self.pos)
        got = self.raw.readinto(memoryview(buffer)[:n])
        self.pos += got
        return got


def _member_offset(raw, info: zipfile.ZipInfo) -> int:
    raw.seek(info.header_offset)
    header = raw.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile("bad local header")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


@contextlib.contextmanager
def _keras_zip(path: Path) -> Iterator[KerasFile]:
    import h5py

    try:
        zf = zipfile.ZipFile(path)
        names = set(zf.namelist())
        if "config.json" not in names:
            raise InputError("not a Keras 3 .keras file (the zip has no config.json)", path)
        config = json.loads(zf.read("config.json").decode("utf-8"))
        meta = json.loads(zf.read("metadata.json").decode("utf-8")) if "metadata.json" in names else {}
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise InputError(f"not a readable .keras file (truncated or not a zip: {exc})", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"config.json is not valid JSON ({exc})", path) from None
    tmp = None
    try:
        with zf, open(path, "rb") as raw:
            h5 = None
            if "model.weights.h5" in names:
                info = zf.getinfo("model.weights.h5")
                try:
                    if info.compress_type == zipfile.ZIP_STORED:
                        src = _Window(raw, _member_offset(raw, info), info.file_size)
                    else:
                        tmp = Path(tempfile.mkdtemp(prefix="crossmodal-keras-"))
                        src = zf.extract("model.weights.h5", tmp)
                    h5 = h5py.File(src, "r")
                except (OSError, zipfile.BadZipFile, EOFError) as exc:
                    raise InputError(f"model.weights.h5 in the .keras file is unreadable (truncated? {exc})",
                                     path) from None
            try:
                yield KerasFile(path, "keras", config, str(meta.get("keras_version", "")), h5)
            finally:
                if h5 is not None:
                    h5.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _attr_text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def _keras_h5(path: Path) -> Iterator[KerasFile]:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"not a readable HDF5 file (truncated or another format: {exc})", path) from None
    try:
        version = _attr_text(f.attrs.get("keras_version", ""))
        if "model_config" in f.attrs:
            try:
                config = json.loads(_attr_text(f.attrs["model_config"]))
            except json.JSONDecodeError as exc:
                raise InputError(f"model_config is not valid JSON ({exc})", path) from None
            weights = f["model_weights"] if "model_weights" in f else None
            if weights is None:
                raise InputError("a Keras model file without weights (no model_weights group)", path)
            kf = KerasFile(path, "h5-model", config, version, weights,
                           [_attr_text(n) for n in weights.attrs.get("layer_names", [])])
        elif "layer_names" in f.attrs:
            kf = KerasFile(path, "h5-weights", None, version, f, [_attr_text(n) for n in f.attrs["layer_names"]])
        elif "layers" in f and "vars" in f:
            raise InputError("a Keras 3 weights file (.weights.h5) holds no architecture and names its layers "
                             "by class only: convert the .keras model saved with it", path)
        elif f.attrs.get("format") == "crossmodal-ir-weights":
            raise InputError("the weights of a crossmodal IR: give the IR folder (with model.json)", path)
        else:
            raise InputError("an HDF5 file, but not a Keras model or Keras weights file (no model_config "
                             "or layer_names attribute)", path)
        yield kf
    finally:
        f.close()


def open_keras_file(path: Path):
    """A context manager yielding the :class:`KerasFile` of ``path`` (``.keras``, ``.h5``,
    ``.hdf5``); InputError naming the file when it is missing, truncated or not a Keras file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path)
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic[:4] == b"PK\x03\x04":
        return _keras_zip(path)
    if magic == b"\x89HDF\r\n\x1a\n":
        return _keras_h5(path)
    if path.suffix == ".keras":
        raise InputError("not a readable .keras file (truncated or not a zip)", path)
    raise InputError("not a readable HDF5 file (truncated or another format)", path)
