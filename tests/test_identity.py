"""Every result says what weights produced it (model.json's ``weights_identity``), and a run on
random weights says so at the top of every report and chart."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from crossmodal.cli import main
from test_features import convert_tiny, make_cmplaces_tree

BANNER = "random weights: these numbers mean nothing about Places365"


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_ckpt, tiny_preprocess):
    return convert_tiny(tmp_path_factory.mktemp("id-model"), tiny_ckpt[0], tiny_preprocess)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("id-data")
    tree = make_cmplaces_tree(base / "gen", seed=0)
    shutil.copytree(tree["list"], base / "cmplaces" / "natural")
    shutil.copytree(tree["folders"], base / "cmplaces" / "sketch")
    return base / "cmplaces"


def _invoke(args):
    return CliRunner().invoke(main, args)


def test_convert_records_random_weights_and_their_seed(model, tiny_ckpt):
    """Caught: model.json said nothing about the weights; a demo model looked like a real one."""
    prov = json.loads((model / "model.json").read_text())["provenance"]
    from crossmodal.io.hashing import file_sha256
    assert prov["weights_identity"] == {"kind": "random", "seed": 1, "sha256": file_sha256(tiny_ckpt[0])}


def test_inspect_prints_the_identity_and_the_banner(model):
    result = _invoke(["inspect", str(model)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"*** {BANNER.upper()} ***"
    assert "weights: random weights (seed 1)" in result.output
    data = json.loads(_invoke(["inspect", str(model), "--json"]).output)
    assert data["weights"]["kind"] == "random" and data["weights_description"] == "random weights (seed 1)"
    onnx = json.loads(_invoke(["inspect", str(model / "model.onnx"), "--json"]).output)
    assert onnx["weights"]["kind"] == "random"


def test_an_old_ir_without_the_field_reads_as_unknown_with_its_hash(model, tmp_path):
    from crossmodal.ir import identity
    from crossmodal.ir.store import load_graph
    old = tmp_path / "old"
    shutil.copytree(model, old)
    data = json.loads((old / "model.json").read_text())
    sha = data["provenance"]["source_sha256"]
    del data["provenance"]["weights_identity"]
    (old / "model.json").write_text(json.dumps(data))
    g = load_graph(old)
    assert identity.identity(g) == {"kind": "unknown", "sha256": sha}
    assert identity.describe(g) == f"unknown origin (SHA-256 {sha[:16]}…)" and identity.banner(g) is None
    result = _invoke(["inspect", str(old)])
    assert result.exit_code == 0 and "weights: unknown origin" in result.output and "RANDOM" not in result.output


def test_a_file_with_a_cards_hash_is_that_card(tmp_path, monkeypatch, tiny_spec):
    from crossmodal.ir import identity
    from crossmodal.io.hashing import file_sha256
    from crossmodal.models import cards
    from crossmodal.models.synthetic import write_checkpoint
    ckpt = tmp_path / "w.pth"
    write_checkpoint(tiny_spec, ckpt, seed=2)
    (tmp_path / "w.pth.origin.json").unlink()  # no sidecar: only the hash speaks
    sha = file_sha256(ckpt)
    card = cards.Card("tiny-card", "a test card", (cards.CardFile("w.pth", "http://x", sha256=sha,
                                                                    kind="checkpoint"),))
    monkeypatch.setattr(cards, "_load_all", lambda: {"tiny-card": card})
    find = cards.find_card_for_sha256
    assert identity.resolve(ckpt, sha, find) == {"kind": "card", "card": "tiny-card", "match": "sha256",
                                                 "sha256": sha}
    assert identity.resolve(ckpt, "0" * 64, find) == {"kind": "unknown", "sha256": "0" * 64}
    assert identity.resolve(ckpt, sha) == {"kind": "unknown", "sha256": sha}  # no lookup given: no card
    # a sidecar whose hash no longer matches the file is not believed
    identity.write_origin(ckpt, {"kind": "random", "seed": 5}, "f" * 64)
    assert identity.resolve(ckpt, sha, find)["kind"] == "card"


def test_verify_reports_carry_the_identity(model, tmp_path):
    report, md = tmp_path / "v.json", tmp_path / "v.md"
    result = _invoke(["verify", str(model), "--engines", "torch", "--random", "1", "--report", str(report),
                      "--markdown", str(md), "-q"])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["weights"]["kind"] == "random" and data["banner"] == BANNER
    assert md.read_text().splitlines()[2] == f"> **{BANNER.upper()}**"
    assert "Weights: random weights (seed 1)." in md.read_text()
    assert result.output.splitlines()[0] == f"*** {BANNER.upper()} ***"


def test_baseline_and_retrieval_reports_carry_the_identity_and_the_banner(model, root, tmp_path, monkeypatch):
    from crossmodal.evaluate.retrieval import reports as retrieval_reports
    from crossmodal.reports import figures
    titles = []
    for module, name in ((figures, "plot_confusion"), (figures, "plot_per_class")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _o=original, **k: titles.append(k["title"]) or _o(*a, **k))
    out = tmp_path / "bl"
    result = _invoke(["baseline", "--model", str(model), "--modality", "natural,sketch", "--data-root", str(root),
                      "--out", str(out), "--device", "cpu", "--batch-size", "8", "-q"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"*** {BANNER.upper()} ***"
    for sub in ("natural", "sketch"):
        m = json.loads((out / sub / "metrics.json").read_text())
        assert m["banner"] == BANNER and m["weights"]["kind"] == "random"
        assert (out / sub / "report.md").read_text().splitlines()[2] == f"> **{BANNER.upper()}**"
    assert (out / "comparison.md").read_text().splitlines()[2] == f"> **{BANNER.upper()}**"
    assert json.loads((out / "comparison.json").read_text())["banner"] == BANNER
    assert len(titles) == 4 and all(t.startswith(BANNER.upper()) for t in titles)

    grid_titles = []
    original = retrieval_reports.plot_grid

    def spy(path, results):
        grid_titles.append(retrieval_reports._titled("x", results))
        return original(path, results)
    monkeypatch.setattr(retrieval_reports, "plot_grid", spy)
    out = tmp_path / "rt"
    result = _invoke(["retrieval", "--model", str(model), "--query", "sketch", "--target", "natural",
                      "--data-root", str(root), "--out", str(out), "--device", "cpu", "--show", "3", "-q"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"*** {BANNER.upper()} ***"
    r = json.loads((out / "retrieval.json").read_text())
    assert r["banner"] == BANNER and r["weights"]["description"] == "random weights (seed 1)"
    assert (out / "retrieval.md").read_text().splitlines()[2] == f"> **{BANNER.upper()}**"
    assert grid_titles == [f"{BANNER.upper()}\nx"]


def test_a_probe_identity_is_random_exactly_when_its_base_is():
    from crossmodal.ir import identity
    card = {"kind": "card", "card": "vgg16-places365-pytorch", "match": "sha256", "sha256": "ab" * 32}
    probe = {"kind": "probe", "base": card, "head": "mlp", "layer": "pool5", "train_modality": "natural"}
    assert not identity.is_random(probe) and identity.banner(probe) is None
    assert identity.describe(probe) == ("a probe head (mlp on pool5 trained on natural) on model card "
                                        "vgg16-places365-pytorch (SHA-256 matches: abababababababab…)")
    random_base = {**probe, "base": {"kind": "random", "seed": 4}}
    assert identity.banner(random_base) == BANNER
    assert identity.titled("t", random_base) == f"{BANNER.upper()}\nt"
    assert identity.identity({"kind": "probe"})["base"] == {"kind": "unknown", "sha256": ""}
    assert identity.identity({"kind": "tuned"}) == {"kind": "unknown", "sha256": ""}
