"""``crossmodal explain`` / ``predict`` and the Python API.

Expectations are computed independently of the code under test: CAM by hand from the
dense weights and the IR's NumPy evaluator, Grad-CAM with Captum's ``LayerGradCam``
(or by hand where the gradient is known in closed form), the demo's indoor/outdoor and
attribute rules re-implemented here as the Places365 demo writes them, and a network
built so that a class's evidence sits in one image quadrant.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from crossmodal.cli import main
from crossmodal.ir.graph import Graph, InputSpec, Layer
from crossmodal.ir.preprocess import Preprocess
from crossmodal.ir.store import save_ir
from helpers import require_module, shared_file
from units_fixtures import conv, dense, save_graph


# --------------------------------------------------------------------------- hand-built graphs
def gap_graph(out: Path, pool_kind: str = "avg_pool2d") -> Path:
    """conv 3→4 → relu → conv 4→6 stride 2 (8 × 8 grid) → relu → global average pooling
    (an ``avg_pool2d`` over the whole map + flatten, or ``global_avg_pool2d`` (N, C)) →
    dense 6→5: a CAM head."""
    rng = np.random.default_rng(7)
    layers = [conv("c1", "input", 3, 4), Layer("r1", "relu", ["c1"]), conv("c2", "r1", 4, 6, stride=2),
              Layer("r2", "relu", ["c2"])]
    if pool_kind == "avg_pool2d":
        layers += [Layer("gap", "avg_pool2d", ["r2"], {"kernel": (8, 8), "stride": (8, 8), "pad": (0, 0)}),
                   Layer("flat", "flatten", ["gap"], {"shape": (6, 1, 1)}), dense("fc", "flat", 6, 5)]
    else:
        layers += [Layer("gap", pool_kind, ["r2"], {}), dense("fc", "gap", 6, 5)]
    w = {"c1.weight": rng.normal(0, .5, (4, 3, 3, 3)), "c1.bias": rng.normal(0, .1, 4),
         "c2.weight": rng.normal(0, .5, (6, 4, 3, 3)), "c2.bias": rng.normal(0, .1, 6),
         "fc.weight": rng.normal(0, 1, (5, 6)), "fc.bias": rng.normal(0, .1, 5)}
    return save_graph(out, layers, w, ["/a/alpha", "/b/beta", "/c/gamma", "/d/delta", "/e/epsilon"])


@pytest.fixture(scope="module", params=["avg_pool2d", "global_avg_pool2d"])
def gap_model(request, tmp_path_factory):
    from crossmodal.ir.kinds import LAYER_KINDS
    assert request.param in LAYER_KINDS, f"the IR lost its {request.param!r} layer kind: CAM needs it"
    return gap_graph(tmp_path_factory.mktemp("gap") / "m", request.param)


@pytest.fixture(scope="module")
def quadrant_model(tmp_path_factory):
    """Red evidence → class "red", green → "green", through a flatten + dense head (no GAP):
    conv 1×1 gives ch0 = R − (G + B)/2, ch1 = G − (R + B)/2 → relu → max-pool 2 (8 × 8) →
    flatten → dense: class c sums channel c over every position."""
    k = np.zeros((2, 3, 1, 1))
    k[0, :, 0, 0], k[1, :, 0, 0] = (1, -.5, -.5), (-.5, 1, -.5)
    fc = np.zeros((2, 2 * 64))
    fc[0, :64], fc[1, 64:] = 1.0, 1.0
    layers = [conv("c1", "input", 3, 2, k=1, pad=0), Layer("r1", "relu", ["c1"]),
              Layer("p1", "max_pool2d", ["r1"], {"kernel": (2, 2), "stride": (2, 2), "pad": (0, 0)}),
              Layer("flat", "flatten", ["p1"], {"shape": (2, 8, 8)}), dense("fc", "flat", 128, 2)]
    w = {"c1.weight": k, "c1.bias": np.zeros(2), "fc.weight": fc, "fc.bias": np.zeros(2)}
    return save_graph(tmp_path_factory.mktemp("quad") / "m", layers, w, ["/r/red", "/g/green"])


def quadrant_image(path: Path, quadrant: str) -> Path:
    """Grey 16 × 16 with a red top-left and a green bottom-right quadrant (or only one of them)."""
    a = np.full((16, 16, 3), 128, np.uint8)
    if "red" in quadrant:
        a[:8, :8] = (230, 20, 20)
    if "green" in quadrant:
        a[8:, 8:] = (20, 230, 20)
    Image.fromarray(a).save(path)
    return path


@pytest.fixture(scope="module")
def places_model(tmp_path_factory):
    """A tiny VGG with 365 outputs converted with the real Places365 labels and IO flags."""
    from crossmodal.convert.pipeline import convert
    from crossmodal.models.synthetic import write_checkpoint
    from crossmodal.models.vgg import create_spec
    cats, io = shared_file("places365", "categories_places365.txt"), shared_file("places365", "IO_places365.txt")
    spec = create_spec("vgg_tiny", num_classes=365, final_name="fc8a")
    tmp = tmp_path_factory.mktemp("places")
    write_checkpoint(spec, tmp / "tiny365.pth", layout="named", seed=3)
    out = tmp / "model"
    convert(tmp / "tiny365.pth", out, labels=cats, io_labels=io, input_size=(20, 28), targets=["ir", "onnx"],
            preprocess=Preprocess(resize=(20, 28), crop=(20, 28), name="tiny"))
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Five small photos with varied content, plus one file that does not decode."""
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("photos")
    for i in range(5):
        base = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(base).resize((56, 40), Image.Resampling.BILINEAR).save(d / f"img{i}.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return d


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# --------------------------------------------------------------------------- CAM detection
def _structure(kinds_and_attrs):
    layers, prev = [], "input"
    for name, kind, attrs in kinds_and_attrs:
        layers.append(Layer(name, kind, [prev], attrs))
        prev = name
    return Graph("g", InputSpec(), layers, [prev], blobs={"logits": "fc"})


def test_the_pooled_head_cam_needs_is_found_from_the_graph_structure():
    from crossmodal.ir.heads import find_pooled_head as find_cam_head
    resnet = _structure([("layer4", "relu", {}), ("gap", "global_avg_pool2d", {}), ("flat", "flatten", {}),
                         ("drop", "dropout", {}), ("fc", "dense", {"out_features": 365})])
    assert find_cam_head(resnet).features == "layer4"
    # an avg_pool2d is a GAP only when its window covers the whole map
    pool = lambda k: _structure([("relu", "relu", {}), ("pool", "avg_pool2d", {"kernel": k, "stride": (1, 1),  # noqa
                                                                                "pad": (0, 0)}),
                                 ("fc", "dense", {})])
    assert find_cam_head(pool((14, 14)), {"relu": (512, 14, 14)}).pool == "pool"
    assert find_cam_head(pool((7, 7)), {"relu": (512, 14, 14)}) is None
    vgg = _structure([("pool5", "max_pool2d", {}), ("flatten", "flatten", {}), ("fc", "dense", {})])
    assert find_cam_head(vgg) is None


# --------------------------------------------------------------------------- numerics
def test_cam_equals_the_hand_computation_from_the_dense_weights(gap_model):
    import crossmodal
    from crossmodal.ir import reference
    from crossmodal.ir.store import load_ir
    model = crossmodal.load_model(gap_model, backend="torch", device="cpu")
    x = np.random.default_rng(1).normal(0, 1, (3, 3, 16, 16)).astype(np.float32)
    method, layer, head = model.explain_setup()
    assert (method, layer) == ("cam", "r2")
    ir = load_ir(gap_model)
    ref = reference.run(ir, x, ["r2", "fc"])
    A, logits = ref["r2"], ref["fc"]
    W = ir.weights["fc.weight"].astype(np.float64)
    top2 = np.argsort(-logits, axis=1)[:, :2]
    hand = np.einsum("bkc,bchw->bkhw", W[top2], A)                           # Σ_k w_ck A^k
    import torch
    from crossmodal.explain.cam import compute_maps
    mod, _ = model.torch_module()
    raw, targets, _ = compute_maps(mod, model.graph, torch.from_numpy(x), layer, "cam", top=2, head=head)
    np.testing.assert_array_equal(targets, top2)
    np.testing.assert_allclose(raw, hand, rtol=1e-4, atol=1e-5)
    # Grad-CAM on a GAP + dense head: ∂y/∂A = w / (h·w) everywhere, so Grad-CAM = ReLU(CAM) / (h·w)
    g, _, _ = compute_maps(mod, model.graph, torch.from_numpy(x), layer, "gradcam", top=2)
    np.testing.assert_allclose(g, np.maximum(hand, 0) / 64, rtol=1e-4, atol=1e-6)
    # Grad-CAM++ with a constant gradient g = w/64: a = g² / (2g² + ΣA·g³), weight = 64·a·ReLU(g)
    gk = W[top2][:, :, :, None, None] / 64.0
    S = A.sum(axis=(2, 3))[:, None, :, None, None]
    denom = 2 * gk ** 2 + S * gk ** 3
    a = np.where(denom != 0, gk ** 2 / np.where(denom != 0, denom, 1), 0)
    wpp = (64 * a * np.maximum(gk, 0))[..., 0, 0]
    hand_pp = np.maximum(np.einsum("bkc,bchw->bkhw", wpp, A), 0)
    gpp, _, _ = compute_maps(mod, model.graph, torch.from_numpy(x), layer, "gradcam++", top=2)
    np.testing.assert_allclose(gpp, hand_pp, rtol=1e-4, atol=1e-6)


def test_gradcam_matches_captum_layer_gradcam(places_model):
    captum = require_module("captum.attr", "Captum is the independent Grad-CAM reference")
    import torch

    import crossmodal
    from crossmodal.explain.cam import compute_maps
    model = crossmodal.load_model(places_model, backend="torch", device="cpu")
    method, layer, _ = model.explain_setup()
    assert (method, layer) == ("gradcam", "relu2_1")      # the last conv after its ReLU
    mod, _ = model.torch_module()
    x = torch.from_numpy(np.random.default_rng(2).normal(0, 1, (4, 3, 20, 28)).astype(np.float32))
    for m in ("gradcam",):
        raw, targets, logits = compute_maps(mod, model.graph, x, layer, m, top=3)
        for j in range(3):
            ref = captum.LayerGradCam(mod, mod.layers[layer]).attribute(
                x, target=torch.from_numpy(targets[:, j]), relu_attributions=True)
            np.testing.assert_allclose(raw[:, j], ref[:, 0].detach().numpy(), rtol=1e-4, atol=1e-7)
    assert np.array_equal(targets[:, 0], logits.argmax(1))


def test_upsampling_is_bilinear_and_normalised_and_zero_stays_zero():
    import torch
    import torch.nn.functional as F

    from crossmodal.explain.cam import upsample_normalise
    m = np.random.default_rng(0).random((2, 1, 7, 7)).astype(np.float32)
    m[1] = 0
    up = upsample_normalise(m, (224, 224))
    assert up.shape == (2, 1, 224, 224) and up.dtype == np.float32
    ref = F.interpolate(torch.from_numpy(m[:1]), size=(224, 224), mode="bilinear", align_corners=False).numpy()
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    np.testing.assert_allclose(up[0], ref[0], atol=1e-6)
    assert up[0].min() == 0 and up[0].max() == 1
    assert not up[1].any()


# --------------------------------------------------------------------------- the planted quadrant
@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_a_planted_quadrant_lights_up(quadrant_model, tmp_path, method):
    img = quadrant_image(tmp_path / "scene.png", "red+green")
    for cls, (rows, cols) in (("red", (slice(0, 8), slice(0, 8))), ("green", (slice(8, 16), slice(8, 16)))):
        out = tmp_path / f"{method}-{cls}"
        r = cli("explain", "--model", quadrant_model, img, "--out", out, "--class", cls, "--method", method,
                "--device", "cpu", "-q")
        assert r.exit_code == 0, r.output
        cam = np.load(out / "cams.npz")["scene"]
        assert cam.shape == (16, 16) and cam.dtype == np.float32
        inside = np.zeros((16, 16), bool)
        inside[rows, cols] = True
        assert cam[inside].mean() > 0.8 and cam[~inside].mean() < 0.1, (cls, cam.round(2))
        assert inside[np.unravel_index(cam.argmax(), cam.shape)]
        assert (out / "overlays" / f"scene__{cls[0]}_{cls}.png").is_file()
        assert "scene" in (out / "explain.md").read_text()


def test_a_class_without_evidence_gives_an_all_zero_map(quadrant_model, tmp_path):
    img = quadrant_image(tmp_path / "onlyred.png", "red")
    r = cli("explain", "--model", quadrant_model, img, "--out", tmp_path / "o", "--class", "green",
            "--device", "cpu", "-q", "--no-overlays")
    assert r.exit_code == 0, r.output
    assert not np.load(tmp_path / "o" / "cams.npz")["onlyred"].any()


# --------------------------------------------------------------------------- explain end to end
def test_explain_folder_top_k_skips_broken_files(places_model, photos, tmp_path):
    out = tmp_path / "maps"
    r = cli("explain", "--model", places_model, photos, "--out", out, "--top", "2", "--device", "cpu",
            "--batch-size", "2")
    assert r.exit_code == 0, r.output
    assert "broken.jpg" in r.output and "1 image(s) skipped" in r.output
    cams = np.load(out / "cams.npz")
    assert sorted(cams.files) == [f"img{i}" for i in range(5)]
    assert all(cams[k].shape == (2, 20, 28) for k in cams.files)
    summary = json.loads((out / "explain.json").read_text())
    assert summary["images"] == 5 and len(summary["failed"]) == 1 and len(summary["maps"]) == 10
    assert len(list((out / "overlays").glob("*.png"))) == 10
    md = (out / "explain.md").read_text()
    assert "broken.jpg" in md and "gradcam" in md
    assert summary["weights"]["kind"] == "random" and "RANDOM WEIGHTS" in md   # the checkpoint's seeded weights


def test_api_predict_features_and_cam(places_model, photos):
    import crossmodal
    from crossmodal.api import softmax
    m = crossmodal.load_model(places_model, backend="onnx", device="cpu")
    files = sorted(photos.glob("img*.png"))
    preds = m.predict([str(f) for f in files], k=3)
    logits = m.logits([str(f) for f in files])
    assert [p["top"][0]["index"] for p in preds] == list(logits.argmax(1))
    np.testing.assert_allclose([p["top"][0]["prob"] for p in preds], softmax(logits).max(1), rtol=1e-6)
    assert m.features(files[0], layer="fc7").shape == (1, 16)
    x = m.preprocess(files[0])
    r = m.cam([x, np.asarray(Image.open(files[1]).convert("RGB"))], target="/a/airfield")
    assert r.maps.shape == (2, 1, 20, 28) and list(r.targets[:, 0]) == [m.labels.index("/a/airfield")] * 2
    with pytest.raises(Exception, match="does not decode|cannot decode|not an image"):
        m.predict(str(photos / "broken.jpg"))


# --------------------------------------------------------------------------- predict
def _demo_rules(logits, fc7, W, io_path):
    """The Places365 unified demo, as written there: IO labels − 1 (0 indoor), mean of the
    top-10 < 0.5 → indoor; attributes: argsort(W·features) read from the end, 9 of them."""
    labels_io = np.array([int(line.rstrip().split()[-1]) - 1 for line in open(io_path)])
    out = []
    for row, f in zip(logits, fc7):
        h = np.exp(row - row.max())
        h /= h.sum()
        idx = np.argsort(-h)
        io = "indoor" if np.mean(labels_io[idx[:10]]) < 0.5 else "outdoor"
        idx_a = np.argsort(W.dot(f))
        out.append((idx[:5], h[idx[:5]], io, [idx_a[i] for i in range(-1, -10, -1)]))
    return out


def test_predict_follows_the_demo_rules(places_model, photos, tmp_path):
    from crossmodal.ir import reference
    from crossmodal.ir.store import load_ir
    from crossmodal.data.images import load_image
    names = shared_file("places365", "labels_sunattribute.txt")
    W = np.random.default_rng(5).normal(0, 1, (102, 16)).astype(np.float32)
    np.save(tmp_path / "W.npy", W)
    r = cli("predict", "--model", places_model, photos, "--json", "--attributes", tmp_path / "W.npy",
            "--attribute-names", names, "--device", "cpu", "--batch-size", "2")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [Path(d["path"]).name for d in data] == [f"img{i}.png" for i in range(5)]
    ir = load_ir(places_model)
    x = np.stack([load_image(photos / f"img{i}.png", ir.graph.preprocess) for i in range(5)])
    ref = reference.run(ir, x, ["fc8a", "relu7"])
    attr_names = [ln.strip() for ln in open(names) if ln.strip()]
    for d, (idx, probs, io, attrs) in zip(data, _demo_rules(ref["fc8a"], ref["relu7"], W,
                                                              shared_file("places365", "IO_places365.txt"))):
        assert [t["index"] for t in d["top"]] == list(idx)
        assert [t["label"] for t in d["top"]] == [ir.graph.labels.names[i] for i in idx]
        np.testing.assert_allclose([t["prob"] for t in d["top"]], probs, rtol=1e-4)
        assert d["io"] == io
        assert [a["label"] for a in d["attributes"]] == [attr_names[i] for i in attrs]
    # the human output prints the rule and lists the skipped file
    r = cli("predict", "--model", places_model, photos, "--device", "cpu", "-q", "--cam", "--out", tmp_path / "cam")
    assert r.exit_code == 0, r.output
    assert "< 1.5 → indoor" in r.output and "broken.jpg" in r.output and "environment:" in r.output
    assert sorted(np.load(tmp_path / "cam" / "cams.npz").files) == [f"img{i}" for i in range(5)]
    maps = json.loads((tmp_path / "cam" / "explain.json").read_text())["maps"]
    top1 = {Path(m["path"]).name: m["label"] for m in maps}
    assert top1 == {Path(d["path"]).name: d["top"][0]["label"] for d in data}


# --------------------------------------------------------------------------- bad input
def _refused(result, *needles):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_input_is_one_line_exit_2_and_writes_nothing(places_model, photos, tmp_path):
    out = tmp_path / "never"
    _refused(cli("explain", "--model", places_model, photos, "--out", out, "--class", "bedrom"),
             "no class 'bedrom'", "/b/bedroom")
    _refused(cli("explain", "--model", places_model, photos, "--out", out, "--layer", "fc7"),
             "no spatial map", "relu2_1")
    _refused(cli("explain", "--model", places_model, photos, "--out", out, "--method", "cam"), "global average")
    broken = tmp_path / "only-broken"
    broken.mkdir()
    (broken / "x.jpg").write_bytes(b"nope")
    _refused(cli("explain", "--model", places_model, broken, "--out", out, "-q"), "none of the 1 images decoded")
    assert not out.exists() or not any(out.rglob("*"))
    np.save(tmp_path / "W.npy", np.zeros((102, 512), np.float32))
    _refused(cli("predict", "--model", places_model, photos, "--attributes", tmp_path / "W.npy",
                 "--attribute-names", shared_file("places365", "labels_sunattribute.txt")),
             "102 × 512", "16 values")
    _refused(cli("predict", "--model", places_model, tmp_path / "missing.jpg"), "no such file")


# --------------------------------------------------------------------------- --from-run
def _predictions(folder: Path, modality: str, rows):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"modality": modality}))
    lines = ["path,true,pred1,pred2,pred3,pred4,pred5,prob1,prob2,prob3,prob4,prob5"]
    lines += [f"{p},{t},{pred},,,,,{prob},,,," for p, t, pred, prob in rows]
    (folder / "predictions.csv").write_text("\n".join(lines) + "\n")


