"""Crafted checkpoints and caffemodels are refused with one line, exit 2 and nothing written, within
seconds and a memory bound: each runs `crossmodal convert` in a fresh process whose peak RSS and
wall time are measured (60 s and 1.5 GiB for every file here; their honest reading is a few KB)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import crafted

LIMIT_S = 60
LIMIT_KIB = int(1.5 * 2**20)  # 1.5 GiB in KiB, as ru_maxrss counts on Linux

# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of a large pytest process
# would report its parent's size; VmHWM is this address space's own peak.
RUNNER = textwrap.dedent("""
    import atexit, re, sys
    out = sys.argv[1]
    def peak():
        status = open("/proc/self/status").read()
        open(out, "w").write(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
    atexit.register(peak)
    from crossmodal.cli import main
    sys.argv = ["crossmodal", *sys.argv[2:]]
    main()
""")


def convert_in_a_process(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, float, int]:
    """`crossmodal convert ARGS --out-dir OUT` in a fresh interpreter → (process, seconds, peak RSS KiB)."""
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    rss = tmp_path / "rss.txt"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(runner), str(rss), "convert", *args, "--out-dir",
                           str(tmp_path / "out"), "--to", "onnx", "-q"],
                          capture_output=True, text=True, timeout=LIMIT_S)
    return proc, time.perf_counter() - start, int(rss.read_text())


def assert_refused(tmp_path: Path, proc, seconds: float, rss_kib: int, *needles: str) -> None:
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
    assert seconds < LIMIT_S and rss_kib < LIMIT_KIB, (seconds, rss_kib / 2**20)


@pytest.mark.slow
@pytest.mark.parametrize("trust", [False, True], ids=["torch-free reader", "torch.load fallback"])
def test_shared_references_nested_40_deep_are_built_once(tmp_path, trust):
    path = crafted.write_zip(tmp_path / "nested.pth", crafted.shared_nesting(40))
    assert path.stat().st_size < 4096
    proc, s, rss = convert_in_a_process(tmp_path, str(path), *(["--trust-pickle"] if trust else []))
    assert_refused(tmp_path, proc, s, rss, "nested.pth")


@pytest.mark.slow
@pytest.mark.parametrize("trust", [False, True], ids=["torch-free reader", "torch.load fallback"])
def test_stride_0_views_are_refused_before_they_are_copied(tmp_path, trust):
    one = crafted.Storage("0", 1)
    obj = {"a": crafted.Tensor(one, (250_000_000,), (0,)), "b": crafted.Tensor(crafted.Storage("1", 1),
                                                                                (250_000_000,), (0,))}
    path = crafted.write_zip(tmp_path / "expand.pth", obj)
    assert path.stat().st_size < 4096
    proc, s, rss = convert_in_a_process(tmp_path, str(path), *(["--trust-pickle"] if trust else []))
    assert_refused(tmp_path, proc, s, rss, "expand.pth", "250,000,000 elements")


@pytest.mark.slow
@pytest.mark.parametrize("trust", [False, True], ids=["torch-free reader", "torch.load fallback"])
def test_a_zip_bomb_is_never_inflated(tmp_path, trust):
    path = crafted.write_zip_bomb(tmp_path / "bomb.pth", 1 << 30)
    assert path.stat().st_size < 8 << 20
    proc, s, rss = convert_in_a_process(tmp_path, str(path), *(["--trust-pickle"] if trust else []))
    # refused before either reader opens the member: torch.load itself would inflate it (1.3 GiB here)
    assert_refused(tmp_path, proc, s, rss, "bomb.pth", "compressed member")
    assert rss < 512 * 1024


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(-2, -2), (2**40, 2**40), (-1, -4)])
def test_caffe_blobs_with_negative_or_overflowing_dims_are_one_line(tmp_path, shape):
    from helpers import require_shared
    proto = require_shared("places365", "deploy_alexnet_places365.prototxt")
    model = crafted.caffemodel_with_blob(tmp_path / "bad.caffemodel", shape, np.ones(4))
    proc, s, rss = convert_in_a_process(tmp_path, str(proto), "--caffemodel", str(model))
    assert_refused(tmp_path, proc, s, rss, "bad.caffemodel")


# --- the same refusals in process (fast) ---------------------------------------------------------
def test_the_reader_refuses_each_crafted_file_in_process(tmp_path):
    from crossmodal.errors import InputError
    from crossmodal.readers import torch_pickle
    from crossmodal.readers.from_torch import load_state_dict

    nested = crafted.write_zip(tmp_path / "nested.pth", crafted.shared_nesting(40))
    start = time.perf_counter()
    with pytest.raises(InputError, match="not a tensor"):  # read at once, then judged: a list is no tensor
        load_state_dict(nested)
    assert time.perf_counter() - start < 5
    wide = crafted.write_zip(tmp_path / "wide.pth", {"w": [[0] * 600_000, [0] * 600_000]})
    with pytest.raises(InputError, match="pickled objects"):
        torch_pickle.load(wide, "zip")
    expand = crafted.write_zip(tmp_path / "x.pth", {"a": crafted.Tensor(crafted.Storage("0", 1), (10**9,), (0,))})
    with pytest.raises(InputError, match="stride-0"):
        torch_pickle.load(expand, "zip")
    s = crafted.Storage("0", 100)
    overlap = crafted.write_zip(tmp_path / "o.pth", {f"t{i}": crafted.Tensor(s, (100,)) for i in range(5)})
    with pytest.raises(InputError, match="more than 4× the elements of their storages"):
        torch_pickle.load(overlap, "zip")
    lying = crafted.write_zip(tmp_path / "lie.pth", {"a": crafted.Tensor(crafted.Storage("0", 4), (4,))},
                              storages={"0": crafted.Storage("0", 4, data=bytes(8))})
    with pytest.raises(InputError, match="declares 8 bytes for 4 float32 values"):
        torch_pickle.load(lying, "zip")
    packed = crafted.write_zip(tmp_path / "z.pth", {"a": crafted.Tensor(crafted.Storage("0", 4), (4,))},
                               compress={"data/0": zipfile.ZIP_DEFLATED})
    with pytest.raises(InputError, match="compressed member"):
        torch_pickle.load(packed, "zip")


def test_an_honest_crafted_file_reads_back(tmp_path):
    """The crafting helpers write what torch.save writes: an honest file reads, shared tensors once."""
    from crossmodal.readers import torch_pickle
    s = crafted.Storage("0", 6, data=np.arange(6, dtype="<f4").tobytes())
    t = crafted.Tensor(s, (2, 3))
    out = torch_pickle.load(crafted.write_zip(tmp_path / "ok.pth", {"a": t, "b": t, "c": [t]}), "zip")
    np.testing.assert_array_equal(out["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert out["a"] is out["b"] is out["c"][0]


def test_caffe_dims_are_refused_in_process(tmp_path):
    from crossmodal.readers import caffe_wire
    for shape in [(-2, -2), (2**40, 2**40), (3, -1)]:
        data = crafted.caffemodel_with_blob(tmp_path / "b.caffemodel", shape, np.ones(4)).read_bytes()
        with pytest.raises(caffe_wire.WireError):
            caffe_wire.decode_caffemodel(bytearray(data))
