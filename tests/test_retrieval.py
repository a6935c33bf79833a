"""``crossmodal retrieval`` end to end on generated CMPlaces-shaped modalities and the tiny VGG.

Expected numbers are computed here independently: fc7 from the IR's float64 NumPy
evaluator, AP per query from scikit-learn, P@10 by sorting by hand.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from crossmodal.cli import main
from crossmodal.errors import InputError
from test_features import BROKEN, convert_tiny, make_cmplaces_tree, reference_logits



@pytest.fixture(scope="module")
def sklearn_metrics():
    from helpers import require_module
    return require_module("sklearn.metrics", "scikit-learn (the test extra) is the independent AP")


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_ckpt, tiny_preprocess):
    # no model.keras: a run that asks for --backend keras succeeds only when served from the cache
    return convert_tiny(tmp_path_factory.mktemp("rt-model"), tiny_ckpt[0], tiny_preprocess, targets=("ir", "onnx"))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """natural: label-list layout; clipart: a copy of natural; sketch: other images, class folders."""
    base = tmp_path_factory.mktemp("rt-data")
    natural = make_cmplaces_tree(base / "gen-natural", seed=0)
    sketch = make_cmplaces_tree(base / "gen-sketch", seed=1)
    root = base / "cmplaces"
    shutil.copytree(natural["list"], root / "natural")
    shutil.copytree(natural["list"], root / "clipart")
    shutil.copytree(sketch["folders"], root / "sketch")
    return root


def _good(paths):
    return [p for p in paths if p.name not in BROKEN]


def _natural_files(root):
    lines = (root / "natural" / "val.txt").read_text().split()
    cats = [l.split()[0] for l in (root / "natural" / "categories.txt").read_text().splitlines()]
    pairs = [(root / "natural" / lines[i], cats[int(lines[i + 1])]) for i in range(0, len(lines), 2)]
    return [(p, c) for p, c in pairs if p.exists() and p.name not in BROKEN]


def _sketch_files(root):
    files = sorted((p for p in (root / "sketch").rglob("*") if p.is_file()),
                   key=lambda p: p.relative_to(root / "sketch").as_posix())
    return [(p, p.parent.name) for p in files if p.name not in BROKEN]


def _cosine(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def _run(args, out):
    result = CliRunner().invoke(main, ["retrieval", *args, "--out", str(out), "--device", "cpu", "-q"])
    return result


@pytest.fixture(scope="module")
def cross_run(model, root, tmp_path_factory):
    out = tmp_path_factory.mktemp("rt-out")
    result = _run(["--model", str(model), "--query", "sketch", "--target", "natural", "--data-root", str(root),
                   "--batch-size", "4", "--show", "5", "--show-query", "2", "--json"], out)
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_cross_modal_map_matches_sklearn_on_reference_features(cross_run, model, root, sklearn_metrics):
    out, printed = cross_run
    data = json.loads((out / "retrieval.json").read_text())
    (pair,) = data["pairs"]
    assert printed["pairs"] == data["pairs"]
    queries, targets = _sketch_files(root), _natural_files(root)
    fq = reference_logits(model, [p for p, _ in queries], ("fc7",))["fc7"]
    ft = reference_logits(model, [p for p, _ in targets], ("fc7",))["fc7"]
    qcat = np.array([c for _, c in queries])
    tcat = np.array([c for _, c in targets])
    sim = _cosine(fq, ft)
    aps = [sklearn_metrics.average_precision_score(tcat == c, s) for c, s in zip(qcat, sim)]
    p10 = [np.mean(tcat[np.argsort(-s, kind="stable")[:10]] == c) for c, s in zip(qcat, sim)]
    assert pair["query"] == "sketch" and pair["target"] == "natural" and not pair["within_modal"]
    assert pair["num_queries"] == len(queries) == 28 and pair["num_targets"] == len(targets) == 28
    assert pair["map"] == pytest.approx(np.mean(aps), rel=1e-6)
    assert pair["precision_at_k"] == pytest.approx(np.mean(p10)) and pair["k"] == 10
    # exact chance: R relevant among N, E[AP] = ((R-1)/(N-1)(N-H_N) + H_N)/N, averaged over queries
    n = len(targets)
    h = sum(1 / i for i in range(1, n + 1))
    r = np.array([np.sum(tcat == c) for c in qcat])
    assert pair["chance_map"] == pytest.approx(np.mean(((r - 1) / (n - 1) * (n - h) + h) / n))
    assert pair["chance_precision_at_k"] == pytest.approx(np.mean(r / n))
    per_cat = {c: np.mean([a for a, qc in zip(aps, qcat) if qc == c]) for c in set(qcat)}
    assert pair["map_by_category"] == pytest.approx(per_cat, rel=1e-6)
    assert data["layer"] == "fc7" and data["modalities"]["sketch"]["num_failed"] == 3
    assert data["modalities"]["natural"]["num_missing"] == 1 and data["modalities"]["sketch"]["layout"] == "class-folders"


def test_outputs_for_people(cross_run, root):
    out, data = cross_run
    md = (out / "retrieval.md").read_text()
    assert "| query \\ target | natural (NAT) |" in md and "| sketch (LDR) |" in md
    # a sketch query has no published cross-modal value: "–", and no spatial-text number beside it
    assert "LDR→NAT" in md and "| BL-Individual | – |" in md and "21.1" not in md
    assert "this run" in md and "not a like-for-like" in md
    for name in ("retrieval.png", "neighbours_sketch_to_natural.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 200
    shown = json.loads((out / "retrieval.json").read_text())["neighbours"]
    assert shown == [{"pair": ["sketch", "natural"], "query_image": str(_sketch_files(root)[2][0]),
                      "file": "neighbours_sketch_to_natural.png"}]


def test_all_grid_within_modal_drops_the_query(model, root, tmp_path, sklearn_metrics):
    result = _run(["--model", str(model), "--all", "--data-root", str(root), "--cache", str(tmp_path / "c")],
                  tmp_path / "out")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "retrieval.json").read_text())
    grid = {(p["query"], p["target"]): p for p in data["pairs"]}
    assert data["queries"] == data["targets"] == ["natural", "clipart", "sketch"] and len(grid) == 9
    within = grid[("natural", "natural")]
    assert within["within_modal"] and within["num_targets"] == 27 and within["num_queries"] == 28
    # clipart is a copy of natural: the same sets give the same within-modal numbers
    assert grid[("clipart", "clipart")]["map"] == pytest.approx(within["map"])
    # ... and across the copies each query finds itself first, so mAP exceeds the within-modal one
    assert grid[("natural", "clipart")]["map"] > within["map"]
    files = _natural_files(root)
    fx = reference_logits(model, [p for p, _ in files], ("fc7",))["fc7"]
    cat = np.array([c for _, c in files])
    sim = _cosine(fx, fx)
    aps = []
    for i in range(len(files)):
        keep = np.arange(len(files)) != i
        aps.append(sklearn_metrics.average_precision_score(cat[keep] == cat[i], sim[i, keep]))
    assert within["map"] == pytest.approx(np.mean(aps), rel=1e-6)
    assert "natural → sketch" in result.output


def test_features_come_from_the_baseline_cache(model, root, tmp_path):
    cache = tmp_path / "cache"
    result = CliRunner().invoke(main, ["baseline", "--model", str(model), "--modality", "natural,sketch",
                                       "--data-root", str(root), "--out", str(tmp_path / "bl"), "--cache", str(cache),
                                       "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    # the model has no model.keras: this run can only succeed from the cache
    result = _run(["--model", str(model), "--query", "natural,sketch", "--data-root", str(root),
                   "--cache", str(cache), "--backend", "keras"], tmp_path / "out")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "retrieval.json").read_text())
    assert "cache" in data["backend"]["note"]
    assert all(m["cache"]["rows_computed"] == 0 for m in data["modalities"].values())
    assert len(list(cache.glob("*.h5"))) == 2
    assert len(data["pairs"]) == 4


def test_pool5_is_flattened(model, root, tmp_path):
    result = _run(["--model", str(model), "--query", "natural", "--data-root", str(root), "--layer", "pool5",
                   "--metric", "euclidean", "-k", "5"], tmp_path)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "retrieval.json").read_text())
    assert data["modalities"]["natural"]["dimensions"] == 3 * 5 * 7 and data["metric"] == "euclidean"
    assert data["pairs"][0]["k"] == 5


def test_nearest_targets_rank_as_the_metric_does():
    from crossmodal.evaluate.retrieval.metrics import nearest_targets, retrieval_scores
    rng = np.random.default_rng(3)
    t = rng.integers(0, 3, (40, 4)).astype(np.float32)  # integer features: exact scores, many exact ties
    q = t[7]
    idx, scores = nearest_targets(q, t, 10, metric="euclidean", exclude=7)
    d = ((t.astype(np.float64) - q) ** 2).sum(axis=1)
    d[7] = np.inf
    want = np.lexsort((np.arange(40), d))[:10]  # nearest first, ties by index
    np.testing.assert_array_equal(idx, want)
    assert 7 not in idx and np.all(np.diff(scores) <= 0)
    assert len(set(d[want])) < 10  # the case has ties
    # P@10 of the within-modal metric agrees with the neighbours' labels
    labels = rng.integers(0, 4, 40)
    got = retrieval_scores(t, labels, same_set=True, metric="euclidean", ks=(10,)).precision[10][7]
    assert got == pytest.approx(np.mean(labels[idx] == labels[7]))


# --------------------------------------------------------------------------- bad input
def _fail(args, message, out):
    result = _run(args, out)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (out / "retrieval.json").exists()


def test_absent_query_modality(model, root, tmp_path):
    partial = tmp_path / "data"
    shutil.copytree(root / "natural", partial / "natural")
    _fail(["--model", str(model), "--query", "clipart", "--target", "natural", "--data-root", str(partial)],
          "query modality 'clipart' is absent from the data", tmp_path / "out")


def test_modality_with_one_category(model, root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(root / "sketch" / "bedroom", data / "sketch" / "bedroom")
    _fail(["--model", str(model), "--query", "sketch", "--data-root", str(data)], "needs at least two",
          tmp_path / "out")


def test_bad_options(model, root, tmp_path):
    _fail(["--model", str(model), "--all", "--query", "sketch", "--data-root", str(root)],
          "leave out --query", tmp_path / "o1")
    _fail(["--model", str(model), "--data-root", str(root)], "no query modality given", tmp_path / "o2")
    _fail(["--model", str(model), "--query", "sketch", "--data-root", str(root), "--show", "3",
           "--show-query", "999"], "out of range", tmp_path / "o3")
    _fail(["--model", str(tmp_path / "nowhere"), "--query", "sketch", "--data-root", str(root)],
          "nowhere", tmp_path / "o4")


def _features(modality, labels, dims):
    from crossmodal.data.datasets import Dataset
    from crossmodal.evaluate.retrieval.job import ModalityFeatures
    rng = np.random.default_rng(0)
    ds = Dataset(modality, Path("."), sorted(set(labels)), [], [], "class-folders", "test")
    return ModalityFeatures(modality, ds, [Path(f"{i}.jpg") for i in range(len(labels))], np.array(labels),
                            rng.normal(size=(len(labels), dims)).astype(np.float32))


def test_pair_errors():
    from crossmodal.evaluate.retrieval.job import score_pair
    with pytest.raises(InputError, match="different dimensions \\(8 vs 6\\)"):
        score_pair(_features("sketch", ["a", "b", "a"], 8), _features("natural", ["a", "b"], 6))
    with pytest.raises(InputError, match="share no category"):
        score_pair(_features("sketch", ["a", "b"], 4), _features("natural", ["c", "d"], 4))
    # a query category absent from the targets is excluded and counted, not fatal
    p = score_pair(_features("sketch", ["a", "b", "z"], 4), _features("natural", ["a", "b", "a"], 4))
    assert p["num_excluded_queries"] == 1 and p["excluded_queries_by_category"] == {"z": 1}
    assert p["k"] == 3  # lowered to the ranking length


def test_all_reports_a_broken_modality_instead_of_dropping_it(model, root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(root / "natural", data / "natural")
    shutil.copytree(root / "natural", data / "clipart")
    (data / "clipart" / "categories.txt").unlink()  # there, but its list cannot be read
    _fail(["--model", str(model), "--all", "--data-root", str(data)], "needs a categories file", tmp_path / "out")


def test_an_output_path_that_is_a_file(model, root, tmp_path):
    """Refused before any work, through the CLI (Click) and the library alike; the file is kept."""
    from crossmodal.evaluate.retrieval.job import run_retrieval
    out = tmp_path / "taken"
    out.write_text("not a folder")
    result = _run(["--model", str(model), "--query", "natural", "--data-root", str(root)], out)
    assert result.exit_code == 2 and "is a file" in result.stderr and result.stderr.count("\n") == 1
    with pytest.raises(InputError, match="is a file, not a folder"):
        run_retrieval(model, "natural", data_root=root, out_dir=out, device="cpu")
    assert out.read_text() == "not a folder"
