"""SHA-256 of files, read in chunks (a 528 MiB checkpoint never sits in memory for it)."""
from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()
