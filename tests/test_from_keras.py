"""The Keras reader: our own emitter's models (every IR kind it writes) read back exactly, plain
Keras models (branches, concatenation, Add, depthwise, padding) read directly, Lambda/custom
objects and damaged files refused before anything runs or is written."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from crossmodal.cli import main
from crossmodal.errors import InputError, UnsupportedError
from crossmodal.ir import reference
from crossmodal.ir.kinds import infer_shapes
from crossmodal.readers.from_keras import read_keras
from helpers import rel_err
from test_kinds import _dag


def _emit(model, path, legacy=False):
    from crossmodal.emitters.keras_weights import save_keras
    from crossmodal.emitters.to_keras import build_keras
    kmodel, _ = build_keras(model)
    if legacy:
        kmodel.save(path)              # Keras' legacy HDF5: model_config + model_weights
    else:
        save_keras(kmodel, path)
    return path


def same_attrs(a, b, in_shape) -> bool:
    """Layer attributes equal, a pooling's ``ceil_mode`` only where it changes the window count (the
    reader picks floor when both give Keras' windows)."""
    from crossmodal.ir.kinds import pool_output_size
    if "ceil_mode" in a and a["ceil_mode"] != b.get("ceil_mode"):
        _, h, w = in_shape
        sizes = [[pool_output_size(n, k, s, p, c) for n, k, s, p in zip((h, w), x["kernel"], x["stride"], x["pad"])]
                 for x, c in ((a, a["ceil_mode"]), (a, b["ceil_mode"]))]
        a = {**a, "ceil_mode": b["ceil_mode"]} if sizes[0] == sizes[1] else a
    return dict(a) == dict(b)


def _same_function(a, b, shape, tol=1e-5, n=2):
    x = np.random.default_rng(3).normal(size=(n, *shape)).astype(np.float32)
    la, lb = a.graph.resolve("logits"), b.graph.resolve("logits")
    ra, rb = reference.run(a, x, [la])[la], reference.run(b, x, [lb])[lb]
    return rel_err(rb, ra)


@pytest.fixture(scope="module")
def dag():
    return _dag(np.random.default_rng(7))


@pytest.mark.parametrize("legacy", [False, True], ids=["keras", "legacy-h5"])
def test_every_kind_the_keras_emitter_writes_reads_back_exactly(dag, tmp_path, legacy):
    """conv (bias-free, grouped, dilated), batch norm (with and without affine), scale (a 1×1
    depthwise conv), ReLU, leaky ReLU, LRN (crossmodal's layer), concat, sum with coefficients
    (Rescaling folded back), product, maximum, ceil max pooling (ZeroPadding2D folded), GAP, dense."""
    path = _emit(dag, tmp_path / ("dag.h5" if legacy else "dag.keras"), legacy)
    back = read_keras(path)
    assert [(l.name, l.kind, l.inputs) for l in back.graph.layers] == \
        [(l.name, l.kind, l.inputs) for l in dag.graph.layers]
    shapes = infer_shapes(dag.graph)
    for layer in dag.graph.layers:
        assert same_attrs(back.graph.layer(layer.name).attrs, layer.attrs, shapes[layer.inputs[0]]), layer.name
        for role in layer.tensors:
            np.testing.assert_array_equal(back.tensor(back.graph.layer(layer.name), role), dag.tensor(layer, role))
    assert back.graph.feature_blob == "gap" and back.graph.blobs["logits"] == "fc"
    assert _same_function(dag, back, dag.graph.input.shape) < 1e-6


def test_tiny_vgg_from_our_keras_unpermutes_fc6_and_keeps_the_keras_names(tiny_converted):
    src = tiny_converted.model
    back = read_keras(next(a.path for a in tiny_converted.artifacts if a.kind == "keras"))
    kinds = [l.kind for l in back.graph.layers]
    assert "dropout" not in kinds and kinds == [l.kind for l in src.graph.layers if l.kind != "dropout"]
    fc6 = next(l for l in src.graph.layers if l.name == "fc6")
    np.testing.assert_array_equal(back.tensor(back.graph.layer("fc1"), "weight"), src.tensor(fc6, "weight"))
    assert back.graph.keras_names["block1_conv1"] == "block1_conv1" and back.graph.feature_blob == "fc2"
    assert back.graph.blobs["fc2"] == "fc2_relu" and back.graph.blobs["pool5"] == "block2_pool"
    assert _same_function(src, back, src.graph.input.shape) < 1e-6


