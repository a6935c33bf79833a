"""Two runs given the same feature cache at the same time: the second waits for the first and
reads what it computed; nobody reads half a file or deletes a file another run is creating."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from test_features import convert_tiny, make_cmplaces_tree

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys, time
import numpy as np
from crossmodal.data.datasets import resolve_modality
from crossmodal.evaluate.features import extract_features
model, data, cache, out, delay = sys.argv[1:]
logs = []
fs = extract_features(model, resolve_modality("natural", data_root=data), "onnx", ["logits", "fc7"],
                      device="cpu", batch_size=2, workers=1, threads=1, cache_dir=cache, log=logs.append,
                      on_batch=lambda done, total: time.sleep(float(delay)))
np.savez(out, logits=fs["logits"], fc7=fs["fc7"])
json.dump({"logs": logs, "computed": fs.stats["computed"], "paths": [str(p) for p in fs.paths]},
          open(out + ".json", "w"))
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_ckpt, tiny_preprocess):
    return convert_tiny(tmp_path_factory.mktemp("cache-model"), tiny_ckpt[0], tiny_preprocess,
                        targets=("ir", "onnx"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("cache-data")
    tree = make_cmplaces_tree(base / "gen", per_category=3)
    shutil.copytree(tree["list"], base / "cm" / "natural")
    return base / "cm"


def _single_run(model, data, cache):
    from crossmodal.data.datasets import resolve_modality
    from crossmodal.evaluate.features import extract_features
    return extract_features(model, resolve_modality("natural", data_root=data), "onnx", ["logits", "fc7"],
                            device="cpu", batch_size=2, workers=1, threads=1, cache_dir=cache)


def test_two_processes_at_once_on_one_cache_agree_with_a_single_run(model, data, tmp_path):
    """Caught: the second run opened the first one's unfinished file and failed on HDF5's lock (or,
    arriving while the file was being created, deleted it as unreadable)."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, str(script), str(model), str(data), str(cache),
                              str(tmp_path / "a"), "0.15"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list(cache.glob("*.h5")) and time.time() < deadline and first.poll() is None:
        time.sleep(0.02)
    second = subprocess.Popen([sys.executable, str(script), str(model), str(data), str(cache),
                               str(tmp_path / "b"), "0"], env=env, stderr=subprocess.PIPE, text=True)
    for proc in (first, second):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert a["computed"] > 0 and b["computed"] == 0, (a, b)  # the second read what the first computed
    assert any("in use by another run" in line and "waiting" in line for line in b["logs"]), b["logs"]
    single = _single_run(model, data, tmp_path / "own-cache")
    for name in "ab":
        got = np.load(tmp_path / f"{name}.npz")
        for layer in ("logits", "fc7"):
            np.testing.assert_array_equal(got[layer], single[layer])
    assert a["paths"] == b["paths"] == [str(p) for p in single.paths]


def test_a_file_being_created_by_another_run_is_not_deleted(model, data, tmp_path):
    """Caught: a run that found a cache file whose header it could not read (another run had just
    created it) deleted it at once, without any lock."""
    from filelock import FileLock

    from crossmodal.evaluate.feature_cache import lock_path
    path = _single_run(model, data, tmp_path / "probe").cache_path  # the name a run will use
    cache = tmp_path / "cache"
    cache.mkdir()
    target = cache / path.name
    target.write_bytes(b"\x89HDF half-written header")  # what another run's fresh file looks like
    holder = FileLock(str(lock_path(target)))
    holder.acquire()
    logs, result = [], {}

    def run():
        from crossmodal.data.datasets import resolve_modality
        from crossmodal.evaluate.features import extract_features
        result["fs"] = extract_features(model, resolve_modality("natural", data_root=data), "onnx",
                                        ["logits", "fc7"], device="cpu", batch_size=2, workers=1, threads=1,
                                        cache_dir=cache, log=logs.append)
    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(1.0)
    try:
        assert worker.is_alive() and target.read_bytes() == b"\x89HDF half-written header"
        assert any("waiting" in line for line in logs), logs
    finally:
        holder.release()
    worker.join(60)
    assert result["fs"].stats["computed"] > 0  # the lock free, the unreadable file is replaced
    np.testing.assert_array_equal(result["fs"]["fc7"], _single_run(model, data, tmp_path / "probe")["fc7"])
