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
        (["convert", str(not_ckpt)], "not a readable PyTorch checkpoint"),
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
        assert not out.exists() or list(out.iterdir()) == [], args
    result = runner.invoke(main, ["convert", ckpt, "--input-size", "20x28", "-o", str(blocker / "sub"), "-q"])
    assert result.exit_code == 2 and "not writable" in result.output


def test_failure_midway_leaves_the_output_folder_as_it_was(tmp_path, tiny_ckpt, monkeypatch):
    from crossmodal.convert import pipeline
    from crossmodal.convert.emitters import to_keras
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    def broken(model):
        raise RuntimeError("disk full")
    monkeypatch.setattr(to_keras, "build_keras", broken)
    with pytest.raises(RuntimeError):
        pipeline.convert(tiny_ckpt[0], out, input_size=(20, 28))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_real_label_files_are_read(tmp_path):
    from helpers import shared_file
    from crossmodal.convert.label_files import read_labels
    labels = read_labels(shared_file("places365", "categories_places365.txt"),
                         shared_file("places365", "IO_places365.txt"), 365)
    assert labels.names[0] == "/a/airfield" and labels.names[-1] == "/z/zen_garden"
    assert labels.indoor_outdoor.count(1) == 160 and labels.indoor_outdoor.count(2) == 205
