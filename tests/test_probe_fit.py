"""The probe's fitters and splits on features whose answer is known, and against scikit-learn.

scikit-learn's ``LogisticRegression`` (lbfgs, multinomial, the same C) is the
independent reference of the logistic head; separable Gaussian classes must be
learnt (≈ 100 %), identical features must give chance.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from crossmodal.errors import InputError
from crossmodal.evaluate.probe import fit as pf
from crossmodal.evaluate.probe import mlp, splits
from helpers import require_module


@pytest.fixture(scope="module")
def sklearn_lr():
    return require_module("sklearn.linear_model", "scikit-learn (the test extra) is the reference")


def gaussian_classes(rng, k=8, d=32, n=40, spread=1.0, n_test=0):
    """``k`` Gaussian classes (unit noise around means of scale ``spread``): ``n`` training rows
    per class, and ``n_test`` test rows per class drawn around the same means."""
    means = rng.normal(size=(k, d)) * spread

    def draw(m):
        y = np.repeat(np.arange(k), m)
        return (means[y] + rng.normal(size=(len(y), d))).astype(np.float32), y
    return (*draw(n), *draw(n_test)) if n_test else draw(n)


def _sklearn(sklearn_lr, x, y, C):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sklearn_lr.LogisticRegression(C=C, max_iter=2000, tol=1e-6).fit(x.astype(np.float64), y)


@pytest.mark.parametrize("C", [0.001, 0.1, 10.0])
def test_logistic_matches_sklearn_on_random_features(sklearn_lr, C):
    x, y, xt, yt = gaussian_classes(np.random.default_rng(7), k=6, d=24, n=50, spread=0.4, n_test=60)
    ours = pf.fit_logistic(x, y, 6, C, tol=1e-5, max_iter=2000)
    ref = _sklearn(sklearn_lr, x, y, C)
    a, b = pf.top1_accuracy(ours, xt, yt), float(ref.score(xt, yt))
    assert abs(a - b) <= 0.005, (a, b)
    # the same optimum: weights agree (scikit-learn's multinomial has no reference class either)
    np.testing.assert_allclose(ours.layers[0][0], ref.coef_, atol=2e-3 * max(1.0, np.abs(ref.coef_).max()))
    # the bias is not penalised and softmax ignores a shift: compare logits centred per row
    la, lb = ours.logits(xt), ref.decision_function(xt)
    np.testing.assert_allclose(la - la.mean(1, keepdims=True), lb - lb.mean(1, keepdims=True),
                               atol=5e-3 * max(1.0, np.abs(lb).max()))


def test_default_tolerance_matches_sklearn_default_accuracy(sklearn_lr):
    """With both libraries' default stopping rule (max |grad| ≤ 1e-4 on the mean objective)."""
    x, y, xt, yt = gaussian_classes(np.random.default_rng(3), k=10, d=64, n=80, spread=0.3, n_test=50)
    ours = pf.fit_logistic(x, y, 10, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sklearn_lr.LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
    assert abs(pf.top1_accuracy(ours, xt, yt) - ref.score(xt, yt)) <= 0.005


def test_separable_gaussian_classes_are_learnt():
    x, y, xt, yt = gaussian_classes(np.random.default_rng(0), k=12, d=48, n=30, spread=6.0, n_test=20)
    head = pf.fit_logistic(x, y, 12, 1.0)
    assert pf.top1_accuracy(head, xt, yt) == 1.0
    mlp_head = mlp.fit_mlp(x, y, xt, yt, 12, seed=0, max_epochs=30)
    assert pf.top1_accuracy(mlp_head, xt, yt) >= 0.99


def test_identical_features_give_chance():
    """Every row the same: the only thing to learn is the class prior. With the bias unpenalised the
    optimum's softmax is exactly the class frequencies, so the fit must recover them (10/20/30/40 %)
    and predict the majority class — what a fit that ignores the bias, or mis-signs a gradient, fails
    (any classifier gets 1/K top-1 on identical rows of balanced classes; this asks more)."""
    counts = np.array([10, 20, 30, 40])
    y = np.repeat(np.arange(len(counts)), counts)
    x = np.ones((len(y), 16), dtype=np.float32) * 3.0
    head = pf.fit_logistic(x, y, len(counts), 10.0)
    logits = head.logits(x)
    assert np.ptp(logits, axis=0).max() < 1e-4  # every row the same
    probs = np.exp(logits[0] - logits[0].max())
    probs /= probs.sum()
    np.testing.assert_allclose(probs, counts / counts.sum(), atol=2e-3)
    assert pf.top1_accuracy(head, x, y) == pytest.approx(counts.max() / counts.sum())


def test_warm_start_reaches_the_same_optimum_faster():
    rng = np.random.default_rng(5)
    x, y = gaussian_classes(rng, k=6, d=40, n=60, spread=0.5)
    cold = pf.fit_logistic(x, y, 6, 1.0, tol=1e-5)
    near = pf.fit_logistic(x, y, 6, 0.3, tol=1e-5)
    warm = pf.fit_logistic(x, y, 6, 1.0, init=near, tol=1e-5)
    assert warm.info["iterations"] < cold.info["iterations"]
    np.testing.assert_allclose(warm.layers[0][0], cold.layers[0][0], atol=2e-3)


def test_sweep_picks_a_c_on_the_validation_split_and_records_the_grid():
    rng = np.random.default_rng(11)
    x, y = gaussian_classes(rng, k=5, d=30, n=40, spread=0.5)
    tr, va = splits.stratified_holdout(y, 0.25, seed=0)
    sw = pf.sweep_c(x[tr], y[tr], x[va], y[va], 5, grid=(0.01, 0.1, 1.0, 10.0))
    d = sw.to_dict()
    assert d["C"] in d["C_grid"] and d["C_grid"] == sorted(d["C_grid"])
    assert max(d["val_top1"]) == d["val_top1"][d["C_grid"].index(d["C"])]
    # refinement added log-midpoints around the best coarse value
    assert len(d["C_grid"]) > 4 or d["C"] in (0.01, 10.0)


def test_stratified_holdout_is_stratified_seeded_and_disjoint():
    y = np.repeat(np.arange(4), [10, 20, 5, 1])
    tr, va = splits.stratified_holdout(y, 0.2, seed=3)
    assert not set(tr) & set(va) and len(tr) + len(va) == len(y)
    assert [int(np.sum(y[va] == c)) for c in range(4)] == [2, 4, 1, 0]  # a one-image class stays in training
    tr2, va2 = splits.stratified_holdout(y, 0.2, seed=3)
    assert np.array_equal(va, va2)
    assert not np.array_equal(va, splits.stratified_holdout(y, 0.2, seed=4)[1])


def test_stratified_kfold_covers_every_row_once_and_balances_classes():
    y = np.repeat(np.arange(3), [10, 7, 5])
    folds = splits.stratified_kfold(y, 5, seed=0)
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests) == list(range(len(y)))
    for tr, te in folds:
        assert not set(tr) & set(te)
        for c, n in zip(range(3), (10, 7, 5)):
            assert int(np.sum(y[te] == c)) in (n // 5, -(-n // 5))
    with pytest.raises(InputError, match="fewer than the 6 folds"):
        splits.stratified_kfold(y, 6)


def test_few_shot_draws_are_reproducible_and_per_class():
    y = np.repeat(np.arange(4), [10, 10, 3, 10])
    a = splits.few_shot_indices(y, 5, seed=1)
    assert np.array_equal(a, splits.few_shot_indices(y, 5, seed=1))
    assert not np.array_equal(a, splits.few_shot_indices(y, 5, seed=2))
    assert [int(np.sum(y[a] == c)) for c in range(4)] == [5, 5, 3, 5]


def test_parse_shots():
    assert splits.parse_shots("20,1,all,2,2") == [1, 2, 20, "all"]
    assert splits.parse_shots("") == []
    with pytest.raises(InputError):
        splits.parse_shots("0,1")
    with pytest.raises(InputError):
        splits.parse_shots("one")


def test_mlp_is_seeded_and_keeps_its_best_epoch():
    rng = np.random.default_rng(2)
    x, y = gaussian_classes(rng, k=4, d=20, n=40, spread=0.6)
    tr, va = splits.stratified_holdout(y, 0.25, seed=0)
    a = mlp.fit_mlp(x[tr], y[tr], x[va], y[va], 4, seed=1, max_epochs=15, patience=3)
    b = mlp.fit_mlp(x[tr], y[tr], x[va], y[va], 4, seed=1, max_epochs=15, patience=3)
    np.testing.assert_array_equal(a.layers[0][0], b.layers[0][0])
    curves = a.info["curves"]
    assert len(curves["val_loss"]) == a.info["epochs_run"]
    assert curves["val_loss"][a.info["best_epoch"] - 1] == min(curves["val_loss"])
    assert [w.shape for w, _ in a.layers] == [(256, 20), (4, 256)]


def test_a_best_c_at_an_end_of_the_grid_takes_the_grid_further_and_is_reported():
    """Easy, well separated classes: the weakest regularisation in the grid is best, so the sweep
    looks a decade further out; a flat validation curve (identical rows) is said to be flat."""
    rng = np.random.default_rng(4)
    x, y, xt, yt = gaussian_classes(rng, k=6, d=30, n=40, spread=0.3, n_test=30)
    sw = pf.sweep_c(x, y, xt, yt, 6, grid=(1e-4, 1e-3))  # a grid whose top is too small
    assert max(sw.grid) > 1e-2 and sw.best_c > 1e-3  # went past the grid's end, and found a better C there
    assert sw.to_dict()["C_at_edge"] is None and not sw.flat
    flat = pf.sweep_c(np.ones((40, 4), np.float32), np.repeat(np.arange(4), 10),
                      np.ones((8, 4), np.float32), np.repeat(np.arange(4), 2), 4, grid=(0.1, 1.0))
    assert flat.flat and flat.to_dict()["val_top1_flat"] and flat.best_c == min(flat.grid)
