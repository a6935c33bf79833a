"""The PyTorch zoo (ResNet, wideresnet18, DenseNet, AlexNet): layouts as released, architecture
detection, the torchvision-keyed output, verify against independent plain modules, bad input,
and the evaluation commands on a ResNet.

Expectations come from outside the code under test: key names written out by hand from
torchvision's modules, architecture facts from the Places365 release notes (issue 10), a
Python 2 pickle's opcodes read with ``pickletools``.
"""
from __future__ import annotations

import io
import json
import pickletools

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from crossmodal.cli import main
from crossmodal.ir.preprocess import Preprocess
from crossmodal.readers.from_torch import read_torch_checkpoint, sniff_format
from crossmodal.errors import InputError
from crossmodal.models import registry
from crossmodal.models.synthetic_zoo import LAYOUTS, keyed, random_ir_weights, save_python2, write_checkpoint

TINY = ("resnet_tiny", "resnet_tiny_bottleneck", "wideresnet_tiny", "densenet_tiny", "alexnet_tiny")


def _spec(arch):
    fam = registry.family_of(arch)
    return fam, registry.family(fam).create_spec(arch)


def _shapes_only(fam, spec):
    """Zero-stride arrays of a full-size network's canonical keys: shapes without memory."""
    names = registry.family(fam).torchvision_keys(spec)
    return {names[t.name]: np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), t.shape, (0,) * len(t.shape))
            for l in registry.family(fam).build_graph(spec).layers for t in l.tensors.values()}


def _read(path, arch):
    spec = _spec(arch)[1]
    return read_torch_checkpoint(path, input_size=spec.input_shape[1:], arch=arch if "wide" in arch else None,
                                 trust_pickle=path.name.startswith("whole"),
                                 preprocess=Preprocess(resize=spec.input_shape[1:], crop=spec.input_shape[1:]))


# --- key layouts ------------------------------------------------------------------------------
@pytest.mark.parametrize("key,expected", [
    ("features.denseblock1.denselayer1.norm.1.weight", "features.denseblock1.denselayer1.norm1.weight"),
    ("features.denseblock3.denselayer36.conv.2.weight", "features.denseblock3.denselayer36.conv2.weight"),
    ("features.denseblock2.denselayer12.norm.2.running_var", "features.denseblock2.denselayer12.norm2.running_var"),
    ("features.denseblock1.denselayer1.norm1.weight", "features.denseblock1.denselayer1.norm1.weight"),
    ("features.transition1.norm.weight", "features.transition1.norm.weight"),
    ("features.norm5.bias", "features.norm5.bias"),
])
def test_densenet_pre_04_names_become_todays(key, expected):
    assert registry.canonical_key(key) == expected


def test_released_keys_are_the_published_ones():
    """The layouts as the release notes give them, key by key for a few tensors."""
    for arch, sample in [("alexnet", ["features.module.0.weight", "features.module.10.bias", "classifier.1.weight",
                                      "classifier.6.bias"]),
                         ("resnet18", ["module.conv1.weight", "module.layer4.1.bn2.running_var", "module.fc.bias",
                                       "module.layer2.0.downsample.0.weight"]),
                         ("densenet161", ["module.features.denseblock1.denselayer1.norm.1.weight",
                                          "module.features.denseblock3.denselayer36.conv.2.weight",
                                          "module.features.transition3.conv.weight", "module.classifier.weight"])]:
        fam, spec = _spec(arch)
        keys = keyed(fam, spec, {t: None for t in registry.family(fam).torchvision_keys(spec)}, "released")
        assert set(sample) <= set(keys), (arch, sorted(set(sample) - set(keys)))
        assert not any(k.endswith("num_batches_tracked") for k in keys)
    fam, spec = _spec("densenet161")
    assert (spec.growth, spec.blocks, spec.init_features) == (48, (6, 12, 36, 24), 96)


