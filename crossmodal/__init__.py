"""crossmodal: move scene-recognition CNNs between frameworks and measure how far
a network trained on photos carries over to clip art and sketches."""

from crossmodal._version import __version__  # noqa: F401

from crossmodal import _keras_registration

_keras_registration.install()
del _keras_registration


def __getattr__(name):
    """``crossmodal.load_model`` / ``crossmodal.Model``: the Python API (:mod:`crossmodal.api`),
    imported on first use so that ``import crossmodal`` stays light."""
    if name in ("load_model", "Model"):
        from crossmodal import api
        return getattr(api, name)
    raise AttributeError(f"module 'crossmodal' has no attribute {name!r}")
