"""``crossmodal probe`` end to end on generated CMPlaces-shaped modalities and the tiny VGG.

Independent checks: the exported model's logits (ONNX Runtime on the images)
equal the trained head applied to the cached features; its top-1 on the test
images, recomputed here from the IR's float64 NumPy evaluator, is the probe's;
``baseline`` and ``verify`` accept the exported folder, and ``baseline`` on it
gives the probe's top-1; the baseline figure in probe.json is what ``baseline``
reports for the base model on the same images.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from crossmodal.cli import main
from test_features import BROKEN, DATA_CATEGORIES, convert_tiny, make_cmplaces_tree, reference_logits

PROBE_FILES = {"probe.json", "probe.md", "few_shot.png", "confusion.png", "per_class.csv"}


def split_lists(folder: Path) -> None:
    """``val.txt`` of a generated tree → alternate lines into ``train.txt`` and ``val.txt``."""
    lines = (folder / "val.txt").read_text().splitlines()
    (folder / "train.txt").write_text("\n".join(lines[0::2]) + "\n")
    (folder / "val.txt").write_text("\n".join(lines[1::2]) + "\n")


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_ckpt, tiny_preprocess):
    return convert_tiny(tmp_path_factory.mktemp("pr-model"), tiny_ckpt[0], tiny_preprocess)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """sketch and natural: label lists with train.txt + val.txt; clipart: class folders, no lists."""
    base = tmp_path_factory.mktemp("pr-data")
    root = base / "cmplaces"
    for name, seed in (("sketch", 0), ("natural", 1)):
        tree = make_cmplaces_tree(base / f"gen-{name}", per_category=8, seed=seed)
        shutil.copytree(tree["list"], root / name)
        split_lists(root / name)
    shutil.copytree(make_cmplaces_tree(base / "gen-clipart", per_category=6, seed=2)["folders"], root / "clipart")
    return root


def _invoke(args):
    return CliRunner().invoke(main, ["probe", *args, "--device", "cpu", "-q"])


@pytest.fixture(scope="module")
def pair_run(model, root, tmp_path_factory):
    out = tmp_path_factory.mktemp("pr-out") / "sketch"
    result = _invoke(["--model", str(model), "--modality", "sketch", "--data-root", str(root), "--out", str(out),
                      "--shots", "1,2,all", "--seeds", "2", "--batch-size", "4", "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def _val_files(root: Path, modality: str):
    lines = (root / modality / "val.txt").read_text().splitlines()
    pairs = [(root / modality / l.rsplit(" ", 1)[0], DATA_CATEGORIES[int(l.rsplit(" ", 1)[1])]) for l in lines]
    return [(p, c) for p, c in pairs if p.exists() and p.name not in BROKEN]


def _tensors(model_dir: Path, *names):
    with h5py.File(model_dir / "weights.h5", "r") as f:
        return [f[n][()] for n in names]


def test_pair_run_writes_every_file_and_field(pair_run, root):
    out, r = pair_run
    assert PROBE_FILES <= {p.name for p in out.iterdir()}
    assert {"model.json", "weights.h5", "model.onnx", "model.keras"} <= {p.name for p in (out / "model").iterdir()}
    for key in ("modality", "train_modality", "layer", "classifier", "C", "C_grid", "num_train", "num_test",
                "num_classes", "top1", "top5", "top1_ci", "mean_class_accuracy", "baseline_top1", "chance_top1",
                "few_shot", "seed"):
        assert key in r, key
    assert r["modality"] == r["train_modality"] == "sketch" and r["layer"] == "fc7" and r["classifier"] == "logistic"
    assert r["C"] in r["C_grid"] and len(r["C_grid"]) >= 3
    assert r["num_classes"] == 7 and r["chance_top1"] == pytest.approx(1 / 7)
    val = _val_files(root, "sketch")
    assert r["num_test"] == len(val)
    lo, hi = r["top1_ci"]
    assert lo <= r["top1"] <= hi
    assert [f["shots"] for f in r["few_shot"]] == [1, 2, "all"]
    assert r["few_shot"][0]["seeds"] == [0, 1] and len(r["few_shot"][0]["top1"]) == 2
    assert r["few_shot"][-1]["top1_mean"] == r["top1"]
    assert len(r["model"]["fingerprint"]) == 64
    files = r["data"]["sketch/train"]["files"]
    assert files["list"]["path"].endswith("train.txt") and len(files["list"]["sha256"]) == 64
    assert r["data"]["sketch/val"]["files"]["list"]["path"].endswith("val.txt")
    # the validation split for the sweep is carved from the training images, never the test images
    assert r["num_val"] >= 7 and r["num_train"] == r["data"]["sketch/train"]["num_decoded"]
    md = (out / "probe.md").read_text()
    assert "chance" in md and "baseline" in md and "| sketch → sketch |" in md and "## Few-shot" in md
    with open(out / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["category"] for row in rows] == DATA_CATEGORIES
    assert sum(int(row["images"]) for row in rows) == r["num_test"]
    assert sum(int(row["top1_correct"]) for row in rows) == round(r["top1"] * r["num_test"])
    for png in ("few_shot.png", "confusion.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG"


def test_exported_model_is_fc8_replaced_and_its_logits_are_the_head_on_the_cached_features(pair_run, model, root):
    out, r = pair_run
    exported = out / "model"
    base_graph = json.loads((model / "model.json").read_text())
    graph = json.loads((exported / "model.json").read_text())
    assert [l["name"] for l in graph["layers"]] == [l["name"] for l in base_graph["layers"]]  # fc8 replaced
    assert graph["labels"]["names"] == DATA_CATEGORIES
    assert r["model"]["fingerprint"] in " ".join(graph["provenance"]["notes"])
    w, b = _tensors(exported, "fc8.weight", "fc8.bias")
    assert w.shape == (7, 16)
    # every other tensor is the base model's
    (w6,), (w6_base,) = _tensors(exported, "fc6.weight"), _tensors(model, "fc6.weight")
    np.testing.assert_array_equal(w6, w6_base)
    # cached fc7 of the test images (the probe's own cache) → head, vs ONNX Runtime on the images
    listed = {str(root / "sketch" / l.rsplit(" ", 1)[0]) for l in (root / "sketch" / "val.txt").read_text().splitlines()}
    fc7 = paths = None
    for cache in (out / "cache").glob("*.h5"):
        with h5py.File(cache, "r") as f:
            if {p.decode() for p in f["paths"][()]} <= listed:
                ok = f["status"][()] == 1
                fc7 = f["features/fc7"][()][ok]
                paths = [Path(p.decode()) for p in f["paths"][()][ok]]
    assert paths is not None and len(paths) == r["num_test"]
    from crossmodal.runtime.engine import open_engine
    from crossmodal.data.images import load_batch
    from crossmodal.ir.store import load_graph
    batch, failed = load_batch(paths, load_graph(exported).preprocess, None)
    assert not failed
    with open_engine("onnx", exported, ["logits"], device="cpu") as onnx:
        logits = onnx.run(batch)["logits"]
    np.testing.assert_allclose(logits, fc7 @ w.T + b, rtol=1e-5, atol=1e-5)
    # and independently of the cache: the float64 evaluator's fc7 of the base model, the same head
    val = _val_files(root, "sketch")
    ref = reference_logits(model, [p for p, _ in val], layers=("fc7",))["fc7"]
    top1 = np.mean(np.argmax(ref @ w.T + b, axis=1) == [DATA_CATEGORIES.index(c) for _, c in val])
    assert r["top1"] == pytest.approx(top1)


def test_baseline_and_verify_accept_the_exported_model(pair_run, model, root, tmp_path):
    out, r = pair_run
    result = CliRunner().invoke(main, ["baseline", "--model", str(out / "model"), "--modality", "sketch",
                                       "--data-root", str(root), "--out", str(tmp_path / "bl"), "--json", "-q"])
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert m["excluded_categories"] == {} and m["num_scored"] == r["num_test"]
    assert m["top1"] == pytest.approx(r["top1"])  # the adjusted network is the probe
    result = CliRunner().invoke(main, ["verify", str(out / "model"), "--random", "2"])
    assert result.exit_code == 0, result.output
    # the probe's baseline figure is the base model's muted baseline on the same test images
    result = CliRunner().invoke(main, ["baseline", "--model", str(model), "--modality", "sketch",
                                       "--data-root", str(root), "--out", str(tmp_path / "bl0"), "--json", "-q",
                                       "--cache", str(out / "cache")])
    assert result.exit_code == 0, result.output
    m0 = json.loads(result.stdout)
    assert r["baseline_top1"] == pytest.approx(m0["top1"]) and r["baseline_num_scored"] == m0["num_scored"]
    assert m0["cache"]["rows_computed"] == 0  # the probe's cache served the baseline


def test_mlp_head_on_pool5_exports_a_cut_network(model, root, pair_run, tmp_path):
    out = tmp_path / "mlp"
    result = _invoke(["--model", str(model), "--modality", "sketch", "--data-root", str(root), "--out", str(out),
                      "--classifier", "mlp", "--layer", "pool5", "--shots", "", "--cache", str(pair_run[0] / "cache"),
                      "--json"])
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert r["classifier"] == "mlp" and r["layer"] == "pool5" and r["C"] is None and r["few_shot"] == []
    assert (out / "training_curves.png").is_file()
    graph = json.loads((out / "model" / "model.json").read_text())
    names = [l["name"] for l in graph["layers"]]
    assert names[-5:] == ["flatten", "probe_fc1", "probe_relu1", "probe_fc2", "prob"] and "fc6" not in names
    w1, b1, w2, b2 = _tensors(out / "model", "probe_fc1.weight", "probe_fc1.bias", "probe_fc2.weight", "probe_fc2.bias")
    assert w1.shape == (256, 105) and w2.shape == (7, 256)
    val = _val_files(root, "sketch")
    pool5 = reference_logits(model, [p for p, _ in val], layers=("pool5",))["pool5"].reshape(len(val), -1)
    head = np.maximum(pool5 @ w1.T + b1, 0) @ w2.T + b2
    from crossmodal.runtime.engine import open_engine
    from crossmodal.data.images import load_batch
    from crossmodal.ir.store import load_graph
    batch, _ = load_batch([p for p, _ in val], load_graph(out / "model").preprocess, None)
    # the cut network's features are what its last dense layer reads (fc7 is gone), an ONNX output too
    assert graph["feature_blob"] == "probe_relu1"
    with open_engine("onnx", out / "model", ["logits", "probe_relu1"], device="cpu") as onnx:
        got = onnx.run(batch)
        np.testing.assert_allclose(got["logits"], head, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got["probe_relu1"], np.maximum(pool5 @ w1.T + b1, 0), rtol=1e-4, atol=1e-4)
    assert r["top1"] == pytest.approx(np.mean(np.argmax(head, 1) == [DATA_CATEGORIES.index(c) for _, c in val]))
    result = CliRunner().invoke(main, ["verify", str(out / "model"), "--random", "2"])
    assert result.exit_code == 0, result.output


def test_cross_validation_on_class_folders(model, root, tmp_path):
    out = tmp_path / "cv"
    result = _invoke(["--model", str(model), "--modality", "clipart", "--data-root", str(root), "--out", str(out),
                      "--cv", "3", "--C", "1", "--no-model", "--json"])
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert r["mode"] == "cv" and r["cv"]["folds"] == 3 and len(r["cv"]["top1"]) == 3
    assert r["C"] == 1.0 and r["num_test"] == r["num_train"] == r["data"]["clipart/val"]["num_decoded"]
    assert r["cv"]["top1_mean"] == pytest.approx(np.mean(r["cv"]["top1"]))
    assert not (out / "model").exists()


@pytest.mark.slow
def test_all_runs_the_train_by_test_grid(model, root, pair_run, tmp_path, monkeypatch):
    titles = _capture_titles(monkeypatch)
    out = tmp_path / "grid"
    result = _invoke(["--model", str(model), "--all", "--data-root", str(root), "--out", str(out), "--shots", "1,all",
                      "--seeds", "1", "--cache", str(pair_run[0] / "cache"), "--json"])
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    # a grid exports no model unless --export-model asks (a full model per training modality: GBs on VGG16)
    assert r["run"]["settings"]["export_model"] is False and not list(out.glob("model*"))
    # clipart has no training list: tested on, not trained on
    assert {(p["train_modality"], p["modality"]) for p in r["pairs"]} == \
        {(t, m) for t in ("natural", "sketch") for m in ("natural", "clipart", "sketch")}
    assert "clipart" in r["not_trained_on"]
    same = next(p for p in r["pairs"] if p["train_modality"] == p["modality"] == "sketch")
    assert same["top1"] == pytest.approx(pair_run[1]["top1"]) and same["C"] == pair_run[1]["C"]
    with Image.open(out / "transfer.png") as im:
        assert im.format == "PNG"
    assert (out / "natural-to-clipart" / "per_class.csv").is_file() and (out / "few_shot.png").is_file()
    assert {name for name, _ in titles} == {"confusion.png", "few_shot.png", "transfer.png"}
    assert all(texts and all(t.startswith(BANNER.upper() + "\n") for t in texts) for _, texts in titles), titles
    assert r["banner"] == BANNER and r["run"]["settings"]["mode"] == "grid"


# --------------------------------------------------------------------------- bad input
def _fail(args, message, out):
    result = CliRunner().invoke(main, ["probe", *args, "--out", str(out), "--device", "cpu", "-q"])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not out.exists()


def test_bad_input_is_one_line_exit_2_and_writes_nothing(model, root, tmp_path):
    out = tmp_path / "out"
    base = ["--model", str(model), "--data-root", str(root)]
    # no training split: only val.txt (the lists found are named) / class folders without lists
    only_val = tmp_path / "only-val"
    shutil.copytree(root / "sketch", only_val / "sketch")
    (only_val / "sketch" / "train.txt").unlink()
    _fail(["--model", str(model), "--data-root", str(only_val), "--modality", "sketch"], "found val.txt", out)
    _fail([*base, "--modality", "clipart"], "has no 'train' list", out)
    _fail([*base, "--modality", "sketch", "--layer", "fc9"], "no layer or blob named 'fc9'", out)
    _fail([*base, "--modality", "clipart", "--cv", "20"], "fewer images than the 20 folds", out)
    # fewer than 2 categories
    one = tmp_path / "one"
    shutil.copytree(root / "sketch", one / "sketch")
    for split in ("train", "val"):
        lines = (one / "sketch" / f"{split}.txt").read_text().splitlines()
        (one / "sketch" / f"{split}.txt").write_text("\n".join(l for l in lines if l.endswith(" 1")) + "\n")
    _fail(["--model", str(model), "--data-root", str(one), "--modality", "sketch"], "needs at least 2", out)
    # train and test categories that do not overlap
    other = tmp_path / "other"
    shutil.copytree(root / "sketch", other / "sketch")
    shutil.copytree(root / "natural", other / "natural")
    (other / "natural" / "categories.txt").write_text("".join(f"zz_{c} {i}\n" for i, c in enumerate(DATA_CATEGORIES)))
    _fail(["--model", str(model), "--data-root", str(other), "--modality", "sketch", "--train-modality", "natural"],
          "do not overlap", out)
    _fail([*base, "--modality", "paintings"], "unknown modality 'paintings'", out)
    _fail([*base, "--modality", "sketch", "--shots", "0"], "--shots takes", out)
    _fail([*base, "--modality", "sketch", "--train-modality", "natural", "--cv", "3"], "leave out --train-modality", out)


def test_help_names_the_options():
    result = CliRunner().invoke(main, ["probe", "--help"])
    assert result.exit_code == 0
    for option in ("--modality", "--train-modality", "--all", "--layer", "--classifier", "--C", "--cv", "--shots",
                   "--seeds", "--cache", "--device", "--train-split", "--test-split"):
        assert option in result.output


def test_packaged_aliases_apply_only_where_the_model_lacks_the_name():
    """Places365 labels keep the packaged renames; a model labelled with the data set's own categories
    (the probe's adjusted network) matches them by name."""
    from crossmodal.data.labels import applicable_aliases, build_mapping, load_aliases
    from test_features import TINY_LABELS
    packaged = load_aliases()
    kept = applicable_aliases(packaged, TINY_LABELS)
    assert kept["temple_east_asia"] == "/t/temple/asia" and "underwater_coral_reef" not in kept
    assert applicable_aliases(packaged, DATA_CATEGORIES) == {}
    mapping = build_mapping(DATA_CATEGORIES, DATA_CATEGORIES, applicable_aliases(packaged, DATA_CATEGORIES))
    assert mapping.target_to_source == tuple(range(len(DATA_CATEGORIES))) and not mapping.shared


# --------------------------------------------------------------------------- what weights produced it
BANNER = "random weights: these numbers mean nothing about Places365"


def _tree(folder: Path) -> dict:
    """Every file and folder under ``folder``: relative path → (size, mtime_ns) (folders: None)."""
    return {p.relative_to(folder).as_posix(): (None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns))
            for p in sorted(folder.rglob("*"))}


