"""Register crossmodal's Keras layer whenever Keras is imported, without importing it here.

``import crossmodal`` must stay cheap (Keras pulls in TensorFlow: seconds), yet a saved
``.keras`` model with crossmodal's LRN layer must load with ``safe_mode=True`` in any
process that imported ``crossmodal``. So: if Keras is already imported, register now;
otherwise a one-shot import hook registers right after Keras finishes importing.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys


def register() -> None:
    """Import (and so register) :mod:`crossmodal.emitters.keras_layers`."""
    import crossmodal.emitters.keras_layers  # noqa: F401


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the real loader of ``keras`` to call :func:`register` after it."""

    def find_spec(self, name, path, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)  # one shot, and so that find_spec below finds the real spec
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader_exec = spec.loader.exec_module

        def exec_module(module):
            loader_exec(module)
            register()
        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    if "keras" in sys.modules:
        register()
    elif not any(isinstance(f, _AfterKerasImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasImport())
