"""``crossmodal baseline`` end to end on a generated CMPlaces-shaped set and the tiny VGG.

Expected accuracies are computed here independently: the IR's float64 NumPy
evaluator on the same preprocessed images, and the label mapping written out by
hand (temple_* share /t/temple/asia, kitchenette has no label).
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from crossmodal.cli import main
from test_features import BROKEN, TINY_LABELS, convert_tiny, make_cmplaces_tree, reference_logits

#: data set category → model label, by hand (None: no counterpart)
HAND_MAP = {"abbey": "/a/abbey", "bedroom": "/b/bedroom", "temple_east_asia": "/t/temple/asia",
            "temple_south_asia": "/t/temple/asia", "kitchenette": None, "beach": "/b/beach", "street": "/s/street"}
OUTPUT_FILES = {"metrics.json", "per_class.csv", "predictions.csv", "report.md", "confusion.png", "per_class.png"}


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_ckpt, tiny_preprocess):
    return convert_tiny(tmp_path_factory.mktemp("bl-model"), tiny_ckpt[0], tiny_preprocess)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_cmplaces_tree(tmp_path_factory.mktemp("bl-data"))


@pytest.fixture(scope="module")
def expected(model, tree):
    """Top-1/top-5 and per-image predictions computed without the code under test."""
    files = [(tree["list"] / rel, cat) for rel, cat in tree["files"] if Path(rel).name not in BROKEN]
    logits = reference_logits(model, [p for p, _ in files])["logits"]
    kept = sorted({TINY_LABELS.index(s) for s in HAND_MAP.values() if s})
    hits1, hits5, rows = [], [], {}
    for (path, cat), row in zip(files, logits):
        src = HAND_MAP[cat]
        if src is None:
            continue
        ranked = [kept[i] for i in np.argsort(-row[kept], kind="stable")]
        hits1.append(ranked[0] == TINY_LABELS.index(src))
        hits5.append(TINY_LABELS.index(src) in ranked[:5])
        rows[path.name] = [TINY_LABELS[s] for s in ranked[:5]]
    return {"top1": float(np.mean(hits1)), "top5": float(np.mean(hits5)), "n": len(hits1),
            "hits1": int(np.sum(hits1)), "top_labels": rows}


def _list_args(tree):
    return ["--images", str(tree["list"]), "--list", str(tree["list"] / "val.txt"),
            "--categories", str(tree["list"] / "categories.txt")]


@pytest.fixture(scope="module")
def list_run(model, tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("bl-out") / "sketch"
    result = CliRunner().invoke(main, ["baseline", "--model", str(model), "--modality", "sketch", *_list_args(tree),
                                       "--out", str(out), "--batch-size", "4", "--device", "cpu",
                                       "--features", "fc7,pool5"])
    assert result.exit_code == 0, result.output
    return out, result


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_label_list_run_matches_the_independent_computation(list_run, expected, tree):
    out, result = list_run
    assert OUTPUT_FILES <= {p.name for p in out.iterdir()}
    m = _metrics(out)
    assert m["top1"] == pytest.approx(expected["top1"]) and m["top5"] == pytest.approx(expected["top5"])
    assert m["num_scored"] == expected["n"] == 24
    assert m["num_images"] == 31 and m["num_failed"] == 3 and m["num_decoded"] == 28
    assert {Path(f["path"]).name for f in m["failed_images"]} == set(BROKEN)
    assert m["dataset"]["num_missing"] == 1 and m["missing_files"][0]["path"].endswith("gone_missing.jpg")
    assert m["excluded_categories"] == {"kitchenette": 4}
    # six categories, but a guess names one of five labels (the two temples share /t/temple/asia)
    assert m["num_classes_evaluated"] == 6 and m["chance_top1"] == pytest.approx(1 / 5)
    assert m["chance_num_labels"] == len({s for s in HAND_MAP.values() if s}) == 5
    lo, hi = m["top1_ci95"]
    assert lo <= m["top1"] <= hi
    assert m["shared_labels"]["groups"] == [{"source": "/t/temple/asia",
                                             "targets": ["temple_east_asia", "temple_south_asia"]}]
    assert m["shared_labels"]["images"] == 8
    assert m["label_map"]["muted_sources"] == 5 and m["label_map"]["kept_sources"] == 5
    assert m["backend"] == "onnx" and m["device"] == "cpu" and m["images_per_second"] > 0
    assert len(m["model"]["fingerprint"]) == 64 and m["split"] == "val" and m["modality"] == "sketch"
    assert "pool5" in m["settings"]["features"]
    # the summary line names the numbers and where they are
    assert f"top-1 {100 * expected['top1']:.2f} %" in result.output and "metrics.json" in result.output


def test_predictions_and_per_class_files(list_run, expected):
    out, _ = list_run
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "true"] + [f"pred{i}" for i in range(1, 6)] + [f"prob{i}" for i in range(1, 6)]
    assert len(rows) == expected["n"]
    for row in rows:
        name = Path(row["path"]).name
        labels = expected["top_labels"][name]
        want = ["temple_east_asia|temple_south_asia" if s == "/t/temple/asia" else s.split("/")[-1] for s in labels]
        assert [row[f"pred{i}"] for i in range(1, 6)] == want, name
        probs = [float(row[f"prob{i}"]) for i in range(1, 6)]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-5)
    assert sum(r["pred1"].split("|").count(r["true"]) for r in rows) == expected["hits1"]
    with open(out / "per_class.csv", newline="") as f:
        per_class = {r["category"]: r for r in csv.DictReader(f)}
    assert sum(int(r["images"]) for r in per_class.values()) == expected["n"]
    assert sum(int(r["top1_correct"]) for r in per_class.values()) == expected["hits1"]
    assert per_class["temple_east_asia"]["shares_source_with"] == "temple_south_asia"
    assert "kitchenette" not in per_class
    report = (out / "report.md").read_text()
    # a tiny VGG is not VGG16: no published Places365 accuracy is drawn or quoted for it
    assert "55.24 %" not in report and "publish no validation accuracy for `" in report
    assert "kitchenette (4)" in report and "truncated.jpg" in report
    for png in ("confusion.png", "per_class.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.size[0] > 300


def test_class_folders_give_the_same_numbers(model, tree, list_run, tmp_path):
    out = tmp_path / "folders"
    result = CliRunner().invoke(main, ["baseline", "--model", str(model), "--modality", "clipart", "--images",
                                       str(tree["folders"]), "--out", str(out), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    a, b = _metrics(list_run[0]), _metrics(out)
    assert b["dataset"]["layout"] == "class-folders" and b["dataset"]["num_missing"] == 0
    for key in ("top1", "top5", "top1_unmuted", "num_scored", "num_failed", "mean_class_accuracy",
                "excluded_categories", "num_classes_evaluated"):
        assert a[key] == b[key], key


@pytest.mark.parametrize("backend", ["torch", "keras"])
def test_every_backend_gives_the_same_result(backend, model, tree, list_run, tmp_path):
    from crossmodal.evaluate.baseline.job import run_baseline
    run = run_baseline(model, "sketch", out_dir=tmp_path, images=tree["list"], list_file=tree["list"] / "val.txt",
                       categories=tree["list"] / "categories.txt", backend=backend, device="cpu", batch_size=8)
    m, ref = run.results[0].metrics, _metrics(list_run[0])
    assert m["backend"] == backend and m["device"] == "cpu"
    for key in ("top1", "top5", "top1_unmuted", "top5_unmuted", "num_scored", "mean_class_accuracy"):
        assert m[key] == ref[key], key
    def preds(path):
        with open(path, newline="") as f:
            return [[r["path"]] + [r[f"pred{i}"] for i in range(1, 6)] for r in csv.DictReader(f)]
    assert preds(tmp_path / "predictions.csv") == preds(list_run[0] / "predictions.csv")


def test_unmapped_keep_scores_them_as_errors(model, tree, expected, tmp_path):
    from crossmodal.evaluate.baseline.job import run_baseline
    run = run_baseline(model, "sketch", out_dir=tmp_path, images=tree["list"], list_file=tree["list"] / "val.txt",
                       categories=tree["list"] / "categories.txt", unmapped="keep", device="cpu",
                       cache_dir=tmp_path / "c")
    m = run.results[0].metrics
    assert m["num_scored"] == expected["n"] + 4 and m["kept_unmapped_categories"] == {"kitchenette": 4}
    assert m["top1"] == pytest.approx(expected["hits1"] / (expected["n"] + 4))
    assert m["num_classes_evaluated"] == 7
    # kitchenette's 4 images can never be right: a uniform guess over 5 labels scores 24/28 · 1/5
    assert m["chance_top1"] == pytest.approx(expected["n"] / (expected["n"] + 4) / 5)


def test_several_modalities_write_a_comparison(model, tree, tmp_path):
    root = tmp_path / "cmplaces"
    for name in ("natural", "clipart", "sketch"):
        shutil.copytree(tree["list"], root / name)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["baseline", "--model", str(model), "--modality", "natural,clipart,sketch",
                                       "--data-root", str(root), "--out", str(out), "--limit", "12", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["modality"] for r in data["runs"]] == ["natural", "clipart", "sketch"]
    assert all(r["num_images"] == 12 for r in data["runs"])
    for name in ("natural", "clipart", "sketch"):
        assert OUTPUT_FILES <= {p.name for p in (out / name).iterdir()}
    comparison = json.loads((out / "comparison.json").read_text())
    assert [r["modality"] for r in comparison["runs"]] == ["natural", "clipart", "sketch"]
    assert comparison["runs"][0]["top1"] == data["runs"][0]["top1"]
    assert "| sketch |" in (out / "comparison.md").read_text()
    with Image.open(out / "accuracy_by_modality.png") as im:
        assert im.format == "PNG"
    # same images in each modality: one cache file each, the same arrays
    assert len(list((out / "cache").glob("*.h5"))) == 3


def test_interrupted_run_writes_no_metrics_and_resumes(model, tree, list_run, tmp_path):
    from crossmodal.evaluate.baseline.job import run_baseline
    kwargs = dict(out_dir=tmp_path, images=tree["list"], list_file=tree["list"] / "val.txt",
                  categories=tree["list"] / "categories.txt", device="cpu", batch_size=4)

    def interrupt(modality, done, total):
        if done >= 12:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_baseline(model, "sketch", on_batch=interrupt, **kwargs)
    assert not (tmp_path / "metrics.json").exists()
    m = run_baseline(model, "sketch", **kwargs).results[0].metrics
    assert m["cache"]["rows_from_cache"] == 12 and m["cache"]["rows_computed"] == 31 - 12
    assert m["top1"] == _metrics(list_run[0])["top1"]


# --------------------------------------------------------------------------- bad input
def _fail(args, message, out):
    result = CliRunner().invoke(main, ["baseline", *args, "--out", str(out), "-q"])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (out / "metrics.json").exists()
    return result


def test_bad_input_is_one_line_and_exit_2(model, tree, tmp_path):
    lst = tree["list"]
    base = ["--model", str(model), "--modality", "sketch"]
    out = tmp_path / "out"
    _fail(["--model", str(model), "--modality", "paintings", *_list_args(tree)],
          "unknown modality 'paintings'; known: clipart, natural, sketch", out)
    _fail([*base, "--images", str(tmp_path / "nowhere")], "images root for modality 'sketch' not found", out)
    _fail([*base, "--images", str(lst), "--list", str(lst / "nope.txt"), "--categories", str(lst / "categories.txt")],
          "list file for modality 'sketch' not found", out)
    # a categories file that disagrees with the list's labels
    short = tmp_path / "short.txt"
    short.write_text("abbey 0\nbedroom 1\ntemple_east_asia 2\n")
    _fail([*base, "--images", str(lst), "--list", str(lst / "val.txt"), "--categories", str(short)],
          "categories file and list disagree", out)
    # a class folder the categories file does not know
    _fail([*base, "--images", str(tree["folders"]), "--categories", str(short)], "matches none of the", out)
    # a model without labels
    bare = tmp_path / "bare"
    bare.mkdir()
    graph = json.loads((model / "model.json").read_text())
    graph["labels"] = None
    (bare / "model.json").write_text(json.dumps(graph))
    shutil.copy(model / "weights.h5", bare / "weights.h5")
    _fail(["--model", str(bare), "--modality", "sketch", *_list_args(tree)],
          "convert it again with --labels categories_places365.txt", out)
    # nothing left after filtering: only kitchenette images
    only = tmp_path / "only_kitchenette.txt"
    only.write_text("".join(f"images/kitchenette_{i}.{'jpg' if i % 6 < 3 else 'png'} 4\n" for i in range(4)))
    _fail([*base, "--images", str(lst), "--list", str(only), "--categories", str(lst / "categories.txt")],
          "no images left to score for modality 'sketch'", out)
    # nothing decodes
    broken = tmp_path / "broken.txt"
    broken.write_text("images/truncated.jpg 1\nimages/empty.jpg 5\nimages/notes.png 6\n")
    _fail([*base, "--images", str(lst), "--list", str(broken), "--categories", str(lst / "categories.txt")],
          "could be decoded", out)
    # several modalities with one data set's options; bad device; unknown feature; bad label map
    _fail(["--model", str(model), "--modality", "sketch,clipart", *_list_args(tree)], "give a single", out)
    _fail([*base, *_list_args(tree), "--device", "tpu"], "unknown device 'tpu'", out)
    _fail([*base, *_list_args(tree), "--features", "fc9"], "no layer or blob named 'fc9'", out)
    bad_map = tmp_path / "map.csv"
    bad_map.write_text("target_category,source_label,note\nkitchenette,/k/kitchen_galley,\n")
    _fail([*base, *_list_args(tree), "--label-map", str(bad_map)], "not one of the model's 10 labels", out)
    _fail(["--model", str(tmp_path / "no-model"), "--modality", "sketch", *_list_args(tree)], "no IR here", out)


def test_label_map_adds_a_category(model, tree, tmp_path):
    label_map = tmp_path / "map.csv"
    label_map.write_text("target_category,source_label,note\nkitchenette,/k/kitchen,close enough\n"
                         "kitchenete,/k/kitchen,a typo: names no category of the data set\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["baseline", "--model", str(model), "--modality", "sketch", *_list_args(tree),
                                       "--label-map", str(label_map), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert m["excluded_categories"] == {} and m["num_scored"] == 28
    assert m["label_map"]["aliases_used"]["kitchenette"] == "/k/kitchen"
    assert m["label_map"]["kept_sources"] == 6
    assert m["label_map"]["user_entries_unused"] == ["kitchenete"]  # reported, so a typo is seen


def test_help_names_the_options():
    result = CliRunner().invoke(main, ["baseline", "--help"])
    assert result.exit_code == 0
    for option in ("--modality", "--backend", "--device", "--cache", "--unmapped", "--label-map", "--features",
                   "--limit", "--workers"):
        assert option in result.output


def test_keras_backend_returns_ir_layouts(model):
    """pool5 comes back NCHW and fc7/logits equal ONNX Runtime's, though Keras runs NHWC."""
    from crossmodal.runtime.engine import open_engine
    x = np.random.default_rng(3).standard_normal((5, 3, 20, 28)).astype(np.float32)
    layers = ("logits", "fc7", "pool5")
    with open_engine("keras", model, layers, device="cpu") as k, \
            open_engine("onnx", model, layers, device="cpu") as o:
        a, b = k.run(x), o.run(x)
        assert k.describe()["device"] == "cpu" and "tensorflow" in k.describe()
    for name in layers:
        assert a[name].shape == b[name].shape
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-5)


