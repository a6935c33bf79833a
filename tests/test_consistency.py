"""Inconsistent models are refused: the input spec, the preprocessing and the first layer agree
on the input channels (and the mean image's shape), or one line says which layer disagrees."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from crossmodal.cli import main
from crossmodal.errors import InputError
from test_features import convert_tiny, make_cmplaces_tree

GRAY = {"channel_order": "L", "mean": [0.5], "std": [0.25], "resize": [20, 28], "crop": [20, 28], "name": "gray"}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tiny_spec):
    """Tiny checkpoints whose first convolution takes 1 and 2 input channels."""
    from crossmodal.models.synthetic import write_checkpoint
    base = tmp_path_factory.mktemp("cs-ckpt")
    out = {}
    for c in (1, 2):
        spec = dataclasses.replace(tiny_spec, input_shape=(c, 20, 28))
        out[c] = base / f"c{c}.pth"
        write_checkpoint(spec, out[c], seed=c)
    return out


def _one_line(result):
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize("channels", [1, 2])
def test_a_first_convolution_the_preprocessing_cannot_feed_is_refused(ckpts, tmp_path, channels):
    """Caught: a 2-channel conv1_1 converted to an IR saying 'input 2×20×28 RGB' with 3-value mean/std."""
    out = tmp_path / "out"
    line = _one_line(CliRunner().invoke(main, ["convert", str(ckpts[channels]), "-o", str(out), "--input-size",
                                               "20x28", "--to", "ir,onnx", "-q"]))
    assert f"layer 'conv1_1' (conv2d, the first layer) takes {channels} input channel" in line
    assert "preprocessing 'torchvision' makes 3-channel RGB images (mean [0.485, 0.456, 0.406]" in line
    assert ("grayscale spec" in line) if channels == 1 else ("no image preprocessing makes 2 channels" in line)
    assert not out.exists()


def test_a_grayscale_spec_makes_a_one_channel_model_convertible(ckpts, tmp_path):
    from crossmodal.ir.store import load_graph
    from crossmodal.data.images import load_batch
    out = tmp_path / "gray"
    result = CliRunner().invoke(main, ["convert", str(ckpts[1]), "-o", str(out), "--input-size", "20x28",
                                       "--to", "ir,onnx", "--preprocess", json.dumps(GRAY), "-q"])
    assert result.exit_code == 0, result.output
    g = load_graph(out)
    assert g.input.shape == (1, 20, 28) and g.input.channel_order == "L" and g.preprocess.mean == (0.5,)
    # images are decoded to grayscale for it: (B, 1, H, W), PIL's luma of the RGB image, then resized
    rng = np.random.default_rng(0)
    path = tmp_path / "x.png"
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(path)
    batch, failures = load_batch([path], g.preprocess, workers=1)
    assert batch.shape == (1, 1, 20, 28) and not failures
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    luma = np.asarray(Image.open(path).convert("RGB").convert("L").resize((28, 20), Image.Resampling.BILINEAR))
    assert np.abs(np.asarray(Image.fromarray(rgb.astype(np.uint8)).convert("L"), dtype=np.float64)
                  - (rgb @ [0.299, 0.587, 0.114])).max() <= 1.0  # PIL's L is the ITU-R 601-2 luma
    np.testing.assert_allclose(batch[0, 0], (luma / 255.0 - 0.5) / 0.25, rtol=0, atol=1e-6)
    # and the model runs on them
    from crossmodal.runtime.engine import open_engine
    backend = open_engine("onnx", out, ["logits"], device="cpu", graph=g)
    try:
        assert backend.run(batch)["logits"].shape == (1, 10)
    finally:
        backend.close()


@pytest.fixture(scope="module")
def hand_edited(tmp_path_factory, tiny_ckpt, tiny_preprocess):
    """A good tiny IR whose model.json was edited by hand to a grayscale preprocessing."""
    good = convert_tiny(tmp_path_factory.mktemp("cs-model"), tiny_ckpt[0], tiny_preprocess, targets=("ir", "onnx"))
    bad = good.parent / "edited"
    shutil.copytree(good, bad)
    data = json.loads((bad / "model.json").read_text())
    data["preprocess"].update(channel_order="L", mean=[0.5], std=[0.25])
    (bad / "model.json").write_text(json.dumps(data))
    root = tmp_path_factory.mktemp("cs-data")
    tree = make_cmplaces_tree(root / "gen")
    shutil.copytree(tree["list"], root / "cm" / "natural")
    return bad, root / "cm"


@pytest.mark.parametrize("command", ["verify", "baseline", "retrieval"])
def test_verify_baseline_and_retrieval_refuse_an_inconsistent_ir_folder(hand_edited, tmp_path, command):
    """Caught: an IR folder edited by hand (or written by another version) ran until the first batch
    failed deep in the backend, or not at all."""
    model, root = hand_edited
    args = {"verify": ["verify", str(model), "--engines", "onnx", "-q"],
            "baseline": ["baseline", "--model", str(model), "--modality", "natural", "--data-root", str(root),
                         "--out", str(tmp_path / "o"), "--device", "cpu", "-q"],
            "retrieval": ["retrieval", "--model", str(model), "--query", "natural", "--data-root", str(root),
                          "--out", str(tmp_path / "o"), "--device", "cpu", "-q"]}[command]
    line = _one_line(CliRunner().invoke(main, args))
    assert "layer 'conv1_1' (conv2d, the first layer) takes 3 input channels" in line
    assert "preprocessing 'tiny' makes 1-channel L images (mean [0.5], std [0.25])" in line
    assert not (tmp_path / "o").exists()


def _graph(first_layers, input_channels=3, preprocess=None, tensors=None):
    from crossmodal.ir.graph import Graph, InputSpec, Layer, TensorSpec
    from crossmodal.ir.preprocess import Preprocess
    layers = []
    for name, cin in first_layers:
        layers.append(Layer(name, "conv2d", ["input"], {"kernel": (3, 3), "stride": (1, 1), "pad": (1, 1),
                                                        "in_channels": cin, "out_channels": 4},
                            {"weight": TensorSpec(f"{name}.w", (4, cin, 3, 3), "OIHW"),
                             "bias": TensorSpec(f"{name}.b", (4,), "O")}))
    layers.append(Layer("sum_like", "relu", [layers[0].name]))
    return Graph("dag", InputSpec(shape=(input_channels, 8, 8)), layers, ["sum_like"],
                 preprocess=preprocess or Preprocess(resize=(8, 8), crop=(8, 8)), tensors=tensors or {})


def test_every_layer_reading_the_input_is_checked_whatever_its_name():
    from crossmodal.ir.consistency import check, first_layers
    g = _graph([("stem_a", 3), ("branch_b", 2)])  # two consumers of the input, as in a DAG
    assert [l.name for l in first_layers(g)] == ["stem_a", "branch_b"]
    with pytest.raises(InputError, match="layer 'branch_b' \\(conv2d, the first layer\\) takes 2 input channels"):
        check(g)
    check(_graph([("stem_a", 3), ("branch_b", 3)]))


def test_the_input_spec_and_the_mean_image_must_agree_too():
    from crossmodal.ir.consistency import check
    from crossmodal.ir.preprocess import Preprocess
    from crossmodal.ir.graph import TensorSpec
    with pytest.raises(InputError, match="input spec says 1"):
        check(_graph([("c", 3)], input_channels=1))
    spec = Preprocess(resize=(8, 8), crop=(8, 8), mean_image="mean", value_range="0-255", std=(1, 1, 1))
    with pytest.raises(InputError, match=r"mean image mean has shape \(1, 8, 8\).*needs shape \(3, ≥8, ≥8\)"):
        check(_graph([("c", 3)], preprocess=spec, tensors={"mean": TensorSpec("mean", (1, 8, 8), "CHW")}))
    check(_graph([("c", 3)], preprocess=spec, tensors={"mean": TensorSpec("mean", (3, 10, 10), "CHW")}))


def test_preprocess_takes_one_value_for_grayscale_and_refuses_mixtures():
    from crossmodal.ir.preprocess import Preprocess
    spec = Preprocess.from_dict({"mean": [0.5], "std": [0.2]})
    assert spec.channel_order == "L" and spec.channels == 1
    with pytest.raises(InputError, match="mean and std need one value each"):
        Preprocess.from_dict({"mean": [0.5], "std": [0.2], "channel_order": "L", **{"std": [1, 1, 1]}})
    with pytest.raises(InputError, match="mean and std need three values each"):
        Preprocess.from_dict({"mean": [0.5], "std": [0.2], "channel_order": "RGB"})
