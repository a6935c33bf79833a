"""Atomic writes: write to a temporary sibling, then rename, so no reader ever sees half a file."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from crossmodal.errors import InputError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the folder ({exc.strerror or exc})", path.parent) from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except PermissionError as exc:
        raise InputError(f"not writable ({exc.strerror})", path) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def check_output_dir(path: Path) -> Path:
    """Fail early, creating nothing, when ``path`` cannot become an output folder: it is a
    file, or its nearest existing ancestor is not a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError("is a file, not a folder: cannot write the outputs there", path)
    existing = next(p for p in [path, *path.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InputError("output folder is not writable", existing)
    return path