def _capture_titles(monkeypatch) -> list[str]:
    """The titles (axes titles and figure suptitles) of every figure the probe saves."""
    from crossmodal.evaluate.probe import reports as probe_reports
    from crossmodal.reports import figures
    titles: list[str] = []
    original = figures.save_png

    def spy(fig, path, *a, **k):
        sup = getattr(fig, "_suptitle", None)
        texts = [ax.get_title() for ax in fig.axes if ax.get_title()] + ([sup.get_text()] if sup else [])
        titles.append((Path(path).name, texts))
        return original(fig, path, *a, **k)
    monkeypatch.setattr(figures, "save_png", spy)
    monkeypatch.setattr(probe_reports, "save_png", spy)
    return titles


def test_the_pair_run_says_what_weights_produced_it(pair_run):
    """Caught: probe.json / probe.md did not say the base model's weights were random."""
    out, r = pair_run
    assert r["banner"] == BANNER and r["weights"]["kind"] == "random"
    assert r["weights"]["description"] == "random weights (seed 1)"
    run = r["run"]
    assert run["command"] == "probe" and run["started_utc"] <= run["finished_utc"]
    assert run["weights"]["kind"] == "random" and run["settings"]["modality"] == "sketch"
    assert run["settings"]["out_dir"] == str(out)
    md = (out / "probe.md").read_text().splitlines()
    assert md[2] == f"> **{BANNER.upper()}**" and "Weights: random weights (seed 1)." in md
    assert any(line.startswith("Run: `probe` started") for line in md)
    assert r["models"]["sketch"]["dir"] == str(out / "model")
    assert not any(p.name.startswith(".crossmodal-staging") for p in out.iterdir())