def _pool_net(kind, k, s, p, ceil, hw):
    from test_emitters import _pool_net as net
    return net(kind, k, s, p, ceil, relu=True, hw=hw)


@pytest.mark.parametrize("kind,k,s,p,ceil,hw", [
    ("max_pool2d", 2, 2, 0, True, (13, 15)),   # Keras "same"
    ("max_pool2d", 3, 3, 0, True, (13, 14)),   # ZeroPadding2D at the end + valid
    ("max_pool2d", 3, 2, 1, True, (13, 14)),   # zeros both sides
    ("avg_pool2d", 3, 2, 0, True, (14, 16)),
    ("avg_pool2d", 3, 2, 1, False, (13, 14)),
])
def test_pooling_the_emitter_writes_with_padding_reads_back_as_the_same_ir(tmp_path, kind, k, s, p, ceil, hw):
    model = _pool_net(kind, k, s, p, ceil, hw)
    back = read_keras(_emit(model, tmp_path / "p.keras"))
    pool = back.graph.layer("pool1")
    assert pool.kind == kind and tuple(pool.attrs["pad"]) == (p, p)
    assert _same_function(model, back, model.graph.input.shape) < 1e-6


# --- models from plain Keras -------------------------------------------------------------------
def branchy_keras_model(seed=0, hw=(17, 19)):
    """A functional CNN with two branches (a plain conv and ZeroPadding2D → depthwise conv ×2 → BN),
    their concatenation, a residual Add, max pooling 'same', average pooling, GAP, dropout and a
    softmax Dense."""
    import keras
    from keras import layers as L
    keras.utils.set_random_seed(seed)
    inp = keras.Input((*hw, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    a = L.Conv2D(6, 3, padding="same", name="branch_a")(x)
    bpad = L.ZeroPadding2D(1, name="pad_b")(x)
    b = L.DepthwiseConv2D(3, depth_multiplier=2, name="branch_b")(bpad)
    b = L.BatchNormalization(name="bn_b")(b)
    b = L.Conv2D(6, 1, name="branch_b_proj")(b)
    cat = L.Concatenate(name="cat")([a, b])
    y = L.ReLU(name="cat_relu")(cat)
    y = L.Conv2D(8, 1, name="mix")(y)
    y = L.Add(name="residual")([x, y])
    y = L.Activation("relu", name="res_relu")(y)
    y = L.MaxPooling2D(3, strides=1, padding="same", name="pool_same")(y)
    y = L.AveragePooling2D(2, name="pool_avg")(y)
    y = L.GlobalAveragePooling2D(name="gap")(y)
    y = L.Dropout(0.3, name="drop")(y)
    out = L.Dense(5, activation="softmax", name="predictions")(y)
    model = keras.Model(inp, out, name="branchy")
    for layer in model.layers:  # non-trivial batch-norm statistics
        if isinstance(layer, L.BatchNormalization):
            c = layer.moving_mean.shape[0]
            rng = np.random.default_rng(seed)
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, .2, c), rng.normal(0, .5, c),
                               rng.uniform(0.5, 2, c)])
    return model


def sequential_keras_model(hw=(12, 10)):
    import keras
    from keras import layers as L
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((*hw, 3)), L.Conv2D(4, 3, activation="relu"), L.MaxPooling2D(),
                             L.Flatten(), L.Dense(6, activation="relu"), L.Dropout(0.5), L.Dense(3)], name="seq")