@pytest.mark.parametrize("arch", TINY)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_released_layout_reads_to_the_same_ir(tmp_path, arch, layout):
    name = ("whole_" if layout == "whole" else "") + f"{arch}.pth.tar"
    weights = write_checkpoint(arch, tmp_path / name, layout, seed=5)
    model = _read(tmp_path / name, arch)
    assert set(model.weights) == set(weights)
    for k, v in weights.items():
        assert np.array_equal(model.weights[k], v), k


def test_densenet_with_todays_names_and_resnet_with_num_batches_tracked(tmp_path):
    for arch in ("densenet_tiny", "resnet_tiny"):
        fam, spec = _spec(arch)
        weights = random_ir_weights(fam, spec, 2)
        state = {k: torch.from_numpy(v) for k, v in keyed(fam, spec, weights, "torchvision").items()}
        for k in [k for k in state if k.endswith("running_mean")]:
            state[k.replace("running_mean", "num_batches_tracked")] = torch.tensor(100)
        torch.save({"module." + k: v for k, v in state.items()}, tmp_path / f"{arch}.pth")
        model = _read(tmp_path / f"{arch}.pth", arch)
        assert all(np.array_equal(model.weights[k], v) for k, v in weights.items())


# --- Python 2 pickles ---------------------------------------------------------------------------
def test_python2_fixture_is_a_legacy_pickle_of_byte_strings(tmp_path):
    path = tmp_path / "resnet_tiny.pth.tar"
    write_checkpoint("resnet_tiny", path, "python2")
    data = path.read_bytes()
    assert sniff_format(path) == "pickle" and data[:2] == b"\x80\x02"  # protocol 2, not a zip
    ops = []
    stream = io.BytesIO(data)
    for _ in range(4):  # magic number, protocol version, sys info, the checkpoint
        ops.append([(op.name, arg) for op, arg, _ in pickletools.genops(stream)])
    checkpoint = ops[3]
    strings = [arg for name, arg in checkpoint if name in ("SHORT_BINSTRING", "BINSTRING")]
    unicode = [arg for name, arg in checkpoint if name in ("BINUNICODE", "SHORT_BINUNICODE", "UNICODE")]
    assert "module.conv1.weight" in strings and "state_dict" in strings and "arch" in strings
    assert unicode == []
    assert ("GLOBAL", "torch._utils _rebuild_tensor") in checkpoint


def test_python2_pickle_with_latin1_bytes_loads(tmp_path):
    """A non-ASCII byte string (e.g. a Python 2 str holding raw bytes) decodes as latin1."""
    fam, spec = _spec("resnet_tiny")
    state = {k: torch.from_numpy(v) for k, v in keyed(fam, spec, random_ir_weights(fam, spec), "released").items()}
    save_python2({"epoch": 1, "arch": "resnet_tiny", "state_dict": state, "best_prec1": 1.0,
                  "note": "caf\xe9"}, tmp_path / "r.pth.tar")
    with pytest.raises(UnicodeDecodeError):
        torch.load(tmp_path / "r.pth.tar", weights_only=True)  # torch's default (utf-8) fails
    assert read_torch_checkpoint(tmp_path / "r.pth.tar", input_size=(64, 64)).graph.name == "resnet-custom-basic"


def test_whole_model_pickle_needs_trust(tmp_path):
    write_checkpoint("resnet_tiny", tmp_path / "whole_resnet_tiny.pth.tar", "whole")
    with pytest.raises(InputError, match="needs --trust-pickle"):
        read_torch_checkpoint(tmp_path / "whole_resnet_tiny.pth.tar", input_size=(64, 64))


# --- architecture detection ---------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                                  "densenet121", "densenet161", "densenet169", "densenet201", "alexnet"])
def test_architecture_is_detected_from_keys_and_shapes(arch):
    fam, spec = _spec(arch)
    found = registry.detect({k: v.shape for k, v in _shapes_only(fam, spec).items()})
    assert found is not None and found[0] == fam and found[1].arch == arch and found[1].num_classes == 365


