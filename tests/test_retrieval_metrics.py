"""Retrieval metrics: AP / P@k / R@k against sklearn and brute force, chance levels, errors."""
from __future__ import annotations

import itertools
import json
import re
import math
import tracemalloc
from importlib import resources

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from crossmodal.errors import InputError
from crossmodal.evaluate.retrieval import published
from crossmodal.evaluate.retrieval.metrics import (
    BYTES_PER_PAIR, RetrievalResult, mean_average_precision, precision_at_k, recall_at_k, retrieval_scores,
)
from crossmodal.evaluate.retrieval.chance import (
    chance_map, chance_precision_at_k, chance_recall_at_k, expected_random_ap,
)


# ----------------------------------------------------------------------------- references

def _cosine(q, t):
    def unit(x):
        n = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, n, out=np.zeros_like(x, dtype=np.float64), where=n > 0)
    return unit(q.astype(np.float64)) @ unit(t.astype(np.float64)).T


def _neg_sq_dist(q, t):
    q, t = q.astype(np.float64), t.astype(np.float64)
    return -((q[:, None, :] - t[None, :, :]) ** 2).sum(-1)


def _brute(scores, ql, tl, same_set=False, ks=(1, 5)):
    """Per-query AP, P@k, R@k with Python loops; rank by descending score, then index."""
    ap, prec, rec = [], {k: [] for k in ks}, {k: [] for k in ks}
    for i in range(scores.shape[0]):
        idx = [j for j in range(scores.shape[1]) if not (same_set and j == i)]
        ranked = sorted(idx, key=lambda j: (-scores[i, j], j))
        rel = [tl[j] == ql[i] for j in ranked]
        r = sum(rel)
        if r == 0:
            ap.append(np.nan)
            for k in ks:
                prec[k].append(np.nan)
                rec[k].append(np.nan)
            continue
        hits, total = 0, 0.0
        for pos, is_rel in enumerate(rel, start=1):
            if is_rel:
                hits += 1
                total += hits / pos
        ap.append(total / r)
        for k in ks:
            prec[k].append(sum(rel[:k]) / k)
            rec[k].append(sum(rel[:k]) / r)
    return np.array(ap), {k: np.array(v) for k, v in prec.items()}, {k: np.array(v) for k, v in rec.items()}


def _sklearn_ap(scores, ql, tl):
    out = np.full(scores.shape[0], np.nan)
    for i in range(scores.shape[0]):
        y = tl == ql[i]
        if y.any():
            out[i] = average_precision_score(y, scores[i])
    return out


def _random_set(seed, n_q=40, n_t=60, d=12, n_cls=5, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_q, d)).astype(dtype), rng.integers(0, n_cls + 1, n_q),
            rng.standard_normal((n_t, d)).astype(dtype), rng.integers(0, n_cls, n_t))


def _int_set(seed, n_q=30, n_t=45, d=3, n_cls=4):
    """Small integer-valued features: exact products, many exact ties."""
    rng = np.random.default_rng(seed)
    return (rng.integers(-2, 3, (n_q, d)).astype(np.float64), rng.integers(0, n_cls, n_q),
            rng.integers(-2, 3, (n_t, d)).astype(np.float64), rng.integers(0, n_cls, n_t))


# ----------------------------------------------------------------------------- AP vs sklearn

@pytest.mark.parametrize("seed", range(5))
def test_ap_matches_sklearn_cosine(seed):
    q, ql, t, tl = _random_set(seed)
    res = mean_average_precision(q, ql, t, tl, return_per_query=True)
    ref = _sklearn_ap(_cosine(q, t), ql, tl)
    assert isinstance(res, RetrievalResult)
    np.testing.assert_array_equal(np.isnan(res.per_query), np.isnan(ref))
    np.testing.assert_allclose(res.per_query, ref, rtol=0, atol=1e-9, equal_nan=True)
    assert res.n_excluded == int(np.isnan(ref).sum()) > 0  # label n_cls never among targets
    assert res.value == pytest.approx(np.nanmean(ref), abs=1e-12)
    assert mean_average_precision(q, ql, t, tl) == res.value