def test_from_run_renders_modalities_per_category(places_model, photos, tmp_path):
    img = [str(photos / f"img{i}.png") for i in range(5)]
    run = tmp_path / "run"
    _predictions(run / "sketch", "sketch", [(img[0], "bedroom", "bedroom", 0.9), (img[1], "bedroom", "bedroom", 0.4),
                                            (img[2], "bedroom", "kitchen", 0.7), (img[3], "kitchen", "bedroom", 0.6)])
    _predictions(run / "natural", "natural", [(img[4], "bedroom", "bedroom", 0.8),
                                              (str(photos / "broken.jpg"), "kitchen", "kitchen", 0.5)])
    out = tmp_path / "maps"
    r = cli("explain", "--model", places_model, "--from-run", run, "--per-class", "1", "--out", out,
            "--device", "cpu", "-q")
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "explain.json").read_text())
    assert summary["modalities"] == ["natural", "sketch"]          # natural before sketch, whatever the folder order
    got = {(m["modality"], m["category"], m["kind"]): (Path(m["path"]).name, m["map_class"]) for m in summary["maps"]}
    assert got == {("sketch", "bedroom", "correct"): ("img0.png", "/b/bedroom"),     # the more confident one
                   ("sketch", "bedroom", "wrong"): ("img2.png", "/k/kitchen"),
                   ("sketch", "kitchen", "wrong"): ("img3.png", "/b/bedroom"),
                   ("natural", "bedroom", "correct"): ("img4.png", "/b/bedroom")}
    assert len(summary["failed"]) == 1 and "broken.jpg" in summary["failed"][0]["path"]
    cams = np.load(out / "cams.npz")
    assert sorted(cams.files) == ["natural/img4", "sketch/img0", "sketch/img2", "sketch/img3"]
    for name in ("categories/bedroom.png", "categories/kitchen.png", "mean_maps.png", "explain.md"):
        assert (out / name).is_file(), name
    assert summary["mean_map_images"] == {"natural": 1, "sketch": 3}
    _refused(cli("explain", "--model", places_model, "--from-run", run, "--out", out, "--categories", "bedrom"),
             "close matches: bedroom")
    _refused(cli("explain", "--model", places_model, "--from-run", tmp_path, "--out", out), "no predictions.csv")


