"""Label mapping against the real Places365 label list, muting and scoring."""
from __future__ import annotations

import csv
from importlib import resources

import numpy as np
import pytest

from crossmodal.errors import InputError
from helpers import require_shared
from crossmodal.data.labels import (
    build_mapping, load_aliases, merge_aliases, normalise, parse_aliases, score,
)


#: Places205 categories believed to have no Places365 counterpart: test input only; what is unmapped
#: is derived from the real label list in test_made_up_205_list_unmapped_set.
NO_COUNTERPART = {"abbey", "basilica", "bayou", "cathedral_outdoor", "cottage_garden", "dock",
                  "dinette_home", "fairway", "game_room", "garbage_dump", "herb_garden",
                  "kitchenette", "monastery_outdoor", "parlor", "pulpit", "sandbar", "sea_cliff",
                  "train_railway", "track_outdoor", "veranda"}


@pytest.fixture(scope="module")
def places365() -> list[str]:
    path = require_shared("places365", "categories_places365.txt")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    assert [int(r[1]) for r in rows] == list(range(365))
    return [r[0] for r in rows]


def test_normalise():
    assert normalise("/s/stadium/baseball") == "stadium_baseball"
    assert normalise("/a/airfield") == "airfield"
    assert normalise("/a/apartment_building/outdoor") == "apartment_building_outdoor"
    assert normalise("apartment_building_outdoor") == "apartment_building_outdoor"
    assert normalise(" a/abbey ") == "abbey"


def test_packaged_aliases():
    aliases = load_aliases()
    assert aliases == {"temple_east_asia": "/t/temple/asia", "temple_south_asia": "/t/temple/asia",
                       "underwater_coral_reef": "/u/underwater/ocean_deep"}


def test_mapping_real_labels(places365):
    targets = ["stadium_baseball", "temple_east_asia", "abbey", "temple_south_asia",
               "underwater_coral_reef", "airfield"]
    m = build_mapping(places365, targets, load_aliases())
    idx = {name: i for i, name in enumerate(places365)}
    assert m.target_to_source == (idx["/s/stadium/baseball"], idx["/t/temple/asia"], None,
                                  idx["/t/temple/asia"], idx["/u/underwater/ocean_deep"], idx["/a/airfield"])
    assert m.unmapped == ("abbey",)
    assert m.shared == {idx["/t/temple/asia"]: (1, 3)}
    assert m.shared_groups() == [("/t/temple/asia", ("temple_east_asia", "temple_south_asia"))]
    assert len(m.muted) == 365 - 4 and idx["/a/airfield"] not in m.muted
    assert m.via_alias["underwater_coral_reef"] == "/u/underwater/ocean_deep"
    assert m.kept_sources.tolist() == sorted(idx[n] for n in ["/s/stadium/baseball", "/t/temple/asia",
                                                              "/u/underwater/ocean_deep", "/a/airfield"])


def _flat(name: str) -> str:
    """Places-style name flattened by plain string operations (not the code under test)."""
    name = name.strip()
    if len(name) > 2 and name[0] == "/" and name[2] == "/":
        name = name[3:]
    return name.replace("/", "_")


def test_made_up_205_list_unmapped_set(places365):
    exact = places365[::12]  # 31 real names, written Places205 style
    made_up = [n for n in exact] + [f"/{n[0]}/{n}" for n in sorted(NO_COUNTERPART)] + [
        "/t/temple/east_asia", "/t/temple/south_asia", "/u/underwater/coral_reef"]
    targets = [normalise(n) for n in made_up]
    # expected from the real label list and the packaged CSV, read here with the csv module
    real = {_flat(n) for n in places365}
    with resources.files("crossmodal.data").joinpath("places205_aliases.csv").open(newline="") as f:
        aliased = {row["target_category"]: row["source_label"] for row in csv.DictReader(l for l in f if not l.startswith("#"))}
    assert all(_flat(src) in real for src in aliased.values() if src)
    expected = {_flat(n) for n in made_up
                if not aliased.get(_flat(n)) and (_flat(n) in aliased or _flat(n) not in real)}
    assert len(expected) >= 10  # the list does exercise the unmapped path
    m = build_mapping(places365, targets, load_aliases())
    assert set(m.unmapped) == expected
    assert sum(s is not None for s in m.target_to_source) == len(made_up) - len(expected)
    kept_labels = {_flat(aliased.get(_flat(n)) or n) for n in made_up if _flat(n) not in expected}
    assert len(m.muted) == 365 - len(kept_labels)


