"""The pure parts of ``crossmodal units``: top-K against a brute-force sort, agreement and its chance
level, unit lists, and boxes mapped back through resize and center crop (checked with a marker
pixel pushed through the real preprocessing)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from crossmodal.errors import InputError
from crossmodal.evaluate.units.agreement import agreement, chance
from crossmodal.evaluate.units.geometry import crop_box, original_box
from crossmodal.evaluate.units.selection import drawn, parse_units
from crossmodal.evaluate.units.topk import TopK, unit_max
from crossmodal.ir.preprocess import Preprocess
from crossmodal.ir.receptive_field import ReceptiveField


@pytest.mark.parametrize("batch", [1, 3, 7, 50])
def test_topk_equals_a_brute_force_stable_sort(batch):
    rng = np.random.default_rng(batch)
    maps = np.round(rng.normal(size=(50, 6, 4, 5)), 1).astype(np.float32)  # rounded: many ties
    top = TopK(6, 8)
    for lo in range(0, 50, batch):
        v, p = unit_max(maps[lo:lo + batch])
        top.update(v, p, np.arange(lo, min(lo + batch, 50)))
    flat = maps.reshape(50, 6, -1)
    for u in range(6):
        best = [flat[n, u].max() for n in range(50)]
        order = sorted(range(50), key=lambda n: -best[n])[:8]  # Python's sort is stable: earlier image first
        assert [e[0] for e in top.entries(u)] == order
        assert [e[1] for e in top.entries(u)] == pytest.approx([best[n] for n in order])
        assert [e[2] for e in top.entries(u)] == [int(np.argmax(flat[n, u])) for n in order]


def test_topk_with_fewer_images_than_k():
    top = TopK(2, 5)
    top.update(np.array([[1.0, 2.0], [3.0, 0.5]]), np.zeros((2, 2), np.int32), np.array([4, 9]))
    assert [e[0] for e in top.entries(0)] == [9, 4]
    assert [e[0] for e in top.entries(1)] == [4, 9]


def test_agreement_one_concept_and_none():
    # 3 units, K = 4, vocabulary of 4; unit 0: category 1 everywhere; unit 1: a different majority per
    # modality; unit 2: category 2 is the majority in two modalities only
    codes = {"natural": np.array([[1, 1, 1, 0], [0, 0, 0, 3], [2, 2, 0, 1]]),
             "clipart": np.array([[1, 1, 2, 3], [2, 2, 2, 2], [2, 2, 2, 3]]),
             "sketch": np.array([[1, 1, -1, -1], [3, 3, 3, 1], [0, 0, 0, 2]])}
    a = agreement(codes, 4)
    assert a.consistent.tolist() == [True, False, False]
    assert a.overall[0] == 1 and a.score[0] == pytest.approx(7 / 10)
    assert a.majority["clipart"][1] == 2 and a.share["clipart"][1] == 1.0
    assert a.score[1] == pytest.approx(4 / 12)


def test_a_single_top_image_is_not_a_concept():
    codes = {"natural": np.array([[1, 0, 2, 3]]), "clipart": np.array([[1, 0, 2, 3]])}
    assert not agreement(codes, 4).consistent[0]  # ties allowed, but at least two images in each


def test_chance_is_low_for_planted_units_and_reproducible():
    rng = np.random.default_rng(0)
    labels = {m: rng.integers(0, 10, 200) for m in ("natural", "sketch")}
    images, codes = {}, {}
    for m, lab in labels.items():  # 20 units whose top-5 images are all of category u % 10
        rows = np.array([np.flatnonzero(lab == u % 10)[:5] for u in range(20)])
        images[m], codes[m] = rows, lab[rows]
    c1 = chance(codes, images, labels, 10, rounds=50, seed=3)
    assert agreement(codes, 10).consistent.sum() == 20
    assert c1["consistent_mean"] < 5 and c1["consistent_p"] == pytest.approx(1 / 51)
    assert c1 == chance(codes, images, labels, 10, rounds=50, seed=3)


def test_parse_units_and_drawn():
    assert parse_units("0-3,10, 2", 12) == [0, 1, 2, 3, 10]
    assert parse_units(None, 3) == [0, 1, 2]
    for bad, msg in (("12", "unknown unit 12"), ("3-1", "backwards"), ("a", "not a unit number")):
        with pytest.raises(InputError, match=msg):
            parse_units(bad, 12)
    score = np.array([0.2, 0.9, 0.5, 0.1])
    d = drawn("auto", [5, 6, 7, 8], score, np.zeros(4), per_side=1)
    assert d == {"agree": [6], "disagree": [8]}
    assert drawn("none", [1], score[:1], score[:1]) == {}


def _marker_image(size, at):
    a = np.full((size[1], size[0], 3), 30, np.uint8)
    a[at[1], at[0]] = (255, 255, 255)
    return Image.fromarray(a)


@pytest.mark.parametrize("size,resize,crop", [((500, 375), 256, (224, 224)), ((375, 500), 256, (224, 224)),
                                              ((60, 40), (30, 40), (24, 32)), ((30, 20), 16, (24, 24))])
def test_boxes_map_back_through_resize_and_crop(size, resize, crop):
    """A bright pixel in the crop's centre region is found in the original image inside the mapped box."""
    from crossmodal.data.images import preprocess
    spec = Preprocess(resize=resize, crop=crop, mean=(0, 0, 0), std=(1, 1, 1), interpolation="nearest")
    rng = np.random.default_rng(0)
    rf = ReceptiveField((5, 5), (2, 2), (-2, -2))
    grid = (crop[0] // 2, crop[1] // 2)
    for _ in range(10):
        at = (int(rng.integers(0, size[0])), int(rng.integers(0, size[1])))
        x = preprocess(_marker_image(size, at), spec)
        ys, xs = np.nonzero(x.max(0) > 0.5)
        if not len(ys):
            continue  # the marker fell outside the crop
        pos = (ys[0] // 2) * grid[1] + xs[0] // 2  # the grid unit whose window centres nearest the marker
        cb = crop_box(rf, pos, grid, crop)
        assert 0 <= cb[0] < cb[2] <= crop[1] and 0 <= cb[1] < cb[3] <= crop[0]
        ob = original_box(cb, size, spec)
        assert 0 <= ob[0] < ob[2] <= size[0] and 0 <= ob[1] < ob[3] <= size[1]
        assert ob[0] - 1 <= at[0] <= ob[2] + 1 and ob[1] - 1 <= at[1] <= ob[3] + 1, (at, ob)


def test_the_whole_crop_maps_to_the_center_crop_region():
    spec = Preprocess(resize=256, crop=(224, 224))
    # 500 × 375 → 341 × 256; crop left round(117 / 2) = 58, top 16
    x0, y0, x1, y1 = original_box((0, 0, 224, 224), (500, 375), spec)
    assert (x0, y0) == pytest.approx((58 * 500 / 341, 16 * 375 / 256))
    assert (x1, y1) == pytest.approx((282 * 500 / 341, 240 * 375 / 256))
