"""benchmarks/gpu_check.py --smoke runs on the CPU: the GPU check is known to run before a GPU is lent."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_peak_table_and_override():
    gc = _load()
    assert gc.fp16_peak("NVIDIA H200", None)[0] == pytest.approx(989.4e12)
    assert gc.fp16_peak("NVIDIA H100 PCIe", None)[0] == pytest.approx(756e12)
    assert gc.fp16_peak("Some GPU", 100.0) == (100e12, "--peak-tflops")
    assert gc.fp16_peak(None, None)[0] is None


@pytest.mark.slow
def test_smoke_mode_runs_every_section_on_the_cpu(tmp_path):
    gc = _load()
    report = gc.main(["--smoke", "--device", "cpu", "--out", str(tmp_path), "--work", str(tmp_path / "work"),
                      "--engines", "ort-cuda,torch-eager,tensorflow", "--e2e-engines", "ort-cuda,torch-eager"])
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["smoke"] and data["network"]["name"] == "vgg_tiny3"
    rows = {(r["engine"], r["precision"]): r for r in data["throughput"]}
    assert set(rows) == {(e, p) for e in ("ort-cuda", "torch-eager", "tensorflow") for p in ("fp32", "fp16")}
    for row in rows.values():
        assert "skipped" not in row, row
        assert all(m["images_per_second"] > 0 for m in row["by_batch"].values())
        assert row["runner"]["precision"].startswith(row["precision"])
    assert rows[("ort-cuda", "fp16")]["runner"]["model_file"] == "model.fp16.onnx"
    assert data["decode"]["images"] == 24 and all(v > 0 for v in data["decode"]["cpu_threads"].values())
    e2e = {(r["engine"], r["precision"]): r for r in data["end_to_end"]}
    assert all(r.get("images_per_second", 0) > 0 and r["failed"] == 0 for r in e2e.values()), e2e
    assert data["verify"]["fp32"]["passed"] and data["verify"]["fp16"]["passed"]
    assert data["zoo"][0]["network"] == "vgg_tiny" and data["zoo"][0]["fp16"]["images_per_second"] > 0
    tuned = [r for r in data["finetune"] if "ratio" in r]
    assert {(r["network"], r["train_from"]) for r in tuned} == {("vgg_tiny3", "conv3_1"), ("vgg_tiny3", "conv1_1"),
                                                               ("resnet_tiny", "layer4.0.conv1"), ("resnet_tiny", "conv1")}
    assert all(r["tool_images_per_s"] > 0 and r["bare_images_per_s"] > 0 for r in tuned)
    assert "## fine-tuning" in (tmp_path / "gpu_check.md").read_text()
    assert (tmp_path / "verify_fp16.md").is_file() and "| ort-cuda | fp16 |" in (tmp_path / "gpu_check.md").read_text()
    assert report["seconds"] < 120
