"""``model.keras`` on TensorFlow: sub-models whose outputs are the Keras layers holding the wanted IR
layers (:func:`~crossmodal.emitters.to_keras.keras_outputs`), built once per set of layers.

The input is transposed to NHWC and maps back to NCHW; a flatten's HWC order becomes the IR's
CHW order (:func:`to_ir_layout`). Placed on the TensorFlow device :func:`~crossmodal.runtime.devices.tf_device`
gives (``cpu`` pins ``/CPU:0``, else TensorFlow would take any GPU it sees). :func:`load_keras_model`
is the one place a Keras model is loaded to run (``safe_mode=True``: no Lambda code runs).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from crossmodal.errors import InputError
from crossmodal.ir.graph import Graph, Layer
from crossmodal.models import annotate
from crossmodal.runtime.engine import ALL, Engine
from crossmodal.runtime.onnx_engine import model_file


def to_ir_layout(a: np.ndarray, layer: Layer) -> np.ndarray:
    """Keras output → IR layout: maps NHWC → NCHW; a flatten's HWC order → CHW order."""
    if a.ndim == 4:
        return a.transpose(0, 3, 1, 2)
    if layer.kind == "flatten":
        c, h, w = layer.attrs["shape"]
        return a.reshape(len(a), h, w, c).transpose(0, 3, 1, 2).reshape(len(a), -1)
    return a


def load_keras_model(path: Path, tf_device: str = "/CPU:0"):
    """A saved ``.keras`` model, loaded with ``safe_mode=True`` on ``tf_device``; InputError if it
    does not load."""
    import keras
    import tensorflow as tf

    with tf.device(tf_device):
        try:
            return keras.saving.load_model(path, safe_mode=True, compile=False)
        except Exception as exc:  # a corrupt archive raises many kinds
            raise InputError(f"not a loadable Keras model ({exc.__class__.__name__}: {str(exc)[:120]})",
                             path) from None


def has_layer(kmodel, name: str) -> bool:
    try:
        kmodel.get_layer(name)
        return True
    except ValueError:
        return False


class KerasEngine(Engine):
    """``model.keras`` on TensorFlow (module docstring)."""

    name = "keras"

    def __init__(self, model_dir: Path, graph: Graph, outputs: Sequence[str] | str, *, device: str = "auto",
                 precision: str = "fp32", allow_tf32: bool = False, threads: int | None = None) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import keras
        import tensorflow as tf

        from crossmodal.emitters.to_keras import keras_outputs
        from crossmodal.runtime.devices import tf_device, tf_gpus
        from crossmodal.runtime.precision import check_precision, keras_policy, keras_with_precision

        path = model_file(model_dir, "model.keras", "keras")
        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            except RuntimeError:  # TensorFlow already initialised: keep its pools
                pass
        tf.config.experimental.enable_tensor_float_32_execution(allow_tf32)
        gpus = tf_gpus(tf)
        self.tf_device, device_name = tf_device(device, len(gpus))
        self.precision = check_precision(precision)
        kmodel = load_keras_model(path, self.tf_device)
        with tf.device(self.tf_device):
            self.kmodel = keras_with_precision(kmodel, self.precision)  # fp16/bf16: the mixed policy
        annotate(graph)  # IR files before format 1.2 (all VGGs) did not record their Keras names
        exposed = {ir: k for ir, k in keras_outputs(graph).items() if has_layer(self.kmodel, k)}
        if not exposed:
            names = list(dict.fromkeys(keras_outputs(graph).values()))
            raise InputError(f"has none of the Keras layers this IR maps to ({', '.join(names[:4])}, …): "
                             "not a model converted from this IR", path)
        super().__init__(graph, outputs, exposed, device=device_name, path=path)
        for name, ir in self.outputs.items():
            if ir not in exposed:
                raise InputError(f"the Keras model has no layer holding {name!r} (IR layer {ir!r})", path)
        self.kernel_layers = exposed  # IR layer → Keras layer
        self.policy = keras_policy(self.precision)
        self.allow_tf32 = allow_tf32
        self.versions = {"keras": keras.__version__, "tensorflow": tf.__version__}
        self.tf_devices = [d.name for d in gpus] or ["cpu"]
        self._subs: dict[tuple[str, ...], object] = {}
        # A few outputs over many batches (evaluation): a traced predict function pays off. Every
        # layer over a few batches (verify, outputs=ALL): eager calls, as tracing a graph with
        # hundreds of outputs costs more time and memory than it saves (DenseNet-161: 4.8 s and
        # 0.7 GB more for its first batch).
        self.traced = outputs != ALL
        self._keras, self._tf = keras, tf

    def _sub(self, knames: tuple[str, ...]):
        """The sub-model whose outputs are the Keras layers ``knames`` (built once per set)."""
        if knames not in self._subs:
            with self._tf.device(self.tf_device):
                self._subs[knames] = self._keras.Model(self.kmodel.input,
                                                       [self.kmodel.get_layer(k).output for k in knames])
        return self._subs[knames]

    def _run(self, batch, layers):
        knames = tuple(dict.fromkeys(self.kernel_layers[l] for l in layers))
        x = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
        with self._tf.device(self.tf_device):
            sub = self._sub(knames)
            outs = sub.predict_on_batch(x) if self.traced else sub(x, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        by_k = {k: np.asarray(o, dtype=np.float32) for k, o in zip(knames, outs)}
        from crossmodal.emitters.to_keras import through_dropout
        return {l: np.ascontiguousarray(to_ir_layout(by_k[self.kernel_layers[l]],
                                                     through_dropout(self.graph, self.graph.layer(l))))
                for l in layers}

    def _describe(self) -> dict:
        return {"precision": self.precision, "keras_policy": self.policy, "tf_device": self.tf_device,
                "tf_devices": self.tf_devices, "allow_tf32": self.allow_tf32, "model_file": Path(self.path).name,
                **self.versions}

    def close(self) -> None:
        self._subs.clear()
        self.kmodel = None