def mobile_keras_model(hw=(16, 14)):
    """IR 1.3 kinds: Rescaling of the input, stride-2 'same' convolutions and max pooling (padding only
    at the end), ReLU6 as an activation and as a layer, 'same' average pooling clipped at the end."""
    import keras
    from keras import layers as L
    keras.utils.set_random_seed(2)
    inp = keras.Input((*hw, 3))
    x = L.Rescaling(1 / 127.5, offset=-1, name="scale_in")(inp)
    x = L.Conv2D(6, 3, strides=2, padding="same", activation="relu6", name="conv_s2")(x)
    x = L.DepthwiseConv2D(3, strides=2, padding="same", name="dw_s2")(x)
    x = L.ReLU(6.0, name="relu6")(x)
    x = L.MaxPooling2D(2, strides=2, padding="same", name="pool_s2")(x)
    x = L.AveragePooling2D(3, strides=2, padding="same", name="avg_same")(x)
    x = L.Flatten()(x)
    return keras.Model(inp, L.Dense(4, name="logits_dense")(x), name="mobile")


def _keras_logits(kmodel, x_nchw):
    """The Keras model's pre-softmax output, from its last Dense (softmax removed)."""
    import keras
    last = kmodel.layers[-1]
    out = kmodel(x_nchw.transpose(0, 2, 3, 1), training=False)
    if getattr(last, "activation", None) is keras.activations.softmax:
        out = keras.Model(kmodel.input, last.input)(x_nchw.transpose(0, 2, 3, 1))
        w, b = last.get_weights()
        out = np.asarray(out) @ w + b
    return np.asarray(out)


@pytest.mark.parametrize("make", [branchy_keras_model, sequential_keras_model, mobile_keras_model],
                         ids=["functional", "sequential", "ir-1.3-kinds"])
def test_a_plain_keras_model_reads_directly(tmp_path, make):
    kmodel = make()
    kmodel.save(tmp_path / "m.keras")
    model = read_keras(tmp_path / "m.keras")
    x = np.random.default_rng(2).normal(size=(3, *model.graph.input.shape)).astype(np.float32)
    x = x * 100 if make is mobile_keras_model else x   # pixels around 0-255 reach the ReLU6 clip
    logits = model.graph.resolve("logits")
    ours = reference.run(model, x, [logits])[logits]
    assert rel_err(ours, _keras_logits(kmodel, x)) < 1e-5
    assert any("torchvision preset" in n for n in model.graph.provenance.notes)
    if make is mobile_keras_model:
        kinds = {l.name: l for l in model.graph.layers}
        assert kinds["scale_in"].kind == "rescale" and kinds["relu6"].attrs["max_value"] == 6.0
        assert kinds["conv_s2"].attrs["pad_end"] == (1, 1) and kinds["pool_s2"].attrs.get("pad_end") is None


