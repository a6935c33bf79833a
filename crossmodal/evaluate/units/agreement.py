"""Does a unit respond to the same concept in every modality? Agreement of its top images' categories.

Inputs: per modality ``m``, the categories of each unit's top-K images as codes into one shared
vocabulary (the modalities' categories matched by name): ``codes[m]`` int ``(U, K)``, −1 for an
empty slot (a modality with fewer than K images).

Per unit and modality: the **majority** category (most of its top images; ties → the category
first in the vocabulary) and its **share** (count / images in the top). Per unit:

* ``overall``: the majority category of its top images pooled over every modality;
* ``score``: the share of those pooled top images whose category is ``overall`` (1: every top image,
  in every modality, of one category; about 1/K·… for a unit with no concept);
* ``consistent``: "one concept in every modality": some category is a majority (ties allowed) in
  every modality with at least ``min_count`` (2) of that modality's top images.

**Chance level**: the same statistics with each modality's categories shuffled over its images
(:func:`chance`): the expected number of consistent units and the mean score when units bear no
relation to categories, with a one-sided p-value ``(1 + #{rounds ≥ observed}) / (1 + rounds)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

MIN_COUNT = 2


@dataclass
class Agreement:
    """Per unit (U,): ``overall`` code, ``score``, ``consistent``; per modality ``majority`` (U,)
    codes, ``share`` (U,) and ``counts`` of the majority (U,)."""

    overall: np.ndarray
    score: np.ndarray
    consistent: np.ndarray
    majority: dict[str, np.ndarray]
    share: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]


def _counts(codes: np.ndarray, vocab: int) -> np.ndarray:
    """``(U, K)`` codes (−1 empty) → ``(U, vocab)`` counts."""
    u = np.repeat(np.arange(codes.shape[0]), codes.shape[1])
    c = codes.reshape(-1)
    keep = c >= 0
    return np.bincount(u[keep] * vocab + c[keep], minlength=codes.shape[0] * vocab).reshape(-1, vocab)


def agreement(codes: Mapping[str, np.ndarray], vocab: int, min_count: int = MIN_COUNT) -> Agreement:
    """The statistics of the module docstring for every unit."""
    counts = {m: _counts(np.asarray(c, np.int64), vocab) for m, c in codes.items()}
    pooled = sum(counts.values())
    overall = pooled.argmax(axis=1)
    total = pooled.sum(axis=1)
    score = np.where(total > 0, pooled[np.arange(len(overall)), overall] / np.maximum(total, 1), 0.0)
    candidate = np.ones_like(pooled, dtype=bool)
    majority, share, best = {}, {}, {}
    for m, cm in counts.items():
        top = cm.max(axis=1, keepdims=True)
        candidate &= (cm == top) & (cm >= min_count)
        majority[m] = cm.argmax(axis=1)
        best[m] = top[:, 0]
        share[m] = np.where(cm.sum(1) > 0, top[:, 0] / np.maximum(cm.sum(1), 1), 0.0)
    consistent = candidate.any(axis=1)
    return Agreement(overall, score.astype(np.float64), consistent, majority, share, best)


def chance(codes: Mapping[str, np.ndarray], images: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
           vocab: int, rounds: int = 100, seed: int = 0, min_count: int = MIN_COUNT,
           valid: Mapping[str, np.ndarray] | None = None) -> dict:
    """The chance level with categories shuffled: for each modality a random permutation of its
    images' labels (``labels[m]`` (N,) codes, ``images[m]`` the (U, K) image rows of the tops,
    −1 empty) replaces each top image's category; ``rounds`` rounds, seeded. ``valid[m]`` (N,) bool:
    the images that count (those that decoded); labels are permuted among them only.

    Returns ``{"rounds", "consistent_mean", "consistent_std", "score_mean", "consistent_p",
    "score_p"}`` against the observed values of :func:`agreement` on ``codes``."""
    observed = agreement(codes, vocab, min_count)
    obs_n, obs_score = int(observed.consistent.sum()), float(observed.score.mean())
    rng = np.random.default_rng(seed)
    ns, scores = [], []
    for _ in range(max(0, int(rounds))):
        shuffled = {}
        for m, rows in images.items():
            perm = np.array(labels[m], np.int64)
            ok = np.ones(len(perm), bool) if valid is None else np.asarray(valid[m], bool)
            perm[ok] = rng.permutation(perm[ok])
            r = np.asarray(rows)
            shuffled[m] = np.where(r >= 0, perm[np.clip(r, 0, None)], -1)
        a = agreement(shuffled, vocab, min_count)
        ns.append(int(a.consistent.sum()))
        scores.append(float(a.score.mean()))
    ns_a, sc_a = np.asarray(ns, float), np.asarray(scores, float)
    return {"rounds": int(rounds),
            "consistent_mean": float(ns_a.mean()) if ns else None,
            "consistent_std": float(ns_a.std()) if ns else None,
            "score_mean": float(sc_a.mean()) if ns else None,
            "consistent_p": float((1 + (ns_a >= obs_n).sum()) / (1 + len(ns))) if ns else None,
            "score_p": float((1 + (sc_a >= obs_score - 1e-12).sum()) / (1 + len(ns))) if ns else None}


def vocabulary(categories: Sequence[Sequence[str]]) -> list[str]:
    """The modalities' category names, united by name, in first-seen order."""
    return list(dict.fromkeys(c for cats in categories for c in cats))