def test_the_exported_model_is_a_probe_head_on_random_weights(pair_run):
    """inspect OUT/model: the weights are the probe's head on the random base, and the banner stays."""
    out, r = pair_run
    result = CliRunner().invoke(main, ["inspect", str(out / "model")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"*** {BANNER.upper()} ***"
    assert "weights: a probe head (logistic on fc7 trained on sketch) on random weights (seed 1)" in result.output
    data = json.loads(CliRunner().invoke(main, ["inspect", str(out / "model"), "--json"]).output)
    w = data["weights"]
    assert w["kind"] == "probe" and w["base"]["kind"] == "random" and w["base"]["seed"] == 1
    assert w["base_fingerprint"] == r["model"]["fingerprint"] and w["head"] == "logistic"
    onnx = json.loads(CliRunner().invoke(main, ["inspect", str(out / "model" / "model.onnx"), "--json"]).output)
    assert onnx["weights"]["kind"] == "probe" and onnx["weights"]["base"]["kind"] == "random"


def test_every_chart_title_carries_the_banner(model, root, pair_run, tmp_path, monkeypatch):
    titles = _capture_titles(monkeypatch)
    out = tmp_path / "mlp"
    result = CliRunner().invoke(main, ["probe", "--model", str(model), "--modality", "sketch", "--data-root", str(root),
                                       "--out", str(out), "--classifier", "mlp", "--shots", "2,all", "--seeds", "1",
                                       "--no-model", "--cache", str(pair_run[0] / "cache"), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"*** {BANNER.upper()} ***"
    assert "weights: random weights (seed 1)" in result.output
    assert {name for name, _ in titles} == {"confusion.png", "few_shot.png", "training_curves.png"}
    for name, texts in titles:
        assert texts and all(t.startswith(BANNER.upper() + "\n") for t in texts), (name, texts)


def test_titles_have_no_banner_on_weights_of_a_known_origin(tmp_path, monkeypatch):
    """The same report functions on a non-random identity: no banner, the identity still stated."""
    from crossmodal.ir import identity
    from crossmodal.evaluate.probe import reports as probe_reports
    ident = {"kind": "unknown", "sha256": "ab" * 32}
    pair = {"modality": "s", "train_modality": "n", "layer": "fc7", "classifier": "logistic", "top1": 0.5,
            "few_shot": [{"shots": 1, "top1_mean": 0.4, "top1_std": 0.1}], "num_train": 4, "num_classes": 2,
            "chance_top1": 0.5, "baseline_top1": None}
    titles = _capture_titles(monkeypatch)
    title = identity.titled(probe_reports.transfer_title([pair]), ident)
    probe_reports.plot_transfer(tmp_path / "t.png", [pair], title)
    probe_reports.plot_few_shot(tmp_path / "f.png", [pair], identity.titled("few", {"kind": "random", "seed": 3}))
    assert titles == [("t.png", ["Probe top-1 (%), logistic on fc7"]), ("f.png", [f"{BANNER.upper()}\nfew"])]


def test_a_failed_run_leaves_out_exactly_as_it_was(model, root, pair_run, tmp_path):
    """A run that fails after the image pass (every test image broken) writes nothing into --out:
    names, sizes and modification times of everything there (model/ and cache/ included) unchanged."""
    out = tmp_path / "out"
    shutil.copytree(pair_run[0], out, copy_function=shutil.copy2)
    broken = tmp_path / "broken"
    shutil.copytree(root / "sketch", broken / "sketch")
    for line in (broken / "sketch" / "val.txt").read_text().splitlines():
        path = broken / "sketch" / line.rsplit(" ", 1)[0]
        if path.exists():
            path.write_bytes(b"not an image")
    before = _tree(out)
    result = _invoke(["--model", str(model), "--modality", "sketch", "--data-root", str(broken), "--out", str(out),
                      "--shots", "1", "--seeds", "1"])
    assert result.exit_code == 2, result.output
    assert "could be decoded" in result.stderr and "nothing was written" in result.stderr, result.stderr
    assert _tree(out) == before


def test_probe_md_lists_only_the_files_this_run_wrote(pair_run):
    """A logistic single-pair probe writes no transfer.png or training_curves.png: probe.md says so."""
    out, r = pair_run
    files = (out / "probe.md").read_text().split("## Files", 1)[1]
    assert "`transfer.png`" not in files and "`training_curves.png`" not in files
    assert "`confusion.png`" in files and "`per_class.csv`" in files
    assert ("`model/`" in files) == (out / "model").is_dir()
