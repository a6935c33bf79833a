"""Full-size VGG16-Places365 (135,755,949 parameters), end to end: checkpoint → IR → Keras and
ONNX → outputs match PyTorch within max|Δ|/max|ref| ≤ 1e-5 on the fp32 logits."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import rel_err

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    from crossmodal.convert.pipeline import convert
    from crossmodal.models.synthetic import write_checkpoint
    from crossmodal.models.vgg import create_spec
    root = tmp_path_factory.mktemp("vgg16")
    ckpt = root / "vgg16_places365_csail.pth.tar"
    write_checkpoint(create_spec("vgg16_places365"), ckpt, layout="csail", seed=3)
    result = convert(ckpt, root / "model", preprocess="places365")
    return ckpt, root / "model", result


def test_conversion_writes_every_target_with_the_published_size(full):
    _, model_dir, result = full
    assert result.model.graph.parameter_count() == 135_755_949
    assert result.model.graph.provenance.reader.endswith("(torchvision keys)")
    sizes = {a.kind: a.bytes for a in result.artifacts}
    assert 540_000_000 < sizes["onnx"] < 2 ** 31  # a single file, below protobuf's 2 GiB
    assert not (model_dir / "model.onnx.data").exists()


def test_every_engine_matches_the_pytorch_source(full):
    from crossmodal.verify.job import run_verify
    ckpt, model_dir, _ = full
    report = run_verify(model_dir, source=ckpt, random=2, seed=0)
    assert report.passed, report.to_json()["gates"]
    for engine in ("ir", "keras", "onnx"):
        assert report.comparisons[engine]["fc8"].rel <= 1e-5
        assert report.classifier[engine].top1_agree == 2


def test_keras_weights_load_into_keras_applications_vgg16(full):
    import keras
    _, model_dir, _ = full
    ours = keras.saving.load_model(model_dir / "model.keras", safe_mode=True)
    app = keras.applications.VGG16(weights=None, classes=365, classifier_activation=None)
    app.load_weights(model_dir / "model.weights.h5")
    x = np.random.default_rng(0).standard_normal((1, 224, 224, 3)).astype(np.float32)
    assert rel_err(app(x).numpy(), ours(x).numpy().astype(np.float64)) == 0.0
    soft = keras.applications.VGG16(weights=None, classes=365, classifier_activation="softmax")
    soft.load_weights(model_dir / "model.weights.h5")
    np.testing.assert_allclose(soft(x).numpy().sum(), 1.0, rtol=1e-5)
