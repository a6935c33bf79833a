"""Helpers shared by the tests (import as ``from helpers import …``)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(os.environ.get("CROSSMODAL_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_file(*parts: str) -> Path:
    """A file from ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real Places365 file not available: {path} (../shared/data is absent)")
    return path


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max|a − b| / max|b|."""
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())
