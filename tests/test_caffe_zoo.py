"""The Caffe zoo: each Caffe layer type the six Places365 nets use, read from a prototxt and
compared with a hand-written NumPy computation of Caffe's own definition; the real prototxts'
graphs (blob shapes, parameter totals, feature blob); bad input; and (slow) full-size
random-weight AlexNet, GoogLeNet and ResNet-152 converted and verified on every engine."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from caffe_fixtures import ALEXNET_SHAPES, write_blobs, write_caffemodel
from crossmodal.ir import reference
from crossmodal.ir.kinds import infer_shapes
from crossmodal.readers.from_caffe import read_caffe, read_prototxt
from crossmodal.errors import InputError, UnsupportedError
from helpers import require_shared


def net_text(body: str, last: str, shape=(1, 4, 6, 6), classes: int = 3) -> str:
    """A prototxt: ``data`` of ``shape``, then ``body``, then InnerProduct ``fc`` on blob ``last``."""
    dims = " ".join(f"dim: {d}" for d in shape)
    return (f'name: "t"\ninput: "data"\ninput_shape {{ {dims} }}\n{body}\n'
            f'layer {{ name: "fc" type: "InnerProduct" bottom: "{last}" top: "fc" '
            f'inner_product_param {{ num_output: {classes} }} }}\n')


def conv1x1(name: str, out: int) -> str:
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "data" top: "{name}" '
            f'convolution_param {{ num_output: {out} kernel_size: 1 }} }}')


def fc_blobs(in_features: int, classes: int = 3, seed: int = 9) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((classes, in_features)).astype(np.float32), np.zeros(classes, np.float32)]


def read(tmp_path: Path, text: str, blobs: dict, encoding: str = "layer"):
    proto, model = tmp_path / "t.prototxt", tmp_path / "t.caffemodel"
    proto.write_text(text)
    write_blobs(text, model, blobs, encoding=encoding)
    return read_caffe(proto, model)


def outputs(model, x: np.ndarray, layer: str) -> dict[str, np.ndarray]:
    """``layer``'s output from the NumPy reference (what caffe-source runs), the IR→torch module
    and the IR→ONNX model in ONNX Runtime."""
    import onnx
    import onnxruntime as ort

    from crossmodal.emitters.to_onnx import build_onnx
    from crossmodal.emitters.to_torch import build_torch, run_layers

    out = {"reference": reference.run(model, x, [layer])[layer],
           "torch": run_layers(build_torch(model), x, [layer])[layer]}
    proto = build_onnx(model, extra_outputs=[layer])
    sess = ort.InferenceSession(proto.SerializeToString() if isinstance(proto, onnx.ModelProto) else proto)
    names = [o.name for o in sess.get_outputs()]
    out["onnx"] = sess.run(None, {sess.get_inputs()[0].name: x})[names.index(layer)]
    return out


def assert_all_close(got: dict[str, np.ndarray], want: np.ndarray, rtol: float = 1e-5) -> None:
    for engine, value in got.items():
        assert value.shape == want.shape, (engine, value.shape, want.shape)
        np.testing.assert_allclose(value, want, rtol=rtol, atol=rtol * np.abs(want).max(), err_msg=engine)


# --- hand-written Caffe layers (NumPy, loops as in Caffe's CPU code) -----------------------------
def caffe_lrn(a: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """LRNLayer ACROSS_CHANNELS: scale_c = k + alpha / size · Σ_{|c'−c| ≤ size//2} a_c'²."""
    n, c = a.shape[:2]
    out = np.empty_like(a, dtype=np.float64)
    for ch in range(c):
        lo, hi = max(0, ch - size // 2), min(c, ch + size // 2 + 1)
        scale = k + alpha / size * (a[:, lo:hi].astype(np.float64) ** 2).sum(axis=1)
        out[:, ch] = a[:, ch] * scale ** -beta
    return out


def caffe_pool(a: np.ndarray, kernel: int, stride: int, pad: int, method: str) -> np.ndarray:
    """PoolingLayer: ceil-rounded output, the last window dropped when it starts in the right
    padding; AVE divides by the window clipped to the padded input (padding counted)."""
    n, c, h, w = a.shape
    def size(x):
        out = int(np.ceil((x + 2 * pad - kernel) / stride)) + 1
        return out - 1 if pad and (out - 1) * stride >= x + pad else out
    ph, pw = size(h), size(w)
    out = np.empty((n, c, ph, pw))
    for i in range(ph):
        for j in range(pw):
            hs, ws = i * stride - pad, j * stride - pad
            he, we = min(hs + kernel, h + pad), min(ws + kernel, w + pad)
            area = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = a[:, :, hs:he, ws:we].astype(np.float64)
            out[:, :, i, j] = win.max(axis=(2, 3)) if method == "MAX" else win.sum(axis=(2, 3)) / area
    return out


def caffe_conv(a: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int, group: int) -> np.ndarray:
    """ConvolutionLayer, stride 1: output channel o sees only its group's input channels."""
    n, c, h, wd = a.shape
    o, cg, kh, kw = w.shape
    x = np.pad(a.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1
    out = np.zeros((n, o, ho, wo))
    per = o // group
    for oc in range(o):
        g = oc // per
        for i in range(ho):
            for j in range(wo):
                patch = x[:, g * cg:(g + 1) * cg, i:i + kh, j:j + kw]
                out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3)) + b[oc]
    return out


