"""An independent ONNX path: the saved Keras model converted by tf2onnx (a cross-check of the ONNX
emitter, optional in ``verify``).

Its tensors follow TensorFlow's layout (NHWC), so only flat outputs (dense layers, logits) are
compared. Needs far more memory than the direct emitter on VGG16 (about 17.5 GiB).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from crossmodal.errors import InputError
from crossmodal.ir.graph import Graph
from crossmodal.models import annotate
from crossmodal.runtime.engine import Engine
from crossmodal.runtime.keras_engine import has_layer, load_keras_model
from crossmodal.runtime.onnx_engine import model_file


class Tf2OnnxEngine(Engine):
    """``model.keras`` → tf2onnx → ONNX Runtime on the CPU (module docstring)."""

    name = "tf2onnx"

    def __init__(self, model_dir: Path, graph: Graph, outputs: Sequence[str] | str, opset: int = 17) -> None:
        import keras
        import tensorflow as tf

        if not hasattr(np, "product"):  # tf2onnx 1.17 calls np.product, removed in NumPy 2
            np.product = np.prod  # type: ignore[attr-defined]
        import tf2onnx

        from crossmodal.emitters.to_keras import keras_outputs
        from crossmodal.runtime.ort_session import open_session

        keras_path = model_file(model_dir, "model.keras", "keras")
        annotate(graph)
        kmodel = load_keras_model(keras_path)
        flat = {ir: k for ir, k in keras_outputs(graph).items()
                if graph.layer(ir).kind in ("dense", "relu", "dropout")
                and has_layer(kmodel, k) and len(kmodel.get_layer(k).output.shape) == 2}
        if not flat:
            raise InputError("has no flat (dense) layer this IR maps to", keras_path)
        super().__init__(graph, outputs, flat, path=keras_path)
        self.knames = list(dict.fromkeys(flat.values()))
        self.flat = flat
        sub = keras.Model(kmodel.input, [kmodel.get_layer(k).output for k in self.knames])
        c, h, w = graph.input.shape
        spec = (tf.TensorSpec((None, h, w, c), tf.float32, name="input"),)
        proto, _ = tf2onnx.convert.from_keras(sub, input_signature=spec, opset=opset)
        self.sess, info = open_session(proto.SerializeToString(), "cpu")
        self.providers = info.providers
        self.out_names = [o.name for o in self.sess.get_outputs()]
        self.version = tf2onnx.__version__

    def _run(self, batch, layers):
        outs = dict(zip(self.knames, self.sess.run(self.out_names, {self.sess.get_inputs()[0].name:
                                                                    np.ascontiguousarray(batch.transpose(0, 2, 3, 1))})))
        return {l: outs[self.flat[l]] for l in layers}

    def _describe(self) -> dict:
        return {"tf2onnx": self.version, "providers": self.providers}

    def close(self) -> None:
        self.sess = None
