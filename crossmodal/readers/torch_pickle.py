"""Read ``torch.save`` checkpoints without importing torch (weights only), into NumPy arrays.

Importing torch costs about 2.5 s, more than reading a ResNet-18; ``convert`` reads with
this module first and falls back to ``torch.load(weights_only=True)`` for anything it does
not know (that path also gives torch's own error messages). Both formats torch writes:

* zip (PyTorch ≥ 1.6): ``<name>/data.pkl`` pickles the object, each storage is the member
  ``<name>/data/<key>``;
* legacy (Python 2 era, the Places365 releases): pickled magic number, protocol version and
  system info, then the object, then the list of storage keys, then each storage as an int64
  element count and its bytes, in that order.

Like torch's weights-only unpickler, only plain containers, ``OrderedDict``, storages and
the tensor/parameter rebuild functions are allowed; any other global raises
:class:`NotWeightsOnly` (the caller then asks torch, which names it). Strings pickled by
Python 2 are decoded as latin1. Little-endian files only.

A downloaded checkpoint is untrusted data, so reading one costs time and memory bounded by
the file's size plus the tensors it truly holds. A file that breaks these bounds is refused
with :class:`~crossmodal.errors.InputError` (never passed on to torch):

* every pickled object is built once, however often it is referenced (a pickle of shared
  references nested 40 deep would otherwise be rebuilt 2⁴⁰ times), and at most
  :data:`MAX_OBJECTS` containers and elements are built;
* a tensor may hold no more elements than its storage (a stride-0 ``expand`` view of one
  float would otherwise become gigabytes when copied), and all tensors together no more
  than :data:`VIEW_FACTOR` times all storages (views of one storage are legitimate, a
  thousand full views of it are not);
* zip members are read only when stored uncompressed (torch writes them so; a deflated
  member could inflate a megabyte into a gigabyte) and when a storage's declared size is
  its element count × item size, checked before a byte is read.
"""
from __future__ import annotations

import collections
import math
import mmap
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from crossmodal.errors import InputError

#: torch storage class → NumPy dtype (bfloat16 has none: left to torch).
STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
#: The most containers and container elements one checkpoint may build (a state dict of the
#: largest family member, DenseNet-161, has about 1,000 entries).
MAX_OBJECTS = 1_000_000
#: Tensors may view one storage several times (a weight and its transpose, a row of it), but
#: all tensors together hold at most this many times the elements of all storages.
VIEW_FACTOR = 4


class NotWeightsOnly(Exception):
    """Something this reader does not handle (a class, a dtype, a layout): ask torch."""


class Hostile(Exception):
    """Something no honest checkpoint holds and that would cost unbounded time or memory:
    refused, never passed on to torch."""


class _Storage:
    def __init__(self, dtype: str, numel: int) -> None:
        self.dtype, self.numel, self.array = np.dtype(dtype), int(numel), None


class _Tensor:
    """A tensor to build once its storage's bytes are read."""

    def __init__(self, storage: _Storage, offset: int, size, stride) -> None:
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    @property
    def numel(self) -> int:
        return math.prod(self.size)  # Python ints: no overflow on crafted sizes

    def build(self) -> np.ndarray:
        arr = self.storage.array
        if arr is None:
            raise NotWeightsOnly("a storage without data")
        if (self.offset < 0 or len(self.size) != len(self.stride) or any(n < 0 for n in self.size)
                or any(st < 0 for st in self.stride)):
            raise NotWeightsOnly("a tensor with a negative offset, size or stride")  # as_strided must stay inside
        if self.numel > len(arr):
            raise Hostile(f"a tensor of {self.numel:,} elements on a storage of {len(arr):,} "
                          "(a stride-0 view, copied it would fill memory)")
        need = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1 if all(self.size) else 0
        if need > len(arr):
            raise NotWeightsOnly("a tensor beyond its storage")
        if self.stride == _c_strides(self.size):  # the usual case: a read-only view, no copy
            return arr[self.offset:self.offset + self.numel].reshape(self.size)
        view = np.lib.stride_tricks.as_strided(arr[self.offset:], self.size,
                                               tuple(s * arr.itemsize for s in self.stride))
        return np.array(view, copy=True)


