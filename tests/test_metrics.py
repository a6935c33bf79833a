"""Baseline metrics (pure NumPy): Wilson intervals, confusion, per-class, chance, muted softmax."""
from __future__ import annotations

import math

import numpy as np
import pytest

from crossmodal.data.labels import build_mapping, score
from crossmodal.evaluate.metrics import (
    chance_levels, classification_metrics, confusion_matrix, muted_softmax, per_class_counts,
    predicted_categories, safe_ratio, wilson_interval,
)

SOURCES = ["/a/abbey", "/b/bedroom", "/t/temple/asia", "/k/kitchen", "/s/street"]
TARGETS = ["abbey", "bedroom", "temple_east_asia", "temple_south_asia", "kitchenette", "street"]
ALIASES = {"temple_east_asia": "/t/temple/asia", "temple_south_asia": "/t/temple/asia"}


@pytest.mark.parametrize("k, n, lo, hi", [
    (5, 10, 0.236593, 0.763407),     # textbook values
    (0, 10, 0.0, 0.277533),
    (10, 10, 0.722467, 1.0),
    (81, 263, 0.2553, 0.3662),       # Newcombe (1998), Stat. Med. 17:857, example 81/263 (4 decimals)
])
def test_wilson_interval_known_values(k, n, lo, hi):
    a, b = wilson_interval(k, n)
    tol = 5e-5 if n == 263 else 1e-5
    assert a == pytest.approx(lo, abs=tol) and b == pytest.approx(hi, abs=tol)


def test_wilson_interval_edges():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    lo, hi = wilson_interval(1, 1_000_000)
    assert 0 < lo < 1e-6 < hi < 1e-5  # never below 0, sensible at tiny p


