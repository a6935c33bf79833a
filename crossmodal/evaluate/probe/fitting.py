"""Fitting and scoring a probe head: the C sweep on a validation split and the refit
(:func:`fit_head`), the few-shot curve, K-fold cross-validation, and scores beside the
unadjusted network's muted baseline on the same test images.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from crossmodal.ir.graph import Graph
from crossmodal.errors import InputError
from crossmodal.evaluate.probe import fit as pf
from crossmodal.evaluate.probe import mlp, splits
from crossmodal.evaluate.metrics import chance_levels, confusion_matrix, per_class_counts, wilson_interval
from crossmodal.evaluate.probe.data import ModalityData, class_labels


VAL_FRACTION = 0.2
TOP_K = 5


def score_head(head: pf.Head, data: ModalityData, class_names: Sequence[str], *, graph: Graph | None,
               aliases=None) -> dict:
    """The head's scores on ``data`` (test images of untrained categories left out), with the
    muted baseline on the same images; arrays for the report under ``"_arrays"``."""
    index = {c: i for i, c in enumerate(class_names)}
    known = np.array([c in index for c in data.cats], dtype=bool)
    if not known.any():
        raise InputError(f"train and test categories do not overlap: none of the {len(set(data.cats))} "
                         f"categories of the {data.name!r} test images is among the {len(class_names)} "
                         f"trained ones (e.g. {data.cats[0]!r} vs {class_names[0]!r})")
    y = np.array([index[c] for c in data.cats[known]], dtype=np.int64)
    logits = head.logits(data.x[known])
    out = scores_from_logits(logits, y, len(class_names))
    unknown = Counter(data.cats[~known].tolist())
    out.update({"num_test": int(known.sum()), "test_images_of_untrained_categories": dict(sorted(unknown.items()))})
    out.update(baseline_on(data, known, out["_arrays"]["top1_hits"], graph, aliases))
    return out


def scores_from_logits(logits: np.ndarray, y: np.ndarray, k: int) -> dict:
    """top-1/top-5, Wilson 95 % interval, mean class accuracy, chance, per-class counts, confusion."""
    pred = pf.predict_topk(logits, TOP_K)
    hit1 = pred[:, 0] == y
    hit5 = (pred == y[:, None]).any(axis=1)
    n = len(y)
    images, hits1 = per_class_counts(y, hit1, k)
    _, hits5 = per_class_counts(y, hit5, k)
    evaluated = images > 0
    chance = chance_levels(y, k)  # the head guesses among its k classes, every test image has one
    return {
        "top1": float(hit1.mean()), "top5": float(hit5.mean()),
        "top1_ci": list(wilson_interval(int(hit1.sum()), n)), "top5_ci": list(wilson_interval(int(hit5.sum()), n)),
        "mean_class_accuracy": float(np.mean(hits1[evaluated] / images[evaluated])),
        "num_classes_evaluated": int(evaluated.sum()),
        "chance_top1": chance["chance_top1"], "chance_top5": chance["chance_top5"],
        "chance_top1_prior": chance["chance_top1_prior"],
        "_arrays": {"images": images, "hits1": hits1, "hits5": hits5, "top1_hits": hit1,
                    "confusion": confusion_matrix(y, pred[:, 0], k)},
    }


def baseline_on(data: ModalityData, rows: np.ndarray, probe_hits: np.ndarray, graph: Graph | None, aliases) -> dict:
    """The unadjusted network's muted top-1 (as ``baseline`` scores it, unmapped categories left
    out) on the test images ``rows``, and the probe's top-1 on exactly the images it scores."""
    from crossmodal.data.labels import build_mapping, score

    empty = {"baseline_top1": None, "baseline_num_scored": 0, "probe_top1_on_baseline_images": None}
    if graph is None or graph.labels is None or not graph.labels.names or data.logits is None:
        return {**empty, "baseline_note": "the base model has no labels: no baseline"}
    mapping = build_mapping(list(graph.labels.names), data.dataset.categories, aliases)
    s = score(data.logits[rows], data.labels[rows], mapping, unmapped="exclude", k=TOP_K)
    if s.n_scored == 0:
        return {**empty, "baseline_note": "no test image's category has a model label"}
    return {"baseline_top1": float(s.top1[s.included].mean()), "baseline_num_scored": s.n_scored,
            "probe_top1_on_baseline_images": float(np.asarray(probe_hits)[s.included].mean()),
            "baseline_note": "muted top-1 of the unadjusted network, categories without a model label left out"}


# --------------------------------------------------------------------------- fitting
@dataclass
class Fit:
    """A trained head for one training modality, with how it was chosen."""

    head: pf.Head
    class_names: list[str]
    C: float | None
    sweep: dict | None
    num_train: int
    num_val: int
    details: dict = field(default_factory=dict)


def fit_head(x: np.ndarray, y: np.ndarray, class_names: list[str], *, classifier: str, C: float | None,
             seed: int, device: str, log: Callable[[str], None]) -> Fit:
    """The protocol on one training set: stratified hold-out → C sweep (or the given C) → refit on
    everything (logistic); or the MLP head trained with early stopping on the hold-out."""
    k = len(class_names)
    tr, va = splits.stratified_holdout(y, VAL_FRACTION, seed)
    if classifier == "mlp":
        head = mlp.fit_mlp(x[tr], y[tr], x[va], y[va], k, seed=seed, device=device, log=log)
        return Fit(head, class_names, None, None, len(tr), len(va), {"holdout": (tr, va)})
    sweep = None
    init = None
    if C is None:
        if not len(va):
            raise InputError("no validation images to sweep C on (every class has one training image); give --C")
        sw = pf.sweep_c(x[tr], y[tr], x[va], y[va], k, device=device, log=log)
        C, init, sweep = sw.best_c, sw.heads[sw.best_c], sw.to_dict()
        log(f"chosen C={C:g} (validation top-1 {100 * max(sw.val_top1):.2f} %); refitting on all "
            f"{len(y)} training images")
    head = pf.fit_logistic(x, y, k, C, init=init, device=device)
    return Fit(head, class_names, C, sweep, len(y), len(va), {"holdout": (tr, va)})


