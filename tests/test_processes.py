"""Real processes: fresh interpreters, a real SIGKILL, and output folders left exactly as they were.

* ``model.keras`` and ``model.onnx`` load and run in a fresh interpreter started without
  the suite's environment (no ``KERAS_BACKEND``, no ``PYTHONPATH``, not in the repo), with
  ``safe_mode=True``, importing nothing of ``crossmodal``; they agree with this process.
* ``crossmodal demo`` exits 1 when a layer diverges (CI's parity step relies on it).
* A baseline killed with SIGKILL mid-pass resumes to the predictions of a clean run.
* A failing ``baseline`` / ``retrieval`` / ``convert`` leaves its output folder as it was:
  every name, size, mtime and SHA-256.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from crossmodal.cli import main
from test_features import convert_tiny, make_cmplaces_tree

REPO = Path(__file__).resolve().parents[1]


def _bare_env(home: Path) -> dict[str, str]:
    """Only what a user's shell would surely have: no KERAS_BACKEND, TF_*, PYTHONPATH, CROSSMODAL_*."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}


# --------------------------------------------------------------------------- fresh interpreter
FRESH = textwrap.dedent('''
    import sys
    import numpy as np
    x = np.load(sys.argv[1])
    import keras
    model = keras.saving.load_model(sys.argv[2], safe_mode=True, compile=False)
    keras_logits = np.asarray(model(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), training=False))
    import onnxruntime as ort
    sess = ort.InferenceSession(sys.argv[3], providers=["CPUExecutionProvider"])
    onnx_logits = sess.run(["logits"], {sess.get_inputs()[0].name: x})[0]
    assert not any(m == "crossmodal" or m.startswith("crossmodal.") for m in sys.modules), "imported crossmodal"
    np.savez(sys.argv[4], keras=keras_logits, onnx=onnx_logits, backend=keras.backend.backend())
''')