def test_wideresnet18_is_told_by_arch_file_name_or_checkpoint_entry():
    fam, spec = _spec("resnet18")
    shapes = {k: v.shape for k, v in _shapes_only(fam, spec).items()}
    assert registry.detect(shapes, file_name="wideresnet18_places365.pth.tar")[1].arch == "wideresnet18"
    assert registry.detect(shapes, checkpoint_arch="wideresnet18")[1].arch == "wideresnet18"
    assert registry.detect(shapes, checkpoint_arch=b"wideresnet18")[1].arch == "wideresnet18"
    assert registry.detect(shapes, arch="wideresnet18")[1].stem_pool is False
    _, chosen, notes = registry.detect(shapes, file_name="resnet18_places365.pth.tar")
    assert chosen.arch == "resnet18" and "resnet18 chosen" in notes[0] and "--arch wideresnet18" in notes[0]
    wide = registry.family("resnet").build_graph(registry.detect(shapes, arch="wideresnet18")[1])
    assert "maxpool" not in {l.name for l in wide.layers}
    from crossmodal.ir.kinds import infer_shapes
    assert infer_shapes(wide)["layer4.1.out"] == (512, 14, 14)


def test_wideresnet18_needs_its_14x14_map():
    from crossmodal.models.resnet import build_graph, create_spec
    with pytest.raises(InputError, match=r"AvgPool2d\(14\).*it is 10×10"):
        build_graph(create_spec("wideresnet18", input_shape=(3, 160, 160)))


def test_alexnet_pool_is_an_identity_only_on_6x6():
    from crossmodal.models.alexnet import build_graph, create_spec
    with pytest.raises(InputError, match=r"AdaptiveAvgPool2d\(\(6, 6\)\).*pool5 is 7×7"):
        build_graph(create_spec("alexnet", input_shape=(3, 256, 256)))


def test_feature_blobs():
    for arch, blob, dim in [("resnet18", "avgpool", 512), ("resnet50", "avgpool", 2048),
                            ("wideresnet18", "avgpool", 512), ("densenet161", "avgpool", 2208), ("alexnet", "fc7", 4096)]:
        fam, spec = _spec(arch)
        g = registry.family(fam).build_graph(spec)
        from crossmodal.ir.kinds import infer_shapes
        assert g.feature_blob == blob and infer_shapes(g)[g.resolve(blob)] == (dim,), arch


def test_keras_names_follow_keras_applications():
    g = registry.family("resnet").build_graph(registry.family("resnet").create_spec("resnet50"))
    k = g.keras_names
    assert (k["conv1"], k["layer1.0.conv1"], k["layer1.0.downsample.0"], k["layer4.2.out"], k["fc"]) == \
        ("conv1_conv", "conv2_block1_1_conv", "conv2_block1_0_conv", "conv5_block3_out", "predictions")
    g = registry.family("densenet").build_graph(registry.family("densenet").create_spec("densenet121"))
    k = g.keras_names
    assert (k["features.conv0"], k["features.denseblock1.denselayer1.norm1"],
            k["features.denseblock1.denselayer2.cat"], k["features.denseblock1"], k["features.transition1.pool"],
            k["features.norm5"], k["classifier"]) == \
        ("conv1_conv", "conv2_block1_0_bn", "conv2_block1_concat", "conv2_block6_concat", "pool2_pool", "bn",
         "predictions")