def test_a_failed_run_leaves_the_earlier_output_as_it_was(quadrant_model, tmp_path):
    out = tmp_path / "out"
    good = quadrant_image(tmp_path / "scene.png", "red")
    assert cli("explain", "--model", quadrant_model, good, "--out", out, "--device", "cpu", "-q").exit_code == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png")
    r = cli("explain", "--model", quadrant_model, bad, "--out", out, "--device", "cpu", "-q")
    _refused(r, "none of the 1 images decoded", "nothing was written")
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# --------------------------------------------------------------------------- what weights produced it
BANNER = "random weights: these numbers mean nothing about Places365"


def _tree(folder: Path) -> dict:
    """Every file and folder under ``folder``: relative path → (size, mtime_ns) (folders: None)."""
    return {p.relative_to(folder).as_posix(): (None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns))
            for p in sorted(folder.rglob("*"))}


def test_explain_says_what_weights_produced_it(places_model, photos, tmp_path, monkeypatch):
    """Caught: explain.json had no run block nor the weights' description; overlays had no banner."""
    from crossmodal.explain import render
    titles = []
    original = render.overlay_png
    monkeypatch.setattr(render, "overlay_png", lambda path, image, cam, title: titles.append(title)
                        or original(path, image, cam, title))
    out = tmp_path / "maps"
    r = cli("explain", "--model", places_model, photos, "--out", out, "--device", "cpu", "-q")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == f"*** {BANNER.upper()} ***"
    assert "weights: random weights (seed" in r.stdout
    s = json.loads((out / "explain.json").read_text())
    assert s["banner"] == BANNER and s["weights"]["description"].startswith("random weights (seed")
    assert s["run"]["command"] == "explain" and s["run"]["started_utc"] <= s["run"]["finished_utc"]
    assert s["run"]["weights"]["kind"] == "random" and s["run"]["settings"]["top"] == 1
    md = (out / "explain.md").read_text().splitlines()
    assert md[2] == f"> **{BANNER.upper()}**" and any(line.startswith("Run: `explain` started") for line in md)
    assert len(titles) == 5 and all(t.startswith(BANNER.upper() + "\n") for t in titles)
    from PIL import Image
    with Image.open(next((out / "overlays").glob("*.png"))) as im:   # the two-line title fits above the map
        assert im.height - 20 * (224 // 28) >= 2 * 17                  # the 20 × 28 crop enlarged 8 ×


def test_from_run_figures_and_report_carry_the_banner(places_model, photos, tmp_path, monkeypatch):
    from crossmodal.explain import render
    titles = []
    original = render.save_png

    def spy(fig, path, *a, **k):
        sup = getattr(fig, "_suptitle", None)
        titles.append((Path(path).name, sup.get_text() if sup else ""))
        return original(fig, path, *a, **k)
    monkeypatch.setattr(render, "save_png", spy)
    img = [str(photos / f"img{i}.png") for i in range(3)]
    run = tmp_path / "run"
    _predictions(run / "sketch", "sketch", [(img[0], "bedroom", "bedroom", 0.9), (img[1], "bedroom", "kitchen", 0.4),
                                            (img[2], "kitchen", "kitchen", 0.7)])
    out = tmp_path / "maps"
    r = cli("explain", "--model", places_model, "--from-run", run, "--per-class", "1", "--out", out,
            "--device", "cpu", "-q")
    assert r.exit_code == 0, r.output
    assert sorted(name for name, _ in titles) == ["bedroom.png", "kitchen.png", "mean_maps.png"]
    assert all(t.startswith(BANNER.upper() + "\n") for _, t in titles), titles
    s = json.loads((out / "explain.json").read_text())
    assert s["baseline_run"] == str(run) and s["run"]["command"] == "explain --from-run"
    assert s["banner"] == BANNER and s["weights"]["kind"] == "random"
    md = (out / "explain.md").read_text().splitlines()
    assert md[2] == f"> **{BANNER.upper()}**" and any(line.startswith("Run: `explain --from-run`") for line in md)
    # a failed --from-run (every selected image unreadable) leaves the folder exactly as it was
    before = _tree(out)
    gone = tmp_path / "gone"
    _predictions(gone / "sketch", "sketch", [(str(tmp_path / "missing.png"), "bedroom", "bedroom", 0.9)])
    r = cli("explain", "--model", places_model, "--from-run", gone, "--per-class", "1", "--out", out,
            "--device", "cpu", "-q")
    _refused(r, "could be read", "nothing was written")
    assert _tree(out) == before


def test_predict_json_carries_the_weights_in_each_object(places_model, photos, tmp_path):
    r = cli("predict", "--model", places_model, photos, "--json", "--device", "cpu", "-q")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)                                      # still a list, one object per image
    assert isinstance(data, list) and len(data) == 5
    for d in data:
        assert d["banner"] == BANNER and d["weights"]["kind"] == "random"
        assert d["weights"]["description"].startswith("random weights (seed")
    assert r.stderr.splitlines()[0] == f"*** {BANNER.upper()} ***"  # the console warning, stdout left to JSON
    r = cli("predict", "--model", places_model, photos, "--device", "cpu", "-q")
    assert r.exit_code == 0 and r.stderr.count(BANNER.upper()) == 1


