"""The reader and the ``verify`` reference against checkpoints built without their key tables.

Checkpoints come from a plain ``torch.nn`` VGG written in ``plain_vgg.py`` (keys: its
own ``state_dict()``; the named layout's keys and IR names written out by hand). A
wrong key table in the reader or in the reference now shows up — the last tests
corrupt one with ``monkeypatch`` and see these checks fail, while the old round trip
through ``crossmodal.models.synthetic`` (same table on both sides) still passes.
"""
from __future__ import annotations

import numpy as np
import pytest

from crossmodal.ir import reference
from crossmodal.readers import from_torch
from crossmodal.readers.from_torch import read_torch_checkpoint
from plain_vgg import LAYOUTS, TINY3, TINY3_LAYERS, ir_weights, plain_outputs, plain_vgg, write_plain_checkpoint

HW = TINY3["input"][1:]


def _batch(n: int = 3) -> np.ndarray:
    return np.random.default_rng(5).standard_normal((n, *TINY3["input"])).astype(np.float32)


def check_reader(path, module) -> None:
    """The reader's IR holds the module's tensors under the hand-written names and computes its function."""
    model = read_torch_checkpoint(path, input_size=HW)
    want = ir_weights(module)
    assert set(model.weights) == set(want)
    for name, arr in want.items():
        assert np.array_equal(model.weights[name], arr), name
    x = _batch()
    got = reference.run(model, x, ["fc8"])["fc8"]
    np.testing.assert_allclose(got, plain_outputs(module, x)["fc8"], rtol=1e-4, atol=1e-5)


def check_reference(path, module) -> None:
    """``torch-source`` gives every layer the module computes, under the hand-written IR names."""
    from crossmodal.verify.source_reference import torch_source_engine
    from crossmodal.models.synthetic import random_state_dict
    from crossmodal.models.vgg import build_graph, create_spec
    from crossmodal.ir.graph import IRModel

    spec = create_spec("vgg_tiny3")
    graph = build_graph(spec)  # only the layer names and input shape are used by the engine
    engine = torch_source_engine(IRModel(graph, random_state_dict(spec)), path)
    x = _batch()
    want = plain_outputs(module, x)
    layers = [n for n in TINY3_LAYERS.values() if n in engine.observable]
    assert set(layers) >= {"conv1_1", "relu1_2", "pool3", "fc6", "fc7", "fc8"}
    got = engine.run(x, layers)
    for name in layers:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reader_reads_a_plain_module_checkpoint(layout, tmp_path):
    module = plain_vgg(seed=3)
    path = write_plain_checkpoint(module, tmp_path / ("m.safetensors" if layout == "safetensors" else "m.pth"),
                                  layout)
    check_reader(path, module)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_verify_reference_is_the_plain_module(layout, tmp_path):
    module = plain_vgg(seed=4)
    path = write_plain_checkpoint(module, tmp_path / ("m.safetensors" if layout == "safetensors" else "m.pth"),
                                  layout)
    check_reference(path, module)


# --------------------------------------------------------------------------- a wrong table is seen
def _swap(table: dict, a: str, b: str) -> dict:
    table = dict(table)
    table[a], table[b] = table[b], table[a]
    return table


def _synthetic_round_trip(tmp_path, layout):
    """The old style: write with the project's table, read with the project's table."""
    from crossmodal.models.synthetic import write_checkpoint
    from crossmodal.models.vgg import create_spec
    path = tmp_path / f"synthetic-{layout}.pth"
    weights = write_checkpoint(create_spec("vgg_tiny3"), path, layout=layout, seed=2)
    model = read_torch_checkpoint(path, input_size=HW)
    return all(np.array_equal(model.weights[k], v) for k, v in weights.items())


@pytest.mark.parametrize("layout, table", [("torchvision", "torchvision_keys"), ("named", "named_keys")])
def test_a_wrong_reader_key_table_is_caught(layout, table, tmp_path, monkeypatch):
    """conv1_1 and conv1_2 biases (both 4 values) swapped in the table: same shapes, other numbers."""
    from crossmodal.models import synthetic, vgg
    original = getattr(vgg, table)
    for where in (vgg, from_torch, synthetic):  # the table, wherever it was imported
        monkeypatch.setattr(where, table, lambda spec: _swap(original(spec), "conv1_1.bias", "conv1_2.bias"))
    assert _synthetic_round_trip(tmp_path, layout)  # same wrong table on both sides: unseen
    module = plain_vgg(seed=3)
    path = write_plain_checkpoint(module, tmp_path / "m.pth", layout)
    with pytest.raises(AssertionError, match="conv1_"):
        check_reader(path, module)


def test_a_wrong_reference_key_table_is_caught(tmp_path, monkeypatch):
    from crossmodal.models import vgg
    original = vgg.named_keys
    monkeypatch.setattr(vgg, "named_keys", lambda spec: _swap(original(spec), "conv1_1.bias", "conv1_2.bias"))
    module = plain_vgg(seed=4)
    path = write_plain_checkpoint(module, tmp_path / "m.pth", "named")
    with pytest.raises(AssertionError):
        check_reference(path, module)


def test_wrong_hook_names_in_the_reference_are_caught(tmp_path, monkeypatch):
    from crossmodal.verify import source_reference
    original = source_reference.hook_names
    monkeypatch.setattr(source_reference, "hook_names",
                        lambda spec: _swap(original(spec), "features.1", "features.3"))  # relu1_1 ↔ relu1_2
    module = plain_vgg(seed=4)
    path = write_plain_checkpoint(module, tmp_path / "m.pth", "torchvision")
    with pytest.raises(AssertionError, match="relu1_"):
        check_reference(path, module)