def test_confusion_and_per_class_counts():
    true = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 2, 0, 2])
    cm = confusion_matrix(true, pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert cm.sum() == len(true) and np.trace(cm) == 4
    images, hits = per_class_counts(true, true == pred, 4)
    assert images.tolist() == [2, 1, 3, 0] and hits.tolist() == [1, 1, 2, 0]
    acc = safe_ratio(hits, images)
    assert acc[:3].tolist() == [0.5, 1.0, 2 / 3] and math.isnan(acc[3])


# --------------------------------------------------------------------------- chance, by simulation
#: Two label set-ups written out by hand: model labels, data set categories → label (None: unmapped),
#: and images per category. In both the largest *category* is not the largest *label*'s.
SMALL = (SOURCES, {"abbey": "/a/abbey", "bedroom": "/b/bedroom", "temple_east_asia": "/t/temple/asia",
                   "temple_south_asia": "/t/temple/asia", "kitchenette": None, "street": "/s/street"},
         {"abbey": 4, "bedroom": 1, "temple_east_asia": 2, "temple_south_asia": 3, "kitchenette": 2, "street": 1})
BIG_SOURCES = [f"/x/label{i}" for i in range(12)]
BIG = (BIG_SOURCES,
       {**{f"cat{i}": f"/x/label{i}" for i in range(8)},            # label0..7 one category each
        "cat8a": "/x/label8", "cat8b": "/x/label8", "cat8c": "/x/label8",  # label8 shared by three
        "lost1": None, "lost2": None},                               # label9..11 muted
       {**{f"cat{i}": 6 + i for i in range(8)}, "cat8a": 5, "cat8b": 5, "cat8c": 4, "lost1": 7, "lost2": 3})


def _setup(spec):
    sources, cat_to_label, counts = spec
    targets = list(cat_to_label)
    aliases = {t: (src or None) for t, src in cat_to_label.items()}
    mapping = build_mapping(sources, targets, aliases)
    labels = np.repeat(np.arange(len(targets)), [counts[t] for t in targets])
    return sources, cat_to_label, targets, mapping, labels


def _guess_logits(sources, choices):
    """Logits whose muted top-k is ``choices`` (N, k) source indices, best first, then the rest at random."""
    rng = np.random.default_rng(7)
    logits = rng.random((len(choices), len(sources)))
    k = choices.shape[1]
    for j in range(k):
        logits[np.arange(len(choices)), choices[:, j]] = 10.0 + (k - j)
    return logits


@pytest.mark.parametrize("spec", [SMALL, BIG], ids=["small", "big"])
@pytest.mark.parametrize("unmapped", ["exclude", "keep"])
def test_chance_equals_a_simulated_blind_guesser(spec, unmapped):
    """chance_* against guessers run through the real scoring, over many draws (±5 standard errors)."""
    sources, cat_to_label, targets, mapping, labels = _setup(spec)
    chance = classification_metrics(score(np.zeros((len(labels), len(sources))), labels, mapping, unmapped),
                                    labels).chance
    # what a guess can name: the distinct labels some category maps to (written out above, not from the mapping)
    names = sorted({s for s in cat_to_label.values() if s})
    nameable = [sources.index(s) for s in names]
    draws = 40_000 // len(labels) + 1
    many = np.tile(labels, draws)
    rng = np.random.default_rng(11)

    def simulated(choices):
        s = score(_guess_logits(sources, choices), many, mapping, unmapped)
        return s.accuracy()

    def close(sim, exact):
        se = math.sqrt(max(exact * (1 - exact), 1e-4) / len(many))
        assert abs(sim - exact) < 5 * se, (sim, exact, se)

    # uniform: k distinct labels drawn uniformly from the nameable ones
    k = min(5, len(nameable))
    uniform = np.stack([rng.permutation(nameable)[:k] for _ in range(len(many))])
    acc = simulated(uniform)
    close(acc["top1"], chance["chance_top1"])
    close(acc["topk"], chance["chance_top5"])
    # prior-matched: label l drawn with the share of scored images whose category names l
    scored = [t for t in labels if cat_to_label[targets[t]] or unmapped == "keep"]
    per_label = {s: sum(1 for t in scored if cat_to_label[targets[t]] == s) for s in names}
    share = np.array([per_label[s] for s in names], dtype=float)
    prior = rng.choice(nameable, size=(len(many), 1), p=share / share.sum())
    close(simulated(prior)["top1"], chance["chance_top1_prior"])
    # majority: always the label with the most scored images
    top = nameable[int(np.argmax(share))]
    assert simulated(np.full((len(many), 1), top))["top1"] == pytest.approx(chance["chance_top1_majority"])
    assert chance["chance_num_labels"] == len(nameable)


def test_chance_in_numbers_for_the_small_setup():
    """The small set-up by hand: 4 nameable labels; temple/asia (5 images) beats abbey (4)."""
    _, _, _, mapping, labels = _setup(SMALL)
    excl = classification_metrics(score(np.zeros((len(labels), 5)), labels, mapping, "exclude"), labels).chance
    assert excl["chance_top1"] == pytest.approx(1 / 4)          # not 1 / 5 evaluated categories
    assert excl["chance_top5"] == pytest.approx(1.0)
    assert excl["chance_top1_prior"] == pytest.approx((4**2 + 1 + 5**2 + 1) / 11**2)
    assert excl["chance_top1_majority"] == pytest.approx(5 / 11)
    keep = classification_metrics(score(np.zeros((len(labels), 5)), labels, mapping, "keep"), labels).chance
    assert keep["chance_top1"] == pytest.approx(11 / 13 / 4)
    assert keep["chance_top1_majority"] == pytest.approx(5 / 13)
    assert keep["chance_top1_prior"] == pytest.approx((4**2 + 1 + 5**2 + 1) / (13 * 11))
    empty = chance_levels(np.zeros(0, dtype=np.int64), 4)
    assert math.isnan(empty["chance_top1"])
    assert chance_levels(np.full(3, -1), 4)["chance_top1"] == 0.0  # only unmapped images: nothing to guess right


def test_muted_softmax_ignores_muted_labels():
    logits = np.array([[1.0, 2.0, 100.0, 0.0], [0.0, 0.0, -5.0, 0.0]])
    p = muted_softmax(logits, np.array([0, 1, 3]))
    assert p.shape == (2, 3) and np.allclose(p.sum(axis=1), 1.0)
    e = np.exp([1.0, 2.0, 0.0])
    assert np.allclose(p[0], e / e.sum()) and np.allclose(p[1], 1 / 3)
    big = muted_softmax(np.array([[1000.0, 999.0]]), np.array([0, 1]))  # no overflow
    assert np.isfinite(big).all()


def test_predicted_category_of_a_shared_label():
    mapping = build_mapping(SOURCES, TARGETS, ALIASES)
    temple = SOURCES.index("/t/temple/asia")
    pred = np.array([temple, temple, temple, 0])
    true = np.array([2, 3, 1, 0])
    # correct for either temple; the first of the group when wrong
    assert predicted_categories(pred, true, mapping).tolist() == [2, 3, 2, 0]


def test_classification_metrics_end_to_end():
    mapping = build_mapping(SOURCES, TARGETS, ALIASES)
    onehot = np.eye(len(SOURCES))
    S = {s: i for i, s in enumerate(SOURCES)}
    # rows: (true target, predicted source); kitchen is muted, so a kitchen logit never wins
    cases = [(0, "/a/abbey"), (0, "/b/bedroom"), (0, "/a/abbey"), (0, "/a/abbey"),   # abbey 3/4
             (1, "/b/bedroom"),                                                        # bedroom 1/1
             (2, "/t/temple/asia"), (3, "/t/temple/asia"), (3, "/s/street"),           # shared label
             (4, "/a/abbey"), (4, "/k/kitchen"),                                       # kitchenette: excluded
             (5, "/a/abbey")]                                                           # street 0/1
    logits = np.stack([onehot[S[src]] * 5 + np.linspace(0, 0.1, len(SOURCES)) for _, src in cases])
    labels = np.array([t for t, _ in cases])
    scores = score(logits, labels, mapping, unmapped="exclude", k=5)
    m = classification_metrics(scores, labels)
    assert m.n_scored == 9 and m.num_classes_evaluated == 5
    assert m.top1 == pytest.approx(6 / 9)
    assert m.top5 == 1.0  # only four kept labels: every true label is in the top five
    # mean class accuracy weights each class once: abbey .75, bedroom 1, east 1, south .5, street 0
    assert m.mean_class_accuracy == pytest.approx((0.75 + 1 + 1 + 0.5 + 0) / 5)
    assert m.top1_ci95 == wilson_interval(6, 9)
    assert m.chance["chance_top1"] == pytest.approx(1 / 4)  # four nameable labels (temple/asia counts once)
    names = [TARGETS[c] for c in m.classes]
    assert names == ["abbey", "bedroom", "temple_east_asia", "temple_south_asia", "street"]
    assert m.per_class_images.tolist() == [4, 1, 1, 2, 1]
    assert m.per_class_top1_hits.tolist() == [3, 1, 1, 1, 0]
    assert m.confusion.sum() == 9 and np.trace(m.confusion) == 6
    street, abbey = names.index("street"), names.index("abbey")
    assert m.confusion[street, abbey] == 1 and m.confusion[abbey, names.index("bedroom")] == 1
    south = names.index("temple_south_asia")
    assert m.confusion[south, south] == 1 and m.confusion[south, street] == 1
    summary = m.summary()
    assert summary["top1"] == m.top1 and summary["num_images_scored"] == 9
    # keep: kitchenette's two images join as errors
    kept = classification_metrics(score(logits, labels, mapping, unmapped="keep"), labels)
    assert kept.n_scored == 11 and kept.top1 == pytest.approx(6 / 11) and kept.num_classes_evaluated == 6
    kitchenette = [TARGETS[c] for c in kept.classes].index("kitchenette")
    assert kept.per_class_top1_hits[kitchenette] == 0 and kept.confusion[kitchenette].sum() == 2
