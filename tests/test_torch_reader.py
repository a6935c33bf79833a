"""The PyTorch reader: every checkpoint layout, architecture inference, and bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crossmodal.readers.from_torch import infer_spec, normalise_key, read_torch_checkpoint
from crossmodal.errors import InputError, UnsupportedError
from crossmodal.models.synthetic import LAYOUTS, keyed, write_checkpoint
from crossmodal.models.vgg import CFGS, create_spec, torchvision_keys


class PickledVGG(torch.nn.Module):
    """A whole-model pickle, as in whole_vgg16_places365.pth.tar (class importable here)."""

    def __init__(self, spec):
        super().__init__()
        from crossmodal.models.vgg import build_torch_module
        net = build_torch_module(spec)
        self.features, self.classifier = net.features, net.classifier


@pytest.mark.parametrize("key,expected", [
    ("module.features.0.weight", "features.0.weight"),
    ("features.module.10.bias", "features.10.bias"),
    ("module.module.classifier.6.weight", "classifier.6.weight"),
    ("features.conv1_1.weight", "features.conv1_1.weight"),
])
def test_normalise_key_strips_dataparallel_wrappers(key, expected):
    assert normalise_key(key) == expected


@pytest.mark.parametrize("layout,suffix", [(layout, suffix) for layout in LAYOUTS if layout != "safetensors"
                                           for suffix in (".pth", ".pth.tar", ".pt")]
                         + [("safetensors", ".safetensors")])
def test_every_layout_reads_to_the_same_ir(tmp_path, tiny_spec, layout, suffix):
    path = tmp_path / ("tiny" + suffix)
    weights = write_checkpoint(tiny_spec, path, layout=layout, seed=7)
    model = read_torch_checkpoint(path, input_size=(20, 28))
    assert model.graph.input.shape == (3, 20, 28)
    assert model.graph.layer("flatten").attrs["shape"] == (3, 5, 7)
    assert model.graph.num_classes == 10 and model.graph.provenance.source_sha256
    final = "fc8"
    for name, arr in weights.items():
        assert np.array_equal(model.weights[name.replace("fc8", final)], arr), name


@pytest.mark.parametrize("arch", ["vgg11", "vgg13", "vgg16", "vgg19"])
def test_architecture_and_class_count_are_inferred_from_shapes(arch):
    """Shapes only (zero-stride views): no memory for 140M parameters."""
    spec = create_spec(arch, num_classes=365)
    from crossmodal.models.vgg import build_graph
    state = {}
    for layer in build_graph(spec).layers:
        for t in layer.tensors.values():
            state[t.name] = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), t.shape, (0,) * len(t.shape))
    inferred, layout = infer_spec(keyed(spec, state, "torchvision"))
    assert (inferred.arch, inferred.num_classes, inferred.input_shape, layout) == (arch, 365, (3, 224, 224), "torchvision")
    assert list(inferred.cfg) == CFGS[arch]
    inferred, layout = infer_spec(keyed(spec, state, "named"))
    assert (inferred.arch, layout) == (arch, "named")


def test_named_layout_keeps_fc8a(tmp_path, tiny_spec):
    import dataclasses
    spec = dataclasses.replace(tiny_spec, final_name="fc8a")
    path = tmp_path / "named.pth"
    write_checkpoint(spec, path, layout="named")
    model = read_torch_checkpoint(path, input_size=(20, 28))
    assert model.graph.blobs["logits"] == "fc8a" and "fc8a.weight" in model.weights


def test_square_input_is_inferred_from_fc6(tmp_path):
    spec = create_spec("vgg_tiny3", input_shape=(3, 56, 56))
    path = tmp_path / "sq.pth"
    write_checkpoint(spec, path, layout="torchvision")
    assert read_torch_checkpoint(path).graph.input.shape == (3, 56, 56)


def test_non_square_map_without_input_size_asks_for_it(tmp_path, tiny_spec):
    path = tmp_path / "t.pth"
    write_checkpoint(tiny_spec, path)
    with pytest.raises(InputError, match="--input-size"):
        read_torch_checkpoint(path)


def test_pickled_whole_model_is_refused_unless_trusted(tmp_path, tiny_spec):
    path = tmp_path / "whole_vgg_tiny_places365.pth.tar"
    torch.save(PickledVGG(tiny_spec), path)
    with pytest.raises(InputError, match=r"a pickled object that needs --trust-pickle: it holds "
                                         r"test_torch_reader.PickledVGG") as err:
        read_torch_checkpoint(path, input_size=(20, 28))
    assert "weights_only" not in str(err.value)
    model = read_torch_checkpoint(path, input_size=(20, 28), trust_pickle=True)
    assert model.graph.num_classes == 10


@pytest.mark.parametrize("content,match", [
    (b"", r"not a PyTorch checkpoint \(an empty file\)"),
    (b"hello, I am a text file\n", r"not a PyTorch checkpoint \(a text file starting 'hello, I am a text file'\)"),
    ("name,ünïcode\n".encode() * 60, r"not a PyTorch checkpoint \(a text file"),
    (np.random.default_rng(3).bytes(4000).replace(b"PK", b"QK").lstrip(b"\x80") + b"\x00",
     r"not a PyTorch checkpoint \(unrecognised bytes [0-9a-f ]+\)"),
])
def test_non_checkpoint_files_are_refused(tmp_path, content, match):
    """The first bytes pick the loader: torch never sees these, so its advice to drop
    weights_only (which would run code from the file) never reaches the user."""
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(InputError, match=match) as err:
        read_torch_checkpoint(path)
    text = str(err.value)
    assert str(path) in text and "\n" not in text and "weights_only" not in text


@pytest.mark.parametrize("name,kind", [("x.pth", "zip"), ("x.safetensors", "safetensors"), ("x.bin", "pickle")])
def test_sniff_format_reads_the_first_bytes(tmp_path, tiny_spec, name, kind):
    from crossmodal.readers.from_torch import sniff_format
    path = tmp_path / name
    if kind == "pickle":
        torch.save({"a": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)
    else:
        write_checkpoint(tiny_spec, path, layout="safetensors" if kind == "safetensors" else "named")
    assert sniff_format(path) == kind


def test_safetensors_named_pth_is_read_by_its_content(tmp_path, tiny_spec):
    src = tmp_path / "t.safetensors"
    weights = write_checkpoint(tiny_spec, src, layout="safetensors", seed=4)
    path = tmp_path / "vgg_tiny.pth"
    src.rename(path)
    model = read_torch_checkpoint(path, input_size=(20, 28))
    assert model.graph.provenance.source_format == "safetensors"
    assert any("safetensors file named '.pth'" in n for n in model.graph.provenance.notes)
    assert np.array_equal(model.weights["conv2_1.weight"], weights["conv2_1.weight"])
    path.write_bytes(path.read_bytes()[:120])  # header intact, data cut
    with pytest.raises(InputError, match=r"a safetensors file named .pth, not a readable safetensors file"):
        read_torch_checkpoint(path, input_size=(20, 28))


def test_torch_checkpoint_named_safetensors_is_read_by_its_content(tmp_path, tiny_spec):
    path = tmp_path / "t.safetensors"
    write_checkpoint(tiny_spec, path, layout="torchvision")
    model = read_torch_checkpoint(path, input_size=(20, 28))
    assert model.graph.provenance.source_format == "pytorch" and model.graph.provenance.notes


def test_truncated_legacy_pickle_is_corrupt_not_a_pickled_object(tmp_path, tiny_spec):
    from crossmodal.models.synthetic import random_state_dict
    path = tmp_path / "legacy.pth"
    torch.save({k: torch.from_numpy(v) for k, v in keyed(tiny_spec, random_state_dict(tiny_spec), "named").items()},
               path, _use_new_zipfile_serialization=False)
    assert read_torch_checkpoint(path, input_size=(20, 28)).graph.num_classes == 10
    data = path.read_bytes()
    for cut in (30, 200, len(data) // 2):
        path.write_bytes(data[:cut])
        with pytest.raises(InputError, match="truncated or corrupt") as err:
            read_torch_checkpoint(path, input_size=(20, 28))
        assert "--trust-pickle" not in str(err.value) and "weights_only" not in str(err.value), cut


def test_truncated_checkpoint_is_refused(tmp_path, tiny_spec):
    path = tmp_path / "t.pth"
    write_checkpoint(tiny_spec, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_torch_checkpoint(path, input_size=(20, 28))


def test_truncated_safetensors_is_refused(tmp_path, tiny_spec):
    path = tmp_path / "t.safetensors"
    write_checkpoint(tiny_spec, path, layout="safetensors")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputError, match="not a readable safetensors"):
        read_torch_checkpoint(path, input_size=(20, 28))


def _save(path, state):
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, path)


def test_missing_extra_and_misshapen_keys_are_all_named(tmp_path, tiny_spec):
    from crossmodal.models.synthetic import random_state_dict
    state = keyed(tiny_spec, random_state_dict(tiny_spec), "torchvision")
    del state["classifier.3.bias"]
    state["classifier.9.weight"] = np.zeros((2, 2), np.float32)
    state["features.3.weight"] = np.zeros((3, 4, 3, 2), np.float32)
    path = tmp_path / "bad.pth"
    _save(path, state)
    with pytest.raises(InputError) as err:
        read_torch_checkpoint(path, input_size=(20, 28))
    text = str(err.value)
    assert "missing keys: classifier.3.bias" in text
    assert "unexpected keys: classifier.9.weight" in text
    assert "features.3.weight has shape (3, 4, 3, 2), expected (3, 4, 3, 3)" in text


def _drop(state, *prefixes):
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


@pytest.mark.parametrize("layout,drop,missing", [
    ("torchvision", ("features.2.",), "features.2.weight, features.2.bias (the others fit vgg_tiny3)"),
    ("torchvision", ("features.5.weight",), "features.5.weight"),
    ("named", ("features.conv1_1.",), "features.conv1_1.weight, features.conv1_1.bias"),
    ("named", ("features.conv2_1.",), "features.conv2_1.weight, features.conv2_1.bias"),
])
def test_a_missing_conv_layer_is_named_by_its_keys(tmp_path, layout, drop, missing):
    """A whole features.N layer gone would otherwise read as a malformed index pattern."""
    from crossmodal.models.synthetic import random_state_dict
    spec = create_spec("vgg_tiny3")
    path = tmp_path / "gap.pth"
    _save(path, _drop(keyed(spec, random_state_dict(spec), layout), *drop))
    with pytest.raises(InputError) as err:
        read_torch_checkpoint(path)
    assert f"missing keys: {missing}" in str(err.value)


def test_a_missing_layer_of_a_full_vgg16_names_its_keys():
    spec = create_spec("vgg16", num_classes=365)
    from crossmodal.models.vgg import build_graph
    state = {}
    for layer in build_graph(spec).layers:
        for t in layer.tensors.values():
            state[t.name] = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), t.shape, (0,) * len(t.shape))
    with pytest.raises(InputError, match=r"missing keys: features\.2\.weight, features\.2\.bias \(the others "
                                         r"fit vgg16\)"):
        infer_spec(_drop(keyed(spec, state, "torchvision"), "features.2."))
    with pytest.raises(InputError, match=r"missing keys: features\.10\.weight, features\.10\.bias, "
                                         r"features\.12\.weight"):
        infer_spec(_drop(keyed(spec, state, "torchvision"), "features.10.", "features.12."))


def test_another_architecture_is_refused_with_its_keys(tmp_path):
    path = tmp_path / "googlenet.pth"
    _save(path, {"conv1.conv.weight": np.zeros((4, 3, 7, 7), np.float32),
                 "inception3a.branch1.conv.weight": np.zeros((4, 4, 1, 1), np.float32),
                 "fc.weight": np.zeros((365, 4), np.float32)})
    with pytest.raises(InputError, match=r"keys match no known architecture \(tried resnet, densenet, alexnet, "
                                         r"vgg\); first keys: conv1.conv.weight, fc.weight"):
        read_torch_checkpoint(path)


def test_a_resnet_fragment_names_the_missing_keys(tmp_path):
    path = tmp_path / "resnet.pth"
    _save(path, {"conv1.weight": np.zeros((4, 3, 7, 7), np.float32),
                 "layer1.0.conv1.weight": np.zeros((4, 4, 3, 3), np.float32),
                 "fc.weight": np.zeros((365, 4), np.float32)})
    with pytest.raises(InputError, match=r"does not fit resnet-custom-basic .*missing keys: bn1.weight"):
        read_torch_checkpoint(path)


def test_batchnorm_vgg_is_reported_unsupported(tmp_path):
    path = tmp_path / "bn.pth"
    _save(path, {"features.0.weight": np.zeros((4, 3, 3, 3), np.float32),
                 "features.1.weight": np.zeros(4, np.float32),
                 "features.1.running_mean": np.zeros(4, np.float32),
                 "classifier.0.weight": np.zeros((4, 4), np.float32)})
    with pytest.raises(UnsupportedError, match="batch-norm"):
        read_torch_checkpoint(path)


def test_torchvision_key_table_matches_torchvision_vgg16_indices():
    keys = torchvision_keys(create_spec("vgg16"))
    assert keys["conv1_1.weight"] == "features.0.weight"
    assert keys["conv2_1.weight"] == "features.5.weight"
    assert keys["conv5_3.weight"] == "features.28.weight"
    assert keys["fc8.bias"] == "classifier.6.bias"
