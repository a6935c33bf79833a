"""The five Places365 PyTorch releases at full size (random weights, the layouts as released),
end to end: checkpoint → IR, Keras, ONNX and a torchvision-keyed state dict → every layer of
every engine against the checkpoint loaded into independent plain modules. Plus the
Python 2 pickle and the whole-model pickle (behind ``trust_pickle``). About 2 minutes."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow

CASES = [("alexnet", "released"), ("resnet18", "released"), ("resnet50", "released"),
         ("wideresnet18", "released"), ("densenet161", "released"), ("resnet18", "python2"), ("alexnet", "whole")]
#: (feature blob, its width, parameters incl. batch-norm statistics) per architecture
FACTS = {"alexnet": ("fc7", 4096, 58_499_245), "resnet18": ("avgpool", 512, 11_373_357),
         "resnet50": ("avgpool", 2048, 24_309_037), "wideresnet18": ("avgpool", 512, 11_373_357),
         "densenet161": ("avgpool", 2208, 27_498_221)}


@pytest.fixture(scope="module", params=CASES, ids=[f"{a}-{l}" for a, l in CASES])
def converted(request, tmp_path_factory):
    from crossmodal.convert.pipeline import convert
    from crossmodal.models.synthetic_zoo import write_checkpoint
    arch, layout = request.param
    root = tmp_path_factory.mktemp(f"{arch}-{layout}")
    ckpt = root / (("whole_" if layout == "whole" else "") + f"{arch}_places365.pth.tar")
    write_checkpoint(arch, ckpt, layout, seed=11)
    result = convert(ckpt, root / "model", targets=["ir", "keras", "onnx", "torch"], trust_pickle=layout == "whole")
    return arch, layout, ckpt, root / "model", result


def test_every_engine_matches_the_plain_module_on_every_layer(converted):
    from crossmodal.verify.job import run_verify
    arch, layout, ckpt, model_dir, result = converted
    graph = result.model.graph
    blob, width, params = FACTS[arch]
    assert graph.name == arch and graph.parameter_count() == params and graph.feature_blob == blob
    # the card's preset, from the released file name (the whole-model pickle has no card)
    assert graph.preprocess.name == ("torchvision" if layout == "whole" else "places365")
    report = run_verify(model_dir, source=ckpt, engines=("torch", "ir", "keras", "onnx"),
                        trust_pickle=layout == "whole")
    assert report.passed, report.to_json()["gates"]
    assert {g["check"].split()[0] for g in report.gates()} == {"logits", blob, "top-1"}
    for engine in ("torch", "ir", "keras", "onnx"):
        assert report.comparisons[engine][graph.resolve(blob)].count == 2 * width
    if arch == "wideresnet18":
        assert any("wideresnet18 chosen from the file name" in n for n in graph.provenance.notes)


def test_torch_state_dict_has_todays_torchvision_names(converted):
    from crossmodal.verify.source_reference_zoo import build_module
    arch, _, _, model_dir, _ = converted
    state = torch.load(model_dir / "model.pth", weights_only=True)
    module = build_module(arch, 365, 3, {k: tuple(v.shape) for k, v in state.items()})
    module.load_state_dict(state, strict=True)
    assert not any(k.startswith("module.") or ".module." in k or ".norm.1" in k for k in state)