# --- bad input ------------------------------------------------------------------------------------
def _cli_convert(path, out, *extra):
    result = CliRunner().invoke(main, ["convert", str(path), "-o", str(out), "--input-size", "64", "-q", *extra])
    lines = [l for l in result.output.splitlines() if l.strip()]
    return result.exit_code, lines


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.pop("module.layer2.0.bn1.running_mean"), r"missing keys: layer2\.0\.bn1\.running_mean"),
    (lambda s: s.__setitem__("module.layer3.0.conv2.weight", torch.zeros(16, 16, 1, 3)),
     r"layer3\.0\.conv2\.weight has shape \(16, 16, 1, 3\), expected \(16, 16, 3, 3\)"),
    (lambda s: s.__setitem__("module.layer1.0.bn2.running_var", -torch.ones(4)),
     r"layer1\.0\.bn2\.running_var holds negative variances"),
])
def test_bad_tensors_are_named_in_one_line_exit_2_nothing_written(tmp_path, edit, message):
    import re
    fam, spec = _spec("resnet_tiny")
    state = {k: torch.from_numpy(v) for k, v in keyed(fam, spec, random_ir_weights(fam, spec), "released").items()}
    edit(state)
    torch.save({"state_dict": state, "arch": "resnet18"}, tmp_path / "bad.pth.tar")
    code, lines = _cli_convert(tmp_path / "bad.pth.tar", tmp_path / "out")
    assert code == 2 and len(lines) == 1 and re.search(message, lines[0]), lines
    assert not (tmp_path / "out").exists()


def test_class_count_disagreeing_with_labels(tmp_path):
    write_checkpoint("resnet_tiny", tmp_path / "r.pth.tar")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"/a/c{i} {i}" for i in range(365)))
    code, lines = _cli_convert(tmp_path / "r.pth.tar", tmp_path / "out", "--labels", str(labels))
    assert code == 2 and len(lines) == 1 and "365 labels, but the classifier has 10 outputs" in lines[0]
    assert not (tmp_path / "out").exists()


def test_unknown_arch_and_a_wrong_arch(tmp_path):
    write_checkpoint("resnet_tiny", tmp_path / "r.pth.tar")
    code, lines = _cli_convert(tmp_path / "r.pth.tar", tmp_path / "out", "--arch", "resnet9")
    assert code == 2 and "unknown --arch 'resnet9'" in lines[0]
    code, lines = _cli_convert(tmp_path / "r.pth.tar", tmp_path / "out", "--arch", "densenet_tiny")
    assert code == 2 and len(lines) == 1 and "does not fit densenet_tiny" in lines[0] and "missing keys" in lines[0]


# --- outputs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["resnet_tiny_bottleneck", "densenet_tiny", "alexnet_tiny"])
def test_torch_target_loads_strictly_into_a_torchvision_module(tmp_path, arch):
    from crossmodal.convert.pipeline import convert
    from crossmodal.verify.source_reference_zoo import build_module
    path = tmp_path / f"{arch}.pth.tar"
    weights = write_checkpoint(arch, path, "released", seed=4)
    fam, spec = _spec(arch)
    h, w = spec.input_shape[1:]
    convert(path, tmp_path / "out", targets=["torch"], input_size=(h, w),
            preprocess=Preprocess(resize=(h, w), crop=(h, w)))
    state = torch.load(tmp_path / "out" / "model.pth", weights_only=True)
    module = build_module(spec.arch, spec.num_classes, 3, {k: tuple(v.shape) for k, v in state.items()}, (h, w))
    assert set(state) == set(module.state_dict())  # today's names, num_batches_tracked included
    module.load_state_dict(state, strict=True)
    tv = keyed(fam, spec, weights, "torchvision")
    assert all(torch.equal(state[k], torch.from_numpy(v)) for k, v in tv.items())


def test_torch_target_of_a_vgg(tmp_path, tiny_ckpt, tiny_preprocess):
    from crossmodal.convert.pipeline import convert
    from crossmodal.models.vgg import build_torch_module, create_spec
    convert(tiny_ckpt[0], tmp_path / "out", targets=["torch"], input_size=(20, 28), preprocess=tiny_preprocess)
    build_torch_module(create_spec("vgg_tiny")).load_state_dict(
        torch.load(tmp_path / "out" / "model.pth", weights_only=True), strict=True)