# --- per layer type --------------------------------------------------------------------------------
def test_lrn_divides_alpha_by_the_window_size_as_caffe_does(tmp_path):
    body = ('layer { name: "norm" type: "LRN" bottom: "data" top: "norm" '
            'lrn_param { local_size: 3 alpha: 0.6 beta: 0.75 k: 2 } }')
    model = read(tmp_path, net_text(body, "norm", (1, 5, 3, 3)), {"fc": fc_blobs(45)})
    x = np.random.default_rng(0).standard_normal((2, 5, 3, 3)).astype(np.float32) * 3
    assert model.graph.layer("norm").attrs == {"size": 3, "alpha": pytest.approx(0.6), "beta": 0.75, "k": 2.0}
    want = caffe_lrn(x, 3, 0.6, 0.75, 2.0)
    assert_all_close(outputs(model, x, "norm"), want)
    assert np.abs(caffe_lrn(x, 3, 0.6 * 3, 0.75, 2.0) - want).max() > 1e-2  # alpha not divided: different


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("hw,kernel,stride,pad,out", [
    (5, 2, 2, 1, 3),   # ceil gives 4 windows; the 4th would start in the right padding: dropped
    (6, 3, 2, 1, 4),   # the last window runs into the right padding (AVE counts the pad once)
    (56, 3, 2, 0, 28),  # GoogLeNet's pool2/3x3_s2 (ceil: 28, floor would be 27)
])
def test_ceil_pooling_matches_caffe_where_windows_reach_the_padding(tmp_path, method, hw, kernel, stride, pad,
                                                                    out):
    body = (f'layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param {{ pool: {method} '
            f'kernel_size: {kernel} stride: {stride} pad: {pad} }} }}')
    model = read(tmp_path, net_text(body, "pool", (1, 2, hw, hw)), {"fc": fc_blobs(2 * out * out)})
    assert infer_shapes(model.graph)["pool"] == (2, out, out)
    x = np.random.default_rng(1).standard_normal((2, 2, hw, hw)).astype(np.float32)
    assert_all_close(outputs(model, x, "pool"), caffe_pool(x, kernel, stride, pad, method))


def test_global_pooling_keeps_caffes_c_by_1_by_1_blob(tmp_path):
    body = ('layer { name: "gp" type: "Pooling" bottom: "data" top: "gp" '
            'pooling_param { pool: AVE global_pooling: true } }')
    model = read(tmp_path, net_text(body, "gp", (1, 3, 5, 4)), {"fc": fc_blobs(3)})
    x = np.random.default_rng(2).standard_normal((2, 3, 5, 4)).astype(np.float32)
    assert_all_close(outputs(model, x, "gp"), x.astype(np.float64).mean(axis=(2, 3), keepdims=True))


