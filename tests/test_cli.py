"""The command line: every command has help, convert/inspect work end to end, bad input exits 2."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from crossmodal.cli import COMMANDS, main


@pytest.fixture
def runner():
    return CliRunner()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(runner, command):
    result = runner.invoke(main, [command, "--help"])
    if result.exit_code == 2 and "No such command" in result.output:
        pytest.fail(f"command {command} is listed but cannot be loaded")
    assert result.exit_code == 0, result.output
    assert "Usage: main " in result.output or "Usage: " in result.output
    assert len(result.output.splitlines()) > 3


def test_help_imports_no_heavy_framework():
    """``crossmodal --help`` must stay fast: no torch/tensorflow/keras/onnx at import."""
    code = ("import sys; from crossmodal.cli import main; import crossmodal.cli as c; "
            "[c.LazyGroup._load(n) for n in c.COMMANDS]; "
            "print(sorted(m for m in ('torch','tensorflow','keras','onnx','onnxruntime','h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_dash_m_runs(tmp_path):
    out = subprocess.run([sys.executable, "-m", "crossmodal", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "crossmodal" in out.stdout


def _labels(path, n):
    path.write_text("\n".join(f"/c/class_{i} {i}" for i in range(n)))
    return path


def test_convert_json_then_inspect_each_output(runner, tmp_path, tiny_ckpt):
    labels = _labels(tmp_path / "cats.txt", 10)
    (tmp_path / "io.txt").write_text("\n".join(f"/c/class_{i} {1 + i % 2}" for i in range(10)))
    out = tmp_path / "out"
    result = runner.invoke(main, ["convert", str(tiny_ckpt[0]), "--out-dir", str(out), "--input-size", "20x28",
                                  "--labels", str(labels), "--io-labels", str(tmp_path / "io.txt"),
                                  "--preprocess", '{"resize": [20, 28], "crop": [20, 28]}', "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    kinds = {a["kind"]: a for a in data["artifacts"]}
    assert set(kinds) == {"ir-graph", "ir-weights", "onnx", "keras", "keras-weights"}
    assert all(len(a["sha256"]) == 64 and a["bytes"] > 0 for a in kinds.values())
    assert data["parameters"] == 2361 and data["source"]["source_sha256"]
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.keras", "model.onnx",
                                                     "model.weights.h5", "weights.h5"]
    for target in (out, out / "model.onnx", out / "model.keras", tiny_ckpt[0]):
        args = ["inspect", str(target), "--json"] + (["--input-size", "20x28"] if target == tiny_ckpt[0] else [])
        res = runner.invoke(main, args)
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)["parameters"] == 2361, target
    text = runner.invoke(main, ["inspect", str(out)]).output
    assert "fc8" in text and "2,361" in text and "'indoor': 5" in text
    assert data["preprocess"]["name"] == "custom"
    keras = json.loads(runner.invoke(main, ["inspect", str(out / "model.keras"), "--json"]).output)
    assert keras["outputs"] == ["predictions"] and keras["labels"]["count"] == 10
    assert keras["preprocess"]["crop"] == [20, 28] and keras["input"]["channel_order"] == "RGB"
    assert any("model.json" in n for n in keras["notes"])
    text = runner.invoke(main, ["inspect", str(out / "model.keras")]).output
    assert "labels: none" not in text and "note: preprocessing and labels from" in text


def test_ir_folder_is_a_pivot(runner, tmp_path, tiny_converted):
    ir_dir = tiny_converted.artifacts[0].path.rsplit("/", 1)[0]
    out = tmp_path / "again"
    result = runner.invoke(main, ["convert", ir_dir, "-o", str(out), "--to", "onnx", "-q"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in out.iterdir()] == ["model.onnx"]


def test_bad_inputs_exit_2_with_one_line_and_leave_nothing(runner, tmp_path, tiny_ckpt):
    ckpt = str(tiny_ckpt[0])
    bad_labels = _labels(tmp_path / "cats.txt", 12)
    not_ckpt = tmp_path / "notes.pth"
    not_ckpt.write_text("just text")
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [
        (["convert", str(not_ckpt)], "not a PyTorch checkpoint (a text file"),
        (["convert", ckpt, "--input-size", "20x28", "--labels", str(bad_labels)], "12 labels, but the classifier has 10"),
        (["convert", ckpt, "--input-size", "20x28", "--to", "tflite"], "unknown target"),
        (["convert", ckpt, "--input-size", "20x28", "--preprocess", "imagenet-ish"], "--preprocess takes"),
        (["convert", ckpt], "--input-size"),
    ]
    for args, message in cases:
        out = tmp_path / "out"
        result = runner.invoke(main, [*args, "--out-dir", str(out), "-q"])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and result.output.count("\n") == 1, (args, result.output)
        assert not out.exists(), args  # the run created it, the failure removed it
    result = runner.invoke(main, ["convert", ckpt, "--input-size", "20x28", "-o", str(blocker / "sub"), "-q"])
    assert result.exit_code == 2 and "not writable" in result.output


def test_failure_midway_leaves_the_output_folder_as_it_was(tmp_path, tiny_ckpt, monkeypatch):
    from crossmodal.convert import pipeline
    from crossmodal.emitters import to_keras
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    def broken(model):
        raise RuntimeError("disk full")
    monkeypatch.setattr(to_keras, "build_keras", broken)
    with pytest.raises(RuntimeError):
        pipeline.convert(tiny_ckpt[0], out, input_size=(20, 28))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_failure_into_a_fresh_path_removes_every_folder_it_created(tmp_path, tiny_ckpt, monkeypatch):
    from crossmodal.convert import pipeline
    from crossmodal.emitters import to_keras

    def broken(model):
        raise RuntimeError("disk full")
    monkeypatch.setattr(to_keras, "build_keras", broken)
    with pytest.raises(RuntimeError):
        pipeline.convert(tiny_ckpt[0], tmp_path / "a" / "b" / "out", input_size=(20, 28))
    assert list(tmp_path.iterdir()) == []


def test_real_label_files_are_read(tmp_path):
    from helpers import shared_file
    from crossmodal.readers.label_files import read_labels
    labels = read_labels(shared_file("places365", "categories_places365.txt"),
                         shared_file("places365", "IO_places365.txt"), 365)
    assert labels.names[0] == "/a/airfield" and labels.names[-1] == "/z/zen_garden"
    assert labels.indoor_outdoor.count(1) == 160 and labels.indoor_outdoor.count(2) == 205


# --------------------------------------------------------------------------- one-line errors
def _one_error_line(result, exit_code=2):
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.mark.parametrize("args,message", [
    (["convert", "missing.pth", "-o", "out"], "Invalid value for 'WEIGHTS': Path 'missing.pth' does not exist."),
    (["convert"], "Missing argument 'WEIGHTS'."),
    (["convert", ".", "--out-dir"], "Option '--out-dir' requires an argument."),
    (["inspect", ".", "--bogus"], "No such option '--bogus'."),
    (["nonsense"], "No such command 'nonsense'."),
])
def test_click_usage_errors_are_one_line(runner, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert _one_error_line(runner.invoke(main, args)) == f"Error: {message}"


def test_running_with_no_arguments_still_shows_help(runner):
    result = runner.invoke(main, [])
    assert "Commands:" in result.output and "convert" in result.output


def test_opset_outside_the_supported_range_exits_2_with_the_range(runner, tmp_path, tiny_ckpt):
    from crossmodal.emitters.to_onnx import MIN_OPSET, max_opset
    out = tmp_path / "out"
    for opset in (7, max_opset()[0] + 1, 99):
        line = _one_error_line(runner.invoke(main, ["convert", str(tiny_ckpt[0]), "-o", str(out), "--input-size",
                                                    "20x28", "--opset", str(opset), "-q"]))
        assert f"opset {opset}" in line and f"{MIN_OPSET}..{max_opset()[0]}" in line
        assert not out.exists()
    line = _one_error_line(runner.invoke(main, ["convert", str(tiny_ckpt[0]), "-o", str(out), "--input-size",
                                                "20x28", "--opset", "17", "--to", "ir", "-q"]))
    assert "leave out onnx" in line


@pytest.mark.parametrize("spec,message", [
    ('{"crop": 5}', "crops 5×5, but the network takes 20×28"),
    ('{"resize": "big", "crop": [20, 28]}', "preprocessing field 'resize' must be a positive integer or [H, W]"),
    ('{"crop": [20, 28], "std": [1, 0, 1]}', "preprocessing field 'std' must be three non-zero numbers"),
    ('{"crop": [20, 28], "mean_image": "preprocess.mean_image"}', "names the mean image"),
    ('[1, 2]', "must be a JSON object"),
])
def test_bad_preprocess_json_exits_2_naming_the_field(runner, tmp_path, tiny_ckpt, spec, message):
    out = tmp_path / "out"
    line = _one_error_line(runner.invoke(main, ["convert", str(tiny_ckpt[0]), "-o", str(out), "--input-size",
                                                "20x28", "--preprocess", spec, "-q"]))
    assert message in line
    assert not out.exists()


def test_a_default_preset_is_cropped_to_the_input_and_noted(tmp_path, tiny_ckpt):
    from crossmodal.convert.pipeline import convert
    g = convert(tiny_ckpt[0], tmp_path / "m", input_size=(20, 28), targets=["ir"]).model.graph
    assert g.preprocess.crop == (20, 28) and g.preprocess.name == "torchvision"
    assert any("set to the input size 20×28" in n for n in g.provenance.notes)


def test_ir_folder_with_preprocess_updates_the_input_spec(runner, tmp_path, tiny_converted):
    import onnx
    ir_dir = tiny_converted.artifacts[0].path.rsplit("/", 1)[0]
    out = tmp_path / "bgr"
    spec = json.dumps({"resize": [20, 28], "crop": [20, 28], "channel_order": "BGR", "value_range": "0-255",
                       "mean": [104, 117, 123], "std": [1, 1, 1], "name": "bgr-test"})
    result = runner.invoke(main, ["convert", ir_dir, "-o", str(out), "--preprocess", spec, "--to", "ir,onnx", "-q"])
    assert result.exit_code == 0, result.output
    meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    inp, pre = json.loads(meta["crossmodal.input"]), json.loads(meta["crossmodal.preprocess"])
    assert (inp["channel_order"], inp["value_range"]) == (pre["channel_order"], pre["value_range"]) == ("BGR", "0-255")
    graph = json.loads((out / "model.json").read_text())
    assert graph["input"]["channel_order"] == "BGR" and graph["preprocess"]["name"] == "bgr-test"
    assert any("preprocess replaced" in n for n in graph["provenance"]["notes"])
    line = _one_error_line(runner.invoke(main, ["convert", ir_dir, "-o", str(tmp_path / "x"), "--preprocess",
                                                "places365", "-q"]))
    assert "crops 224×224, but the network takes 20×28" in line


def test_provenance_records_every_framework_and_onnx_its_producer(tiny_converted):
    import onnx
    from crossmodal._version import __version__
    versions = tiny_converted.model.graph.provenance.framework_versions
    assert {"python", "torch", "tensorflow", "keras", "onnx", "onnxruntime", "h5py", "numpy"} <= set(versions)
    proto = onnx.load(next(a.path for a in tiny_converted.artifacts if a.kind == "onnx"), load_external_data=False)
    assert (proto.producer_name, proto.producer_version) == ("crossmodal", __version__)


# --------------------------------------------------------------------------- labels
def test_an_unreadable_io_label_file_is_named(runner, tmp_path, tiny_ckpt):
    labels = _labels(tmp_path / "cats.txt", 10)
    io = tmp_path / "io.txt"
    io.write_bytes(b"\xff\xfe\x00bad")
    line = _one_error_line(runner.invoke(main, ["convert", str(tiny_ckpt[0]), "-o", str(tmp_path / "o"),
                                                "--input-size", "20x28", "--labels", str(labels),
                                                "--io-labels", str(io), "-q"]))
    assert f"{io}: cannot read label file" in line and str(labels) not in line


def test_label_names_may_hold_spaces(tmp_path):
    from crossmodal.readers.label_files import parse_categories
    assert parse_categories("n01440764 tench, Tinca tinca 1\n/a/airfield 0\n") == [
        "/a/airfield", "n01440764 tench, Tinca tinca"]


def test_real_hybrid1365_labels_are_read():
    from helpers import shared_file
    from crossmodal.readers.label_files import read_labels
    labels = read_labels(shared_file("places365", "categories_hybrid1365.txt"), num_classes=1365)
    assert labels.names[0] == "n01440764 tench, Tinca tinca"
    assert labels.names[1000] == "/a/airfield" and labels.names[-1] == "/z/zen_garden"


# --------------------------------------------------------------------------- bad checkpoints
class PickledTiny(torch_module_base := __import__("torch").nn.Module):
    """A whole pickled model (as whole_vgg16_places365.pth.tar), importable as test_cli.PickledTiny."""

    def __init__(self, spec):
        super().__init__()
        from crossmodal.models.vgg import build_torch_module
        net = build_torch_module(spec)
        self.features, self.classifier = net.features, net.classifier


def _bad_checkpoints(tmp_path, tiny_spec):
    import numpy as np
    import torch
    from crossmodal.models.synthetic import keyed, random_state_dict, write_checkpoint

    def save(name, state):
        path = tmp_path / name
        torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, path)
        return path
    good = tmp_path / "good.pth"
    write_checkpoint(tiny_spec, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    state = keyed(tiny_spec, random_state_dict(tiny_spec), "torchvision")
    return {
        "truncated": (truncated, "truncated or corrupt"),
        "resnet": (save("resnet.pth", {"conv1.weight": np.zeros((4, 3, 7, 7), np.float32),
                                       "fc.weight": np.zeros((365, 4), np.float32)}), "keys match no known architecture"),
        "missing": (save("missing.pth", {k: v for k, v in state.items() if k != "classifier.3.bias"}),
                    "missing keys: classifier.3.bias"),
        "missing-layer": (save("gap.pth", {k: v for k, v in state.items() if not k.startswith("features.0.")}),
                          "missing keys: features.0.weight, features.0.bias (the others fit vgg_tiny)"),
        "random": (tmp_path / "random.pth", "not a PyTorch checkpoint (unrecognised bytes"),
    }


def test_bad_checkpoints_exit_2_through_the_cli(runner, tmp_path, tiny_spec):
    cases = _bad_checkpoints(tmp_path, tiny_spec)
    cases["random"][0].write_bytes(bytes(range(1, 200)) * 3)
    for name, (path, message) in cases.items():
        out = tmp_path / f"out-{name}"
        line = _one_error_line(runner.invoke(main, ["convert", str(path), "-o", str(out), "--input-size", "20x28",
                                                    "-q"]))
        assert str(path) in line and message in line, (name, line)
        assert "weights_only" not in line and not out.exists(), name
        line = _one_error_line(runner.invoke(main, ["inspect", str(path), "--input-size", "20x28"]))
        assert message in line, (name, line)


def test_trust_pickle_refusal_and_acceptance_through_the_cli(runner, tmp_path, tiny_spec):
    import torch
    path = tmp_path / "whole_vgg_tiny_places365.pth.tar"
    torch.save(PickledTiny(tiny_spec), path)
    out = tmp_path / "out"
    line = _one_error_line(runner.invoke(main, ["convert", str(path), "-o", str(out), "--input-size", "20x28",
                                                "-q"]))
    assert "a pickled object that needs --trust-pickle: it holds test_cli.PickledTiny" in line
    assert not out.exists()
    result = runner.invoke(main, ["convert", str(path), "-o", str(out), "--input-size", "20x28", "--trust-pickle",
                                  "--to", "ir", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["parameters"] == 2361


@pytest.mark.parametrize("command", ["convert", "inspect"])
def test_bad_input_size_is_a_usage_error(runner, tiny_ckpt, tmp_path, command):
    args = [command, str(tiny_ckpt[0]), "--input-size", "20y28"] + (
        ["--out-dir", str(tmp_path / "out")] if command == "convert" else [])
    result = runner.invoke(main, args)
    assert result.exit_code == 2
    assert "--input-size" in result.output and "expected H or HxW" in result.output
    assert not (tmp_path / "out").exists()


def test_convert_finds_the_release_labels_beside_the_weights_or_says_it_has_none(tmp_path):
    """Without --labels, the published label file where fetch puts it (beside the checkpoint) is used and
    named; with none there, one note names --labels, even under -q."""
    import shutil
    from helpers import require_shared
    from crossmodal.models.synthetic import write_checkpoint
    from crossmodal.models.vgg import create_spec
    ckpt = tmp_path / "w" / "tiny365.pth"
    ckpt.parent.mkdir()
    write_checkpoint(create_spec("vgg_tiny", num_classes=365), ckpt, seed=1)
    result = CliRunner().invoke(main, ["convert", str(ckpt), "--input-size", "20x28", "--to", "ir",
                                       "--out-dir", str(tmp_path / "a"), "-q"])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().splitlines() == [
        "note: no labels given or found beside the weights: the 365 classes are named class_0 …; give --labels "
        "(crossmodal fetch places365-labels gets the published list)"]
    for name in ("categories_places365.txt", "IO_places365.txt"):
        shutil.copy(require_shared("places365", name), ckpt.parent / name)
    result = CliRunner().invoke(main, ["convert", str(ckpt), "--input-size", "20x28", "--to", "ir",
                                       "--out-dir", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "labels: categories_places365.txt and IO_places365.txt beside the weights" in result.stderr
    graph = json.loads((tmp_path / "b" / "model.json").read_text())
    assert graph["labels"]["names"][0] == "/a/airfield" and graph["labels"]["indoor_outdoor"][0] == 2


def test_inspect_names_the_outputs_alike_for_an_ir_folder_and_its_onnx(tmp_path, tiny_ckpt):
    """One vocabulary: the public names (logits, prob, the feature blob), the IR layer in parentheses."""
    out = tmp_path / "m"
    assert CliRunner().invoke(main, ["convert", str(tiny_ckpt[0]), "--input-size", "20x28", "--to", "ir,onnx",
                                     "--out-dir", str(out), "-q"]).exit_code == 0
    ir = json.loads(CliRunner().invoke(main, ["inspect", str(out), "--json"]).stdout)
    onnx = json.loads(CliRunner().invoke(main, ["inspect", str(out / "model.onnx"), "--json"]).stdout)
    assert ir["outputs"] == onnx["outputs"] == ["logits", "prob", "fc7"]
    assert ir["output_layers"] == {"logits": "fc8", "prob": "prob", "fc7": "relu7"}
    text = CliRunner().invoke(main, ["inspect", str(out)]).stdout
    assert "outputs: logits (layer fc8), prob, fc7 (layer relu7)" in text