@pytest.mark.parametrize("seed", range(3))
def test_ap_matches_sklearn_euclidean(seed):
    q, ql, t, tl = _random_set(seed + 10)
    res = mean_average_precision(q, ql, t, tl, metric="euclidean", return_per_query=True)
    ref = _sklearn_ap(_neg_sq_dist(q, t), ql, tl)
    np.testing.assert_allclose(res.per_query, ref, rtol=0, atol=1e-9, equal_nan=True)


def test_same_set_drops_the_query_itself():
    x, labels, _, _ = _random_set(3, n_q=50, n_cls=4)
    labels[0] = 99  # alone in its category: excluded under same_set
    res = mean_average_precision(x, labels, x, labels, same_set=True, return_per_query=True)
    s = _cosine(x, x)
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        y = labels[keep] == labels[i]
        expected = average_precision_score(y, s[i, keep]) if y.any() else np.nan
        np.testing.assert_allclose(res.per_query[i], expected, atol=1e-9, equal_nan=True)
    assert res.n_excluded == 1 and np.isnan(res.per_query[0])
    # targets=None means "the queries"; without same_set the query would rank itself first
    assert mean_average_precision(x, labels, same_set=True) == res.value
    assert mean_average_precision(x, labels, x, labels) > res.value


def test_float32_close_to_float64():
    q, ql, t, tl = _random_set(7, n_q=80, n_t=120, d=32)
    m64 = mean_average_precision(q, ql, t, tl)
    m32 = mean_average_precision(q.astype(np.float32), ql, t.astype(np.float32), tl)
    assert m32 == pytest.approx(m64, abs=1e-3)


def test_string_labels_equal_int_labels():
    q, ql, t, tl = _random_set(8)
    names = np.array(["abbey", "bar", "cafe", "dock", "pier", "zoo"])
    a = retrieval_scores(q, ql, t, tl, ks=(3,))
    b = retrieval_scores(q, names[ql].tolist(), t, list(names[tl]), ks=(3,))
    np.testing.assert_array_equal(a.ap, b.ap)
    np.testing.assert_array_equal(a.precision[3], b.precision[3])


# ----------------------------------------------------------------------------- degenerate inputs, ties

def test_all_relevant_gives_one():
    q, _, t, _ = _random_set(1)
    res = retrieval_scores(q, np.zeros(len(q), int), t, np.zeros(len(t), int), ks=(10,))
    np.testing.assert_array_equal(res.ap, 1.0)
    assert res.precision_at(10) == 1.0
    assert res.recall_at(10) == pytest.approx(10 / len(t))
    assert chance_map(np.zeros(3, int), np.zeros(7, int)) == 1.0


def test_ties_follow_target_index():
    # Every target identical: all scores tie, ranking = target order.
    q = np.array([[1.0, 0.0]])
    t = np.array([[2.0, 1.0]] * 4)
    ap = mean_average_precision(q, [0], t, [1, 0, 1, 0], return_per_query=True).per_query[0]
    assert ap == pytest.approx((1 / 2 + 2 / 4) / 2)
    # sklearn treats the tie as one threshold: precision 1/2 at recall 1.
    assert average_precision_score([0, 1, 0, 1], [1.0] * 4) == pytest.approx(0.5)
    # Relevant first in index order gives AP 1.
    assert mean_average_precision(q, [0], t, [0, 0, 1, 1]) == pytest.approx(1.0)


