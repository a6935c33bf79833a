"""Full-size VGG16-Places365 (random weights): Grad-CAM on conv5_3 after its ReLU against
Captum's LayerGradCam, and ``explain`` on the two real photos at 224 × 224."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from crossmodal.cli import main
from helpers import require_module, shared_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vgg16(tmp_path_factory):
    from crossmodal.convert.pipeline import convert
    from crossmodal.models.synthetic import write_checkpoint
    from crossmodal.models.vgg import create_spec
    root = tmp_path_factory.mktemp("vgg16-explain")
    ckpt = root / "vgg16.pth"
    write_checkpoint(create_spec("vgg16_places365"), ckpt, layout="named", seed=5)
    convert(ckpt, root / "model", preprocess="places365", targets=["ir"],
            labels=shared_file("places365", "categories_places365.txt"))
    ckpt.unlink()
    return root / "model"


def test_vgg16_gradcam_matches_captum_on_relu5_3(vgg16):
    captum = require_module("captum.attr", "Captum is the independent Grad-CAM reference")
    import torch

    import crossmodal
    from crossmodal.explain.cam import compute_maps
    m = crossmodal.load_model(vgg16, backend="torch", device="cpu")
    method, layer, head = m.explain_setup()
    assert (method, layer, head) == ("gradcam", "relu5_3", None)
    mod, _ = m.torch_module()
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (2, 3, 224, 224)).astype(np.float32))
    raw, targets, _ = compute_maps(mod, m.graph, x, layer, "gradcam", top=1)
    assert raw.shape == (2, 1, 14, 14)
    ref = captum.LayerGradCam(mod, mod.layers[layer]).attribute(x, target=torch.from_numpy(targets[:, 0]),
                                                                relu_attributions=True)
    ref = ref[:, 0].detach().numpy()
    assert np.abs(raw[:, 0] - ref).max() <= 1e-4 * max(np.abs(ref).max(), 1e-12)


def test_vgg16_explain_the_real_photos(vgg16, tmp_path):
    images = shared_file("images")
    r = CliRunner().invoke(main, ["explain", "--model", str(vgg16), str(images), "--out", str(tmp_path / "o"),
                                  "--device", "cpu", "--method", "gradcam++", "-q"])
    assert r.exit_code == 0, r.output
    cams = np.load(tmp_path / "o" / "cams.npz")
    assert sorted(cams.files) == ["cam_example", "mountains"]
    for k in cams.files:
        assert cams[k].shape == (224, 224) and cams[k].dtype == np.float32
        assert cams[k].max() in (0.0, 1.0) and cams[k].min() == 0.0
