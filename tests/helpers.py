"""Helpers shared by the tests (import as ``from helpers import …``).

Tests that need something outside the repository — the real Places365 files in
``../shared/data`` (or ``$CROSSMODAL_SHARED_DATA``) or a package the ``test`` extra
installs (tf2onnx, scikit-learn) — ask for it with :func:`require_shared` /
:func:`require_module`. On a developer's machine a missing one skips the test with
the reason; in CI (``CI=true``, or ``CROSSMODAL_NO_SKIP=1``, which ``.ci/run`` sets)
it is a failure, so CI cannot go green with those tests silently not run. The
plugin ``strict_skips`` (loaded by ``conftest.py``) turns any other skip of that
kind (a bare ``pytest.importorskip``) into a failure too.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import pytest

#: The one place the shared folder is resolved.
SHARED_DATA = Path(os.environ.get("CROSSMODAL_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))

#: Every skip for a missing external resource starts with this; ``strict_skips`` keys on it.
MISSING = "needs an external resource:"


def no_skips() -> bool:
    """True in CI: ``$CI`` is true/1/yes, or ``$CROSSMODAL_NO_SKIP`` is set to anything but 0/empty."""
    ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    flag = os.environ.get("CROSSMODAL_NO_SKIP", "").strip() not in ("", "0")
    return ci or flag


def _missing(what: str) -> None:
    message = f"{MISSING} {what}"
    if no_skips():
        pytest.fail(f"{message} — a skip is a failure in CI (CI / CROSSMODAL_NO_SKIP set)", pytrace=False)
    pytest.skip(message)


def require_shared(*parts: str) -> Path:
    """A file or folder from the shared data folder, or skip (fail in CI) with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        _missing(f"real Places365 file {path} (../shared/data or $CROSSMODAL_SHARED_DATA)")
    return path


shared_file = require_shared  # the older name


def require_module(name: str, why: str = ""):
    """``import name``, or skip (fail in CI) naming the package; returns the module."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        _missing(f"package {name!r} ({exc})" + (f": {why}" if why else ""))


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max|a − b| / max|b|."""
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def emitted_engine(engine: str, model, folder: Path, extra_outputs=("features",)):
    """An engine on every layer of the in-memory IR ``model``: ``torch`` builds it directly, ``onnx`` and
    ``keras`` from the emitter's file written into ``folder`` (``extra_outputs``: ONNX outputs besides
    the logits)."""
    from crossmodal.runtime.engine import ALL, open_engine
    if engine == "torch":
        return open_engine("torch", model, ALL, device="cpu")
    if engine == "onnx":
        from crossmodal.emitters.onnx_file import save_onnx
        from crossmodal.emitters.to_onnx import build_onnx
        save_onnx(build_onnx(model, extra_outputs=list(extra_outputs)), folder / "model.onnx")
    else:
        from crossmodal.emitters.keras_weights import save_keras
        from crossmodal.emitters.to_keras import build_keras
        save_keras(build_keras(model)[0], folder / "model.keras")
    return open_engine(engine, folder, ALL, graph=model.graph, device="cpu")
