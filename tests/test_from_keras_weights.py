"""Weights-only Keras 2 HDF5 files (``save_weights``: root ``layer_names``, per layer ``weight_names``),
written here with h5py in that layout, read with ``--arch`` onto the IR: the tiny VGG fast, the
real VGG16-places365 shapes (the Keras port's file) in one slow test."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from crossmodal.cli import main
from crossmodal.errors import InputError
from crossmodal.ir import layouts
from crossmodal.readers.from_keras import read_keras
from helpers import require_shared


def write_keras2_weights(path, spec, weights: dict[str, np.ndarray], *, skip: str | None = None):
    """The Keras 2 ``save_weights`` layout of a VGG's IR weights: Keras names, HWIO kernels, the first
    dense kernel's rows in HWC order; weightless layers (pools, flatten, dropout) listed too."""
    import h5py
    from crossmodal.models.vgg import build_graph
    graph = build_graph(spec)
    names = graph.keras_names
    groups = ["input_1"]
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"], f.attrs["backend"] = b"2.0.8", b"tensorflow"
        for layer in graph.layers:
            if layer.kind not in ("conv2d", "dense", "max_pool2d", "flatten") or names[layer.name] == skip:
                continue
            kname = names[layer.name]
            g = f.create_group(kname)
            groups.append(kname)
            arrays = []
            if layer.kind == "conv2d":
                arrays = [layouts.conv_oihw_to_hwio(weights[f"{layer.name}.weight"])]
            elif layer.kind == "dense":
                w = weights[f"{layer.name}.weight"]
                arrays = [layouts.dense_chw_oi_to_hwc_io(w, spec.pool5_shape) if layer.name == "fc6"
                          else layouts.dense_oi_to_io(w)]
            if arrays:
                arrays.append(weights[f"{layer.name}.bias"])
                wnames = [f"{kname}/kernel:0".encode(), f"{kname}/bias:0".encode()]
                for wn, arr in zip(wnames, arrays):
                    g.create_dataset(wn.decode(), data=arr)
                g.attrs["weight_names"] = wnames
            else:
                g.attrs["weight_names"] = np.array([], dtype="S1")
        f.attrs["layer_names"] = [n.encode() for n in groups]
        f.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from crossmodal.models.synthetic import random_state_dict
    from crossmodal.models.vgg import create_spec
    spec = create_spec("vgg_tiny")
    weights = random_state_dict(spec, seed=3)
    path = write_keras2_weights(tmp_path_factory.mktemp("kw") / "tiny_weights_tf_dim_ordering_tf_kernels.h5",
                                spec, weights)
    return spec, weights, path


def test_weights_only_file_maps_onto_the_architecture_exactly(tiny):
    spec, weights, path = tiny
    model = read_keras(path, arch="vgg_tiny")
    assert set(model.weights) == set(weights)
    for name, arr in weights.items():  # fc6 permuted back from HWC rows: bit for bit
        np.testing.assert_array_equal(model.weights[name], arr, err_msg=name)
    assert model.graph.preprocess.name == "caffe" and model.graph.input.channel_order == "BGR"
    assert any("weights-only Keras HDF5 read as --arch vgg_tiny" in n for n in model.graph.provenance.notes)


def test_weights_only_file_without_arch_says_to_give_it(tiny):
    with pytest.raises(InputError, match="give its architecture with --arch"):
        read_keras(tiny[2])


def test_weights_of_another_architecture_name_what_does_not_fit(tiny, tmp_path):
    with pytest.raises(InputError, match=r"block1_conv1 weight: shape \(4, 3, 3, 3\), vgg_tiny3 needs \(4, 3, 3, 3\)"
                       r"|block1_conv2 missing"):
        read_keras(tiny[2], arch="vgg_tiny3")
    spec, weights, _ = tiny
    gap = write_keras2_weights(tmp_path / "gap.h5", spec, weights, skip="fc2")
    with pytest.raises(InputError, match="fc2 missing"):
        read_keras(gap, arch="vgg_tiny")


def test_convert_cli_with_arch_notes_the_caffe_preprocessing(tiny, tmp_path):
    result = CliRunner().invoke(main, ["convert", str(tiny[2]), "--arch", "vgg_tiny", "-o", str(tmp_path / "o"),
                                       "--to", "ir,onnx"])
    assert result.exit_code == 0, result.output
    assert "note: preprocessing: a weights-only Keras file does not record it" in result.output
    assert (tmp_path / "o" / "model.onnx").is_file()


@pytest.mark.slow
def test_the_keras_port_of_vgg16_places365_maps_onto_the_official_caffe_layers(tmp_path):
    """The real shapes (135,755,949 parameters, fc1 25088 × 4096 in HWC order): the IR gets the
    official Caffe release's layer names, so verify can set the port against it."""
    from crossmodal.models.synthetic import random_state_dict
    from crossmodal.models.vgg import create_spec
    from crossmodal.readers.from_caffe import read_prototxt
    spec = create_spec("vgg16_places365")
    weights = random_state_dict(spec, seed=0)
    path = write_keras2_weights(tmp_path / "vgg16-places365_weights_tf_dim_ordering_tf_kernels.h5", spec, weights)
    model = read_keras(path, arch="vgg16")
    assert model.graph.parameter_count() == 135_755_949 and model.graph.num_classes == 365
    np.testing.assert_array_equal(model.weights["fc6.weight"], weights["fc6.weight"])
    np.testing.assert_array_equal(model.weights["fc8a.weight"], weights["fc8a.weight"])
    caffe = read_prototxt(require_shared("places365", "deploy_vgg16_places365.prototxt")).graph
    owners = lambda g: [(l.name, l.kind) for l in g.layers if l.tensors]  # noqa: E731
    assert owners(model.graph) == owners(caffe)
