"""Keep the console to the toolkit's own lines: TensorFlow's C++ start-up chatter is hidden.

TensorFlow prints, while it is imported, lines from its C++ core straight to file
descriptor 2 (``cpu_feature_guard``, oneDNN notes, ``WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR``). ``TF_CPP_MIN_LOG_LEVEL``
silences some of them but not those logged before absl is initialised, so
:func:`install` also wraps the first ``import tensorflow`` (wherever it happens:
Keras, the engines, the backends) in a redirection of descriptor 2 and replays
afterwards every line that is not such a log line. Nothing is imported here:
``crossmodal --help`` stays fast.

The CLI calls :func:`install` unless ``--verbose`` is given, before any command runs.
"""
from __future__ import annotations

import importlib.machinery
import os
import re
import sys
import tempfile
from contextlib import contextmanager

#: C++ log lines (glog/absl format ``I0000 00:00:1796020386.306157   19649 port.cc:153] ...``)
#: and the two start-up notes TensorFlow prints without that prefix.
NOISE = re.compile(r"^(?:[IWE]\d{4} \d\d:\d\d:[\d.]+\s+\d+ [\w./-]+:\d+\]"
                   r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
                   r"|To enable the following instructions: .* rebuild TensorFlow)")

_MODULES = ("tensorflow",)


@contextmanager
def native_stderr_filtered():
    """Redirect file descriptor 2 to a temporary file for the block, then write back every line
    that is not TensorFlow/absl start-up noise (:data:`NOISE`)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor 2 (an embedding host): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode("utf-8", "replace").splitlines() if not NOISE.match(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()


class _QuietFinder:
    """A ``sys.meta_path`` finder that lets the normal machinery find ``tensorflow`` and wraps
    the module's execution in :func:`native_stderr_filtered`."""

    def find_spec(self, name, path=None, target=None):
        if name not in _MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        real = loader.exec_module

        def exec_module(module):
            with native_stderr_filtered():
                real(module)
            try:  # Python-side absl logging (Keras/TF warnings) at ERROR from now on
                import absl.logging
                absl.logging.set_verbosity(absl.logging.ERROR)
            except ImportError:  # pragma: no cover - absl comes with TensorFlow
                pass
        loader.exec_module = exec_module
        return spec


def install() -> None:
    """Quiet TensorFlow's start-up for this process (idempotent; a no-op when already imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietFinder())


def verbose() -> None:
    """``--verbose``: TensorFlow logs everything it would (level 0) unless the user set a level."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietFinder)]
