"""Round trips through every format, each step a real ``convert`` of the file the step before wrote:
source → IR (+ ONNX) → read the ONNX → IR (+ Keras) → read the Keras → IR (+ ONNX). The last IR is
the source's network modulo what an emitter folds away (:func:`crossmodal.ir.compare.structural_diff`:
dropout, the final softmax, a ReLU fused into its conv/dense), with the same weights, and computes
the same logits within 1e-5. Tiny variants of every PyTorch family run fast; the official Caffe
AlexNet (full size, random weights) is the one slow round trip."""
from __future__ import annotations

import json

import numpy as np
import pytest

from crossmodal.convert.pipeline import convert
from crossmodal.ir import reference
from crossmodal.ir.compare import structural_diff
from crossmodal.ir.store import load_ir
from helpers import rel_err, require_shared


def round_trip(source, tmp_path, **read_options):
    """(first IR, last IR, the last step's ONNX path): source → IR+ONNX → (ONNX) IR+Keras → (Keras) IR+ONNX."""
    first = convert(source, tmp_path / "a", targets=["ir", "onnx"], **read_options).model
    convert(tmp_path / "a" / "model.onnx", tmp_path / "b", targets=["ir", "keras"])
    last = convert(tmp_path / "b" / "model.keras", tmp_path / "c", targets=["ir", "onnx"]).model
    return first, last


def _logits(model, x):
    name = model.graph.resolve("logits")
    return reference.run(model, x, [name])[name]


def _check(first, last, n=2, seed=0):
    assert structural_diff(first, last, rtol=1e-6, atol=1e-7) == []
    x = np.random.default_rng(seed).normal(size=(n, *first.graph.input.shape)).astype(np.float32)
    err = rel_err(_logits(last, x), _logits(first, x))
    assert err < 1e-5, err
    return err


@pytest.mark.parametrize("arch", ["alexnet_tiny", "resnet_tiny", "resnet_tiny_bottleneck", "wideresnet_tiny",
                                  "densenet_tiny"])
def test_zoo_round_trip_through_onnx_and_keras(tmp_path, arch):
    from crossmodal.models.synthetic_zoo import write_checkpoint
    ckpt = tmp_path / f"{arch}.pth"
    write_checkpoint(arch, ckpt, layout="torchvision", seed=5)
    first, last = round_trip(ckpt, tmp_path, arch=arch)
    _check(first, last)
    saved = load_ir(tmp_path / "c")  # what the last step wrote is what it returned
    assert structural_diff(last, saved) == []


def test_vgg_round_trip_through_onnx_and_keras(tmp_path, tiny_ckpt, tiny_spec):
    first, last = round_trip(tiny_ckpt[0], tmp_path, input_size=tiny_spec.input_shape[1:])
    _check(first, last)
    assert [l.kind for l in last.graph.layers].count("dropout") == 0  # folded away by the ONNX emitter


def test_the_keras_step_keeps_the_keras_names(tmp_path, tiny_ckpt, tiny_spec):
    round_trip(tiny_ckpt[0], tmp_path, input_size=tiny_spec.input_shape[1:])
    graph = json.loads((tmp_path / "c" / "model.json").read_text())
    assert graph["keras_names"]["block1_conv1"] == "block1_conv1" and graph["feature_blob"] == "fc2"


@pytest.mark.slow
def test_official_caffe_alexnet_round_trip(tmp_path):
    from crossmodal.readers.caffe_random import write_random_caffemodel
    prototxt = require_shared("places365", "deploy_alexnet_places365.prototxt")
    weights = tmp_path / "alexnet.caffemodel"
    write_random_caffemodel(prototxt, weights, seed=2)
    first, last = round_trip(prototxt, tmp_path, caffemodel=weights)
    _check(first, last, n=1)