def test_user_label_map_adds_and_overrides(places365, tmp_path):
    user = tmp_path / "map.csv"
    user.write_text("target_category,source_label,note\n"
                    "abbey,/c/church/outdoor,closest\n"
                    "airfield,,treat as absent\n"
                    "not_in_data,/a/airfield,\n")
    aliases = merge_aliases(load_aliases(), load_aliases(user))
    m = build_mapping(places365, ["abbey", "airfield", "temple_east_asia"], aliases)
    assert m.target_to_source[0] == places365.index("/c/church/outdoor")
    assert m.unmapped == ("airfield",)
    assert m.target_to_source[2] == places365.index("/t/temple/asia")
    assert "not_in_data" in m.unused_aliases


def test_alias_errors(places365, tmp_path):
    with pytest.raises(InputError, match="not one of the model's 365 labels"):
        build_mapping(places365, ["abbey"], {"abbey": "/a/abbey_ruins"})
    with pytest.raises(InputError, match="header"):
        parse_aliases("abbey,/a/airfield\n")
    with pytest.raises(InputError, match="line 3: target 'x' is listed twice"):
        parse_aliases("target_category,source_label,note\nx,a,\nx,b,\n")
    with pytest.raises(InputError, match="not found"):
        load_aliases(tmp_path / "nope.csv")


# --------------------------------------------------------------------------- scoring
def _toy():
    # sources 0..5; targets: t0→s1, t1→s3, t2→s3 (shared), t3 unmapped; s0, s2, s4, s5 muted
    sources = ["/s/zero", "/o/one", "/t/two", "/t/three", "/f/four", "/f/five"]
    targets = ["one", "three_a", "three_b", "lost"]
    m = build_mapping(sources, targets, {"three_a": "/t/three", "three_b": "/t/three"})
    assert m.target_to_source == (1, 3, 3, None) and m.muted == (0, 2, 4, 5)
    return m


def test_score_toy_by_hand():
    m = _toy()
    logits = np.array([
        [9, 5, 0, 1, 0, 0],   # true t0: unmuted argmax s0 (muted) → wrong; muted → s1 right
        [0, 1, 0, 2, 0, 0],   # true t1: s3 → right (shared)
        [0, 1, 0, 2, 0, 0],   # true t2: s3 → right for the other sharer too
        [0, 3, 0, 2, 0, 0],   # true t2: s1 top-1 wrong, s3 second → top-2 right
        [0, 3, 0, 2, 0, 0],   # true t3: unmapped
    ], dtype=np.float32)
    labels = [0, 1, 2, 2, 3]
    s = score(logits, labels, m, unmapped="exclude", k=2)
    assert s.included.tolist() == [True, True, True, True, False]
    assert s.top1.tolist() == [True, True, True, False, False]
    assert s.topk.tolist() == [True, True, True, True, False]
    assert s.top1_unmuted.tolist() == [False, True, True, False, False]
    assert s.topk_unmuted.tolist() == [True, True, True, True, False]  # row 0: s0, s1
    assert s.left_out == {"lost": 1} and s.kept_unmapped == {}
    assert s.shared_images == 3 and s.shared_top1_hits == 2
    assert s.predicted_targets()[1] == [("three_a", "three_b"), ("one",)]
    assert s.predicted_targets(muted=False)[0] == [(), ("one",)]
    assert s.accuracy()["top1"] == pytest.approx(3 / 4)
    kept = score(logits, labels, m, unmapped="keep", k=2)
    assert kept.included.all() and kept.kept_unmapped == {"lost": 1} and kept.left_out == {}
    assert kept.accuracy()["top1"] == pytest.approx(3 / 5)


def _independent(logits, labels, t2s, allowed, k):
    """Plain-Python reference: rank allowed sources by (-logit, index)."""
    top1, topk = [], []
    for row, t in zip(logits, labels):
        ranked = sorted(allowed, key=lambda s: (-float(row[s]), s))[:k]
        src = t2s[t]
        top1.append(src is not None and ranked[0] == src)
        topk.append(src is not None and src in ranked)
    return top1, topk