@pytest.mark.parametrize("encoding", ["layer", "layers"])
def test_grouped_convolution_with_two_groups(tmp_path, encoding):
    body = ('layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
            'convolution_param { num_output: 6 kernel_size: 3 pad: 1 group: 2 } }')
    rng = np.random.default_rng(3)
    w, b = rng.standard_normal((6, 2, 3, 3)).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    model = read(tmp_path, net_text(body, "conv", (1, 4, 5, 5)), {"conv": [w, b], "fc": fc_blobs(150)}, encoding)
    assert model.graph.layer("conv").attrs["groups"] == 2
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    want = caffe_conv(x, w, b, 1, 2)
    assert_all_close(outputs(model, x, "conv"), want)
    assert np.abs(caffe_conv(x, np.concatenate([w, w], 1), b, 1, 1) - want).max() > 1e-2  # ungrouped: different


@pytest.mark.parametrize("op,coeff,combine", [
    ("SUM", "coeff: 0.5 coeff: -2", lambda a, b: 0.5 * a - 2 * b),
    ("SUM", "", lambda a, b: a + b),
    ("PROD", "", lambda a, b: a * b),
    ("MAX", "", np.maximum),
])
def test_eltwise_operations_and_coefficients(tmp_path, op, coeff, combine):
    body = (f'{conv1x1("a", 2)}\n{conv1x1("b", 2)}\n'
            f'layer {{ name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" '
            f'eltwise_param {{ operation: {op} {coeff} }} }}')
    rng = np.random.default_rng(4)
    wa, wb = (rng.standard_normal((2, 3, 1, 1)).astype(np.float32) for _ in range(2))
    zero = np.zeros(2, np.float32)
    model = read(tmp_path, net_text(body, "sum", (1, 3, 4, 4)),
                 {"a": [wa, zero], "b": [wb, zero], "fc": fc_blobs(32)})
    assert model.graph.layer("sum").inputs == ["a", "b"]
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    a = np.einsum("oc,nchw->nohw", wa[:, :, 0, 0].astype(np.float64), x)
    b = np.einsum("oc,nchw->nohw", wb[:, :, 0, 0].astype(np.float64), x)
    assert_all_close(outputs(model, x, "sum"), combine(a, b))


@pytest.mark.parametrize("factor", [0.0, 0.25, 999.98])
def test_batch_norm_scale_factor_and_scale_layer(tmp_path, factor):
    """Caffe divides the stored mean and variance by the third blob (0 → statistics 0), then
    normalises with eps; the in-place Scale multiplies and shifts per channel."""
    body = ('layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" batch_norm_param { eps: 0.001 } }\n'
            'layer { name: "sc" type: "Scale" bottom: "data" top: "data" scale_param { bias_term: true } }')
    rng = np.random.default_rng(5)
    mean, var = rng.standard_normal(3).astype(np.float32), rng.uniform(0.5, 2, 3).astype(np.float32)
    gamma, beta = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    blobs = {"bn": [mean, var, np.array([factor], np.float32)], "sc": [gamma, beta], "fc": fc_blobs(48)}
    model = read(tmp_path, net_text(body, "data", (1, 3, 4, 4)), blobs)
    g = model.graph
    assert [l.name for l in g.layers][:2] == ["bn", "sc"] and g.layer("sc").inputs == ["bn"]
    assert g.blobs["data"] == "sc"  # the in-place blob's final value
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32) * 2
    s = 0.0 if factor == 0 else 1.0 / factor
    m, v = (mean.astype(np.float64) * s)[:, None, None], (var.astype(np.float64) * s)[:, None, None]
    normed = (x - m) / np.sqrt(v + 0.001)
    assert_all_close(outputs(model, x, "bn"), normed, rtol=2e-5)
    assert_all_close(outputs(model, x, "sc"), normed * gamma[:, None, None] + beta[:, None, None], rtol=2e-5)


