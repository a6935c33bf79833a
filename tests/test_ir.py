"""The IR: JSON + HDF5 round trip, per-tensor SHA-256, versioning, validation, layouts."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from crossmodal.ir import layouts
from crossmodal.ir.graph import FORMAT_VERSION, IRModel, Labels, Layer
from crossmodal.ir.kinds import LAYER_KINDS, infer_shapes, pool_output_size
from crossmodal.ir.preprocess import Preprocess
from crossmodal.ir.validation import validate
from crossmodal.ir.store import load_ir, save_ir
from crossmodal.errors import InputError, UnsupportedError
from crossmodal.models.synthetic import random_state_dict
from crossmodal.models.vgg import build_graph, create_spec


@pytest.fixture
def tiny_model(tiny_spec, tiny_preprocess):
    graph = build_graph(tiny_spec, tiny_preprocess)
    graph.labels = Labels([f"/c/class{i}" for i in range(tiny_spec.num_classes)], [1, 2] * 5, "x.txt")
    return IRModel(graph, random_state_dict(tiny_spec, seed=3))


def test_round_trip_keeps_graph_and_tensors_exactly(tmp_path, tiny_model):
    save_ir(tiny_model, tmp_path)
    loaded = load_ir(tmp_path)
    assert loaded.graph.to_dict()["layers"] == json.loads((tmp_path / "model.json").read_text())["layers"]
    assert [l.name for l in loaded.graph.layers] == [l.name for l in tiny_model.graph.layers]
    for name, arr in tiny_model.weights.items():
        assert np.array_equal(loaded.weights[name], arr)
    assert loaded.graph.labels.names == tiny_model.graph.labels.names
    assert loaded.graph.preprocess == tiny_model.graph.preprocess
    data = json.loads((tmp_path / "model.json").read_text())
    assert data["format_version"] == FORMAT_VERSION
    conv = next(l for l in data["layers"] if l["kind"] == "conv2d")
    assert conv["tensors"]["weight"]["layout"] == "OIHW" and len(conv["tensors"]["weight"]["sha256"]) == 64
    with h5py.File(tmp_path / "weights.h5") as f:
        assert f["fc6.weight"].attrs["layout"] == "OI"


def test_tampered_tensor_is_caught_by_its_hash(tmp_path, tiny_model):
    save_ir(tiny_model, tmp_path)
    with h5py.File(tmp_path / "weights.h5", "a") as f:
        f["conv2_1.weight"][0, 0, 0, 0] += 1.0
    with pytest.raises(InputError, match=r"conv2_1.weight SHA-256 mismatch"):
        load_ir(tmp_path)


def test_newer_major_version_is_refused(tmp_path, tiny_model):
    save_ir(tiny_model, tmp_path)
    data = json.loads((tmp_path / "model.json").read_text())
    data["format_version"] = "2.0"
    (tmp_path / "model.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="version 2.0"):
        load_ir(tmp_path)


def test_missing_ir_names_the_folder(tmp_path):
    with pytest.raises(InputError, match="missing model.json"):
        load_ir(tmp_path)


def test_validate_lists_every_problem_at_once(tiny_model):
    del tiny_model.weights["fc7.bias"]
    tiny_model.weights["conv1_1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    tiny_model.graph.labels.names.pop()
    with pytest.raises(InputError) as err:
        validate(tiny_model)
    text = str(err.value)
    assert "fc7.bias" in text and "conv1_1.weight" in text and "9 labels for 10 classes" in text


def test_unknown_layer_kinds_are_all_reported(tiny_model):
    tiny_model.graph.layers.insert(3, Layer("up", "deconv2d", ["relu1_1"]))
    tiny_model.graph.layers.insert(5, Layer("roi", "roi_pool", ["pool1"]))
    with pytest.raises(UnsupportedError, match=r"\['deconv2d', 'roi_pool'\]"):
        validate(tiny_model)


def test_preprocess_spec_rejects_unknown_keys_and_bad_values():
    with pytest.raises(InputError, match="unknown preprocessing keys"):
        Preprocess.from_dict({"resize": 256, "colour": "RGB"})
    with pytest.raises(InputError, match="channel_order"):
        Preprocess.from_dict({"channel_order": "GBR"})
    spec = Preprocess.from_dict(Preprocess(resize=(256, 256), channel_order="BGR").to_dict())
    assert spec.resize == (256, 256) and spec.channel_order == "BGR"


def test_vgg16_places365_has_the_published_parameter_count():
    spec = create_spec("vgg16_places365")
    graph = build_graph(spec)
    assert graph.parameter_count() == spec.parameter_count() == 135_755_949
    shapes = infer_shapes(graph)
    assert shapes["pool5"] == (512, 7, 7) and shapes["fc8a"] == (365,)
    assert graph.blobs["fc7"] == "relu7" and graph.blobs["logits"] == "fc8a"
    assert set(l.kind for l in graph.layers) <= set(LAYER_KINDS)


@pytest.mark.parametrize("size,k,s,p,ceil,expected", [
    (224, 2, 2, 0, False, 112), (13, 3, 2, 0, True, 6), (13, 3, 2, 0, False, 6),
    (14, 3, 2, 0, True, 7), (14, 3, 2, 0, False, 6), (15, 2, 2, 0, True, 8), (15, 2, 2, 0, False, 7),
    (5, 3, 2, 1, True, 3),
])
def test_pool_output_size_follows_caffe_and_torch(size, k, s, p, ceil, expected):
    import torch
    assert pool_output_size(size, k, s, p, ceil) == expected
    out = torch.nn.MaxPool2d(k, s, p, ceil_mode=ceil)(torch.zeros(1, 1, size, size))
    assert out.shape[-1] == expected


def test_fc6_row_permutation_matches_a_channel_last_flatten(rng):
    """On a 3×5×7 map (C, H, W distinct) the permuted weight on an HWC flatten equals the
    original weight on a CHW flatten; the inverse restores the original."""
    c, h, w = 3, 5, 7
    fmap = rng.standard_normal((2, c, h, w))
    weight = rng.standard_normal((4, c * h * w))
    chw = fmap.reshape(2, -1) @ weight.T
    hwc = fmap.transpose(0, 2, 3, 1).reshape(2, -1) @ layouts.dense_chw_rows_to_hwc(weight, (c, h, w)).T
    np.testing.assert_allclose(hwc, chw, rtol=1e-12)
    swapped = fmap.transpose(0, 3, 2, 1).reshape(2, -1) @ layouts.dense_chw_rows_to_hwc(weight, (c, h, w)).T
    assert not np.allclose(swapped, chw)
    assert np.array_equal(layouts.dense_hwc_rows_to_chw(layouts.dense_chw_rows_to_hwc(weight, (c, h, w)),
                                                        (c, h, w)), weight)
    np.testing.assert_array_equal(layouts.dense_chw_oi_to_hwc_io(weight, (c, h, w)),
                                  layouts.dense_oi_to_io(layouts.dense_chw_rows_to_hwc(weight, (c, h, w))))
    k = rng.standard_normal((8, 3, 3, 5))
    assert np.array_equal(layouts.conv_hwio_to_oihw(layouts.conv_oihw_to_hwio(k)), k)


@pytest.mark.parametrize("data,field", [
    ({"resize": "big"}, "resize"), ({"resize": 0}, "resize"), ({"resize": [1, 2, 3]}, "resize"),
    ({"resize": True}, "resize"), ({"crop": "224"}, "crop"), ({"crop": [224, -1]}, "crop"),
    ({"crop": 2.5}, "crop"), ({"mean": [1, 2]}, "mean"), ({"mean": "0.5"}, "mean"),
    ({"mean": [0.4, 0.4, None]}, "mean"), ({"std": [1, 0, 1]}, "std"), ({"interpolation": "fancy"}, "interpolation"),
    ({"interpolation": 3}, "interpolation"), ({"channel_order": "rgb"}, "channel_order"),
    ({"value_range": 255}, "value_range"), ({"mean_image": 7}, "mean_image"), ({"name": ""}, "name"),
])
def test_every_preprocess_field_is_type_checked(data, field):
    with pytest.raises(InputError, match=rf"preprocessing field '{field}' must be "):
        Preprocess.from_dict(data)


def test_preprocess_sizes_and_default_name():
    spec = Preprocess.from_dict({"crop": 5, "resize": [7], "mean": [1, 2, 3], "std": [1, 1, 1]})
    assert (spec.crop, spec.resize, spec.mean, spec.name) == ((5, 5), 7, (1.0, 2.0, 3.0), "custom")
    assert Preprocess.from_dict({"crop": [20, 28], "resize": [20.0, 28]}).resize == (20, 28)
    assert Preprocess.from_dict({"name": "mine"}).name == "mine"
    with pytest.raises(InputError, match="JSON object"):
        Preprocess.from_dict([1, 2])
    spec.check_fits((3, 5, 5))
    with pytest.raises(InputError, match=r"crops 5×5, but the network takes 20×28.*\[20, 28\]"):
        spec.check_fits((3, 20, 28))


MEAN = "preprocess.mean_image"


@pytest.fixture
def with_mean_image(tiny_model, tmp_path):
    """The tiny model with a (3, 20, 28) mean image, saved: returns the folder."""
    import dataclasses
    tiny_model.weights[MEAN] = np.random.default_rng(0).uniform(90, 130, (3, 20, 28)).astype(np.float32)
    tiny_model.graph.preprocess = dataclasses.replace(tiny_model.graph.preprocess, mean_image=MEAN)
    save_ir(tiny_model, tmp_path)
    return tmp_path


def test_mean_image_hash_is_recorded_and_checked(with_mean_image):
    from crossmodal.ir.store import read_tensor
    data = json.loads((with_mean_image / "model.json").read_text())
    record = data["tensors"][MEAN]
    assert record["shape"] == [3, 20, 28] and record["layout"] == "CHW" and len(record["sha256"]) == 64
    loaded = load_ir(with_mean_image)
    assert loaded.graph.tensors[MEAN].sha256 == record["sha256"]
    assert read_tensor(with_mean_image, loaded.graph, MEAN).shape == (3, 20, 28)
    with h5py.File(with_mean_image / "weights.h5", "a") as f:
        f[MEAN][0, 0, 0] += 1.0
    with pytest.raises(InputError, match=r"preprocess.mean_image SHA-256 mismatch"):
        load_ir(with_mean_image)
    with pytest.raises(InputError, match=r"preprocess.mean_image SHA-256 mismatch"):
        read_tensor(with_mean_image, loaded.graph, MEAN)


def test_a_tensor_the_graph_does_not_record_is_refused(with_mean_image):
    with h5py.File(with_mean_image / "weights.h5", "a") as f:
        f.create_dataset("smuggled", data=np.zeros(3, np.float32))
    with pytest.raises(InputError, match="smuggled is not recorded in model.json"):
        load_ir(with_mean_image)


def test_a_format_1_0_ir_without_tensor_records_still_loads(with_mean_image, tmp_path):
    data = json.loads((with_mean_image / "model.json").read_text())
    data["format_version"] = "1.0"
    del data["tensors"]
    (with_mean_image / "model.json").write_text(json.dumps(data))
    loaded = load_ir(with_mean_image)
    assert loaded.graph.tensors == {} and loaded.weights[MEAN].shape == (3, 20, 28)
    out = tmp_path / "resaved"
    out.mkdir()
    save_ir(loaded, out)  # written in the current format, with the record
    resaved = json.loads((out / "model.json").read_text())
    assert resaved["format_version"] == FORMAT_VERSION == "1.3" and MEAN in resaved["tensors"]
