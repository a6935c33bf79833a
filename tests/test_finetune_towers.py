"""Modality towers: ``--freeze-shared`` keeps the shared layers below the head as the base has them,
each exported tower folder computes the trained module's logits for its modality, ``--against`` sets a
shared run beside a tower run, and cross-modal retrieval through two towers equals features computed by
hand through each tower's IR."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from crossmodal.cli import main
from finetune_fixtures import FAST, finetune, ft_model, ft_root, ir_tensors  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow  # two runs with ONNX exports (≈ 15 s)


@pytest.fixture(scope="module")
def tower_run(ft_model, ft_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("towers")
    common = ["--model", str(ft_model), "--modality", "sketch,clipart", "--data-root", str(ft_root), "--epochs", "2",
              "--lr", "0.02", *FAST, "--to", "ir,onnx"]
    code, output, shared = finetune(*common, "--out", str(base / "one-network"), "--train-from", "conv2_1")
    assert code == 0, output
    code, output, r = finetune(*common, "--out", str(base / "towers"), "--towers", "per-modality", "--shared-from",
                               "fc6", "--train-from", "conv2_1", "--freeze-shared", "--keep", "last",
                               "--against", str(base / "one-network"))
    assert code == 0, output
    r["_settings"] = r["settings"]
    return base / "towers", r, shared


def test_a_tower_run_exports_one_whole_model_per_modality_and_compares(tower_run, ft_model):
    out, r, shared = tower_run
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("model")) == ["model-clipart", "model-sketch"]
    assert set(r["per_modality"]) == set(shared["per_modality"]) == {"sketch", "clipart"}
    p = r["params"]
    assert set(p["tower_params"]) == {"sketch", "clipart"} and p["tower_params"]["sketch"] == 111
    assert r["against"]["towers"] == shared["towers"] != r["towers"] and set(r["against"]["per_modality"]) == {"sketch", "clipart"}
    md = (out / "finetune.md").read_text()
    assert "## Against" in md and "per tower sketch 111" in md
    for m in ("sketch", "clipart"):
        graph = json.loads((out / f"model-{m}" / "model.json").read_text())
        assert graph["provenance"]["weights_identity"]["tower"] == m
        assert [l["name"] for l in graph["layers"]] == [l["name"] for l in json.loads(
            (ft_model / "model.json").read_text())["layers"]]  # a whole single-input network


def test_freeze_shared_keeps_the_shared_layers_below_the_head_bit_identical(tower_run, ft_model):
    out, r, _ = tower_run
    base = ir_tensors(ft_model)
    sk, cl = ir_tensors(out / "model-sketch"), ir_tensors(out / "model-clipart")
    for name in ("fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias", "conv1_1.weight"):
        assert np.array_equal(base[name], sk[name]) and np.array_equal(base[name], cl[name]), name
    assert np.array_equal(sk["fc8.weight"], cl["fc8.weight"])  # one shared head
    assert not np.array_equal(sk["conv2_1.weight"], base["conv2_1.weight"])
    assert not np.array_equal(sk["conv2_1.weight"], cl["conv2_1.weight"])


def test_each_tower_folder_computes_the_trained_modules_logits_for_its_modality(tower_run):
    import onnxruntime as ort
    import torch
    from crossmodal.data.images import load_batch
    from crossmodal.evaluate.finetune import checkpoint
    from crossmodal.evaluate.finetune.prepare import prepare
    from crossmodal.evaluate.finetune.run import build_net
    from crossmodal.evaluate.finetune.settings import Settings
    out, r, _ = tower_run
    s = Settings(**{**r["_settings"], "device": "cpu", "out_dir": str(out)})
    ctx = prepare(s)
    net, _ = build_net(ctx, s)
    net.load_state_dict(checkpoint.load(out / "checkpoints" / "last.pt")["model"])
    net.eval()
    x, _ = load_batch(ctx.data.val.paths[:4], ctx.graph.preprocess)
    for k, m in enumerate(ctx.data.modalities):
        with torch.no_grad():
            want = net(torch.from_numpy(x), torch.full((len(x),), k)).numpy()
        sess = ort.InferenceSession(str(out / f"model-{m}" / "model.onnx"))
        got = sess.run(["logits"], {sess.get_inputs()[0].name: x})[0]
        assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max()), m


def test_retrieval_through_two_towers_equals_features_computed_by_hand(tower_run, ft_root, tmp_path):
    from crossmodal.data.datasets import resolve_modality
    from crossmodal.data.images import load_batch
    from crossmodal.emitters.to_torch import build_torch, run_layers
    from crossmodal.evaluate.retrieval.metrics import retrieval_scores
    from crossmodal.ir.store import load_ir
    out, r, _ = tower_run
    res = CliRunner().invoke(main, ["retrieval", "--model", str(out), "--query", "sketch", "--target", "clipart",
                                    "--data-root", str(ft_root), "--out", str(tmp_path / "ret"), "--device", "cpu", "-q", "--json"])
    assert res.exit_code == 0, res.output
    pair = json.loads(res.stdout)["pairs"][0]
    feats = {}
    for m in ("sketch", "clipart"):
        ir = load_ir(out / f"model-{m}")
        ds = resolve_modality(m, data_root=ft_root)
        x, failed = load_batch([rec.path for rec in ds.records], ir.graph.preprocess)
        bad = {p for p, _ in failed}
        cats = np.array([rec.category for rec in ds.records if rec.path not in bad])
        f = run_layers(build_torch(ir), x, [ir.graph.resolve("fc7")])[ir.graph.resolve("fc7")]
        feats[m] = (f.reshape(len(f), -1), cats)
    s = retrieval_scores(feats["sketch"][0], feats["sketch"][1], feats["clipart"][0], feats["clipart"][1],
                         same_set=False, metric="cosine", ks=(10,))
    assert pair["map"] == pytest.approx(s.mean_ap, abs=1e-6)
    spec = CliRunner().invoke(main, ["retrieval", "--model-per-modality",
                                     f"sketch={out / 'model-sketch'},clipart={out / 'model-clipart'}", "--query",
                                     "sketch", "--target", "clipart", "--data-root", str(ft_root), "--out",
                                     str(tmp_path / "ret2"), "--device", "cpu", "-q", "--json"])
    assert spec.exit_code == 0, spec.output
    assert json.loads(spec.stdout)["pairs"][0]["map"] == pytest.approx(pair["map"])
