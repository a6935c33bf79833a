"""Feature extraction: backends agree, the cache resumes exactly, failed images are skipped.

Also home of the generated CMPlaces-shaped data (``make_cmplaces_tree``) and the
labelled tiny model (``convert_tiny``) that ``test_baseline.py`` imports.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossmodal.errors import InputError

#: The tiny model's labels (10 outputs), Places365 style.
TINY_LABELS = ["/a/abbey", "/b/beach", "/b/bedroom", "/c/coast", "/f/forest/broadleaf", "/k/kitchen",
               "/m/mountain", "/o/office", "/s/street", "/t/temple/asia"]
#: The data set's categories: two share /t/temple/asia (packaged aliases), kitchenette has no label.
DATA_CATEGORIES = ["abbey", "bedroom", "temple_east_asia", "temple_south_asia", "kitchenette", "beach", "street"]
#: Image kinds cycled through per category: (mode, size (w, h), format).
KINDS = [("RGB", (64, 48), "JPEG"), ("L", (48, 64), "JPEG"), ("CMYK", (70, 50), "JPEG"),
         ("RGBA", (60, 44), "PNG"), ("P", (56, 40), "PNG"), ("RGB", (30, 22), "PNG")]
BROKEN = {"truncated.jpg": "truncated", "empty.jpg": "zero-byte", "notes.png": "text"}


def convert_tiny(tmp: Path, ckpt: Path, preprocess, targets=("ir", "onnx", "keras")) -> Path:
    """The tiny checkpoint converted with TINY_LABELS; returns the model folder."""
    from crossmodal.convert.pipeline import convert
    labels = tmp / "categories_tiny.txt"
    labels.write_text("\n".join(f"{name} {i}" for i, name in enumerate(TINY_LABELS)))
    out = tmp / "model"
    convert(ckpt, out, labels=labels, input_size=(20, 28), preprocess=preprocess, targets=list(targets))
    return out


def _image(rng: np.random.Generator, mode: str, size: tuple[int, int]) -> Image.Image:
    w, h = size
    base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)  # smooth blobs, varied colours
    if mode == "RGBA":
        alpha = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
        img = img.convert("RGBA")
        img.putalpha(alpha)
        return img
    if mode == "P":
        return img.quantize(16)
    return img.convert(mode)


def make_cmplaces_tree(root: Path, per_category: int = 4, seed: int = 0) -> dict:
    """A CMPlaces-shaped modality in both layouts, with real and broken image files.

    ``root/list/``: ``images/*.{jpg,png}``, ``categories.txt`` (name index),
    ``val.txt`` (path label, one line naming a missing file); ``root/folders/``:
    the same files as ``<category>/<file>`` class folders (no list file). Returns
    ``{"list": Path, "folders": Path, "files": [(relpath, category)], "broken": set,
    "missing": str}``.
    """
    rng = np.random.default_rng(seed)
    lst, folders = root / "list", root / "folders"
    (lst / "images").mkdir(parents=True)
    files = []
    k = 0
    for cat in DATA_CATEGORIES:
        for i in range(per_category):
            mode, size, fmt = KINDS[k % len(KINDS)]
            k += 1
            name = f"{cat}_{i}.{'jpg' if fmt == 'JPEG' else 'png'}"
            _image(rng, mode, size).save(lst / "images" / name, fmt)
            files.append((f"images/{name}", cat))
    # broken files, spread over categories
    good = lst / "images" / files[0][0].split("/")[1]
    (lst / "images" / "truncated.jpg").write_bytes(good.read_bytes()[:200])
    (lst / "images" / "empty.jpg").write_bytes(b"")
    (lst / "images" / "notes.png").write_text("not an image at all\n")
    files += [("images/truncated.jpg", "bedroom"), ("images/empty.jpg", "beach"), ("images/notes.png", "street")]
    (lst / "categories.txt").write_text("\n".join(f"{c} {i}" for i, c in enumerate(DATA_CATEGORIES)) + "\n")
    lines = [f"{rel} {DATA_CATEGORIES.index(cat)}" for rel, cat in files]
    lines.insert(5, f"images/gone_missing.jpg {DATA_CATEGORIES.index('abbey')}")
    (lst / "val.txt").write_text("\n".join(lines) + "\n")
    for rel, cat in files:
        dest = folders / cat / Path(rel).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((lst / rel).read_bytes())
    return {"list": lst, "folders": folders, "files": files, "broken": set(BROKEN),
            "missing": "images/gone_missing.jpg"}


def reference_logits(model_dir: Path, paths, layers=("logits",)) -> dict[str, np.ndarray]:
    """The IR's float64 NumPy evaluator on the same preprocessed images (full decoding: the default)."""
    from crossmodal.ir import reference
    from crossmodal.ir.store import load_ir
    from crossmodal.data.images import load_image
    model = load_ir(model_dir)
    x = np.stack([load_image(p, model.graph.preprocess) for p in paths])
    out = reference.run(model, x, [model.graph.resolve(l) for l in layers])
    return {l: out[model.graph.resolve(l)] for l in layers}


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tiny_ckpt, tiny_preprocess):
    return convert_tiny(tmp_path_factory.mktemp("feat-model"), tiny_ckpt[0], tiny_preprocess,
                        targets=("ir", "onnx"))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_cmplaces_tree(tmp_path_factory.mktemp("feat-data"))


@pytest.fixture(scope="module")
def dataset(tree):
    from crossmodal.data.datasets import resolve_modality
    return resolve_modality("sketch", images=tree["list"], list_file=tree["list"] / "val.txt",
                            categories=tree["list"] / "categories.txt")


@pytest.fixture(scope="module")
def clean(tiny_model, dataset, tmp_path_factory):
    from crossmodal.evaluate.features import extract_features
    cache = tmp_path_factory.mktemp("cache-clean")
    return extract_features(tiny_model, dataset, "onnx", ("logits", "fc7"), device="cpu", batch_size=4,
                            workers=2, cache_dir=cache)


# --------------------------------------------------------------------------- tests
def test_one_pass_skips_broken_files_and_matches_the_reference(clean, dataset, tiny_model):
    failed = {Path(p).name for p, _ in clean.failed}
    assert failed == set(BROKEN)
    assert all(reason for _, reason in clean.failed)
    assert len(clean) == len(dataset.records) - len(BROKEN)
    assert clean["logits"].shape == (len(clean), 10) and clean["fc7"].shape == (len(clean), 16)
    assert clean["logits"].dtype == np.float32
    assert [r.path for r in dataset.records if r.path.name not in BROKEN] == clean.paths
    assert list(clean.labels) == [r.label for r in dataset.records if r.path.name not in BROKEN]
    ref = reference_logits(tiny_model, clean.paths, ("logits", "fc7"))
    for layer in ("logits", "fc7"):
        np.testing.assert_allclose(clean[layer], ref[layer], rtol=1e-5, atol=1e-5)
    assert clean.stats["computed"] == len(dataset.records) and clean.stats["images_per_second"] > 0
    assert clean.backend["backend"] == "onnx" and clean.backend["device"] == "cpu"
    with pytest.raises(InputError, match="no feature 'pool5'"):
        clean["pool5"]


def test_second_run_is_served_from_the_cache(clean, tiny_model, dataset):
    from crossmodal.evaluate.features import extract_features

    def boom():
        raise AssertionError("the backend must not be opened for a complete cache")
    again = extract_features(tiny_model, dataset, boom, ("fc7",), cache_dir=clean.cache_path.parent, batch_size=4)
    assert again.stats["computed"] == 0 and again.backend is None
    assert set(again.arrays) == {"fc7"}  # a subset of the cached layers
    np.testing.assert_array_equal(again["fc7"], clean["fc7"])
    assert again.cache_path == clean.cache_path


def test_interrupted_run_resumes_to_the_identical_cache(clean, tiny_model, dataset, tmp_path):
    import h5py

    from crossmodal.evaluate.features import extract_features
    calls = []

    def stop_after_two(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        extract_features(tiny_model, dataset, "onnx", ("logits", "fc7"), device="cpu", batch_size=4,
                         workers=2, cache_dir=tmp_path, on_batch=stop_after_two)
    (partial,) = tmp_path.glob("*.h5")
    with h5py.File(partial, "r") as f:
        assert int(f.attrs["done"]) == 8 and not f.attrs["complete"]
    starts = []
    resumed = extract_features(tiny_model, dataset, "onnx", ("logits", "fc7"), device="cpu", batch_size=4,
                               workers=1, cache_dir=tmp_path, on_start=lambda d, t: starts.append((d, t)))
    assert starts == [(8, len(dataset.records))]
    assert resumed.stats["computed"] == len(dataset.records) - 8
    assert resumed.paths == clean.paths and resumed.failed == clean.failed
    for layer in ("logits", "fc7"):
        np.testing.assert_array_equal(resumed[layer], clean[layer])
    with h5py.File(partial, "r") as a, h5py.File(clean.cache_path, "r") as b:
        for name in ("paths", "labels", "status", "reason", "features/logits", "features/fc7"):
            np.testing.assert_array_equal(a[name][()], b[name][()])
        assert a.attrs["complete"] and a.attrs["key"] == b.attrs["key"]


def test_cache_key_follows_files_preprocessing_and_model(tiny_model, dataset, tmp_path):
    from dataclasses import replace

    from crossmodal.ir.store import load_graph, load_ir
    from crossmodal.evaluate.feature_cache import cache_key, model_fingerprint
    graph = load_graph(tiny_model)
    assert model_fingerprint(tiny_model) == load_ir(tiny_model).fingerprint()
    paths = [r.path for r in dataset.records]
    fp = model_fingerprint(tiny_model)
    base, parts = cache_key(fp, graph, paths, draft=True)
    assert parts["model_fingerprint"] == fp
    assert cache_key(fp, graph, paths, draft=True)[0] == base
    assert cache_key(fp, graph, paths, draft=False)[0] != base
    assert cache_key(fp, graph, paths[:-1], draft=True)[0] != base
    assert cache_key("0" * 64, graph, paths, draft=True)[0] != base
    other = replace(graph, preprocess=replace(graph.preprocess, interpolation="bicubic"))
    assert cache_key(fp, other, paths, draft=True)[0] != base


def test_corrupt_cache_is_recomputed(tiny_model, dataset, tmp_path):
    from crossmodal.evaluate.features import extract_features
    first = extract_features(tiny_model, dataset, "onnx", ("logits",), device="cpu", batch_size=8, cache_dir=tmp_path)
    first.cache_path.write_bytes(b"garbage, not HDF5")
    notes = []
    again = extract_features(tiny_model, dataset, "onnx", ("logits",), device="cpu", batch_size=8,
                             cache_dir=tmp_path, log=notes.append)
    assert any("unreadable" in n for n in notes)
    np.testing.assert_array_equal(again["logits"], first["logits"])


@pytest.mark.parametrize("backend", ["torch", "onnx-iobinding"])
def test_backends_agree(backend, tiny_model, tree, clean):
    from crossmodal.runtime.engine import open_engine
    from crossmodal.data.images import load_batch
    from crossmodal.ir.store import load_graph
    x, _ = load_batch(clean.paths, load_graph(tiny_model).preprocess)
    name, opts = ("onnx", {"io_binding": True}) if backend == "onnx-iobinding" else (backend, {})
    with open_engine(name, tiny_model, ("logits", "fc7", "pool5"), device="cpu", **opts) as b:
        out = b.run(x)
        info = b.describe()
    assert info["device"] == "cpu" and info["backend"] == name
    assert out["pool5"].shape == (len(x), 3, 5, 7)  # NCHW, as the IR
    np.testing.assert_allclose(out["logits"], clean["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["fc7"], clean["fc7"], rtol=1e-5, atol=1e-5)
    ref = reference_logits(tiny_model, clean.paths, ("pool5",))
    np.testing.assert_allclose(out["pool5"], ref["pool5"], rtol=1e-5, atol=1e-5)


def test_backend_bad_input(tiny_model, tmp_path):
    from crossmodal.runtime.engine import open_engine
    with pytest.raises(InputError, match="unknown engine"):
        open_engine("caffe", tiny_model)
    with pytest.raises(InputError, match="unknown device"):
        open_engine("onnx", tiny_model, device="gpu0")
    with pytest.raises(InputError, match="missing model.keras"):
        open_engine("keras", tiny_model)
    with pytest.raises(InputError, match="no layer or blob named 'fc9'"):
        open_engine("onnx", tiny_model, ("fc9",))
    with pytest.raises(InputError, match="batch must be"):
        with open_engine("onnx", tiny_model, device="cpu") as b:
            b.run(np.zeros((1, 3, 8, 8), np.float32))


def test_cache_metadata_records_the_run(clean):
    import h5py
    with h5py.File(clean.cache_path, "r") as f:
        assert f.attrs["format"] == "crossmodal-features" and f.attrs["complete"]
        assert json.loads(f.attrs["layers"]) == ["logits", "fc7"]
        assert json.loads(f.attrs["backends"])[0]["backend"] == "onnx"
        parts = json.loads(f.attrs["key_parts"])
        assert parts["draft"] is False and parts["preprocess"]["crop"] == [20, 28]
        status = f["status"][()]
        assert (status == 2).sum() == len(BROKEN) and (status == 0).sum() == 0
