"""The one Keras layer crossmodal adds: local response normalisation (Keras has none).

Registered as ``crossmodal>LocalResponseNorm``, so a saved ``.keras`` model that uses it
loads with ``keras.saving.load_model(path, safe_mode=True)`` in any process that has
imported ``crossmodal`` (see :mod:`crossmodal._keras_registration`).
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="crossmodal")
class LocalResponseNorm(keras.layers.Layer):
    """Across-channel LRN of a channels-last map (N, H, W, C):

    ``y_c = x_c / (k + alpha / size · Σ_{|c'−c| ≤ size//2} x_c'²) ** beta``

    (Caffe's ACROSS_CHANNELS, ``torch.nn.LocalResponseNorm`` and ONNX ``LRN``; ``size`` odd).
    """

    def __init__(self, size: int, alpha: float, beta: float, k: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"LRN size must be odd, not {size}")
        self.size, self.alpha, self.beta, self.k = int(size), float(alpha), float(beta), float(k)

    def call(self, x):
        half = self.size // 2
        sq = ops.pad(ops.square(x), [[0, 0], [0, 0], [0, 0], [half, half]])
        channels = ops.shape(x)[-1]
        window = sq[..., 0:channels]
        for i in range(1, self.size):
            window = window + sq[..., i:i + channels]
        return x / ops.power(self.k + (self.alpha / self.size) * window, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}
