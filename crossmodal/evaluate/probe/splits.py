"""Stratified, seeded splits of integer labels ``y`` ``(N,)``: :func:`stratified_holdout`,
:func:`stratified_kfold`, :func:`few_shot_indices` (k images per class; a class with fewer images
gives all it has), and the ``--shots`` list. The same seed gives the same indices. Pure NumPy.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from crossmodal.errors import InputError


def _per_class(y: np.ndarray) -> dict[int, np.ndarray]:
    y = np.asarray(y)
    return {int(c): np.flatnonzero(y == c) for c in np.unique(y)}


def stratified_holdout(y, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)``, sorted: about ``fraction`` of each class's rows go to validation
    (at least one when the class has two or more rows, never all of them). Seeded."""
    if not 0 < fraction < 1:
        raise InputError(f"validation fraction must lie in (0, 1), not {fraction}")
    rng = np.random.default_rng([int(seed), 1])
    train, val = [], []
    for c, idx in _per_class(y).items():
        idx = rng.permutation(idx)
        k = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, int(round(fraction * len(idx)))))
        val.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def stratified_kfold(y, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` folds ``[(train_idx, test_idx)]``: each class's rows are shuffled and dealt out
    round-robin from a random fold, so every fold holds ⌊n_c / k⌋ or ⌈n_c / k⌉ of class c.
    Every class needs at least ``k`` rows (else ``InputError``)."""
    if k < 2:
        raise InputError(f"--cv needs at least 2 folds, not {k}")
    y = np.asarray(y)
    rng = np.random.default_rng([int(seed), 2])
    fold_of = np.empty(len(y), dtype=np.int64)
    for c, idx in _per_class(y).items():
        if len(idx) < k:
            raise InputError(f"class {c} has {len(idx)} images, fewer than the {k} folds")
        idx = rng.permutation(idx)
        fold_of[idx] = (np.arange(len(idx)) + rng.integers(k)) % k
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]


def few_shot_indices(y, shots: int, seed: int) -> np.ndarray:
    """``shots`` rows per class drawn without replacement (all of a smaller class), sorted.
    Reproducible: the draw depends only on ``(y, shots, seed)``."""
    if shots < 1:
        raise InputError(f"shots must be at least 1, not {shots}")
    rng = np.random.default_rng([int(seed), int(shots), 3])
    picks = [rng.permutation(idx)[:shots] for _, idx in _per_class(y).items()]
    return np.sort(np.concatenate(picks))


def parse_shots(value: str | Sequence | None) -> list[int | str]:
    """``"1,2,5,10,all"`` → ``[1, 2, 5, 10, "all"]`` (sorted, without repeats)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    numbers, want_all = set(), False
    for item in (str(v).strip().lower() for v in items):
        if not item:
            continue
        if item == "all":
            want_all = True
            continue
        try:
            n = int(item)
        except ValueError:
            raise InputError(f"--shots takes positive integers and 'all', not {item!r}") from None
        if n < 1:
            raise InputError(f"--shots takes positive integers and 'all', not {item!r}")
        numbers.add(n)
    return sorted(numbers) + (["all"] if want_all else [])