def test_branchy_keras_model_converts_to_keras_and_onnx_that_match_it(tmp_path):
    import keras
    import onnxruntime as ort
    kmodel = branchy_keras_model()
    kmodel.save(tmp_path / "m.keras")
    runner = CliRunner()
    result = runner.invoke(main, ["convert", str(tmp_path / "m.keras"), "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    x = np.random.default_rng(4).normal(size=(4, 3, 17, 19)).astype(np.float32)
    want = _keras_logits(kmodel, x)
    emitted = keras.saving.load_model(tmp_path / "out" / "model.keras", safe_mode=True)
    got_keras = np.asarray(emitted(x.transpose(0, 2, 3, 1)))
    sess = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    got_onnx = sess.run(["logits"], {sess.get_inputs()[0].name: x})[0]
    assert rel_err(got_keras, want) < 1e-4 and rel_err(got_onnx, want) < 1e-4


def test_preprocessing_options_replace_the_default_and_its_note(tmp_path):
    import json
    sequential_keras_model().save(tmp_path / "m.keras")
    runner = CliRunner()
    plain = runner.invoke(main, ["convert", str(tmp_path / "m.keras"), "-o", str(tmp_path / "a"), "--to", "ir", "-q"])
    assert plain.exit_code == 0 and "note: preprocessing: a Keras file does not record it" in plain.output
    given = runner.invoke(main, ["convert", str(tmp_path / "m.keras"), "-o", str(tmp_path / "b"), "--to", "ir", "-q",
                                 "--preprocess", "caffe", "--scale", "1"])
    assert given.exit_code == 0 and "preprocessing:" not in given.output, given.output
    spec = json.loads((tmp_path / "b" / "model.json").read_text())["preprocess"]
    assert spec["channel_order"] == "BGR" and spec["value_range"] == "0-1" and spec["crop"] == [12, 10]


# --- refusals ----------------------------------------------------------------------------------
def _lambda_model(path):
    import keras
    from keras import layers as L
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(2, 3, name="conv")(inp)
    x = L.Lambda(lambda t: t * 2, name="double_it")(x)
    x = L.Flatten()(x)
    keras.Model(inp, L.Dense(2)(x)).save(path)
    return path


def test_a_lambda_layer_is_refused_by_name_without_running_it(tmp_path, monkeypatch):
    path = _lambda_model(tmp_path / "lam.keras")
    import keras
    monkeypatch.setattr(keras.saving, "load_model", lambda *a, **k: pytest.fail("Keras loaded the model"))
    with pytest.raises(UnsupportedError, match=r"'double_it' is a Lambda layer"):
        read_keras(path)


def test_a_custom_layer_is_refused_by_its_registered_name(tmp_path):
    import keras

    @keras.saving.register_keras_serializable(package="acme")
    class Twice(keras.layers.Layer):
        def call(self, x):
            return 2 * x

    inp = keras.Input((4, 4, 3))
    x = Twice(name="twice")(keras.layers.Conv2D(2, 1)(inp))
    keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(x))).save(tmp_path / "c.keras")
    with pytest.raises(UnsupportedError, match=r"'twice' is a custom object 'acme>Twice'"):
        read_keras(tmp_path / "c.keras")


def test_unsupported_layers_are_listed_in_one_pass(tmp_path):
    import keras
    from keras import layers as L
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, activation="sigmoid", name="sig")(inp)
    x = L.GlobalMaxPooling2D(name="gmp")(x)
    keras.Model(inp, L.Dense(2)(x)).save(tmp_path / "u.keras")
    with pytest.raises(UnsupportedError) as exc:
        read_keras(tmp_path / "u.keras")
    assert "sig (Conv2D: activation 'sigmoid'" in str(exc.value) and "gmp (GlobalMaxPooling2D)" in str(exc.value)


def test_a_model_without_a_dense_classifier_is_refused(tmp_path):
    import keras
    inp = keras.Input((8, 8, 3))
    keras.Model(inp, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inp))).save(tmp_path / "f.keras")
    with pytest.raises(UnsupportedError, match="not a Dense layer"):
        read_keras(tmp_path / "f.keras")


def _truncated(src, dst, keep=0.6):
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * keep)])
    return dst


@pytest.mark.parametrize("case", ["lambda", "truncated-keras", "truncated-h5", "not-keras-h5", "config-only"])
def test_bad_keras_input_exits_2_with_one_line_and_writes_nothing(tmp_path, dag, case):
    if case == "lambda":
        path, message = _lambda_model(tmp_path / "lam.keras"), "'double_it' is a Lambda layer"
    elif case == "truncated-keras":
        path = _truncated(_emit(dag, tmp_path / "d.keras"), tmp_path / "cut.keras")
        message = "not a readable .keras file"
    elif case == "truncated-h5":
        path = _truncated(_emit(dag, tmp_path / "d.h5", legacy=True), tmp_path / "cut.h5")
        message = "not a readable HDF5 file"
    elif case == "not-keras-h5":
        import h5py
        path, message = tmp_path / "other.h5", "not a Keras model or Keras weights file"
        with h5py.File(path, "w") as f:
            f["x"] = np.zeros(3)
    else:
        path, message = tmp_path / "bare.keras", "no config.json"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("metadata.json", "{}")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["convert", str(path), "--out-dir", str(out), "-q"])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1, result.output
    assert not out.exists()


def test_arch_is_refused_for_a_file_with_its_own_architecture(tmp_path, dag):
    with pytest.raises(InputError, match="--arch goes with a weights-only HDF5"):
        read_keras(_emit(dag, tmp_path / "d.keras"), arch="vgg16")
