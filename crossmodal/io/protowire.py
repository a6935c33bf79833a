"""Protocol-buffer wire format pieces for writing large tensors without copying them into
message objects: a length-delimited field's header is written here, its bytes streamed after it.
"""
from __future__ import annotations


def varint(n: int) -> bytes:
    """``n`` ≥ 0 as a base-128 varint (least significant group first)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def len_field(number: int, length: int) -> bytes:
    """Tag (field ``number``, wire type 2: length-delimited) and the length prefix."""
    return varint(number << 3 | 2) + varint(length)
