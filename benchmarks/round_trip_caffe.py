"""Full-size round trips of the official Caffe networks (seeded random caffemodels for the real
prototxts): source → IR + ONNX → (the ONNX reader) IR + Keras → (the Keras reader) IR + ONNX, each
step a real ``convert``. Prints per network the structural difference of the first and last IR
(``ir.compare.structural_diff``: modulo what emitters fold away) and the logits' max|Δ|/max|ref|
on the NumPy reference. CI tests AlexNet this way (tests/test_round_trips.py); the others take
a minute or more each, so they are run here.

    python benchmarks/round_trip_caffe.py googlenet-caffe resnet152-caffe vgg16-caffe
"""
import sys, time, tempfile, numpy as np
from pathlib import Path
from crossmodal.convert.pipeline import convert
from crossmodal.ir import reference
from crossmodal.ir.compare import structural_diff
from crossmodal.models.caffe_zoo import find_prototxt
from crossmodal.readers.caffe_random import write_random_caffemodel
for arch in sys.argv[1:] or ["googlenet-caffe", "resnet152-caffe", "vgg16-caffe"]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp); t0 = time.perf_counter()
        proto = find_prototxt(arch); cm = tmp / "w.caffemodel"; write_random_caffemodel(proto, cm, seed=0)
        first = convert(proto, tmp / "a", targets=["ir", "onnx"], caffemodel=cm).model
        convert(tmp / "a" / "model.onnx", tmp / "b", targets=["ir", "keras"])
        last = convert(tmp / "b" / "model.keras", tmp / "c", targets=["ir", "onnx"]).model
        diff = structural_diff(first, last, rtol=1e-6, atol=1e-7)
        x = np.random.default_rng(0).normal(size=(1, *first.graph.input.shape)).astype(np.float32)
        n1, n2 = first.graph.resolve("logits"), last.graph.resolve("logits")
        a = reference.run(first, x, [n1])[n1]; b = reference.run(last, x, [n2])[n2]
        err = float(np.abs(a - b).max() / np.abs(a).max())
        print(f"{arch}: structural diff {len(diff)} items {diff[:3]}, logits rel err {err:.2e}, {time.perf_counter() - t0:.0f} s", flush=True)