def test_leaky_relu_concat_split_and_in_place_names(tmp_path):
    body = ('layer { name: "split" type: "Split" bottom: "data" top: "d1" top: "d2" }\n'
            'layer { name: "r" type: "ReLU" bottom: "d1" top: "d1" relu_param { negative_slope: 0.1 } }\n'
            'layer { name: "cat" type: "Concat" bottom: "d1" bottom: "d2" top: "cat" }')
    model = read(tmp_path, net_text(body, "cat", (1, 2, 3, 3)), {"fc": fc_blobs(36)})
    assert model.graph.layer("cat").inputs == ["r", "input"]
    x = np.random.default_rng(6).standard_normal((2, 2, 3, 3)).astype(np.float32)
    leaky = np.where(x > 0, x, 0.1 * x).astype(np.float64)
    assert_all_close(outputs(model, x, "cat"), np.concatenate([leaky, x], axis=1))


# --- the real prototxts ------------------------------------------------------------------------------
def places(name: str) -> Path:
    return require_shared("places365", name)


def test_real_alexnet_graph_has_the_hand_written_blob_shapes():
    net = read_prototxt(places("deploy_alexnet_places365.prototxt"))
    g = net.graph
    assert g.input.shape == (3, 227, 227)
    got = {name: [shape for _, _, shape in blobs] for name, blobs in net.expected.items()}
    assert got == ALEXNET_SHAPES
    assert [g.layer(n).attrs.get("groups", 1) for n in ("conv1", "conv2", "conv3", "conv4", "conv5")] == [1, 2, 1, 2, 2]
    assert g.layer("norm1").attrs == {"size": 5, "alpha": pytest.approx(1e-4), "beta": 0.75, "k": 1.0}
    assert g.feature_blob == "fc7" and g.blobs["fc7"] == "relu7" and g.blobs["logits"] == "fc8"


@pytest.mark.parametrize("name,params,feature,feature_shape", [
    # ImageNet totals of the same architectures (CaffeNet 60,965,224; GoogLeNet without the auxiliary
    # classifiers 6,998,552; ResNet-152 60,192,808 learned; VGG16 138,357,544) with a 365-way classifier
    # instead of the 1000-way one (−1000·(in+1) + 365·(in+1))
    ("deploy_alexnet_places365.prototxt", 60_965_224 - 1000 * 4097 + 365 * 4097, "fc7", (4096,)),
    ("deploy_googlenet_places365.prototxt", 6_998_552 - 1000 * 1025 + 365 * 1025, "pool5", (1024, 1, 1)),
    ("deploy_resnet152_places365.prototxt", 60_192_808 - 1000 * 2049 + 365 * 2049, "pool5", (2048, 1, 1)),
    ("deploy_resnet152_hybrid1365.prototxt", 60_192_808 - 1000 * 2049 + 1365 * 2049, "pool5", (2048, 1, 1)),
    ("deploy_vgg16_places365.prototxt", 138_357_544 - 1000 * 4097 + 365 * 4097, "fc7", (4096,)),
])
def test_real_prototxts_parameter_totals_and_feature_blob(name, params, feature, feature_shape):
    from crossmodal.convert.summary import summarize
    s = summarize(places(name))
    assert s.parameters - s.statistics == params
    g = read_prototxt(places(name)).graph
    assert g.feature_blob == feature and infer_shapes(g)[g.blobs[feature]] == feature_shape


def test_inspect_shows_branch_and_merge_points():
    from click.testing import CliRunner

    from crossmodal.cli import main
    result = CliRunner().invoke(main, ["inspect", str(places("deploy_googlenet_places365.prototxt"))])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    row = next(l for l in lines if l.startswith("inception_3a/output "))
    assert "merge ← inception_3a/relu_1x1, inception_3a/relu_3x3, inception_3a/relu_5x5, " \
           "inception_3a/relu_pool_proj" in row and "N×256×28×28" in row and "branch → 4 readers" in row
    assert re.search(r"^inception_3a/3x3_reduce .* ← pool2/3x3_s2$", result.output, re.M)
    assert "total parameters: 6,347,677; 143 layers" in result.output


# --- bad input -----------------------------------------------------------------------------------------
def cli(*args):
    from click.testing import CliRunner

    from crossmodal.cli import main
    return CliRunner().invoke(main, [str(a) for a in args])


