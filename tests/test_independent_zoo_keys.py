"""The zoo's reader and verify's reference against AlexNet and DenseNet checkpoints written by plain
``torch.nn`` modules (``plain_zoo.py``), in the Places365 release layouts spelled out by hand.

The zoo tests in ``test_torch_zoo.py`` write checkpoints through the same key tables the reader reads
them with, so two same-shaped tensors swapped in a table would pass there; here the last tests swap
them and the checks fail."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crossmodal.ir import reference
from crossmodal.readers.from_torch import read_torch_checkpoint
from plain_zoo import (ALEXNET_IR, ALEXNET_TINY, DENSENET_TINY, PlainAlexNet, PlainDenseNet, alexnet_release_key,
                       densenet_ir_name, densenet_release_key, randomise)


def _alexnet(tmp_path, seed=1):
    spec = ALEXNET_TINY
    module = randomise(PlainAlexNet(spec["widths"], spec["hidden"], spec["classes"], spec["pool"]), seed)
    state = {alexnet_release_key(k): v for k, v in module.state_dict().items()}
    path = tmp_path / "alexnet_places365.pth.tar"
    torch.save({"epoch": 1, "arch": "alexnet", "state_dict": state, "best_prec1": 0.0}, path)
    want = {}
    for key, value in module.state_dict().items():
        prefix, role = key.rsplit(".", 1)
        want[f"{ALEXNET_IR[prefix]}.{role}"] = value.numpy()
    return module, path, want, spec["input"]


def _densenet(tmp_path, seed=2):
    spec = DENSENET_TINY
    module = randomise(PlainDenseNet(spec["growth"], spec["blocks"], spec["init"], spec["bn_size"],
                                     spec["classes"]), seed)
    state = {densenet_release_key(k): v for k, v in module.state_dict().items()}
    path = tmp_path / "densenet161_places365.pth.tar"
    torch.save({"epoch": 1, "arch": "densenet161", "state_dict": state, "best_prec1": 0.0}, path)
    want = {densenet_ir_name(k): v.numpy() for k, v in module.state_dict().items() if densenet_ir_name(k)}
    return module, path, want, spec["input"]


BUILDERS = {"alexnet": _alexnet, "densenet": _densenet}


def _outputs(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def check_reader(module, path, want, shape):
    model = read_torch_checkpoint(path, input_size=shape[1:])
    assert set(model.weights) == set(want)
    for name, arr in want.items():
        assert np.array_equal(model.weights[name], arr), name
    x = np.random.default_rng(3).standard_normal((2, *shape)).astype(np.float32)
    logits = model.graph.blobs["logits"]
    np.testing.assert_allclose(reference.run(model, x, [logits])[logits], _outputs(module, x), rtol=1e-4, atol=1e-5)
    return model


@pytest.mark.parametrize("family", BUILDERS)
def test_the_reader_reads_an_independently_written_release(family, tmp_path):
    check_reader(*BUILDERS[family](tmp_path))


@pytest.mark.parametrize("family", BUILDERS)
def test_verify_reference_is_the_plain_module(family, tmp_path):
    from crossmodal.verify.source_reference_zoo import torch_zoo_source_engine
    module, path, want, shape = BUILDERS[family](tmp_path)
    model = read_torch_checkpoint(path, input_size=shape[1:])
    engine = torch_zoo_source_engine(model, path)
    x = np.random.default_rng(4).standard_normal((2, *shape)).astype(np.float32)
    logits = model.graph.blobs["logits"]
    got = engine.run(x, [logits])[logits]
    np.testing.assert_allclose(got, _outputs(module, x), rtol=1e-5, atol=1e-6)


SWAPS = {"alexnet": ("fc6.bias", "fc7.bias"),
         "densenet": ("features.denseblock1.denselayer1.norm2.weight",
                      "features.denseblock1.denselayer1.norm2.bias")}


@pytest.mark.parametrize("family", BUILDERS)
def test_two_same_shaped_tensors_swapped_in_the_key_table_are_caught(family, tmp_path, monkeypatch):
    """The zoo's table names IR tensor → torchvision key; swap two entries of the same shape."""
    from crossmodal.models import registry
    a, b = SWAPS[family]
    module = registry.family("alexnet" if family == "alexnet" else "densenet")
    real = module.torchvision_keys

    def swapped(spec):
        table = dict(real(spec))
        table[a], table[b] = table[b], table[a]
        return table
    monkeypatch.setattr(module, "torchvision_keys", swapped)
    with pytest.raises(AssertionError):
        check_reader(*BUILDERS[family](tmp_path))
