"""The ONNX reader (crossmodal.readers.from_onnx): files from other exporters convert and the
emitted ONNX and Keras models compute the source's function; a file our own emitter wrote reads back
to the same IR; tf2onnx-style graphs (NHWC input, SAME padding, ReduceMean, a Transpose before the
flatten, the Shape chain) read as plain layer graphs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crossmodal.ir import reference
from crossmodal.ir.compare import structural_diff
from crossmodal.readers.from_onnx import read_onnx
from helpers import rel_err
from onnx_sources import export, plain_module, run_source, tf2onnx_style


def _convert(source, out, *extra):
    from click.testing import CliRunner

    from crossmodal.cli import main
    result = CliRunner().invoke(main, ["convert", str(source), "-o", str(out), "-q", *extra])
    assert result.exit_code == 0, result.output
    return result


def _emitted(out, x_nchw):
    """logits of the emitted ONNX and Keras models on an NCHW batch."""
    from crossmodal.ir.store import load_ir
    from crossmodal.runtime.engine import open_engine
    graph = load_ir(out).graph
    return {name: open_engine(name, out, ["logits"], graph=graph, device="cpu").run(x_nchw)["logits"]
            for name in ("onnx", "keras")}


@pytest.mark.parametrize("family", ["resnet", "alexnet", "densenet"])
def test_a_torch_onnx_legacy_export_converts_and_matches_the_source(family, tmp_path):
    module, shape = plain_module(family)
    source = export(module, shape, tmp_path / f"{family}.onnx", opset=13)
    _convert(source, tmp_path / "out")
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = module(x).numpy()
    for engine, got in _emitted(tmp_path / "out", x.numpy()).items():
        assert rel_err(got, want) < 1e-4, (family, engine, rel_err(got, want))


def test_a_dynamo_export_converts_and_matches_the_source(tmp_path):
    from helpers import require_module
    require_module("onnxscript", "torch.onnx's dynamo exporter")
    module, shape = plain_module("resnet")
    source = export(module, shape, tmp_path / "resnet_dynamo.onnx", dynamo=True, opset=18)
    _convert(source, tmp_path / "out")
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        want = module(x).numpy()
    for engine, got in _emitted(tmp_path / "out", x.numpy()).items():
        assert rel_err(got, want) < 1e-4, (engine, rel_err(got, want))


def test_the_shape_chain_reads_as_a_flatten_and_names_come_from_the_nodes(tmp_path):
    module, shape = plain_module("resnet")
    read = read_onnx(export(module, shape, tmp_path / "r.onnx"))
    g = read.model.graph
    kinds = [l.kind for l in g.layers]
    assert "flatten" not in kinds and kinds[-2:] == ["global_avg_pool2d", "dense"]  # a pooled vector: no layer
    assert g.blobs["features"] == g.layers[-2].name and g.blobs["logits"] == g.layers[-1].name
    assert all("/" not in l.name for l in g.layers) and any(l.name.startswith("layer1.") for l in g.layers)
    assert g.provenance.source_format == "onnx" and g.provenance.notes[0].startswith("ONNX opset 13")


def _assert_round_trip(model, path, extra_outputs):
    from crossmodal.emitters.onnx_file import save_onnx
    from crossmodal.emitters.to_onnx import build_onnx
    save_onnx(build_onnx(model, extra_outputs=extra_outputs), path)
    read = read_onnx(path)
    assert structural_diff(model, read.model) == []
    assert [l.name for l in read.model.graph.layers] == [l.name for l in model.graph.layers if l.kind != "dropout"]
    return read


def test_our_own_emitters_files_read_back_to_the_same_ir(tiny_converted, tmp_path):
    """Same layers (modulo dropout), same weights bit for bit, the same blobs, labels and preprocessing."""
    import copy

    from crossmodal.ir.graph import Labels
    model = copy.deepcopy(tiny_converted.model)
    model.graph.labels = Labels([f"/s/scene_{i}" for i in range(model.graph.num_classes)])
    read = _assert_round_trip(model, tmp_path / "vgg.onnx", [model.graph.feature_blob])
    g = read.model.graph
    assert g.feature_blob == model.graph.feature_blob and g.resolve(g.feature_blob) == model.graph.resolve("fc7")
    assert read.carried_preprocess == model.graph.preprocess and g.labels.names == model.graph.labels.names


def test_every_kind_and_the_new_ir_features_read_back(tmp_path):
    from test_ir_growth import _net
    from test_kinds import _dag
    _assert_round_trip(_dag(np.random.default_rng(7)), tmp_path / "dag.onnx", ["features"])
    _assert_round_trip(_net(np.random.default_rng(3)), tmp_path / "net.onnx", ["features"])


@pytest.mark.parametrize("opset,flatten", [(13, "reduce_mean"), (18, "reduce_mean"), (13, "transpose")])
def test_tf2onnx_style_graphs_read_as_plain_layers(opset, flatten, tmp_path, rng):
    source = tf2onnx_style(tmp_path / "k.onnx", opset=opset, flatten=flatten)
    read = read_onnx(source)
    g = read.model.graph
    kinds = [l.kind for l in g.layers]
    assert g.input.shape == (3, 12, 10) and any("NHWC" in n for n in g.provenance.notes)
    assert kinds[:4] == ["rescale", "conv2d", "relu", "max_pool2d"] and "transpose" not in kinds
    conv1 = g.layers[1]
    assert (conv1.attrs["pad"], conv1.attrs["pad_end"]) == ((0, 0), (1, 1)) and "bias" in conv1.tensors
    assert g.layers[2].attrs == {"max_value": 6.0} and g.layers[0].attrs == {"scale": float(np.float32(1 / 127.5)), "offset": -1.0}
    conv2 = g.layer("conv2")
    assert (conv2.attrs["pad"], conv2.attrs.get("pad_end")) == ((1, 0), (1, 1))  # the Pad folded in
    x = rng.uniform(0, 255, (2, 12, 10, 3)).astype(np.float32)
    want = run_source(source, x)
    got = reference.run(read.model, x.transpose(0, 3, 1, 2), [g.resolve("prob")])[g.resolve("prob")]
    assert rel_err(got, want) < 1e-5
    out = tmp_path / "out"
    _convert(source, out, "--scale", "255", "--mean", "0", "--std", "1")
    for engine, logits in _emitted(out, x.transpose(0, 3, 1, 2)).items():
        probs = np.exp(logits - logits.max(1, keepdims=True))
        assert rel_err(probs / probs.sum(1, keepdims=True), want) < 1e-4, engine


def test_initializers_stored_as_external_data_are_read(tiny_converted, tmp_path):
    import onnx
    from crossmodal.emitters.to_onnx import build_onnx
    proto = build_onnx(tiny_converted.model)
    onnx.save_model(proto, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.data", size_threshold=0)
    assert (tmp_path / "m.data").stat().st_size > 1000
    assert structural_diff(tiny_converted.model, read_onnx(tmp_path / "m.onnx").model) == []


def test_external_data_outside_the_models_folder_is_refused(tiny_converted, tmp_path):
    import onnx

    from crossmodal.emitters.to_onnx import build_onnx
    from crossmodal.errors import InputError
    proto = build_onnx(tiny_converted.model)
    (tmp_path / "sub").mkdir()
    onnx.save_model(proto, str(tmp_path / "sub" / "m.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="m.data", size_threshold=0)
    model = onnx.load(str(tmp_path / "sub" / "m.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../../etc/passwd"
    onnx.save_model(model, str(tmp_path / "sub" / "evil.onnx"))
    with pytest.raises(InputError, match="outside the model's folder"):
        read_onnx(tmp_path / "sub" / "evil.onnx")


@pytest.mark.slow
def test_a_full_size_resnet18_exported_by_torch_onnx_reads_back(tmp_path):
    """torchvision's ResNet-18 layout (11.7 M parameters) at 224×224: read, emitted, the same logits."""
    from plain_zoo import PlainResNet18, randomise

    from crossmodal.ir.store import load_ir
    from crossmodal.runtime.engine import open_engine
    module = randomise(PlainResNet18(365), 4)
    source = export(module, (3, 224, 224), tmp_path / "resnet18.onnx")
    _convert(source, tmp_path / "out", "--to", "ir,onnx")
    model = load_ir(tmp_path / "out")
    kinds = [l.kind for l in model.graph.layers]
    assert kinds.count("conv2d") == 20 and kinds.count("eltwise") == 8 and kinds[-1] == "dense"
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = module(x).numpy()
    got = open_engine("onnx", tmp_path / "out", ["logits"], graph=model.graph, device="cpu").run(x.numpy())["logits"]
    assert rel_err(got, want) < 1e-4