@pytest.mark.slow
@pytest.mark.parametrize("arch", TINY)
def test_tiny_convert_and_verify_on_every_engine(tmp_path, arch):
    from crossmodal.convert.pipeline import convert
    from crossmodal.verify.job import run_verify
    path = tmp_path / f"{arch}.pth.tar"
    write_checkpoint(arch, path, "released", seed=6)
    h, w = _spec(arch)[1].input_shape[1:]
    convert(path, tmp_path / "m", targets=["ir", "keras", "onnx", "torch"], input_size=(h, w),
            arch=arch if "wide" in arch else None, preprocess=Preprocess(resize=(h, w), crop=(h, w)))
    report = run_verify(tmp_path / "m", source=path, engines=("torch", "ir", "keras", "onnx"))
    assert report.passed, report.to_json()["gates"]
    assert {g["check"].split()[0] for g in report.gates()} == {"logits", _feature(arch), "top-1"}
    assert len(report.layers) == len(json.loads((tmp_path / "m" / "model.json").read_text())["layers"])


def _feature(arch):
    return "fc7" if arch.startswith("alexnet") else "avgpool"


def test_a_renaming_bug_shows_as_a_divergence(tmp_path, monkeypatch):
    """Swap two same-shaped batch norms in the reader's table: verify's reference must disagree."""
    from crossmodal.convert.pipeline import convert
    from crossmodal.verify.job import run_verify
    from crossmodal.models import resnet
    path = tmp_path / "resnet_tiny.pth.tar"
    write_checkpoint("resnet_tiny", path, "released", seed=8)
    real = resnet.torchvision_keys

    def swapped(spec):
        keys = dict(real(spec))
        keys["layer1.0.bn1.weight"], keys["layer1.0.bn2.weight"] = keys["layer1.0.bn2.weight"], keys["layer1.0.bn1.weight"]
        return keys
    monkeypatch.setattr(resnet, "torchvision_keys", swapped)
    convert(path, tmp_path / "m", targets=["ir", "onnx"], input_size=(64, 64),
            preprocess=Preprocess(resize=(64, 64), crop=(64, 64)))
    report = run_verify(tmp_path / "m", source=path, engines=("ir", "onnx"))
    assert not report.passed and report.first_divergence()["onnx"] == "layer1.0.bn1"


# --- evaluation commands on a ResNet ------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet_model(tmp_path_factory):
    from test_features import TINY_LABELS
    from crossmodal.convert.pipeline import convert
    tmp = tmp_path_factory.mktemp("zoo-eval")
    write_checkpoint("resnet_tiny", tmp / "resnet_tiny.pth.tar", "released", seed=9)
    labels = tmp / "labels.txt"
    labels.write_text("\n".join(f"{n} {i}" for i, n in enumerate(TINY_LABELS)))
    convert(tmp / "resnet_tiny.pth.tar", tmp / "model", labels=labels, input_size=(64, 64), targets=["ir", "onnx"],
            preprocess=Preprocess(resize=(64, 64), crop=(64, 64), name="tiny"))
    return tmp / "model"


def test_baseline_and_retrieval_use_the_resnet_feature_blob(resnet_model, tmp_path):
    from test_features import make_cmplaces_tree
    tree = make_cmplaces_tree(tmp_path / "data")
    lst = tree["list"]
    out = tmp_path / "bl"
    r = CliRunner().invoke(main, ["baseline", "--model", str(resnet_model), "--modality", "sketch", "--images", str(lst),
                                  "--list", str(lst / "val.txt"), "--categories", str(lst / "categories.txt"),
                                  "--out", str(out), "--device", "cpu", "-q", "--cache", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "metrics.json").read_text())["num_scored"] > 0
    root = tmp_path / "root"
    root.mkdir()
    (root / "sketch").symlink_to(tree["folders"])
    r = CliRunner().invoke(main, ["retrieval", "--model", str(resnet_model), "--query", "sketch", "--data-root",
                                  str(root), "--out", str(tmp_path / "rt"), "--device", "cpu", "-q", "--json",
                                  "--cache", str(tmp_path / "cache2")])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "rt" / "retrieval.json").read_text())
    assert data["layer"] == "avgpool"
    assert 0 < json.loads(r.stdout)["pairs"][0]["map"] <= 1


