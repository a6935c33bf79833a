"""Full JPEG decoding is the default everywhere: the CLI (baseline, predict), the Python API and verify
preprocess the same images to the same arrays and give the same numbers. ``--fast-decode`` (PIL's
draft mode) is an opt-in that changes them, and every report and chart title where it was used says so."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from crossmodal.cli import main
from test_features import convert_tiny


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_ckpt, tiny_preprocess):
    return convert_tiny(tmp_path_factory.mktemp("dec-model"), tiny_ckpt[0], tiny_preprocess)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Large, detailed JPEGs, where PIL's draft mode (a reduced-size DCT) visibly changes pixels."""
    root = tmp_path_factory.mktemp("dec-data")
    rng = np.random.default_rng(0)
    cats = ["abbey", "beach"]
    (root / "categories.txt").write_text("\n".join(f"{c} {i}" for i, c in enumerate(cats)) + "\n")
    lines = []
    for i in range(6):
        y, x = np.mgrid[0:900, 0:1200]
        img = (127 + 120 * np.sin(x / (3 + i)) * np.cos(y / (5 + i)))[..., None] + rng.normal(0, 25, (900, 1200, 3))
        name = f"img{i}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name, quality=90)
        lines.append(f"{name} {i % 2}")
    (root / "val.txt").write_text("\n".join(lines) + "\n")
    return root


def _api_probs(model, paths, **kw):
    import crossmodal
    with crossmodal.load_model(model, backend="onnx", device="cpu", **kw) as m:
        return {Path(r["path"]).name: [t["prob"] for t in r["top"]] for r in m.predict(paths, k=5)}, m.load(paths).x


def test_cli_api_and_verify_decode_alike_by_default(model, photos, tmp_path):
    paths = sorted(str(p) for p in photos.glob("*.jpg"))
    api, x = _api_probs(model, paths)
    res = CliRunner().invoke(main, ["predict", "--model", str(model), *paths, "--json", "--device", "cpu", "-q"])
    assert res.exit_code == 0, res.output
    cli = {Path(r["path"]).name: [t["prob"] for t in r["top"]] for r in json.loads(res.stdout)}
    assert cli == api and all(r["decoding"].startswith("full") for r in json.loads(res.stdout))
    res = CliRunner().invoke(main, ["baseline", "--model", str(model), "--modality", "natural", "--images", str(photos), "--list",
                                    str(photos / "val.txt"), "--categories", str(photos / "categories.txt"),
                                    "--out", str(tmp_path / "bl"), "--device", "cpu", "--unmapped", "keep", "-q"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(next((tmp_path / "bl").rglob("metrics.json")).read_text())
    assert metrics["decoding"].startswith("full") and metrics["settings"]["draft"] is False
    from crossmodal.ir.store import load_ir
    from crossmodal.verify.job import image_inputs
    verify_x, files, _ = image_inputs(load_ir(model), photos)
    assert [Path(f).name for f in files] == [Path(p).name for p in paths]
    np.testing.assert_array_equal(verify_x, x)  # the same arrays, bit for bit


def test_fast_decode_is_opt_in_changes_the_pixels_and_is_named(model, photos, tmp_path):
    paths = sorted(str(p) for p in photos.glob("*.jpg"))
    (full, x_full), (fast, x_fast) = _api_probs(model, paths), _api_probs(model, paths, draft=True)
    assert np.abs(x_full - x_fast).max() > 0.01  # draft decoding is not the reference's pixels
    out = tmp_path / "bl"
    res = CliRunner().invoke(main, ["baseline", "--model", str(model), "--modality", "natural", "--images", str(photos), "--list",
                                    str(photos / "val.txt"), "--categories", str(photos / "categories.txt"),
                                    "--out", str(out), "--device", "cpu", "--unmapped", "keep", "--fast-decode", "-q"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(next(out.rglob("metrics.json")).read_text())
    assert metrics["decoding"].startswith("fast (JPEG draft mode") and metrics["settings"]["draft"] is True
    assert "**Decoding: fast (JPEG draft mode" in next(out.rglob("report.md")).read_text()
    from crossmodal.reports import figures
    titles = []
    real = figures.save_png

    def spy(fig, path, *a, **k):  # each figure's own title: its suptitle, else its (only) axes' title
        sup = getattr(fig, "_suptitle", None)
        titles.append(sup.get_text() if sup else next(ax.get_title() for ax in fig.axes if ax.get_title()))
        return real(fig, path, *a, **k)
    figures.save_png, saved = spy, figures.save_png
    try:
        res = CliRunner().invoke(main, ["baseline", "--model", str(model), "--modality", "natural", "--images", str(photos), "--list",
                                        str(photos / "val.txt"), "--categories", str(photos / "categories.txt"),
                                        "--out", str(tmp_path / "bl2"), "--device", "cpu", "--unmapped", "keep",
                                        "--fast-decode", "-q"])
    finally:
        figures.save_png = saved
    missing = [t for t in titles if "[fast JPEG decoding: draft mode]" not in t]
    assert res.exit_code == 0 and titles and not missing, missing
