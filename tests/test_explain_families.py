"""Every explain method on every family of the zoo: Grad-CAM and Grad-CAM++ name layers with dots
(``layer4.1.out``) on the PyTorch zoo's networks, which the torch module stores under other keys;
GoogLeNet (no tiny variant) from its real prototxt with a random caffemodel; and Grad-CAM on the
full-size ResNet-18 against an independent autograd Grad-CAM on a plain torchvision-layout module."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import crossmodal
from helpers import require_shared


def _zoo_model(tmp_path, arch: str, input_size=None):
    from crossmodal.convert.pipeline import convert
    from crossmodal.models.synthetic_zoo import write_checkpoint
    ckpt = tmp_path / f"{arch}.pth.tar"
    write_checkpoint(arch, ckpt, layout="released", seed=3)
    convert(ckpt, tmp_path / "m", targets=["ir"], input_size=input_size)
    return tmp_path / "m"


def _vgg_model(tmp_path):
    from crossmodal.convert.pipeline import convert
    from crossmodal.models.synthetic import write_checkpoint
    from crossmodal.models.vgg import create_spec
    write_checkpoint(create_spec("vgg_tiny"), tmp_path / "v.pth", seed=2)
    convert(tmp_path / "v.pth", tmp_path / "m", targets=["ir"], input_size=(20, 28))
    return tmp_path / "m"


FAMILIES = {"vgg": _vgg_model, "alexnet": lambda p: _zoo_model(p, "alexnet_tiny", (127, 127)),
            "resnet": lambda p: _zoo_model(p, "resnet_tiny", (64, 64)), "densenet": lambda p: _zoo_model(p, "densenet_tiny", (32, 32))}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_runs_on_every_family(family, tmp_path):
    model_dir = FAMILIES[family](tmp_path)
    with crossmodal.load_model(model_dir, backend="torch", device="cpu") as m:
        x = np.random.default_rng(0).standard_normal((2, *m.graph.input.shape)).astype(np.float32)
        head = m.explain_setup("auto")[2]
        methods = ["gradcam", "gradcam++"] + (["cam"] if head is not None else [])
        assert (head is not None) == (family in ("resnet", "densenet"))  # GAP + dense heads
        for method in methods:
            res = m.cam(x, method=method, top=2)
            assert res.maps.shape == (2, 2, *m.input_size) and res.method == method
            assert np.isfinite(res.maps).all() and res.maps.min() >= 0 and res.maps.max() <= 1
        if family == "resnet":
            assert "." in m.explain_setup("gradcam")[1]  # a dotted layer name, e.g. layer4.1.out


def test_every_method_runs_on_googlenet_from_its_real_prototxt(tmp_path):
    from crossmodal.convert.pipeline import convert
    from crossmodal.readers.caffe_random import write_random_caffemodel
    proto = require_shared("places365", "deploy_googlenet_places365.prototxt")
    write_random_caffemodel(proto, tmp_path / "g.caffemodel", seed=1)
    convert(proto, tmp_path / "m", caffemodel=tmp_path / "g.caffemodel", targets=["ir"])
    with crossmodal.load_model(tmp_path / "m", backend="torch", device="cpu") as m:
        x = np.random.default_rng(1).standard_normal((1, *m.graph.input.shape)).astype(np.float32) * 30
        assert m.explain_setup("auto")[0] == "cam"  # pool5 (global average) + one dense layer
        for method in ("cam", "gradcam", "gradcam++"):
            res = m.cam(x, method=method)
            assert res.maps.shape == (1, 1, 224, 224) and np.isfinite(res.maps).all()


@pytest.mark.slow
def test_full_size_resnet18_gradcam_equals_an_independent_autograd_gradcam(tmp_path):
    from crossmodal.convert.pipeline import convert
    from crossmodal.explain.cam import compute_maps
    from crossmodal.models.synthetic_zoo import write_checkpoint
    from plain_zoo import PlainResNet18
    ckpt = tmp_path / "resnet18_places365.pth.tar"
    write_checkpoint("resnet18", ckpt, layout="torchvision", seed=4)
    convert(ckpt, tmp_path / "m", targets=["ir"])
    plain = PlainResNet18().eval()
    plain.load_state_dict(torch.load(ckpt, weights_only=True), strict=True)
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((2, 3, 224, 224)).astype(np.float32))
    seen = {}
    handle = plain.layer4[1].register_forward_hook(lambda mod, i, o: seen.__setitem__("A", o))
    logits = plain(x)
    handle.remove()
    classes = logits.argmax(1)
    ref = []
    for b, c in enumerate(classes.tolist()):
        (g,) = torch.autograd.grad(logits[b, c], seen["A"], retain_graph=True)
        alpha = g[b].mean(dim=(1, 2))
        ref.append(torch.relu((alpha[:, None, None] * seen["A"][b]).sum(0)).detach().numpy())
    with crossmodal.load_model(tmp_path / "m", backend="torch", device="cpu") as m:
        method, layer, _ = m.explain_setup("gradcam")
        assert layer == "layer4.1.out"
        mod, _ = m.torch_module()
        ours, targets, _ = compute_maps(mod, m.graph, x, layer, method, top=1)
    np.testing.assert_array_equal(targets[:, 0], classes.numpy())
    np.testing.assert_allclose(ours[:, 0], np.stack(ref), rtol=1e-3, atol=1e-5 * np.abs(np.stack(ref)).max())


def test_the_apis_defaults_work_on_a_resnet(tmp_path):
    """``features()`` defaults to the network's feature blob (not ``fc7``), and ``predict`` with
    ``on_error="skip"`` names the files it left out instead of dropping them silently."""
    model_dir = _zoo_model(tmp_path, "resnet_tiny", (64, 64))
    from PIL import Image
    good, bad = tmp_path / "a.png", tmp_path / "broken.jpg"
    Image.fromarray(np.full((80, 80, 3), 90, np.uint8)).save(good)
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    with crossmodal.load_model(model_dir, backend="torch", device="cpu") as m:
        assert m.graph.feature_blob == "avgpool"
        assert m.features(str(good)).shape == (1, m.feature_width) and m.feature_width == 32
        with pytest.warns(UserWarning, match=r"1 image\(s\) skipped \(did not decode\): .*broken.jpg"):
            out = m.predict([str(good), str(bad)], on_error="skip")
        assert [r["path"] for r in out] == [str(good)] and [p for p, _ in m.skipped] == [str(bad)]
