"""verify's Caffe reference shares no code with the Caffe reader: OpenCV's DNN importer runs the source,
so a bug planted in the reader fails verify, at the layer it breaks (with the reader itself as the
reference, each of these bugs passed with an error of exactly 0)."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import require_module

PROTOTXT = """name: "planted"
input: "data"
input_shape { dim: 1 dim: 3 dim: 20 dim: 20 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { use_global_stats: true } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1"
  lrn_param { local_size: 5 alpha: 0.3 beta: 0.75 k: 1 } }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 group: 2 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc3" type: "InnerProduct" bottom: "pool2" top: "fc3" inner_product_param { num_output: 6 } }
layer { name: "prob" type: "Softmax" bottom: "fc3" top: "prob" }
"""


@pytest.fixture
def source(tmp_path):
    require_module("cv2", "verify's Caffe reference (opencv-python-headless<5)")
    from crossmodal.readers.caffe_random import write_random_caffemodel
    proto, model = tmp_path / "deploy.prototxt", tmp_path / "w.caffemodel"
    proto.write_text(PROTOTXT)
    write_random_caffemodel(proto, model, seed=3)
    return proto, model


def _verify(tmp_path, proto, model, name):
    from crossmodal.convert.pipeline import convert
    from crossmodal.verify.job import run_verify
    out = tmp_path / name
    convert(proto, out, caffemodel=model, targets=["ir"])
    return run_verify(out, engines=("ir",), source=model, prototxt=proto, random=2)


def test_the_honest_reader_matches_opencv_on_every_layer(tmp_path, source):
    report = _verify(tmp_path, *source, "honest")
    assert report.passed, report.to_json()["gates"]
    assert "OpenCV DNN" in report.reference and report.engines["caffe-source"]["opencv"]
    compared = set(report.comparisons["ir"])
    assert {"conv1", "bn1", "scale1", "relu1", "norm1", "conv2", "pool2", "fc3", "prob"} <= compared
    assert max(s.rel for s in report.comparisons["ir"].values()) < 1e-5


def test_batch_norm_not_divided_by_its_scale_factor_fails(tmp_path, source, monkeypatch):
    from crossmodal.readers import caffe_weights
    monkeypatch.setattr(caffe_weights, "_scale_factor", lambda array: np.float32(1.0))
    report = _verify(tmp_path, *source, "bn")
    assert not report.passed and report.first_divergence()["ir"] == "bn1"


def test_a_swapped_lrn_parameter_fails(tmp_path, source, monkeypatch):
    from crossmodal.readers import caffe_layers
    real = caffe_layers.CONVERTERS["LRN"]

    def swapped(b, layer):
        real(b, layer)
        attrs = b.layers[-1].attrs
        attrs["alpha"], attrs["beta"] = attrs["beta"], attrs["alpha"]
    monkeypatch.setitem(caffe_layers.CONVERTERS, "LRN", swapped)
    report = _verify(tmp_path, *source, "lrn")
    assert not report.passed and report.first_divergence()["ir"] == "norm1"


def test_a_grouped_convolution_split_wrongly_fails(tmp_path, source, monkeypatch):
    from crossmodal.readers import from_caffe
    real = from_caffe.load_weights

    def crossed(net, caffemodel, name):
        weights, sha, enc = real(net, caffemodel, name)
        w = weights["conv2.weight"]
        weights["conv2.weight"] = np.ascontiguousarray(np.roll(w, w.shape[0] // 2, axis=0))  # groups' filters crossed
        weights["conv2.bias"] = np.ascontiguousarray(np.roll(weights["conv2.bias"], w.shape[0] // 2))
        return weights, sha, enc
    monkeypatch.setattr(from_caffe, "load_weights", crossed)
    report = _verify(tmp_path, *source, "group")
    assert not report.passed and report.first_divergence()["ir"] == "conv2"


def test_a_prototxt_of_another_network_is_one_clear_error(tmp_path, source):
    from crossmodal.convert.pipeline import convert
    from crossmodal.errors import InputError
    from crossmodal.verify.job import run_verify
    proto, model = source
    out = tmp_path / "m"
    convert(proto, out, caffemodel=model, targets=["ir"])
    other = tmp_path / "other.prototxt"
    other.write_text(PROTOTXT.replace('"conv1"', '"c1"').replace('"fc3"', '"f3"'))
    with pytest.raises(InputError, match="is not the prototxt this IR was converted from .*deploy.prototxt"):
        run_verify(out, engines=("ir",), source=model, prototxt=other, random=1)


def test_an_lrn_with_k_other_than_1_is_refused_not_misjudged(tmp_path):
    """OpenCV's importer runs every LRN with k = 1: a network with another k has no faithful reference."""
    require_module("cv2", "verify's Caffe reference (opencv-python-headless<5)")
    from crossmodal.convert.pipeline import convert
    from crossmodal.errors import InputError
    from crossmodal.readers.caffe_random import write_random_caffemodel
    from crossmodal.verify.job import run_verify
    proto, model = tmp_path / "k2.prototxt", tmp_path / "k2.caffemodel"
    proto.write_text(PROTOTXT.replace("k: 1 }", "k: 2 }"))
    write_random_caffemodel(proto, model, seed=3)
    convert(proto, tmp_path / "m", caffemodel=model, targets=["ir"])
    with pytest.raises(InputError, match="ignores LRN's k, and norm1 has k ≠ 1"):
        run_verify(tmp_path / "m", engines=("ir",), source=model, prototxt=proto, random=1)