POOL = ('layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
        'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }')
CONCAT_BAD = (POOL + '\n'
              'layer { name: "cat" type: "Concat" bottom: "data" bottom: "p" top: "cat" }')
ELTWISE_BAD = (conv1x1("c", 3) + '\n'
               'layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "c" top: "sum" }')
BN = 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" }'


@pytest.mark.parametrize("case,body,last,blobs,pattern", [
    ("concat", CONCAT_BAD, "cat", {}, r"t\.prototxt: layer 'cat': concatenated inputs differ beyond the channel axis"),
    ("eltwise", ELTWISE_BAD, "sum", {}, r"t\.prototxt: layer 'sum': element-wise sum of different shapes"),
    ("fc-size", BN, "data", {"bn": "ok", "fc": [np.zeros((3, 50)), np.zeros(3)]},
     r"t\.caffemodel: does not fit t\.prototxt: fc weight is 3x50, the prototxt needs 3x64"),
    ("missing", BN, "data", {"fc": "ok"}, r"t\.caffemodel: does not fit t\.prototxt: layer\(s\) missing from the "
                                            r"caffemodel: bn$"),
    ("count", BN, "data", {"bn": [np.ones(4), np.ones(4)], "fc": "ok"},
     r"t\.caffemodel: does not fit t\.prototxt: bn has 2 blob\(s\), the prototxt needs 3 \(mean, var, scale_factor\)"),
    ("shape", BN, "data", {"bn": [np.ones(4), np.ones(5), np.ones(1)], "fc": "ok"},
     r"t\.caffemodel: does not fit t\.prototxt: bn var is 5, the prototxt needs 4$"),
])
def test_bad_prototxt_or_caffemodel_is_one_line_exit_2_nothing_written(tmp_path, case, body, last, blobs, pattern):
    text = net_text(body, last, (1, 4, 4, 4))
    blobs = {k: (fc_blobs(64) if k == "fc" else [np.zeros(4), np.ones(4), np.ones(1)]) if isinstance(v, str) else v
             for k, v in blobs.items()}
    proto, model = tmp_path / "t.prototxt", tmp_path / "t.caffemodel"
    proto.write_text(text)
    if case == "missing":
        write_blobs(text.replace(BN, BN.replace('"bn"', '"other"')), model, blobs)
    else:
        write_blobs(text, model, blobs)
    out = tmp_path / "out"
    result = cli("convert", proto, "--caffemodel", model, "--out-dir", out, "-q")
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and re.search(pattern, lines[0]), result.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_unsupported_settings_are_named_together(tmp_path):
    body = ('layer { name: "n" type: "LRN" bottom: "data" top: "n" lrn_param { norm_region: WITHIN_CHANNEL } }\n'
            'layer { name: "bn" type: "BatchNorm" bottom: "n" top: "n" batch_norm_param { use_global_stats: false } }\n'
            'layer { name: "s" type: "Scale" bottom: "n" bottom: "data" top: "s" }')
    proto = tmp_path / "t.prototxt"
    proto.write_text(net_text(body, "s"))
    with pytest.raises(UnsupportedError) as err:
        read_prototxt(proto)
    msg = str(err.value)
    assert msg.startswith(f"{proto}: 3 unsupported Caffe layer(s): n (LRN: WITHIN_CHANNEL")
    assert "bn (BatchNorm: use_global_stats: false" in msg and "s (Scale: scale from a second bottom)" in msg


def test_rgb_input_needs_a_first_convolution(tmp_path):
    text = net_text(POOL, "p", (1, 3, 4, 4))
    proto, model = tmp_path / "t.prototxt", tmp_path / "t.caffemodel"
    proto.write_text(text)
    write_blobs(text, model, {"fc": fc_blobs(12)})
    with pytest.raises(InputError, match=r"an RGB input \(--rgb-input\) needs a first convolution on 3 channels; "
                                         r"p is max_pool2d"):
        read_caffe(proto, model, rgb_input=True)