def few_shot(fit: Fit, x: np.ndarray, y: np.ndarray, tests: dict[str, ModalityData], shots: list, seeds: int,
             seed: int, *, device: str, log: Callable[[str], None], full_scores: dict[str, float]) -> dict[str, list]:
    """Per test modality, ``[{shots, top1_mean, top1_std, top1, seeds}]``: k training images per class
    drawn (seeded) from the training images outside the validation hold-out, the head trained at the
    chosen C (logistic) or with early stopping on the hold-out (MLP); ``"all"`` is the main fit."""
    tr, va = fit.details["holdout"]
    k = len(fit.class_names)
    index = {c: i for i, c in enumerate(fit.class_names)}
    prepared = {}
    for name, d in tests.items():
        known = np.array([c in index for c in d.cats], dtype=bool)
        prepared[name] = (d.x[known], np.array([index[c] for c in d.cats[known]], dtype=np.int64))
    out: dict[str, list] = {name: [] for name in tests}
    for shot in shots:
        if shot == "all":
            for name in tests:
                out[name].append({"shots": "all", "top1_mean": full_scores[name], "top1_std": 0.0,
                                  "top1": [full_scores[name]], "seeds": [seed], "num_train": fit.num_train})
            continue
        largest = int(np.bincount(y[tr]).max()) if len(tr) else 0
        if shot >= largest:  # every draw would be the whole pool: not a few-shot point
            for name in tests:
                out[name].append({"shots": shot, "top1_mean": None, "top1_std": None, "top1": [], "seeds": [],
                                  "num_train": 0, "note": f"no class has more than {largest} images to draw from"})
            log(f"{shot}-shot: skipped, no class has more than {largest} training images outside the validation split")
            continue
        accs: dict[str, list] = {name: [] for name in tests}
        seeds_used = [seed + s for s in range(seeds)]
        n_rows = 0
        for s in seeds_used:
            idx = tr[splits.few_shot_indices(y[tr], shot, s)]
            n_rows = len(idx)
            present = np.unique(y[idx])
            if present.size < 2:
                continue
            if fit.head.kind == "mlp":
                head = mlp.fit_mlp(x[idx], y[idx], x[va], y[va], k, seed=s, device=device)
            else:
                head = pf.fit_logistic(x[idx], y[idx], k, fit.C, device=device)
            for name, (xt, yt) in prepared.items():
                accs[name].append(pf.top1_accuracy(head, xt, yt))
        for name in tests:
            a = np.array(accs[name], dtype=np.float64)
            out[name].append({"shots": shot, "top1_mean": float(a.mean()) if a.size else None,
                              "top1_std": float(a.std()) if a.size else None, "top1": a.tolist(),
                              "seeds": seeds_used, "num_train": n_rows})
        log(f"{shot}-shot: " + ", ".join(f"{n} {100 * np.mean(a):.2f} %" for n, a in accs.items() if a))
    return out


def cross_validate(d: ModalityData, k: int, *, classifier: str, C: float | None, seed: int, device: str,
                    graph: Graph, aliases, log) -> tuple[dict, Fit, dict]:
    """Stratified K-fold over ``d``'s images: pooled out-of-fold scores, per-fold top-1, and a final
    head fitted on every image (at the C chosen most often)."""
    class_names, y = class_labels(d)
    folds = splits.stratified_kfold(y, k, seed)
    oof = np.zeros((len(y), len(class_names)), dtype=np.float32)
    fold_top1, fold_c = [], []
    for f, (tr, te) in enumerate(folds):
        log(f"fold {f + 1}/{k}: {len(tr)} training, {len(te)} test images")
        fit = fit_head(d.x[tr], y[tr], class_names, classifier=classifier, C=C, seed=seed, device=device, log=log)
        oof[te] = fit.head.logits(d.x[te])
        fold_top1.append(float(np.mean(np.argmax(oof[te], axis=1) == y[te])))
        fold_c.append(fit.C)
    scores = scores_from_logits(oof, y, len(class_names))
    scores.update(baseline_on(d, np.ones(len(y), dtype=bool), scores["_arrays"]["top1_hits"], graph, aliases))
    arrays = scores.pop("_arrays")
    final_c = None if classifier == "mlp" else (C or Counter(fold_c).most_common(1)[0][0])
    final = fit_head(d.x, y, class_names, classifier=classifier, C=final_c, seed=seed, device=device, log=log)
    pair = {"C": final.C, "C_grid": [], "C_per_fold": fold_c, "num_train": len(y), "num_val": final.num_val,
            "num_test": len(y), "num_classes": len(class_names), **scores,
            "cv": {"folds": k, "top1": fold_top1, "top1_mean": float(np.mean(fold_top1)),
                   "top1_std": float(np.std(fold_top1))},
            "test_images_of_untrained_categories": {}, "few_shot": [],
            "few_shot_note": "not computed under --cv",
            "head": {kk: v for kk, v in final.head.info.items() if kk != "curves"}}
    return pair, final, {"arrays": arrays, "class_names": class_names, "curves": final.head.info.get("curves")}