@pytest.mark.slow
def test_keras_and_onnx_files_run_in_a_fresh_interpreter(tiny_converted, tmp_path):
    from crossmodal.ir import reference
    from crossmodal.runtime.engine import ALL, open_engine
    out = Path(tiny_converted.artifacts[0].path).parent
    keras_path, onnx_path = out / "model.keras", out / "model.onnx"
    assert keras_path.is_file() and onnx_path.is_file()
    graph = tiny_converted.model.graph
    x = np.random.default_rng(8).standard_normal((4, *graph.input.shape)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "fresh.py").write_text(FRESH)
    proc = subprocess.run([sys.executable, "-I", str(tmp_path / "fresh.py"), str(tmp_path / "x.npy"),
                           str(keras_path), str(onnx_path), str(tmp_path / "out.npz")],
                          cwd=tmp_path, env=_bare_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = np.load(tmp_path / "out.npz")
    assert str(fresh["backend"]) == "tensorflow"
    logits = graph.blobs["logits"]
    here_keras = open_engine("keras", out, ALL, graph=graph, device="cpu").run(x, [logits])[logits]
    here_onnx = open_engine("onnx", out, ALL, graph=graph, device="cpu").run(x, [logits])[logits]
    np.testing.assert_allclose(fresh["keras"], here_keras, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fresh["onnx"], here_onnx, rtol=1e-6, atol=1e-6)
    ref = reference.run(tiny_converted.model, x, [logits])[logits]
    np.testing.assert_allclose(fresh["keras"], ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fresh["onnx"], ref, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- demo's exit code
@pytest.mark.slow
def test_demo_exits_1_when_a_layer_diverges(tmp_path, monkeypatch):
    """The fault verify's own tests inject (conv2_1 transposed H↔W inside the reader's to_ir)."""
    from crossmodal.readers import from_torch
    args = ["demo", "--model", "vgg_tiny", "--layout", "named"]
    good = CliRunner().invoke(main, [*args, "--out-dir", str(tmp_path / "good")])
    assert good.exit_code == 0, good.output
    assert f"crossmodal predict --model {tmp_path / 'good' / 'model'}" in good.stdout  # what to try next
    assert "holds an earlier demo" not in good.stdout
    again = CliRunner().invoke(main, [*args, "--out-dir", str(tmp_path / "good")])
    assert again.exit_code == 0 and f"note: {tmp_path / 'good'} holds an earlier demo: its files are replaced" \
        in again.stdout
    real_to_ir = from_torch.to_ir

    def faulty_to_ir(*a, **k):
        model = real_to_ir(*a, **k)
        model.weights["conv2_1.weight"] = np.ascontiguousarray(model.weights["conv2_1.weight"].transpose(0, 1, 3, 2))
        return model
    monkeypatch.setattr(from_torch, "to_ir", faulty_to_ir)
    bad = CliRunner().invoke(main, [*args, "--out-dir", str(tmp_path / "bad")])
    assert bad.exit_code == 1, bad.output
    report = json.loads((tmp_path / "bad" / "verify.json").read_text())
    assert report["passed"] is False and "conv2_1" in json.dumps(report)


# --------------------------------------------------------------------------- SIGKILL and resume
SLOW_BASELINE = textwrap.dedent('''
    # the CLI with each batch's decoding slowed down, so that a kill lands mid-pass
    import sys, time
    from crossmodal.evaluate import features
    real = features.load_batch
    def slow(*args, **kwargs):
        time.sleep(0.15)
        return real(*args, **kwargs)
    features.load_batch = slow
    from crossmodal.cli import main
    sys.exit(main(sys.argv[1:], standalone_mode=True))
''')


def _cache_done(cache: Path) -> int:
    import h5py
    for path in cache.glob("*.h5"):
        try:
            with h5py.File(path, "r", locking=False) as f:
                return int(f.attrs["done"])
        except Exception:  # being created, or mid-write
            return 0
    return 0


def _predictions(out: Path) -> list[list[str]]:
    with open(out / "predictions.csv", newline="") as f:
        return [list(r.values()) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_a_baseline_killed_mid_pass_resumes_to_the_clean_result(tmp_path, tiny_ckpt, tiny_preprocess):
    model = convert_tiny(tmp_path, tiny_ckpt[0], tiny_preprocess, targets=("ir", "onnx"))
    tree = make_cmplaces_tree(tmp_path / "data", per_category=10)
    data = ["--images", str(tree["list"]), "--list", str(tree["list"] / "val.txt"),
            "--categories", str(tree["list"] / "categories.txt")]
    common = ["baseline", "--model", str(model), "--modality", "sketch", *data, "--batch-size", "2",
              "--workers", "1", "--device", "cpu", "-q"]
    clean = CliRunner().invoke(main, [*common, "--out", str(tmp_path / "clean")])
    assert clean.exit_code == 0, clean.output
    total = json.loads((tmp_path / "clean" / "metrics.json").read_text())["num_images"]

    out, cache = tmp_path / "killed", tmp_path / "cache"
    (tmp_path / "slow.py").write_text(SLOW_BASELINE)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + str(Path(__file__).parent)}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "slow.py"), *common[:], "--out", str(out),
                             "--cache", str(cache)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, done = time.monotonic() + 120, 0
    while time.monotonic() < deadline and proc.poll() is None:
        done = _cache_done(cache)
        if done >= 10:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert 10 <= done < total and not (out / "metrics.json").exists()

    again = CliRunner().invoke(main, [*common, "--out", str(out), "--cache", str(cache), "--json"])
    assert again.exit_code == 0, again.output
    m = json.loads(again.stdout)
    assert m["cache"]["rows_from_cache"] >= done and m["cache"]["rows_computed"] == total - m["cache"]["rows_from_cache"]
    assert _predictions(out) == _predictions(tmp_path / "clean")
    first = json.loads((tmp_path / "clean" / "metrics.json").read_text())
    for key in ("top1", "top5", "num_scored", "mean_class_accuracy"):
        assert m[key] == first[key], key


# --------------------------------------------------------------------------- no partial output
def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: relative path → (kind, size, mtime_ns, sha256)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            out[rel] = ("dir",)
        else:
            st = path.stat()
            out[rel] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def _filled(folder: Path) -> dict[str, tuple]:
    """An output folder from an earlier run (made-up content, nested, with a cache file)."""
    (folder / "cache").mkdir(parents=True)
    (folder / "metrics.json").write_text('{"top1": 0.5}\n')
    (folder / "report.md").write_text("# an earlier run\n")
    (folder / "cache" / "old.h5").write_bytes(os.urandom(64))
    (folder / "model.json").write_text("{}\n")
    past = time.time() - 3600
    for p in folder.rglob("*"):
        os.utime(p, (past, past))
    return snapshot(folder)


@pytest.fixture(scope="module")
def small(tmp_path_factory, tiny_ckpt, tiny_preprocess):
    root = tmp_path_factory.mktemp("partial")
    model = convert_tiny(root, tiny_ckpt[0], tiny_preprocess, targets=("ir", "onnx"))
    return model, make_cmplaces_tree(root / "data")


def test_a_failing_baseline_leaves_the_output_folder_as_it_was(small, tmp_path):
    model, tree = small
    lst = tree["list"]
    out = tmp_path / "out"
    before = _filled(out)
    broken = tmp_path / "broken.txt"  # nothing decodes: found only after the pass over the images
    broken.write_text("images/truncated.jpg 1\nimages/empty.jpg 5\nimages/notes.png 6\n")
    for args in (["--list", str(broken)],                                  # fails after the image pass
                 ["--list", str(lst / "val.txt"), "--features", "fc9"]):   # fails before it
        result = CliRunner().invoke(main, ["baseline", "--model", str(model), "--modality", "sketch",
                                           "--images", str(lst), "--categories", str(lst / "categories.txt"),
                                           *args, "--out", str(out), "-q"])
        assert result.exit_code == 2, result.output
        assert snapshot(out) == before, args
    # two modalities, the second with nothing that decodes: the first one's files are not written
    import shutil
    root = tmp_path / "cmplaces"
    shutil.copytree(lst, root / "natural")
    shutil.copytree(lst, root / "sketch")
    (root / "sketch" / "val.txt").write_text(broken.read_text())
    for target in (out, tmp_path / "new" / "out"):  # an existing folder, and one the run would create
        before = snapshot(out)
        result = CliRunner().invoke(main, ["baseline", "--model", str(model), "--modality", "natural,sketch",
                                           "--data-root", str(root), "--out", str(target), "-q"])
        assert result.exit_code == 2 and "could be decoded" in result.output, result.output
        assert snapshot(out) == before
    assert not (tmp_path / "new").exists()


def test_a_failing_retrieval_leaves_the_output_folder_as_it_was(small, tmp_path):
    model, tree = small
    root = tmp_path / "cmplaces"
    import shutil
    shutil.copytree(tree["list"], root / "sketch")
    out = tmp_path / "out"
    before = _filled(out)
    for args in (["--query", "sketch", "--target", "natural"],       # a modality that is absent
                 ["--query", "sketch", "--target", "sketch", "--show", "3", "--show-query", "nope.jpg"]):
        result = CliRunner().invoke(main, ["retrieval", "--model", str(model), "--data-root", str(root),
                                           *args, "--out", str(out), "--cache", str(tmp_path / "c")])
        assert result.exit_code == 2, result.output
        assert snapshot(out) == before, args
    # found after the feature pass (default cache, <out>/cache): natural decodes to a single category
    shutil.copytree(tree["list"], root / "natural")
    abbey = [l for l in (root / "natural" / "val.txt").read_text().splitlines() if l.startswith("images/abbey_")]
    (root / "natural" / "val.txt").write_text("\n".join(abbey) + "\n")
    result = CliRunner().invoke(main, ["retrieval", "--model", str(model), "--data-root", str(root),
                                       "--query", "sketch", "--target", "natural", "--out", str(out)])
    assert result.exit_code == 2 and "category" in result.output, result.output
    assert snapshot(out) == before


def test_a_failing_convert_leaves_the_output_folder_as_it_was(tiny_ckpt, tmp_path, monkeypatch):
    out = tmp_path / "out"
    before = _filled(out)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(main, ["convert", str(bad), "--out-dir", str(out), "--input-size", "20x28"])
    assert result.exit_code == 2, result.output
    assert snapshot(out) == before
    # a failure late in the job: the last emitter (Keras) raises after the IR and ONNX are written
    from crossmodal.emitters import keras_weights
    from crossmodal.errors import InputError

    def broken(*args, **kwargs):
        raise InputError("injected failure in the Keras emitter")
    monkeypatch.setattr(keras_weights, "save_keras", broken)
    result = CliRunner().invoke(main, ["convert", str(tiny_ckpt[0]), "--out-dir", str(out),
                                       "--input-size", "20x28"])
    assert result.exit_code == 2, result.output
    assert "injected failure" in result.output
    assert snapshot(out) == before
