"""Fine-tuning across processes: a run killed with SIGKILL and resumed ends with the weights of an
uninterrupted one; two gloo processes under torchrun (towers, so a step may leave one unused) write one
set of models; a search killed mid-trial resumes without repeating finished trials."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import require_module
from finetune_fixtures import (  # noqa: F401  (fixtures)
    FAST, command, env, ft_model, ft_root, ir_tensors, run,
)

pytestmark = pytest.mark.slow


def _wait_for(predicate, proc, timeout=240.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _checkpoint_epoch(path: Path) -> int:
    from crossmodal.evaluate.finetune import checkpoint
    try:
        ck = checkpoint.load(path)
    except Exception:  # noqa: BLE001 - not there yet
        return -1
    return ck["epoch"] * 1000 + ck["step"]


def test_sigkill_then_resume_equals_an_uninterrupted_run(ft_model, ft_root, tmp_path):
    args = ["--model", str(ft_model), "--modality", "sketch,clipart", "--data-root", str(ft_root),
            "--train-from", "conv1_1", "--epochs", "6", "--lr", "0.02", "--augment", "strong", "--save-every", "2",
            "--keep", "last", "--warmup-epochs", "1", *FAST]
    whole = run(command(*args, "--out", str(tmp_path / "whole")))
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(command(*args, "--out", str(out), "--workers", "2"), env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "checkpoints" / "last.pt"
    reached = _wait_for(lambda: _checkpoint_epoch(last) >= 2002, proc)  # mid-epoch 3 at the latest
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert reached, "the run ended before it could be killed"
    assert not (out / "model").exists() and not (out / "finetune.json").exists()
    resumed = run(command(*args, "--out", str(out), "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    a, b = ir_tensors(tmp_path / "whole" / "model"), ir_tensors(out / "model")
    assert a.keys() == b.keys()
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert worst <= 1e-5, worst
    ha = json.loads((tmp_path / "whole" / "finetune.json").read_text())["history"]
    hb = json.loads((out / "finetune.json").read_text())["history"]
    assert [h["val_top1"] for h in ha] == [h["val_top1"] for h in hb]
    assert [h["train_loss"] for h in ha] == pytest.approx([h["train_loss"] for h in hb], abs=1e-6)


def test_two_gloo_processes_under_torchrun_train_towers_and_write_one_set_of_models(ft_model, ft_root, tmp_path):
    out = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                str(29500 + os.getpid() % 1000)]
    done = run([*torchrun, "-m", "crossmodal", "finetune", "--model", str(ft_model), "--modality", "sketch,clipart",
                "--data-root", str(ft_root), "--out", str(out), "--towers", "per-modality", "--shared-from", "fc6",
                "--train-from", "conv2_1", "--balance", "none", "--epochs", "2", *FAST, "--batch-size", "2",
                "--to", "ir,onnx"])
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads((out / "finetune.json").read_text())
    assert r["world_size"] == 2 and r["global_batch"] == 4
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("model")) == ["model-clipart", "model-sketch"]
    assert not list(out.glob(".crossmodal-staging-*"))
    decoded = sum(v["images"] for v in r["per_modality"].values())
    assert decoded == r["num_val"] - sum(1 for f in r["failed_images"] if f["split"] == "val")  # each image once
    # both ranks trained the same weights: the shared top is one tensor, the towers differ from the base
    base, sk, cl = ir_tensors(ft_model), ir_tensors(out / "model-sketch"), ir_tensors(out / "model-clipart")
    assert np.array_equal(sk["fc7.weight"], cl["fc7.weight"]) and np.array_equal(sk["conv1_1.weight"], base["conv1_1.weight"])
    assert not np.array_equal(sk["conv2_1.weight"], cl["conv2_1.weight"])


def test_a_search_resumes_after_sigkill_without_repeating_finished_trials(ft_model, ft_root, tmp_path):
    optuna = require_module("optuna", "the train extra: crossmodal finetune --search")
    out = tmp_path / "search"
    args = command("--model", str(ft_model), "--modality", "sketch", "--data-root", str(ft_root), "--out", str(out),
                   "--search", "4", "--search-epochs", "3", "--search-sampler", "random", "--search-train-from",
                   "fc6,conv2_1", *FAST)
    e = {**env(), "CROSSMODAL_SEARCH_HEARTBEAT": "1,2"}
    proc = subprocess.Popen(args, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = out / "search.db"

    def finished_trials() -> int:
        if not db.exists():
            return 0
        try:
            study = optuna.load_study(study_name="finetune", storage=f"sqlite:///{db}")
        except Exception:  # noqa: BLE001 - being created
            return 0
        return sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    reached = _wait_for(lambda: finished_trials() >= 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert reached
    before = {t.number: (t.state.name, t.params) for t in
              optuna.load_study(study_name="finetune", storage=f"sqlite:///{db}").trials}
    time.sleep(2.5)  # past the heartbeat's grace period: the killed trial is stale
    resumed = subprocess.run(args, env=e, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    study = optuna.load_study(study_name="finetune", storage=f"sqlite:///{db}")
    after = {t.number: (t.state.name, t.params) for t in study.trials}
    for n, (state, params) in before.items():
        if state in ("COMPLETE", "PRUNED"):
            assert after[n] == (state, params)  # kept, not run again
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 4 and not [t for t in study.trials if t.state.name == "RUNNING"]
    # pruning: a pruned trial was below the median of the trials finished before it, at its last epoch
    for t in done:
        if t.state.name == "PRUNED":
            step = max(t.intermediate_values)
            earlier = [u.intermediate_values[step] for u in done if u.number < t.number and step in u.intermediate_values]
            assert len(earlier) >= 2 and t.intermediate_values[step] < np.median(earlier)
    r = json.loads((out / "finetune.json").read_text())
    assert r["search"]["trials"] >= 4 and "crossmodal finetune" in r["search"]["command"]
    assert (out / "search.csv").is_file() and (out / "search.png").is_file() and (out / "model" / "model.json").is_file()
    best = max((t for t in done if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert r["search"]["best_value"] == pytest.approx(best.value)
