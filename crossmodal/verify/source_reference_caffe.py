"""A Caffe source (deploy prototxt + caffemodel) as ``verify``'s reference, run by an implementation of
Caffe that shares no code with this toolkit: OpenCV's DNN Caffe importer (``cv2.dnn.readNetFromCaffe``).

So a fault in the Caffe reader (BatchNorm statistics not divided by their scale factor, an LRN
parameter swapped, a grouped convolution split wrongly) shows up as a divergence instead of being
reproduced in the reference. OpenCV runs with layer fusion off (else a convolution would report its
fused ReLU / BatchNorm / Scale output) and Winograd convolutions off, on its own CPU backend, in float32.

OpenCV's importer runs every LRN with ``k = 1`` (Caffe's default, and every Places365 network's):
a network whose LRN sets another ``k`` is refused with the reason rather than checked wrongly.

Layers are compared where OpenCV's layer names are IR layer names (the reader keeps Caffe's layer
names; the flatten it inserts before an InnerProduct has no Caffe layer): every layer of the
official Places365 networks but that flatten, the logits and the feature blob included. OpenCV runs
Caffe's own BGR network: when the IR takes RGB (``--rgb-input`` folded the channel order into the
first convolution), it is fed the channel-reversed batch ``x[:, ::-1]``, so the fold is checked too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from crossmodal.errors import InputError
from crossmodal.ir.graph import IRModel
from crossmodal.runtime.engine import Engine, FunctionEngine

#: What the report names as the reference's implementation.
IMPLEMENTATION = "OpenCV DNN (cv2.dnn.readNetFromCaffe), fusion and Winograd off, float32"


def _cv2():
    try:
        import cv2
    except ImportError:
        raise InputError("verifying a Caffe source needs OpenCV's Caffe importer: "
                         "pip install 'opencv-python-headless>=4.13,<5' (or crossmodal[caffe])") from None
    if int(cv2.__version__.split(".")[0]) >= 5:
        raise InputError(f"OpenCV {cv2.__version__} has no Caffe importer (OpenCV 5 dropped it): "
                         "pip install 'opencv-python-headless>=4.13,<5'")
    return cv2


def _check_prototxt(model: IRModel, prototxt: Path, opencv_layers: set[str]) -> None:
    """A prototxt other than the one the IR was converted from (its SHA-256, recorded at conversion)
    is refused when it lacks the IR's logits or feature layer: it describes another network. (The
    network's deploy prototxt for an IR converted from its train_val prototxt passes.)"""
    import hashlib
    import re
    recorded = next((m for n in model.graph.provenance.notes
                     if (m := re.match(r"prototxt (.+) \(sha256 ([0-9a-f]{64})\)", n))), None)
    try:
        actual = hashlib.sha256(prototxt.read_bytes()).hexdigest()
    except OSError as exc:
        raise InputError(f"cannot read the prototxt ({exc.strerror or exc})", prototxt) from None
    graph = model.graph
    needed = {graph.resolve("logits"), graph.blobs.get(graph.feature_blob, graph.feature_blob)}
    if recorded is not None and recorded.group(2) != actual and not needed <= opencv_layers:
        raise InputError(f"is not the prototxt this IR was converted from (it records {recorded.group(1)}, "
                         f"sha256 {recorded.group(2)[:12]}…; this file's is {actual[:12]}…): give the network's "
                         "own deploy prototxt with --prototxt", prototxt)


def caffe_source_engine(model: IRModel, prototxt: Path, caffemodel: Path) -> Engine:
    """The Caffe network in OpenCV (module docstring), as the ``caffe-source`` engine."""
    cv2 = _cv2()
    # OpenCV's importer drops LRN's ``k`` (it runs every LRN with k = 1; measured: k = 1, 2, 5 give the
    # same output): such a network has no faithful reference here, and a false breach would mislead.
    off = [l.name for l in model.graph.layers if l.kind == "lrn" and float(l.attrs.get("k", 1.0)) != 1.0]
    if off:
        raise InputError(f"OpenCV's Caffe importer ignores LRN's k, and {', '.join(off)} has k ≠ 1: no independent "
                         "reference for this network; verify without --source (against the IR's own evaluator)",
                         prototxt)
    try:
        net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    except cv2.error as exc:
        detail = " ".join(str(exc).split())[-200:]
        raise InputError(f"OpenCV cannot read this Caffe network with {Path(prototxt).name} ({detail}); is that "
                         "the network's own deploy prototxt?", caffemodel) from None
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    net.enableFusion(False)
    net.enableWinograd(False)
    opencv_layers = set(net.getLayerNames())
    _check_prototxt(model, Path(prototxt), opencv_layers)
    observable = [l.name for l in model.graph.layers if l.name in opencv_layers]
    if not observable:
        raise InputError(f"none of OpenCV's layers of {Path(prototxt).name} is a layer of this IR: not the "
                         "network it was converted from", prototxt)
    rgb = model.graph.preprocess.channel_order == "RGB"

    def run(x: np.ndarray, layers: list[str]) -> dict[str, np.ndarray]:
        names = [l for l in layers if l in opencv_layers]
        if not names:
            return {}
        net.setInput(np.ascontiguousarray(x[:, ::-1] if rgb else x, np.float32))
        outs = net.forward(names)
        return {n: np.asarray(o, np.float32).reshape(len(x), -1) if o.ndim == 2 else np.asarray(o, np.float32)
                for n, o in zip(names, outs)}

    return FunctionEngine("caffe-source", model.graph, run, observable, device="cpu",
                          info={"implementation": IMPLEMENTATION, "opencv": cv2.__version__,
                                "source": str(caffemodel), "prototxt": str(prototxt),
                                "input": "BGR (the IR's RGB batch, channels reversed)" if rgb else "BGR, as the IR"},
                          path=caffemodel)
