"""The nearest-neighbour figure of ``retrieval --show``: no text overlaps another text or an image."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _features(tmp: Path, modality: str, sizes, labels):
    from crossmodal.data.datasets import Dataset
    from crossmodal.evaluate.retrieval.job import ModalityFeatures
    rng = np.random.default_rng(3)
    paths = []
    for i, (w, h) in enumerate(sizes):
        p = tmp / f"{modality}_{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    ds = Dataset(modality, tmp, sorted(set(labels)), [], [], "class-folders", "test")
    return ModalityFeatures(modality, ds, paths, np.array(labels),
                            rng.normal(size=(len(labels), 8)).astype(np.float32))


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("shape", ["tall", "wide", "mixed"])
@pytest.mark.parametrize("banner", [None, "random weights: these numbers mean nothing about Places365"])
def test_no_text_overlaps_text_or_an_image(tmp_path, shape, banner):
    """Caught: the figure title sat on the captions of tall images (fixed rows, no layout engine)."""
    from matplotlib.text import Text

    from crossmodal.evaluate.retrieval.reports import neighbours_figure

    size = {"tall": (60, 400), "wide": (400, 60), "mixed": None}[shape]
    sizes = [size or ((60, 400) if i % 2 else (300, 200)) for i in range(9)]
    names = ["bedroom", "amusement_park", "shoe_shop", "temple_east_asia"]
    query = _features(tmp_path, "sketch", sizes, [names[i % 4] for i in range(9)])
    target = _features(tmp_path, "natural", sizes, [names[(i + 1) % 4] for i in range(9)])
    fig = neighbours_figure(query, target, 0, 8, "cosine", banner)  # 9 tiles: two rows of six columns
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    assert len(texts) == 1 + 9  # the title and one caption per tile
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    for i, (ta, a) in enumerate(boxes):
        for tb, b in boxes[i + 1:]:
            assert not _overlaps(a, b), f"{ta!r} overlaps {tb!r}"
    images = [ax.get_window_extent(renderer) for ax in fig.axes]
    for text, box in boxes:
        for image in images:
            assert not _overlaps(box, image), f"{text!r} overlaps an image"
    if banner:
        assert fig._suptitle.get_text().startswith(banner.upper())


# --------------------------------------------------------------------------- --show-query
@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_ckpt, tiny_preprocess):
    from test_features import convert_tiny
    return convert_tiny(tmp_path_factory.mktemp("sq-model"), tiny_ckpt[0], tiny_preprocess, targets=("ir", "onnx"))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    import shutil

    from test_features import make_cmplaces_tree
    base = tmp_path_factory.mktemp("sq-data")
    tree = make_cmplaces_tree(base / "gen", seed=0)
    shutil.copytree(tree["folders"], base / "cmplaces" / "sketch")
    shutil.copytree(tree["list"], base / "cmplaces" / "natural")
    return base / "cmplaces", tree


def _show(model, data, out, which):
    from click.testing import CliRunner

    from crossmodal.cli import main
    return CliRunner().invoke(main, ["retrieval", "--model", str(model), "--query", "sketch", "--target", "natural",
                                     "--data-root", str(data), "--out", str(out), "--device", "cpu", "-q",
                                     "--show", "2", "--show-query", which])


def test_show_query_is_checked_against_the_decoded_images(model, root, tmp_path):
    """Caught: an index or name valid among the images listed but not among those decoded (which
    the pick is made from) passed the early check and failed after the feature pass with a message
    that did not say why; the error now names the decoded count or the decode failure, and no file
    is written."""
    data, tree = root
    listed = len(tree["files"])
    decoded = listed - len(tree["broken"])
    result = _show(model, data, tmp_path / "a", str(listed - 1))  # a listed index past the decoded ones
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert f"out of range: query modality 'sketch' has {decoded} decoded images" in result.stderr
    assert f"({len(tree['broken'])} more failed to decode)" in result.stderr
    assert "nothing was written" in result.stderr and not (tmp_path / "a" / "retrieval.json").exists()
    result = _show(model, data, tmp_path / "b", "truncated.jpg")
    assert result.exit_code == 2 and "that image of query modality 'sketch' failed to decode" in result.stderr
    result = _show(model, data, tmp_path / "c", str(listed))  # past the list: refused before the features
    assert result.exit_code == 2 and f"has {listed} images listed" in result.stderr
    assert "nothing was written" not in result.stderr
    result = _show(model, data, tmp_path / "d", str(decoded - 1))
    assert result.exit_code == 0, result.output
    shown = json.loads((tmp_path / "d" / "retrieval.json").read_text())["neighbours"][0]["query_image"]
    from crossmodal.data.images import list_images
    good = [p for p in list_images(data / "sketch") if p.name not in tree["broken"]]
    assert shown == str(good[decoded - 1])
