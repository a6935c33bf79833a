"""Arrays that are views of a memory-mapped file (the checkpoint reader's tensors): their pages
can be given back to the kernel between uses, as the file is read-only and the page cache holds
the bytes, so a long conversion does not keep the whole checkpoint resident while it builds
other copies (the Keras variables)."""
from __future__ import annotations

import mmap
from typing import Iterable

import numpy as np


def mapped_files(arrays: Iterable[np.ndarray]) -> list[mmap.mmap]:
    """The distinct ``mmap`` objects the arrays are (ultimately) views of."""
    found: dict[int, mmap.mmap] = {}
    for arr in arrays:
        base = arr
        while isinstance(base, np.ndarray):
            base = base.base
        if isinstance(base, memoryview):
            base = base.obj
        if isinstance(base, mmap.mmap):
            found[id(base)] = base
    return list(found.values())


def release_pages(arrays: Iterable[np.ndarray]) -> int:
    """Drop the resident pages of every read-only file mapping behind ``arrays`` (``madvise
    MADV_DONTNEED``); the arrays stay valid and are read back from the page cache when next
    touched. Returns the number of mappings released (0 where the platform has no madvise)."""
    done = 0
    for mm in mapped_files(arrays):
        if hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            try:
                mm.madvise(mmap.MADV_DONTNEED)
                done += 1
            except (OSError, ValueError):
                pass
    return done