def _c_strides(size: tuple) -> tuple:
    """Element strides of a C-contiguous tensor of ``size``."""
    strides, step = [], 1
    for n in reversed(size):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def _rebuild_tensor(storage, storage_offset, size, stride, *_rest):
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_rest):
    return data


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = STORAGE_DTYPES[name]


_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict, read_zip=None) -> None:
        super().__init__(file, encoding="latin1")
        self.storages, self.read_zip = storages, read_zip

    def find_class(self, module: str, name: str):
        if (module, name) in _GLOBALS:
            return _GLOBALS[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise NotWeightsOnly(f"{module}.{name}")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise NotWeightsOnly(f"persistent id {pid!r:.40}")
        storage_type, key, _location, numel = pid[1:5]
        if len(pid) > 5 and pid[5] is not None:  # a view of another storage (legacy only)
            raise NotWeightsOnly("a storage view")
        if not isinstance(storage_type, _StorageType):
            raise NotWeightsOnly("a storage of unknown type")
        if key not in self.storages:
            storage = _Storage(storage_type.dtype, numel)
            if self.read_zip is not None:
                storage.array = np.frombuffer(self.read_zip(str(key), storage.numel, storage.dtype), storage.dtype)
            self.storages[key] = storage
        return self.storages[key]


class _Builder:
    """Pickled objects → plain containers and arrays, each object built once (memo by identity)
    within the bounds of the module docstring."""

    def __init__(self) -> None:
        self.memo: dict[int, Any] = {}
        self.objects = 0
        self.tensor_elements = 0
        self.storage_elements: dict[int, int] = {}

    def count(self, n: int) -> None:
        self.objects += n
        if self.objects > MAX_OBJECTS:
            raise Hostile(f"more than {MAX_OBJECTS:,} pickled objects")

    def __call__(self, obj: Any) -> Any:
        key = id(obj)
        if key in self.memo:
            return self.memo[key]
        if isinstance(obj, _Tensor):
            if obj.numel > obj.storage.numel:
                raise Hostile(f"a tensor of {obj.numel:,} elements on a storage of {obj.storage.numel:,} "
                              "(a stride-0 view, copied it would fill memory)")
            self.storage_elements[id(obj.storage)] = obj.storage.numel
            self.tensor_elements += obj.numel
            if self.tensor_elements > VIEW_FACTOR * sum(self.storage_elements.values()):
                raise Hostile(f"tensors that together hold more than {VIEW_FACTOR}× the elements of their storages")
            out = obj.build()
        elif isinstance(obj, dict):
            self.count(len(obj) + 1)
            out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
            self.memo[key] = out
            for k, v in obj.items():
                out[k] = self(v)
        elif isinstance(obj, list):
            self.count(len(obj) + 1)
            out = []
            self.memo[key] = out
            out.extend(self(v) for v in obj)
        elif isinstance(obj, tuple):
            self.count(len(obj) + 1)
            out = tuple(self(v) for v in obj)
        elif isinstance(obj, _Storage):
            raise NotWeightsOnly("a bare storage")
        else:
            out = obj
        self.memo[key] = out
        return out


def load(path: Path, kind: str) -> Any:
    """The checkpoint at ``path`` (``kind`` ``zip`` or ``pickle``, from the sniffer) with every
    tensor a NumPy array. Raises NotWeightsOnly for what only torch can read or judge, and
    :class:`~crossmodal.errors.InputError` for a file that would break the bounds (module
    docstring)."""
    try:
        obj = _load_zip(path) if kind == "zip" else _load_legacy(path)
        return _Builder()(obj)
    except Hostile as exc:
        raise InputError(f"refused: {exc}", path) from None
    except NotWeightsOnly:
        raise
    except RecursionError:
        raise InputError("refused: objects nested deeper than Python can follow", path) from None
    except Exception as exc:  # truncated, corrupt, odd: torch reads it again and says what is wrong
        raise NotWeightsOnly(f"{exc.__class__.__name__}: {exc}") from None


def _check_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    packed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise Hostile(f"compressed member {packed[0]!r} (torch stores every member uncompressed; "
                      "inflating it could take any amount of memory)")
    return infos


def check_zip(path: Path) -> None:
    """Refuse (InputError) a torch.save zip with a compressed member before anyone reads it: torch's
    own reader inflates them (a 1 MB member to 1 GB), so this guards the ``torch.load`` path too."""
    try:
        with zipfile.ZipFile(path) as zf:
            _check_members(zf)
    except Hostile as exc:
        raise InputError(f"refused: {exc}", path) from None
    except (zipfile.BadZipFile, OSError, ValueError):  # not readable as a zip: the readers say why
        pass


def _member_bytes(mm: mmap.mmap, info: zipfile.ZipInfo) -> memoryview:
    """The stored bytes of zip member ``info``, as a read-only view of the mapped file (no copy,
    no CRC pass: the file's SHA-256 is what identifies the weights)."""
    h = info.header_offset
    if mm[h:h + 4] != b"PK\x03\x04":
        raise NotWeightsOnly(f"no local header for {info.filename}")
    name_len, extra_len = struct.unpack_from("<HH", mm, h + 26)
    start = h + 30 + name_len + extra_len
    if start + info.file_size > len(mm):
        raise NotWeightsOnly(f"member {info.filename} runs past the end of the file")
    return memoryview(mm)[start:start + info.file_size]


def _load_zip(path: Path):
    with open(path, "rb") as raw:
        mm = mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ)  # tensors are views of it
    with zipfile.ZipFile(path) as zf:
        infos = _check_members(zf)
        pkl = [i.filename for i in infos if i.filename.endswith("/data.pkl") and i.filename.count("/") == 1]
        if len(pkl) != 1:
            raise NotWeightsOnly("no single data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        if prefix + "byteorder" in zf.namelist() and zf.read(prefix + "byteorder").strip() != b"little":
            raise NotWeightsOnly("a big-endian file")

        def read_storage(key: str, numel: int, dtype: np.dtype) -> bytes:
            name = f"{prefix}data/{key}"
            try:
                info = zf.getinfo(name)
            except KeyError:
                raise NotWeightsOnly(f"no member {name}") from None
            if info.file_size != numel * dtype.itemsize:  # checked before a byte is read
                raise Hostile(f"member {name} declares {info.file_size:,} bytes for {numel:,} "
                              f"{dtype.name} values")
            return _member_bytes(mm, info)
        with zf.open(pkl[0]) as f:
            return _Unpickler(f, {}, read_storage).load()


class _PlainUnpickler(pickle.Unpickler):
    """For the legacy format's header pickles (numbers, a dict, a list of keys): no globals at all."""

    def __init__(self, file) -> None:
        super().__init__(file, encoding="latin1")

    def find_class(self, module: str, name: str):
        raise NotWeightsOnly(f"{module}.{name} in a header")

    def persistent_load(self, pid):
        raise NotWeightsOnly("a persistent id in a header")


def _load_legacy(path: Path):
    with open(path, "rb") as f:
        plain = lambda: _PlainUnpickler(f).load()  # noqa: E731
        if plain() != MAGIC_NUMBER:
            raise NotWeightsOnly("no torch magic number")
        plain()  # protocol version
        info = plain()  # system info: endianness
        if isinstance(info, dict) and not info.get("little_endian", True):
            raise NotWeightsOnly("a big-endian file")
        storages: dict = {}
        obj = _Unpickler(f, storages).load()
        keys = plain()
        for key in keys:
            if key not in storages:
                raise NotWeightsOnly("a storage key the object does not use")
            storage = storages[key]
            numel = int.from_bytes(f.read(8), "little")
            data = f.read(numel * storage.dtype.itemsize)
            if numel != storage.numel or len(data) != numel * storage.dtype.itemsize:
                raise NotWeightsOnly("a storage shorter than recorded")
            storage.array = np.frombuffer(data, storage.dtype)
    return obj