def test_zero_vectors_cosine_no_nan():
    q = np.array([[0.0, 0.0], [1.0, 0.0]])
    t = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    res = retrieval_scores(q, [0, 1], t, [1, 0, 1, 0], ks=(1, 2))
    assert np.isfinite(res.ap).all()
    # zero query: all tie at 0 -> index order -> relevant (label 0) at ranks 2 and 4
    assert res.ap[0] == pytest.approx((1 / 2 + 2 / 4) / 2)
    # query 1: scores [0, 1, -1, 0] -> ranking 1, 0, 3, 2 -> relevant (label 1) at ranks 2, 4
    assert res.ap[1] == pytest.approx((1 / 2 + 2 / 4) / 2)
    np.testing.assert_array_equal(res.precision[1], [0.0, 0.0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("same_set", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_against_brute_force_with_ties(seed, same_set, dtype):
    q, ql, t, tl = _int_set(seed)
    if same_set:
        t, tl = q, ql
    ks = (1, 4, 10)
    res = retrieval_scores(q.astype(dtype), ql, t.astype(dtype), tl, same_set=same_set,
                           metric="euclidean", ks=ks)
    ap, prec, rec = _brute(_neg_sq_dist(q, t), ql, tl, same_set=same_set, ks=ks)
    np.testing.assert_allclose(res.ap, ap, atol=1e-12, equal_nan=True)
    for k in ks:
        np.testing.assert_allclose(res.precision[k], prec[k], atol=1e-12, equal_nan=True)
        np.testing.assert_allclose(res.recall[k], rec[k], atol=1e-12, equal_nan=True)
        kw = dict(same_set=same_set, metric="euclidean", k=k)
        assert precision_at_k(q, ql, t, tl, **kw) == pytest.approx(np.nanmean(prec[k]), abs=1e-12)
        assert recall_at_k(q, ql, t, tl, **kw) == pytest.approx(np.nanmean(rec[k]), abs=1e-12)


def test_cosine_brute_force_random():
    q, ql, t, tl = _random_set(21)
    ap, prec, rec = _brute(_cosine(q, t), ql, tl, ks=(5,))
    p = precision_at_k(q, ql, t, tl, k=5, return_per_query=True)
    r = recall_at_k(q, ql, t, tl, k=5, return_per_query=True)
    np.testing.assert_allclose(p.per_query, prec[5], atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(r.per_query, rec[5], atol=1e-12, equal_nan=True)
    assert p.n_excluded == r.n_excluded == int(np.isnan(ap).sum())


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("same_set", [False, True])
def test_chunk_size_independence(metric, same_set):
    q, ql, t, tl = _int_set(5, n_q=23, n_t=31, d=4)
    if same_set:
        t, tl = q, ql
    runs = [retrieval_scores(q, ql, t, tl, same_set=same_set, metric=metric, ks=(3,),
                             chunk_size=c) for c in (1, 7, len(q), None)]
    for other in runs[1:]:
        np.testing.assert_array_equal(other.ap, runs[0].ap)
        np.testing.assert_array_equal(other.precision[3], runs[0].precision[3])


def test_working_memory_is_bounded_by_chunk():
    rng = np.random.default_rng(0)
    n, d, chunk = 4000, 16, 50
    x = rng.standard_normal((n, d)).astype(np.float32)
    labels = rng.integers(0, 40, n)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        retrieval_scores(x, labels, x, labels, chunk_size=chunk)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # documented bound chunk * N * BYTES_PER_PAIR, plus O(N) per-query/per-target arrays
    assert peak < chunk * n * BYTES_PER_PAIR + 64 * n + 2**20


# ----------------------------------------------------------------------------- chance

def _ap_of_relevance(rel):
    """AP of each row of a boolean relevance ranking (rows with R >= 1)."""
    pos = np.arange(1, rel.shape[1] + 1)
    return (rel * np.cumsum(rel, axis=1) / pos).sum(1) / rel.sum(1)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_expected_random_ap_exact_enumeration(n):
    for r in range(1, n + 1):
        rows = []
        for chosen in itertools.combinations(range(n), r):
            row = np.zeros(n, dtype=bool)
            row[list(chosen)] = True
            rows.append(row)
        exact = _ap_of_relevance(np.array(rows)).mean()
        assert expected_random_ap(r, n) == pytest.approx(exact, abs=1e-12)


@pytest.mark.parametrize(("r", "n"), [(1, 10), (3, 10), (5, 50), (20, 300)])
def test_expected_random_ap_monte_carlo(r, n):
    rng = np.random.default_rng(r * 1000 + n)
    trials = 20000
    rel = rng.random((trials, n)).argsort(axis=1) < r  # R relevant items in a random order
    ap = _ap_of_relevance(rel)
    se = ap.std(ddof=1) / math.sqrt(trials)
    assert abs(ap.mean() - expected_random_ap(r, n)) < 4 * se


def test_expected_random_ap_edges_and_arrays():
    h = sum(1 / i for i in range(1, 21))
    assert expected_random_ap(1, 20) == pytest.approx(h / 20)
    assert expected_random_ap(1, 1) == 1.0 and expected_random_ap(7, 7) == 1.0
    out = expected_random_ap(np.array([1, 2, 3]), 3)
    np.testing.assert_allclose(out, [11 / 18, (1 + 5 / 6 + 7 / 12) / 3, 1.0])
    for bad in [(0, 5), (6, 5), (1.5, 5)]:
        with pytest.raises(InputError):
            expected_random_ap(*bad)


def test_chance_map_and_precision():
    labels = np.array([0, 0, 0, 1, 1, 2])
    # same_set: class 2 excluded; class 0 has R=2 of N=5, class 1 has R=1 of N=5
    expected = (3 * expected_random_ap(2, 5) + 2 * expected_random_ap(1, 5)) / 5
    assert chance_map(labels, same_set=True) == pytest.approx(expected)
    assert chance_map(labels, labels, same_set=True) == pytest.approx(expected)
    assert chance_precision_at_k(labels, same_set=True, k=2) == pytest.approx((3 * 2 / 5 + 2 * 1 / 5) / 5)
    assert chance_recall_at_k(labels, same_set=True, k=2) == pytest.approx(2 / 5)
    # cross set: query label 7 has no target and is excluded
    ql, tl = np.array([0, 1, 7]), np.array([0, 0, 1, 2])
    assert chance_map(ql, tl) == pytest.approx((expected_random_ap(2, 4) + expected_random_ap(1, 4)) / 2)
    assert chance_precision_at_k(ql, tl, k=1) == pytest.approx((2 / 4 + 1 / 4) / 2)
    with pytest.raises(InputError):
        chance_map([5, 6], [1, 2])
    with pytest.raises(InputError):
        chance_precision_at_k(ql, tl, k=5)


# ----------------------------------------------------------------------------- errors

def _errors():
    q, ql, t, tl = _random_set(0, n_q=6, n_t=8, d=4)
    return [
        ("dims", dict(queries=q, targets=t[:, :3]), "dimensions"),
        ("query label count", dict(query_labels=ql[:-1]), "query_labels has 5"),
        ("target label count", dict(target_labels=np.append(tl, 0)), "target_labels has 9"),
        ("empty queries", dict(queries=q[:0], query_labels=ql[:0]), "empty"),
        ("empty targets", dict(targets=t[:0], target_labels=tl[:0]), "empty"),
        ("all excluded", dict(query_labels=ql + 100), "every query is excluded"),
        ("same_set other features", dict(same_set=True), "different feature sets"),
        ("same_set other labels", dict(targets=q, target_labels=ql[::-1], same_set=True), "labels differ"),
        ("1-D features", dict(queries=q[0], query_labels=ql[:1]), "2-D"),
        ("NaN", dict(queries=np.where(q > 1, np.nan, q)), "NaN"),
        ("label kinds", dict(query_labels=[str(v) for v in ql]), "different kinds"),
        ("metric", dict(metric="manhattan"), "unknown metric"),
        ("chunk_size", dict(chunk_size=0), "chunk_size"),
        ("k too large", dict(k=9), "out of range"),
        ("k zero", dict(k=0), "out of range"),
    ], dict(queries=q, query_labels=ql, targets=t, target_labels=tl)


_CASES, _GOOD = _errors()


@pytest.mark.parametrize(("name", "change", "message"), _CASES, ids=[c[0] for c in _CASES])
def test_input_errors(name, change, message):
    kw = {**_GOOD, **change}
    args = [kw.pop(n) for n in ("queries", "query_labels", "targets", "target_labels")]
    funcs = [precision_at_k, recall_at_k] if "k" in kw else [mean_average_precision, precision_at_k]
    for func in funcs:
        with pytest.raises(InputError, match=message):
            func(*args, **kw)


def test_same_set_single_image_and_error_is_value_error():
    with pytest.raises(InputError, match="at least 2"):
        mean_average_precision(np.ones((1, 3)), [0], same_set=True)
    with pytest.raises(ValueError):  # InputError is a ValueError
        mean_average_precision(np.ones((2, 3)), [0, 1], np.ones((2, 4)), [0, 1])


# ----------------------------------------------------------------------------- published numbers

def test_published_numbers_load():
    within = published.published_within_modal()
    assert within["BL-Ind"] == {"NAT": 19.3, "CLP": 31.7, "SPT": 83.0, "LDR": 18.1, "DSC": 11.1}
    assert within["C: Tune + B: StatReg (GMM)"]["NAT"] == 20.2
    assert len(within) == 8
    cross = published.published_cross_modal()
    assert cross["BL-Individual"][("NAT", "CLP")] == 17.9 and cross["BL-Individual"][("NAT", "LDR")] == 10.0
    assert cross["C: Tune + StatReg (GMM)"][("SPT", "NAT")] == 10.1
    assert not any(q in ("LDR", "DSC") for v in cross.values() for q, _ in v)  # no line-drawing queries
    assert ("NAT", "DSC") not in cross["Subsp. Align. + PlacesNet"]  # "–" in the papers
    p10 = published.published_cross_modal("precision_at_10")
    assert p10["unspecified"][("CLP", "NAT")] == 24.8
    assert published.published_chance_map() == 0.73
    data = published.load_published()
    assert "not a like-for-like" in data["note"] and set(data["sources"]) == {"castrejon2016", "aytar2016"}
    assert published.modality_key("LDR") == "sketch" and published.modality_key("Natural") == "natural"
    for spt in ("SPT", "dsc"):  # the papers' spatial text and descriptions are no image modality here
        with pytest.raises(InputError, match="not an image modality"):
            published.modality_key(spt)
    with pytest.raises(InputError):
        published.modality_key("photo")
    with pytest.raises(InputError):
        published.published_cross_modal("ndcg")
    # the file is valid JSON inside the package directory (shipped as package data)
    raw = resources.files("crossmodal.evaluate.retrieval").joinpath("published_cmplaces.json")
    assert json.loads(raw.read_text(encoding="utf-8"))["format"] == 1


#: Every published value, written out here from the text it was transcribed from: the study's
#: transcription (issue 19, "the values, as transcribed by the study from the papers (fc7, mAP %)"),
#: its columns in the papers' order NAT, CLP, SPT (spatial text), LDR (line drawings: our sketches),
#: DSC (descriptions), "–" where the papers give none. Not checked against the papers' tables (no
#: stored copy reaches them), so no table is named here or in the JSON (``location`` stays None).
WITHIN_TEXT = """BL-Ind 19.3, 31.7, 83.0, 18.1, 11.1; BL-ShFinal 18.2, 22.0, 81.2, 13.8, 29.8;
BL-ShAll 18.4, 26.7, 82.7, 16.6, 11.1; A: Tune 19.0, 23.9, 74.2, 13.7, 36.3; A: Tune (Free) 19.4, 22.9, 85.0, 13.5, 34.2;
B: StatReg (Gaussian) 19.4, 31.1, 84.0, 17.3, 11.1; B: StatReg (GMM) 19.3, 31.1, 82.5, 16.7, 13.5;
C: Tune + B: StatReg (GMM) 20.2, 22.5, 82.2, 13.1, 37.0"""
CROSS_TEXT = """BL-Individual 17.9, 11.9, 10.0, 1.3 | 12.2, 10.3, 9.2, 1.3 | 7.0, 9.1, 5.2, 1.1;
BL-Shared-Upper-Scratch 7.0, 7.8, 4.1, 10.9 | 5.5, 5.0, 3.2, 9.2 | 5.2, 4.5, 2.7, 8.9;
BL-Shared-Upper 10.4, 12.4, 4.5, 14.6 | 9.1, 7.2, 3.7, 10.1 | 6.8, 5.5, 3.0, 8.9;
Subsp. Align. + PlacesNet 9.4, 0.8, 3.1, – | 8.2, 0.9, 2.4, – | 0.7, 0.9, 0.9, –;
Subsp. Align. + PlacesNet Finetune 16.3, 10.2, 10.4, 1.2 | 14.1, 9.4, 10.5, 1.5 | 8.6, 9.4, 5.1, 1.2;
A: Tune 13.3, 11.3, 6.7, 21.9 | 10.1, 8.5, 5.7, 15.8 | 6.3, 4.8, 3.4, 11.4;
A: Tune (Free) 14.0, 16.0, 7.9, 20.6 | 9.6, 8.1, 4.7, 14.8 | 11.3, 8.0, 5.2, 18.0;
B: StatReg (Gaussian) 17.3, 11.9, 10.1, 1.6 | 12.6, 8.9, 9.7, 1.3 | 6.6, 8.6, 4.9, 1.4;
B: StatReg (GMM) 18.2, 11.3, 10.5, 1.2 | 14.5, 10.7, 10.1, 1.2 | 7.0, 7.9, 4.9, 1.2;
C: Tune + StatReg (GMM) 13.2, 16.9, 7.2, 24.5 | 10.9, 10.4, 5.7, 16.5 | 10.1, 8.3, 5.0, 18.8"""
CROSS_TARGETS = {"NAT": ("CLP", "SPT", "LDR", "DSC"), "CLP": ("NAT", "SPT", "LDR", "DSC"),
                 "SPT": ("NAT", "CLP", "LDR", "DSC")}
P10 = {("NAT", "CLP"): 18.2, ("NAT", "SPT"): 16.6, ("CLP", "NAT"): 24.8, ("CLP", "SPT"): 10.2,
       ("SPT", "NAT"): 21.1, ("SPT", "CLP"): 9.0}  # involve spatial text, not sketches: kept under SPT


def _method_and_values(row: str) -> tuple[str, str]:
    found = re.search(r"\s(\d+\.\d|–)", row)
    return row[:found.start()].strip(), row[found.start():]


def test_published_numbers_equal_the_text_they_were_transcribed_from():
    within = {}
    for row in WITHIN_TEXT.replace("\n", " ").split(";"):
        method, values = _method_and_values(row.strip())
        within[method] = dict(zip(("NAT", "CLP", "SPT", "LDR", "DSC"), (float(v) for v in values.split(","))))
    assert published.published_within_modal() == within
    cross = {}
    for row in CROSS_TEXT.replace("\n", " ").split(";"):
        method, values = _method_and_values(row.strip())
        cross[method] = {(q, t): float(v) for q, part in zip(CROSS_TARGETS, values.split("|"))
                         for t, v in zip(CROSS_TARGETS[q], part.split(",")) if v.strip() != "–"}
    assert len(cross) == 10 and published.published_cross_modal() == cross
    assert published.published_cross_modal("precision_at_10") == {"unspecified": P10}
    assert published.published_chance_map() == 0.73  # "the papers quote 0.73 % for their sets"


def test_a_sketch_run_is_shown_beside_line_drawings_never_spatial_text():
    """A sketch run's within-modal column is headed LDR (BL-Ind 18.1, not SPT's 83.0); its cross-modal
    columns are NAT→LDR and CLP→LDR; with sketches as the query the papers give nothing ("–")."""
    from crossmodal.evaluate.retrieval import reports as rr
    runs = [("sketch", "sketch"), ("natural", "sketch"), ("clipart", "sketch"), ("sketch", "natural")]
    pub = rr.published_comparison([{"query": q, "target": t} for q, t in runs])
    pairs = [{"query": q, "target": t, "map": 0.1, "precision_at_k": 0.1, "k": 10} for q, t in runs]
    md = "\n".join(rr._published_tables({"published": pub, "pairs": pairs, "model": {"name": "m"},
                                           "layer": "fc7", "metric": "cosine"}))
    assert "| method | LDR |" in md and "| BL-Ind | 18.1 |" in md and "83.0" not in md
    assert "| method | NAT→LDR | CLP→LDR | LDR→NAT |" in md
    assert "| BL-Individual | 10.0 | 9.2 | – |" in md
    assert "No published value for LDR→NAT" in md
    assert "SPT" not in md.split("> The five CMPlaces")[0]  # spatial text only named in the note on modalities


@pytest.mark.slow
def test_larger_set_against_sklearn():
    q, ql, t, tl = _random_set(99, n_q=400, n_t=3000, d=64, n_cls=30)
    res = mean_average_precision(q, ql, t, tl, chunk_size=64, return_per_query=True)
    ref = _sklearn_ap(_cosine(q, t), ql, tl)
    np.testing.assert_allclose(res.per_query, ref, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("same_set", [False, True])
def test_float32_search_ranking_against_brute_force(same_set):
    """float32 scores are ranked by sort + search (ties go to the argsort ranking): integer
    features from a wide range give exact float32 scores, almost all rows without ties."""
    rng = np.random.default_rng(11)
    q = rng.integers(-1000, 1001, (40, 8)).astype(np.float64)
    t = q if same_set else rng.integers(-1000, 1001, (70, 8)).astype(np.float64)
    ql = rng.integers(0, 5, len(q))
    tl = ql if same_set else rng.integers(0, 5, len(t))
    ks = (1, 5, 20)
    res = retrieval_scores(q.astype(np.float32), ql, t.astype(np.float32), tl, same_set=same_set,
                           metric="euclidean", ks=ks, chunk_size=16)
    ap, prec, _ = _brute(_neg_sq_dist(q, t), ql, tl, same_set=same_set, ks=ks)
    np.testing.assert_allclose(res.ap, ap, atol=1e-12, equal_nan=True)
    for k in ks:
        np.testing.assert_allclose(res.precision[k], prec[k], atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("same_set", [False, True])
def test_torch_device_path_equals_the_numpy_path(metric, same_set):
    """``device=`` runs the same steps in torch (on a GPU where there is one); on the CPU with
    integer features (exact products, many exact ties) it must give the NumPy path's numbers."""
    rng = np.random.default_rng(5)
    q = rng.integers(-3, 4, (37, 6)).astype(np.float32)
    t = q if same_set else rng.integers(-3, 4, (53, 6)).astype(np.float32)
    ql = rng.integers(0, 4, len(q))
    tl = ql if same_set else rng.integers(0, 5, len(t))
    ks = (1, 5)
    ref = retrieval_scores(q, ql, t, tl, same_set=same_set, metric=metric, ks=ks, chunk_size=8)
    got = retrieval_scores(q, ql, t, tl, same_set=same_set, metric=metric, ks=ks, chunk_size=8, device="cpu")
    np.testing.assert_allclose(got.ap, ref.ap, rtol=0, atol=1e-14, equal_nan=True)  # summation order only
    for k in ks:
        np.testing.assert_array_equal(got.precision[k], ref.precision[k])
    if metric == "euclidean":  # exact scores: the brute force ranks the same ties
        ap, _, _ = _brute(_neg_sq_dist(q, t), ql, tl, same_set=same_set, ks=ks)
        np.testing.assert_allclose(got.ap, ap, atol=1e-12, equal_nan=True)