def test_score_random_against_independent(places365):
    rng = np.random.default_rng(0)
    targets = [normalise(n) for n in places365[::7]] + ["temple_east_asia", "temple_south_asia", "abbey"]
    m = build_mapping(places365, targets, load_aliases())
    n = 400
    labels = rng.integers(0, len(targets), n)
    logits = rng.normal(size=(n, 365)).astype(np.float32)
    logits[:50, 0] = 100.0  # /a/airfield (index 0, kept: every 7th from 0) wins outright
    logits[50:60, 1] = 100.0  # a muted label wins the unmuted argmax
    t2s = list(m.target_to_source)
    allowed = sorted({s for s in t2s if s is not None})
    s = score(logits, labels, m, unmapped="keep", k=5)
    top1, top5 = _independent(logits, labels, t2s, allowed, 5)
    assert s.top1.tolist() == top1 and s.topk.tolist() == top5
    top1_u, top5_u = _independent(logits, labels, t2s, list(range(365)), 5)
    assert s.top1_unmuted.tolist() == top1_u and s.topk_unmuted.tolist() == top5_u
    assert not s.top1_unmuted[50:60].any()
    ex = score(logits, labels, m, unmapped="exclude", k=5)
    abbey = targets.index("abbey")
    assert ex.left_out == ({"abbey": int((labels == abbey).sum())} if (labels == abbey).any() else {})
    assert ex.n_scored == n - int((labels == abbey).sum())
    temples = np.isin(labels, [len(targets) - 3, len(targets) - 2])
    assert ex.shared_images == int(temples.sum())
    assert set(np.unique(ex.pred)) <= set(allowed)


def test_score_input_checks():
    m = _toy()
    with pytest.raises(InputError, match="shape"):
        score(np.zeros((2, 5)), [0, 1], m)
    with pytest.raises(InputError, match="labels must lie"):
        score(np.zeros((1, 6)), [4], m)
    with pytest.raises(InputError, match="exclude"):
        score(np.zeros((1, 6)), [0], m, unmapped="drop")


def test_hybrid1365_categories_match_imagenet_synsets_by_any_of_their_names():
    """The hybrid network's first 1,000 labels are ImageNet synsets ("n01440764 tench, Tinca tinca"):
    a category matches each comma-separated name, and one that matches a scene too keeps both."""
    from helpers import require_shared
    from crossmodal.readers.label_files import parse_categories
    path = require_shared("places365", "categories_hybrid1365.txt")
    labels = parse_categories(path.read_text(), path)
    m = build_mapping(labels, ["tench", "bookstore", "coast", "airfield", "crane", "no_such_place"])
    names = lambda t: [labels[s] for s in m.target_sources[m.target_categories.index(t)]]  # noqa: E731
    assert names("tench") == ["n01440764 tench, Tinca tinca"]
    assert sorted(names("bookstore")) == ["/b/bookstore", "n02871525 bookshop, bookstore, bookstall"]
    assert sorted(names("coast")) == ["/c/coast", "n09428293 seashore, coast, seacoast, sea-coast"]
    assert names("airfield") == ["/a/airfield"] and "airfield" not in m.matches  # a plain exact match
    assert len(names("crane")) == 2  # two synsets are called crane (the bird, the machine): both count
    assert m.unmapped == ("no_such_place",)
    assert set(m.matches) == {"tench", "bookstore", "coast", "crane"}
    # scoring: predicting the synset of a category that also has a scene label is correct
    logits = np.zeros((1, len(labels)))
    logits[0, labels.index("n09428293 seashore, coast, seacoast, sea-coast")] = 5.0
    s = score(logits, [m.target_categories.index("coast")], m)
    assert s.top1.tolist() == [True]


def test_a_label_map_can_add_labels_and_name_synsets_by_their_id():
    labels = ["/c/coast", "/b/beach", "n09428293 seashore, coast, seacoast, sea-coast", "n09421951 sandbar, sand bar"]
    added = build_mapping(labels, ["beach"], {"beach": "+n09421951"})
    assert [labels[s] for s in added.target_sources[0]] == ["/b/beach", "n09421951 sandbar, sand bar"]
    replaced = build_mapping(labels, ["beach"], {"beach": "sandbar|/c/coast"})
    assert [labels[s] for s in replaced.target_sources[0]] == ["n09421951 sandbar, sand bar", "/c/coast"]
    with pytest.raises(InputError, match="not one of the model's 4 labels"):
        build_mapping(labels, ["beach"], {"beach": "+lagoon"})


def test_chance_with_several_correct_labels_per_category():
    """Uniform guess over L = 4 kept labels: a category with 2 correct labels is guessed with 2/4 at
    top-1 and 1 − C(2, 2)/C(4, 2) = 5/6 at top-2; one with a single label with 1/4 and 1/2."""
    from crossmodal.evaluate.metrics import chance_levels
    c = chance_levels([(0, 1), (2,)], 4, k=2)
    assert c["chance_top1"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert c["chance_top5"] == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert c["chance_top1_majority"] == pytest.approx(1 / 2)
    # prior guesser: q = {0: .25, 1: .25, 2: .5}; image 1 right with .5, image 2 with .5
    assert c["chance_top1_prior"] == pytest.approx(0.5)
    single = chance_levels(np.array([0, 2, -1]), 4, k=2)
    assert single == chance_levels([(0,), (2,), ()], 4, k=2)