def test_rerun_is_served_from_the_cache_and_says_so(model, tree, list_run, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(list_run[0] / "cache", out / "cache")
    result = CliRunner().invoke(main, ["baseline", "--model", str(model), "--modality", "sketch", *_list_args(tree),
                                       "--out", str(out), "--backend", "torch", "--json"])
    assert result.exit_code == 0, result.output
    m, first = json.loads(result.stdout), _metrics(list_run[0])
    assert m["features_from_cache"] and m["cache"]["rows_computed"] == 0 and m["cache"]["rows_from_cache"] == 31
    assert m["backend"] == "onnx" and m["device"] == "cpu"  # what filled the cache, not what was asked
    assert m["images_per_second_source"] == "cache" and m["images_per_second"] > 0
    for key in ("top1", "top5", "mean_class_accuracy", "num_scored"):
        assert m[key] == first[key]
    assert "computed earlier" in (out / "report.md").read_text()


def test_relabelled_list_reuses_the_cache_with_its_new_labels(model, tree, list_run, tmp_path):
    """The cache holds features, which do not depend on labels: a changed list is scored afresh."""
    root = tmp_path / "data"
    shutil.copytree(tree["list"], root)
    abbey, kitchenette = "0", "4"  # indices in categories.txt
    lines = [l.rsplit(" ", 1) for l in (root / "val.txt").read_text().splitlines()]
    (root / "val.txt").write_text("\n".join(f"{p} {kitchenette if lab == abbey else lab}" for p, lab in lines))
    shutil.copytree(list_run[0] / "cache", tmp_path / "cache")
    args = ["--images", str(root), "--list", str(root / "val.txt"), "--categories", str(root / "categories.txt")]
    result = CliRunner().invoke(main, ["baseline", "--model", str(model), "--modality", "sketch", *args,
                                       "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert m["excluded_categories"] == {"kitchenette": 8} and m["num_scored"] == 20


def test_fp16_run_states_precision_and_providers(model, tree, list_run, tmp_path):
    from crossmodal.evaluate.baseline.job import run_baseline
    run = run_baseline(model, "sketch", out_dir=tmp_path, images=tree["list"], list_file=tree["list"] / "val.txt",
                       categories=tree["list"] / "categories.txt", device="cpu", precision="fp16",
                       cache_dir=tmp_path / "c")
    m, ref = run.results[0].metrics, _metrics(list_run[0])
    assert m["precision"] == "fp16" and m["providers"] == ["CPUExecutionProvider"]
    assert m["backend_info"]["model_file"] == "model.fp16.onnx" and m["settings"]["precision"] == "fp16"
    assert m["num_scored"] == ref["num_scored"]
    assert "at fp16 (providers: CPUExecutionProvider)" in (tmp_path / "report.md").read_text()


def test_precision_the_backend_cannot_run_is_one_line(model, tree, tmp_path):
    _fail(["--model", str(model), "--modality", "sketch", *_list_args(tree), "--precision", "bf16"],
          "ONNX Runtime is not run at bf16", tmp_path / "out")
    _fail(["--model", str(model), "--modality", "sketch", *_list_args(tree), "--backend", "torch", "--trt"],
          "--trt is for the onnx backend", tmp_path / "out")


def test_a_report_of_few_classes_has_one_sorted_table(list_run):
    """Eight or fewer classes: one table of every class, best first — not a best and a worst table
    that repeat each other."""
    md = next(Path(list_run[0]).rglob("report.md")).read_text()
    assert "## Classes by top-1" in md and "Best and worst" not in md
    table = md.split("## Classes by top-1", 1)[1].split("\n\n", 2)[1].splitlines()[2:]
    tops = [float(row.split("|")[3].strip().rstrip(" %")) for row in table if row.startswith("|")]
    assert tops == sorted(tops, reverse=True) and len(tops) >= 2


def test_the_published_reference_is_only_for_the_network_measured():
    from crossmodal.models.published_accuracy import reference_for
    assert reference_for("vgg16", 365)["top1"] == 0.5524 and reference_for("VGG-Places365", 365)["top5"] == 0.8491
    assert reference_for("CaffeNet-Places365", 365)["top1"] == 0.5317
    assert reference_for("GoogleNet-Places365", 365)["top5"] == 0.8388
    assert reference_for("ResNet-152-places365", 365)["top1"] == 0.5474 == reference_for("resnet152", 365)["top1"]
    for name, classes in (("resnet18", 365), ("wideresnet18", 365), ("densenet161", 365), ("vgg_tiny", 10),
                          ("VGG-ImageNetPlaces365-hybrid", 1365), ("ResNet-152-hybrid1365", 1365)):
        assert reference_for(name, classes) is None, name
