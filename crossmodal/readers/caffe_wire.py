"""Caffe's binary files: ``.caffemodel`` (NetParameter) and ``.binaryproto`` (BlobProto).

A caffemodel is one NetParameter; ~all of its bytes are the packed float ``data`` of
the BlobProtos inside ``layer`` (100) / ``layers`` (2). ``decode_caffemodel`` walks the
wire format itself down to those fields and hands every *other* byte (names, types,
parameters, shapes) to the protobuf classes of :mod:`~crossmodal.readers.caffe_schema`; the float data become NumPy views
of the file buffer (no copy). ``decode_caffemodel_protobuf`` is the plain protobuf
route (``ParseFromString`` + ``np.array``), kept as the cross-check in the tests.
"""
from __future__ import annotations

import math

from crossmodal.readers.caffe_schema import message


class WireError(ValueError):
    """The bytes are not valid protobuf wire format (truncated or corrupt)."""


_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise WireError(f"varint runs past byte {end}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError(f"varint longer than 10 bytes at byte {pos}")


def wire_fields(buf, start: int, end: int):
    """Yield ``(number, wire_type, field_start, value_start, value_end)`` for each field
    of the message in ``buf[start:end]``; groups (unused by Caffe) are refused."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {field_start}")
        value_start = pos
        if wire == _WIRE_VARINT:
            _, pos = _varint(buf, pos, end)
        elif wire == _WIRE_I64:
            pos += 8
        elif wire == _WIRE_LEN:
            length, pos = _varint(buf, pos, end)
            value_start, pos = pos, pos + length
        elif wire == _WIRE_I32:
            pos += 4
        else:
            raise WireError(f"wire type {wire} at byte {field_start}")
        if pos > end:
            raise WireError(f"field {number} at byte {field_start} runs past byte {end}")
        yield number, wire, field_start, value_start, pos


def parse_binary(name: str, data: bytes):
    """``message(name).FromString(data)``, raising :class:`WireError` on bad bytes."""
    from google.protobuf.message import DecodeError
    try:
        return message(name).FromString(data)
    except DecodeError as exc:
        raise WireError(f"not a valid {name} ({exc})") from None


def blob_shape(meta) -> tuple[int, ...]:
    """A BlobProto's shape: ``shape.dim``, else legacy (num, channels, height, width)."""
    if meta.HasField("shape"):
        return tuple(int(d) for d in meta.shape.dim)
    return tuple(int(v) for v in (meta.num, meta.channels, meta.height, meta.width))


def _shaped(data, meta, where: str):
    shape = blob_shape(meta)
    if not meta.HasField("shape") and not any(shape) and data.size:
        shape = (data.size,)  # no shape recorded at all: a flat vector
    if any(d < 0 for d in shape):
        raise WireError(f"{where}: a negative dimension in shape {shape}")
    if math.prod(shape) != data.size:  # Python ints: no overflow on crafted dimensions
        raise WireError(f"{where}: {data.size} values for shape {shape}")
    return data.reshape(shape)


def decode_blob(buf, start: int, end: int, where: str = "blob"):
    """One BlobProto in ``buf[start:end]`` → float32 array of its shape (a view when the
    data is packed float, as Caffe writes it; ``diff`` is skipped)."""
    import numpy as np

    rest, floats, doubles, unpacked = bytearray(), [], [], False
    for number, wire, fstart, vstart, vend in wire_fields(buf, start, end):
        if number in (5, 8):
            if wire != _WIRE_LEN:
                unpacked = True
            else:
                (floats if number == 5 else doubles).append((vstart, vend))
        elif number not in (6, 9):
            rest += buf[fstart:vend]
    if unpacked:  # legal but unusual: let protobuf gather the values
        msg = parse_binary("BlobProto", bytes(buf[start:end]))
        data = np.array(msg.data if len(msg.data) else msg.double_data, dtype=np.float32)
        return _shaped(data, msg, where)
    meta = parse_binary("BlobProto", bytes(rest))
    chunks, dtype = (floats, "<f4") if floats or not doubles else (doubles, "<f8")
    size = np.dtype(dtype).itemsize
    parts = []
    for vstart, vend in chunks:
        if (vend - vstart) % size:
            raise WireError(f"{where}: packed data of {vend - vstart} bytes is not whole {dtype} values")
        parts.append(np.frombuffer(buf, dtype=dtype, count=(vend - vstart) // size, offset=vstart))
    data = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, dtype)
    if data.dtype != np.float32:
        data = data.astype(np.float32)
    return _shaped(data, meta, where)


def decode_caffemodel(buf) -> tuple[list[tuple[object, list]], str]:
    """A binary NetParameter → ([(layer message without blobs, [float32 arrays])], encoding).

    ``encoding`` is ``"layer"`` (LayerParameter, field 100) or ``"layers"`` (legacy
    V1LayerParameter, field 2). Arrays are views of ``buf`` (pass a ``bytearray`` for
    writable ones). Raises :class:`WireError` on bytes that are not a NetParameter.
    """
    out, kinds = [], set()
    for number, wire, _, vstart, vend in wire_fields(buf, 0, len(buf)):
        if number not in (100, 2):
            continue
        if wire != _WIRE_LEN:
            raise WireError(f"layer field {number} has wire type {wire}")
        kinds.add("layer" if number == 100 else "layers")
        cls, blob_no = ("LayerParameter", 7) if number == 100 else ("V1LayerParameter", 6)
        rest, blobs = bytearray(), []
        for n, w, fstart, bstart, bend in wire_fields(buf, vstart, vend):
            if n == blob_no and w == _WIRE_LEN:
                blobs.append((bstart, bend))
            else:
                rest += buf[fstart:bend]
        layer = parse_binary(cls, bytes(rest))
        arrays = [decode_blob(buf, s, e, f"layer {layer.name!r} blob {i}") for i, (s, e) in enumerate(blobs)]
        out.append((layer, arrays))
    return out, "+".join(sorted(kinds)) or "none"


def decode_caffemodel_protobuf(data: bytes) -> tuple[list[tuple[object, list]], str]:
    """The same as :func:`decode_caffemodel` through ``ParseFromString`` (copies every value)."""
    import numpy as np

    net = parse_binary("NetParameter", data)
    out = []
    for layers, kind in ((net.layer, "layer"), (net.layers, "layers")):
        for layer in layers:
            arrays = [_shaped(np.array(b.data if len(b.data) else b.double_data, dtype=np.float32), b,
                              f"layer {layer.name!r} blob {i}") for i, b in enumerate(layer.blobs)]
            del layer.blobs[:]
            out.append((layer, arrays))
    kinds = [k for k, ls in (("layer", net.layer), ("layers", net.layers)) if len(ls)]
    return out, "+".join(kinds) or "none"


def decode_mean_blob(data: bytes):
    """A ``.binaryproto`` BlobProto (mean image) → float32 array of its shape."""
    return decode_blob(data, 0, len(data), "mean blob")
