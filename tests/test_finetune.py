"""``crossmodal finetune`` end to end on the tiny VGG and CMPlaces-shaped data.

Independent checks: frozen layers are bit-identical to the base in the exported IR; the exported ONNX
model, run by ONNX Runtime in a fresh process, gives the trained module's logits; ``baseline`` reads the
exported folder and scores what the run reported; the run's unadjusted baseline is what ``baseline``
says of the base model; a colour-separable set is learnt.
"""
from __future__ import annotations

import csv
import json
import shutil
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from crossmodal.cli import main
from finetune_fixtures import (  # noqa: F401  (fixtures)
    FAST, ft_model, ft_root, finetune, ir_tensors, run, separable_root,
)
from test_features import DATA_CATEGORIES, TINY_LABELS


@pytest.fixture(scope="module")
def fc6_run(ft_model, ft_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft-run") / "sketch"
    args = ["--model", str(ft_model), "--modality", "sketch", "--data-root", str(ft_root), "--out", str(out),
            "--train-from", "fc6", "--epochs", "2", "--lr", "0.01", "--augment", "strong", "--augment-preview", *FAST,
            "--to", "ir,onnx", "--workers", "2"]
    code, output, r = finetune(*args)
    assert code == 0, output
    r["_args"] = args
    return out, r


def test_the_run_writes_every_file_and_field(fc6_run):
    out, r = fc6_run
    assert {"model", "checkpoints", "history.csv", "curves.png", "finetune.json", "finetune.md",
            "augment_preview.png"} <= {p.name for p in out.iterdir()}
    assert {"model.json", "weights.h5", "model.onnx"} <= {p.name for p in (out / "model").iterdir()}
    assert {"last.pt", "best.pt"} <= {p.name for p in (out / "checkpoints").iterdir()}
    for key in ("val_top1", "val_top5", "best_epoch", "epochs_run", "baseline_top1", "chance_top1", "epoch0_top1",
                "trainable_params", "frozen_params", "trainable_layers", "world_size", "global_batch", "device",
                "precision", "images_per_s", "run", "weights", "banner", "models"):
        assert key in r, key
    assert r["world_size"] == 1 and r["global_batch"] == 8 and r["epochs_run"] == 2 and r["device"] == "cpu"
    assert r["trainable_layers"] == ["fc6", "fc7", "fc8"] and r["chance_top1"] == pytest.approx(1 / 7)
    assert r["frozen_params"] == 112 + 111 and r["trainable_params"] == 105 * 16 + 16 + 16 * 16 + 16 + 7 * 16 + 7
    assert r["val_top1"] == r["history"][r["best_epoch"] - 1]["val_top1"]
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr", "seconds",
                             "images_per_s"]
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    md = (out / "finetune.md").read_text()
    assert "RANDOM WEIGHTS" in md and "unadjusted network (muted)" in md and "epoch 0" in md
    for png in ("curves.png", "augment_preview.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG"
    assert len(r["failed_images"]) == 3  # the broken files, skipped and listed
    assert "fine-tuned on sketch" in r["models"]["all"]["weights"]


def test_frozen_layers_are_bit_identical_and_the_head_takes_the_categories(fc6_run, ft_model):
    out, r = fc6_run
    base, new = ir_tensors(ft_model), ir_tensors(out / "model")
    for name in ("conv1_1.weight", "conv1_1.bias", "conv2_1.weight", "conv2_1.bias"):
        assert np.array_equal(base[name], new[name]), name
    assert not np.array_equal(base["fc6.weight"], new["fc6.weight"])
    assert new["fc8.weight"].shape == (7, 16)
    graph = json.loads((out / "model" / "model.json").read_text())
    assert graph["labels"]["names"] == DATA_CATEGORIES
    ident = graph["provenance"]["weights_identity"]
    assert ident["kind"] == "finetune" and ident["base"]["kind"] == "random" and ident["train_from"] == "fc6"


def test_the_exported_model_gives_the_trained_modules_logits_in_a_fresh_process(fc6_run, ft_root, tmp_path):
    import torch
    from crossmodal.data.images import load_batch
    from crossmodal.evaluate.finetune import checkpoint
    from crossmodal.evaluate.finetune.prepare import prepare
    from crossmodal.evaluate.finetune.run import build_net
    from crossmodal.evaluate.finetune.settings import Settings
    out, r = fc6_run
    s = Settings(**{**r["settings"], "device": "cpu"})
    ctx = prepare(s)
    net, _ = build_net(ctx, s)
    net.load_state_dict(checkpoint.load(out / "checkpoints" / "best.pt")["model"])
    net.eval()
    x, _ = load_batch(ctx.data.val.paths[:6], ctx.graph.preprocess)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.save(tmp_path / "x.npy", x)
    script = ("import numpy as np, onnxruntime as ort, sys; s = ort.InferenceSession(sys.argv[1]); "
              "np.save(sys.argv[3], s.run(['logits'], {s.get_inputs()[0].name: np.load(sys.argv[2])})[0])")
    done = run([sys.executable, "-c", script, str(out / "model" / "model.onnx"), str(tmp_path / "x.npy"),
                str(tmp_path / "y.npy")])
    assert done.returncode == 0, done.stderr
    got = np.load(tmp_path / "y.npy")
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


def test_baseline_reads_the_exported_model_and_scores_the_runs_figures(fc6_run, ft_model, ft_root, tmp_path):
    out, r = fc6_run
    for model, key in ((out / "model", "val_top1"), (ft_model, "baseline_top1")):
        res = CliRunner().invoke(main, ["baseline", "--model", str(model), "--modality", "sketch", "--data-root",
                                        str(ft_root), "--out", str(tmp_path / key), "--device", "cpu", "-q"])
        assert res.exit_code == 0, res.output
        metrics = json.loads(next((tmp_path / key).rglob("metrics.json")).read_text())
        assert metrics["top1"] == pytest.approx(r[key]), key


@pytest.mark.slow
def test_a_separable_set_is_learnt_and_keep_head_keeps_the_networks_labels(ft_model, separable_root, tmp_path):
    code, output, r = finetune("--model", str(ft_model), "--modality", "sketch", "--data-root", str(separable_root),
                               "--out", str(tmp_path / "sep"), "--train-from", "conv1_1", "--optimizer", "adamw",
                               "--lr", "0.01", "--epochs", "8", "--augment", "none", "--sched", "none", *FAST)
    assert code == 0, output
    assert r["val_top1"] >= 0.9 > r["epoch0_top1"], r["history"]
    code, output, r = finetune("--model", str(ft_model), "--modality", "sketch", "--data-root", str(separable_root),
                               "--out", str(tmp_path / "keep"), "--head", "keep", "--train-from", "fc7",
                               "--epochs", "1", *FAST)
    assert code == 0, output
    graph = json.loads((tmp_path / "keep" / "model" / "model.json").read_text())
    assert graph["labels"]["names"] == TINY_LABELS and r["epoch0_top1"] == pytest.approx(r["baseline_top1"])


def test_two_stages_train_the_head_then_unfreeze(ft_model, ft_root, tmp_path):
    code, output, r = finetune("--model", str(ft_model), "--modality", "sketch", "--data-root", str(ft_root),
                               "--out", str(tmp_path / "two"), "--train-from", "conv2_1", "--unfreeze-at", "1",
                               "--epochs", "2", "--keep", "last", "--lr", "0.05", *FAST)
    assert code == 0, output
    base, new = ir_tensors(ft_model), ir_tensors(tmp_path / "two" / "model")
    assert np.array_equal(base["conv1_1.weight"], new["conv1_1.weight"])
    assert not np.array_equal(base["conv2_1.weight"], new["conv2_1.weight"])
    assert r["trainable_layers"][0] == "conv2_1" and r["exported_epoch"] == 2


def test_resume_of_a_finished_run_may_grow_the_epochs(fc6_run, tmp_path):
    out, r = fc6_run
    copy = tmp_path / "grown"
    shutil.copytree(out, copy)
    args = list(r["_args"])
    args[args.index("--out") + 1] = str(copy)
    args[args.index("--epochs") + 1] = "3"
    code, output, grown = finetune(*args, "--resume")
    assert code == 0, output
    assert [h["epoch"] for h in grown["history"]] == [1, 2, 3]
    assert grown["history"][:2] == r["history"]


def _bad(args, out, *words):
    code, output, _ = finetune(*args)
    lines = [l for l in output.splitlines() if l.startswith("Error:")]
    assert code == 2, output
    assert len(lines) == 1 and all(w in lines[0] for w in words), output
    assert not (out / "model").exists()


def test_bad_input_is_one_line_exit_2_and_no_model(ft_model, ft_root, fc6_run, tmp_path):
    base = ["--model", str(ft_model), "--modality", "sketch", "--data-root", str(ft_root), *FAST]
    out = tmp_path / "bad"
    _bad([*base, "--out", str(out), "--train-from", "fc66"], out, "fc66", "did you mean", "fc6")
    _bad([*base, "--out", str(out), "--head", "keep"], out, "--head keep", "kitchenette")
    _bad([*base, "--out", str(out), "--resume"], out, "no checkpoint")
    _bad([*base, "--out", str(out), "--modality", "clipart,sketch", "--towers", "per-modality",
          "--shared-from", "fc8", "--train-from", "conv1_1"], out, "above the feature layer")
    empty = tmp_path / "empty"
    shutil.copytree(ft_root / "sketch", empty / "sketch")
    (empty / "sketch" / "train.txt").write_text("")
    _bad(["--model", str(ft_model), "--modality", "sketch", "--data-root", str(empty), *FAST, "--out", str(out)],
         out, "train", "no image")
    done, r = fc6_run
    args = list(r["_args"])
    args[args.index("--lr") + 1] = "0.5"
    before = (done / "model" / "weights.h5").stat().st_mtime_ns
    _bad([*args, "--resume"], tmp_path / "unused", "changed settings", "lr: 0.01 → 0.5")
    assert (done / "model" / "weights.h5").stat().st_mtime_ns == before
    assert not out.exists()


def test_a_loss_that_turns_nan_stops_with_exit_1_and_keeps_the_last_good_checkpoint(ft_model, ft_root, tmp_path):
    out = tmp_path / "nan"
    code, output, _ = finetune("--model", str(ft_model), "--modality", "sketch", "--data-root", str(ft_root),
                               "--out", str(out), "--train-from", "conv1_1", "--lr", "1e30", "--epochs", "2",
                               "--sched", "none", *FAST)
    assert code == 1 and "non-finite at epoch 1, step" in output and "last good checkpoint" in output, output
    assert not (out / "model").exists() and not (out / "finetune.json").exists()


def test_running_out_of_memory_says_so_and_suggests_the_batch_size(ft_model, ft_root, tmp_path, monkeypatch):
    from crossmodal.evaluate.finetune import run as run_mod

    def oom(*a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(run_mod, "_train", oom)
    _bad(["--model", str(ft_model), "--modality", "sketch", "--data-root", str(ft_root), *FAST,
          "--out", str(tmp_path / "oom")], tmp_path / "oom", "out of memory", "--batch-size")


def test_help_names_the_options():
    res = CliRunner().invoke(main, ["finetune", "--help"])
    assert res.exit_code == 0
    for opt in ("--train-from", "--unfreeze-at", "--head", "--augment", "--precision", "--resume", "--towers",
                "--search", "--against", "--keep", "--patience"):
        assert opt in res.output


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains_under_autocast(ft_model, ft_root, tmp_path, precision, monkeypatch):
    import torch
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda m, **k: compiled.append(m) or m)
    code, output, r = finetune("--model", str(ft_model), "--modality", "sketch", "--data-root", str(ft_root),
                               "--out", str(tmp_path / precision), "--train-from", "fc6", "--epochs", "1",
                               "--precision", precision, "--compile", "--clip-grad", "1.0", *FAST)
    assert code == 0, output
    assert r["precision"] == precision and np.isfinite(r["history"][0]["train_loss"]) and len(compiled) == 1


def test_tensorboard_scalars_are_written_when_it_is_installed(tmp_path):
    from helpers import require_module
    require_module("tensorboard", "the train extra: TensorBoard scalars of crossmodal finetune")
    from crossmodal.evaluate.finetune.reports import Board
    board = Board(tmp_path / "tb")
    board.epoch({"epoch": 1, "train_loss": 1.5, "val_top1": 0.25, "lr": 0.01})
    board.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert {"train/loss", "val/top1", "lr"} <= set(acc.Tags()["scalars"])
    assert acc.Scalars("val/top1")[0].value == pytest.approx(0.25)