@pytest.mark.parametrize("arch,third", [("resnet_tiny", "avgpool"), ("alexnet_tiny", "fc7")])
def test_onnx_third_output_is_the_feature_blob(tmp_path, arch, third):
    import onnx
    from crossmodal.convert.pipeline import convert
    write_checkpoint(arch, tmp_path / f"{arch}.pth.tar")
    h, w = _spec(arch)[1].input_shape[1:]
    convert(tmp_path / f"{arch}.pth.tar", tmp_path / "m", targets=["onnx"], input_size=(h, w),
            preprocess=Preprocess(resize=(h, w), crop=(h, w)))
    outputs = [o.name for o in onnx.load(tmp_path / "m" / "model.onnx").graph.output]
    assert outputs == ["logits", "prob", third]


def test_arch_names_a_vgg_too(tmp_path, tiny_ckpt):
    model = read_torch_checkpoint(tiny_ckpt[0], input_size=(20, 28), arch="vgg_tiny")
    assert model.graph.name == "vgg_tiny"
    with pytest.raises(InputError, match="--arch vgg16, but the keys are a vgg_tiny's"):
        read_torch_checkpoint(tiny_ckpt[0], input_size=(20, 28), arch="vgg16")


# --- the torch-free reader ------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["released", "torchvision", "python2"])
def test_torch_free_reader_gives_torchs_tensors(tmp_path, layout):
    """Every tensor as torch.load gives it, without importing torch in the reader's path."""
    from crossmodal.readers import torch_pickle
    path = tmp_path / "d.pth.tar"
    write_checkpoint("densenet_tiny", path, layout)
    ours = torch_pickle.load(path, sniff_format(path))
    ref = torch.load(path, weights_only=True, encoding="latin1")
    ours, ref = ours.get("state_dict", ours), ref.get("state_dict", ref)
    assert list(ours) == list(ref)
    for k, v in ref.items():
        assert isinstance(ours[k], np.ndarray) and ours[k].dtype == v.numpy().dtype
        assert np.array_equal(ours[k], v.numpy()), k


def test_torch_free_reader_handles_views_and_refuses_classes(tmp_path):
    from crossmodal.readers import torch_pickle
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    torch.save({"t": base.t(), "row": base[2], "whole": base}, tmp_path / "v.pt")  # strided views of one storage
    got = torch_pickle.load(tmp_path / "v.pt", "zip")
    assert np.array_equal(got["t"], base.t().numpy()) and np.array_equal(got["row"], base[2].numpy())
    torch.save(torch.nn.Linear(2, 2), tmp_path / "m.pt")
    with pytest.raises(torch_pickle.NotWeightsOnly, match="torch.nn.modules.linear.Linear"):
        torch_pickle.load(tmp_path / "m.pt", "zip")


def test_convert_to_onnx_imports_neither_torch_nor_tensorflow(tmp_path):
    """The cold-start promise of ``convert --to onnx``: the torch-free reader, no Keras/TensorFlow
    (14 s cold), no ONNX Runtime probe for the default opset."""
    import subprocess
    import sys
    write_checkpoint("resnet_tiny", tmp_path / "r.pth.tar")
    code = ("import sys\nfrom crossmodal.convert.pipeline import convert\n"
            f"convert({str(tmp_path / 'r.pth.tar')!r}, {str(tmp_path / 'm')!r}, targets=['ir', 'onnx'], input_size=(64, 64))\n"
            "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