def test_googlenet_rgb_fold_reverses_its_first_convolution(tmp_path):
    from crossmodal.readers.caffe_random import write_random_caffemodel
    proto = places("deploy_googlenet_places365.prototxt")
    model = tmp_path / "g.caffemodel"
    write_random_caffemodel(proto, model, seed=2)
    bgr, rgb = read_caffe(proto, model), read_caffe(proto, model, rgb_input=True)
    w = "conv1/7x7_s2.weight"
    np.testing.assert_array_equal(rgb.weights[w], bgr.weights[w][:, ::-1])
    assert rgb.graph.preprocess.channel_order == "RGB" and rgb.graph.preprocess.mean == (116.676, 112.514, 104.051)


def test_demo_names_a_missing_prototxt(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSMODAL_SHARED_DATA", str(tmp_path / "nowhere"))
    result = cli("demo", "--arch", "googlenet-caffe", "--out-dir", tmp_path / "o")
    assert result.exit_code == 2
    assert "googlenet-caffe needs its deploy prototxt deploy_googlenet_places365.prototxt: give --prototxt PATH" \
        in result.stderr


# --- full size (slow) ----------------------------------------------------------------------------------
def convert_and_verify(tmp_path: Path, proto: Path, caffemodel: Path, **read_options):
    from crossmodal.convert.pipeline import convert
    from crossmodal.verify.job import run_verify
    out = tmp_path / "model"
    convert(proto, out, caffemodel=caffemodel, **read_options)
    report = run_verify(out, engines=("torch", "ir", "keras", "onnx"), source=caffemodel, prototxt=proto, random=1)
    assert report.passed, report.gates()
    assert set(report.comparisons) == {"torch", "ir", "keras", "onnx"}
    assert report.layers == [l.name for l in report_graph(out).layers]  # every layer compared
    return report


def report_graph(out: Path):
    from crossmodal.ir.store import load_graph
    return load_graph(out)


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["layer", "layers"])
def test_full_alexnet_both_encodings_every_engine(tmp_path, encoding):
    proto = places("deploy_alexnet_places365.prototxt")
    caffemodel = tmp_path / f"alexnet-{encoding}.caffemodel"
    write_caffemodel(proto.read_text(), caffemodel, ALEXNET_SHAPES, encoding=encoding, seed=3, keep=False)
    report = convert_and_verify(tmp_path, proto, caffemodel, rgb_input=encoding == "layers")
    assert report.feature_blob == "fc7" and {g["check"] for g in report.gates()} >= {"fc7 max|Δ|/max|ref|"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deploy_googlenet_places365.prototxt", "deploy_resnet152_places365.prototxt"])
def test_full_googlenet_and_resnet152_every_engine(tmp_path, name):
    from crossmodal.readers.caffe_random import write_random_caffemodel
    proto = places(name)
    caffemodel = tmp_path / "net.caffemodel"
    write_random_caffemodel(proto, caffemodel, seed=4)
    report = convert_and_verify(tmp_path, proto, caffemodel)
    assert report.feature_blob == "pool5" and {g["check"] for g in report.gates()} >= {"pool5 max|Δ|/max|ref|"}


def test_random_caffemodel_writer_refuses_a_v1_file_for_types_v1_lacks(tmp_path):
    from crossmodal.readers.caffe_random import write_random_caffemodel
    body = 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" }'
    proto = tmp_path / "t.prototxt"
    proto.write_text(net_text(body, "data"))
    with pytest.raises(InputError, match="layer bn: type BatchNorm has no legacy V1 form"):
        write_random_caffemodel(proto, tmp_path / "t.caffemodel", encoding="layers")
    assert list(tmp_path.iterdir()) == [proto]
    write_random_caffemodel(proto, tmp_path / "t.caffemodel")
    model = read_caffe(proto, tmp_path / "t.caffemodel")
    assert set(model.weights) == {"bn.mean", "bn.var", "fc.weight", "fc.bias"}


def test_demo_refuses_an_unknown_arch(tmp_path):
    result = cli("demo", "--arch", "lenet-caffe", "--out-dir", tmp_path / "o")
    assert result.exit_code == 2 and "unknown --arch 'lenet-caffe'" in result.stderr
    assert not (tmp_path / "o").exists()