def test_a_failed_explain_leaves_names_sizes_and_mtimes_as_they_were(quadrant_model, tmp_path):
    out = tmp_path / "out"
    good = quadrant_image(tmp_path / "scene.png", "red")
    assert cli("explain", "--model", quadrant_model, good, "--out", out, "--device", "cpu", "-q").exit_code == 0
    before = _tree(out)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png")
    _refused(cli("explain", "--model", quadrant_model, bad, "--out", out, "--device", "cpu", "-q"),
             "nothing was written")
    assert _tree(out) == before


def test_cam_on_the_zoos_resnet_equals_the_hand_computation(tmp_path):
    """A ResNet of the zoo (tiny variant, the real builder): its head is found from the graph
    (layer4 → avgpool → fc) and CAM is Σ_k w_ck A^k of layer4's output, from the dense weights."""
    import torch

    import crossmodal
    from crossmodal.ir import reference
    from crossmodal.ir.graph import IRModel, Labels
    from crossmodal.ir.preprocess import Preprocess
    from crossmodal.explain.cam import compute_maps
    from crossmodal.models import resnet
    from crossmodal.models.synthetic_zoo import random_ir_weights

    spec = resnet.create_spec("resnet_tiny")
    graph = resnet.build_graph(spec, Preprocess(resize=(64, 64), crop=(64, 64), name="tiny"))
    graph.labels = Labels([f"/c/class_{i}" for i in range(spec.num_classes)])
    ir = IRModel(graph, random_ir_weights("resnet", spec, seed=3))
    out = tmp_path / "resnet"
    out.mkdir()
    save_ir(ir, out)
    model = crossmodal.load_model(out, backend="torch", device="cpu")
    method, layer, head = model.explain_setup()
    fc = graph.resolve("logits")
    assert method == "cam" and head is not None and graph.layer(fc).kind == "dense"
    x = np.random.default_rng(2).normal(0, 1, (2, 3, 64, 64)).astype(np.float32)
    ref = reference.run(ir, x, [layer, fc])
    A, logits = ref[layer], ref[fc]
    assert A.ndim == 4 and A.shape[1] == ir.weights[f"{fc}.weight"].shape[1]
    top1 = logits.argmax(axis=1)
    hand = np.einsum("bc,bchw->bhw", ir.weights[f"{fc}.weight"].astype(np.float64)[top1], A)
    mod, _ = model.torch_module()
    raw, targets, _ = compute_maps(mod, model.graph, torch.from_numpy(x), layer, "cam", top=1, head=head)
    np.testing.assert_array_equal(np.asarray(targets).reshape(-1), top1)
    np.testing.assert_allclose(np.asarray(raw).reshape(hand.shape), hand, rtol=1e-4, atol=1e-5)
