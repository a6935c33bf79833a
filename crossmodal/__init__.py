"""crossmodal: move scene-recognition CNNs between frameworks and measure how far
a network trained on photos carries over to clip art and sketches."""

__version__ = "0.1.0"

from crossmodal import _keras_registration

_keras_registration.install()
del _keras_registration
