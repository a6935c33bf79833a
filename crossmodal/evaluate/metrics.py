"""Classification metrics of the baseline, pure NumPy: accuracy, intervals, per class, confusion.

Inputs are the per-image results of :func:`crossmodal.data.labels.score`
(label muting, shared source labels and unmapped categories are decided there);
this module only counts.

Definitions (``n`` scored images, ``C`` evaluated classes = categories with at
least one scored image):

* **top-1 / top-5**: fraction of scored images whose true category's source
  label is the top-1 / among the top-5 kept source labels (muted); the
  ``_unmuted`` variants rank all source labels;
* **95 % interval**: Wilson score interval of a binomial proportion,
  ``(p + z²/2n ± z·sqrt(p(1−p)/n + z²/4n²)) / (1 + z²/n)``, ``z = 1.95996``;
  it stays inside [0, 1] and is sensible at 0 or n successes, unlike the
  normal approximation;
* **mean class accuracy**: the unweighted mean of per-class top-1 accuracy over
  the evaluated classes (every class counts once, however many images it has);
* **chance**: the expected muted accuracy of a guesser that never looks at the
  image. The muted ranking names one of the ``L`` *kept source labels* (model
  labels that map to at least one category of the data set; a label shared by
  several categories counts once and is right for each of them), so chance is
  counted over labels, not categories. With ``n`` scored images, ``m`` of them
  of a category that has a label (``m = n`` under ``--unmapped exclude``; under
  ``keep`` the other ``n − m`` can never be right) and ``n_l`` scored images
  whose category maps to label ``l`` (``Σ n_l = m``):

  - ``chance_top1`` / ``chance_top5``: a **uniform** guess of 1 (resp. ``k``
    distinct) of the ``L`` labels: ``(m / n) · 1 / L`` and ``(m / n) · min(k, L) / L``;
  - ``chance_top1_prior``: a **prior-matched** guess, label ``l`` drawn with
    probability ``n_l / m`` (its images' share among the images a label can
    name): ``Σ_l n_l² / (n · m)`` (``Σ p_l²`` under ``exclude``);
  - ``chance_top1_majority``: a **majority** guess, always the label with the
    most scored images: ``max_l n_l / n``;
  - ``chance_num_labels``: ``L``.
* **predicted category** (confusion matrix): the target category of the muted
  top-1 source label; when several categories share that label it is the true
  category if that is one of them (the prediction counts as correct), else the
  first of them in data set order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crossmodal.data.labels import LabelMapping, Scores

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of ``successes`` out of ``n`` (NaNs when ``n`` is 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, {n}], got {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def confusion_matrix(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` int64 counts: rows true class, columns predicted class."""
    true = np.asarray(true, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    if true.shape != pred.shape:
        raise ValueError(f"true {true.shape} and pred {pred.shape} differ in shape")
    flat = np.bincount(true * n_classes + pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def per_class_counts(true: np.ndarray, correct: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(images, hits)`` per class, each int64 ``(n_classes,)``."""
    true = np.asarray(true, dtype=np.int64)
    images = np.bincount(true, minlength=n_classes)
    hits = np.bincount(true, weights=np.asarray(correct, dtype=np.float64), minlength=n_classes)
    return images.astype(np.int64), np.rint(hits).astype(np.int64)


def safe_ratio(hits: np.ndarray, images: np.ndarray) -> np.ndarray:
    """``hits / images`` elementwise, NaN where ``images`` is 0."""
    hits, images = np.asarray(hits, dtype=np.float64), np.asarray(images, dtype=np.float64)
    out = np.full(images.shape, np.nan)
    np.divide(hits, images, out=out, where=images > 0)
    return out


def chance_levels(true_sources, num_labels: int, k: int = 5) -> dict[str, float]:
    """Chance accuracies of guessers blind to the image (module docstring).

    ``true_sources``: per scored image the source labels correct for its category — an int array
    (n,) of one label each (``-1``: a category without one, ``--unmapped keep``), or a sequence of
    tuples (several labels for a category that matches several, ``()`` for none); ``num_labels``:
    ``L``, the number of kept source labels the guess ranges over; ``k``: the top-k of ``chance_top5``.

    With ``m_i`` correct labels for image ``i``: a uniform guess is right at top-1 with probability
    ``m_i / L`` and at top-k with ``1 − C(L − m_i, k) / C(L, k)``; the prior-matched guesser draws a
    label with the frequency true categories carry it (each image spreading its weight over its
    ``m_i`` labels); the majority guesser always names the label correct for the most images.
    With one label per image these are the formulas of the module docstring.
    """
    from math import comb

    if isinstance(true_sources, np.ndarray) or (len(true_sources) and not isinstance(true_sources[0], tuple)):
        sets = [(int(s),) if s >= 0 else () for s in np.asarray(true_sources, dtype=np.int64).reshape(-1)]
    else:
        sets = [tuple(s) for s in true_sources]
    n = len(sets)
    mapped = [s for s in sets if s]
    m = len(mapped)
    nan = float("nan")
    if n == 0 or num_labels <= 0:
        return {"chance_top1": nan, "chance_top5": nan, "chance_top1_prior": nan,
                "chance_top1_majority": nan, "chance_num_labels": int(num_labels)}
    if m == 0:
        return {"chance_top1": 0.0, "chance_top5": 0.0, "chance_top1_prior": 0.0,
                "chance_top1_majority": 0.0, "chance_num_labels": int(num_labels)}
    L, kk = int(num_labels), min(k, int(num_labels))
    sizes = np.array([min(len(s), L) for s in mapped], dtype=np.float64)
    top_k = np.array([1.0 - comb(L - int(c), kk) / comb(L, kk) for c in sizes])
    weight: dict[int, float] = {}  # each mapped image spreads weight 1 over its labels
    count: dict[int, int] = {}
    for s in mapped:
        for label in s:
            weight[label] = weight.get(label, 0.0) + 1.0 / len(s)
            count[label] = count.get(label, 0) + 1
    q = {label: w / m for label, w in weight.items()}
    prior = sum(sum(q[label] for label in s) for s in mapped) / n
    return {"chance_top1": float(sizes.sum() / (n * L)),
            "chance_top5": float(top_k.sum() / n),
            "chance_top1_prior": float(prior),
            "chance_top1_majority": float(max(count.values()) / n),
            "chance_num_labels": int(num_labels)}


def muted_softmax(logits: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Softmax over the kept (muted) source labels only: ``(N, len(kept))``, rows sum to 1."""
    z = np.asarray(logits, dtype=np.float64)[:, np.asarray(kept, dtype=np.int64)]
    z = z - z.max(axis=1, keepdims=True) if z.shape[1] else z
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True) if z.shape[1] else e


def predicted_categories(pred_sources: np.ndarray, true: np.ndarray, mapping: LabelMapping) -> np.ndarray:
    """Target category per image for predicted source labels (shared-label rule above); -1: none."""
    pred_sources = np.asarray(pred_sources, dtype=np.int64)
    out = np.full(pred_sources.shape, -1, dtype=np.int64)
    for i, (s, t) in enumerate(zip(pred_sources, np.asarray(true, dtype=np.int64))):
        group = mapping.source_to_targets.get(int(s), ())
        if group:
            out[i] = t if t in group else group[0]
    return out


@dataclass
class ClassificationMetrics:
    """Everything the baseline reports about one scored set (fractions in [0, 1]).

    ``classes``: indices into the data set categories of the rows/columns of
    ``confusion`` and the entries of the ``per_class_*`` arrays, in category order:
    every evaluated class plus any category predicted without having images.
    """

    n_scored: int
    top1: float
    top5: float
    top1_unmuted: float
    top5_unmuted: float
    top1_ci95: tuple[float, float]
    top5_ci95: tuple[float, float]
    mean_class_accuracy: float
    num_classes_evaluated: int
    chance: dict[str, float]
    classes: np.ndarray
    per_class_images: np.ndarray
    per_class_top1_hits: np.ndarray
    per_class_top5_hits: np.ndarray
    confusion: np.ndarray
    k: int = 5
    extra: dict = field(default_factory=dict)

    @property
    def per_class_top1(self) -> np.ndarray:
        return safe_ratio(self.per_class_top1_hits, self.per_class_images)

    @property
    def per_class_top5(self) -> np.ndarray:
        return safe_ratio(self.per_class_top5_hits, self.per_class_images)

    def summary(self) -> dict:
        """The scalar results, JSON-ready."""
        return {
            "num_images_scored": self.n_scored, "num_classes_evaluated": self.num_classes_evaluated,
            "top1": self.top1, "top5": self.top5,
            "top1_unmuted": self.top1_unmuted, "top5_unmuted": self.top5_unmuted,
            "top1_ci95": list(self.top1_ci95), "top5_ci95": list(self.top5_ci95),
            "mean_class_accuracy": self.mean_class_accuracy, **self.chance,
        }


def _true_sources(true: np.ndarray, mapping: LabelMapping) -> list[tuple[int, ...]]:
    """The source labels correct for each true target category (``()`` where it has none)."""
    sets = mapping.target_sources or tuple((s,) if s is not None else () for s in mapping.target_to_source)
    return [tuple(sets[int(t)]) for t in np.asarray(true, dtype=np.int64)]


def classification_metrics(scores: Scores, labels: np.ndarray) -> ClassificationMetrics:
    """Metrics of ``scores`` (from :func:`~crossmodal.data.labels.score`) for true ``labels``."""
    labels = np.asarray(labels, dtype=np.int64)
    inc = scores.included
    true = labels[inc]
    n = int(inc.sum())
    n_targets = len(scores.mapping.target_categories)
    top1_src = scores.pred[:, 0] if scores.pred.shape[1] else np.full(len(labels), -1)
    pred_cat = predicted_categories(top1_src[inc], true, scores.mapping)
    images, hits1 = per_class_counts(true, scores.top1[inc], n_targets)
    _, hits5 = per_class_counts(true, scores.topk[inc], n_targets)
    classes = np.union1d(np.flatnonzero(images), pred_cat[pred_cat >= 0]).astype(np.int64)
    position = np.full(n_targets, -1, dtype=np.int64)
    position[classes] = np.arange(classes.size)
    has_pred = pred_cat >= 0
    # an image without any prediction (no kept label at all) is an error with no column
    confusion = confusion_matrix(position[true[has_pred]], position[pred_cat[has_pred]], classes.size)
    acc = scores.accuracy()
    evaluated = images > 0
    k1, k5 = int(scores.top1.sum()), int(scores.topk.sum())
    return ClassificationMetrics(
        n_scored=n, top1=acc["top1"], top5=acc["topk"],
        top1_unmuted=acc["top1_unmuted"], top5_unmuted=acc["topk_unmuted"],
        top1_ci95=wilson_interval(k1, n), top5_ci95=wilson_interval(k5, n),
        mean_class_accuracy=float(np.mean(hits1[evaluated] / images[evaluated])) if evaluated.any() else float("nan"),
        num_classes_evaluated=int(evaluated.sum()),
        chance=chance_levels(_true_sources(true, scores.mapping), len(scores.mapping.kept_sources), scores.k),
        classes=classes, per_class_images=images[classes], per_class_top1_hits=hits1[classes],
        per_class_top5_hits=hits5[classes], confusion=confusion, k=scores.k,
    )
