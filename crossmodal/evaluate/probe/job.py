"""The probe job: are a photo-trained network's frozen features good enough to classify a modality?

For a train modality and a test modality (the same one by default): resolve both
data sets as ``baseline`` does (``--train-split`` / ``--test-split`` lists) → the
features of one layer (``fc7`` by default) and the logits, from the shared
feature cache (:func:`~crossmodal.evaluate.features.extract_features`; a cache
filled by ``baseline`` or ``retrieval`` is reused) → a classifier trained on the
training images' features (:mod:`~crossmodal.evaluate.probe.fit`: logistic
regression with C swept on a validation split carved from the training data,
then refit on all of it; or the MLP head) → scores on the test images → files
(:mod:`~crossmodal.evaluate.probe.reports`) and the adjusted network as a model
folder (:mod:`~crossmodal.evaluate.probe.model`).

Classes: the training data set's categories that have training images; test
images are matched to them by category *name* (the CMPlaces modalities share
their categories by name), and test images of a category the classifier never
saw are left out and counted. Beside the probe's accuracy the report sets the
unadjusted network's muted baseline top-1 on the same test images (label
muting as in ``baseline``) and chance.

Modes: one (train, test) pair; ``cv=K``: stratified K-fold over the labelled
images of one list (no separate training split needed; the scores are of the
pooled out-of-fold predictions, with the per-fold mean ± std); ``all_pairs``:
every train × test pair over the modalities present (one fit per training
modality, scored on every test modality).

Bad input (no training split, fewer than two classes, a class with fewer images
than folds, no category shared by train and test, a layer the model does not
have) raises :class:`~crossmodal.errors.InputError` before anything is written.
Every file (the model folder included) is written into a staging folder and moved
into ``--out`` only when the whole run succeeds (:func:`crossmodal.io.runs.staged`,
``probe.json`` last); a run that fails late (no image decoded, a crash) leaves
``--out`` as it was, its default ``cache`` sub-folder included when the input was
bad. ``probe.json`` carries the weights' identity (``weights``, ``banner``) and the
``run`` block; on random weights the banner tops ``probe.md`` and every chart title.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from crossmodal.ir import identity
from crossmodal.ir.graph import Graph
from crossmodal.ir.store import load_graph
from crossmodal.errors import InputError
from crossmodal.evaluate.probe import fit as pf
from crossmodal.data.datasets import Dataset, ModalityAbsent, modality_names, resolve_modality
from crossmodal.evaluate.metrics import chance_levels, confusion_matrix, per_class_counts, wilson_interval
from crossmodal.io.atomic import check_output_dir
from crossmodal.io.hashing import file_sha256
from crossmodal.reports.runs import RunRecord
from crossmodal.io.runs import staged, utc_now

FORMAT = "crossmodal-probe"
CLASSIFIERS = ("logistic", "mlp")
VAL_FRACTION = 0.2
TOP_K = 5


# --------------------------------------------------------------------------- data
@dataclass
class ModalityData:
    """One data set's decoded images: features ``x`` ``(N, D)`` float32, category names ``cats``
    ``(N,)``, base-model logits ``(N, S)`` and the data set's own label indices ``labels`` ``(N,)``."""

    name: str
    split: str
    dataset: Dataset
    x: np.ndarray
    cats: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    paths: list
    failed: list
    cache: dict

    def describe(self) -> dict:
        ds = self.dataset
        return {"modality": self.name, "split": self.split, "root": str(ds.root), "layout": ds.layout,
                "origin": ds.origin, "num_images": len(ds.records), "num_decoded": len(self.paths),
                "num_failed": len(self.failed), "num_missing": len(ds.missing), "files": split_files(ds),
                "failed_images": [{"path": str(p), "reason": r} for p, r in self.failed], "cache": self.cache}


def split_files(ds: Dataset) -> dict:
    """The list and categories files a data set was read from, with their SHA-256, and a SHA-256
    over its records (relative path + label, in order: identifies class-folder sets too)."""
    import hashlib
    out = {kind: {"path": str(p), "sha256": file_sha256(p)} for kind, p in ds.files.items()}
    h = hashlib.sha256()
    for r in ds.records:
        try:
            rel = r.path.relative_to(ds.root).as_posix()
        except ValueError:
            rel = str(r.path)
        h.update(f"{rel}\t{r.category}\n".encode("utf-8", "surrogateescape"))
    out["records_sha256"] = h.hexdigest()
    return out


def default_feature(graph: Graph) -> str:
    """The feature the network's last dense layer reads (through dropouts): its blob name
    (``fc7`` for VGG) when it has one, else the layer name."""
    dense = [l for l in graph.layers if l.kind == "dense"]
    if not dense:
        raise InputError("the model has no dense layer; give the feature layer with --layer")
    src = dense[-1].inputs[0]
    while src != graph.input.name and graph.layer(src).kind == "dropout":
        src = graph.layer(src).inputs[0]
    return next((b for b, l in graph.blobs.items() if l == src and b not in ("logits", "prob")), src)


def _split_lists(root: Path, modality: str) -> list[str]:
    from crossmodal.data.datasets import SPLITS
    return sorted(p.name for p in Path(root).glob("*.txt")
                  if p.stem in SPLITS or p.stem.removeprefix(f"{modality}_") in SPLITS)


def resolve_split(name: str, split: str, role: str, *, data_root, config) -> Dataset:
    """A modality's data set for one split; a missing training list is an error naming the lists found."""
    try:
        ds = resolve_modality(name, data_root=data_root, config=config, split=split)
    except ModalityAbsent as exc:
        raise InputError(f"{role} modality {name!r} is absent from the data: {exc}") from None
    except InputError as exc:
        if "no list for split" in str(exc) or "has no list for split" in str(exc):
            raise InputError(f"modality {name!r} has no {split!r} split for the {role} images "
                             f"({exc}); choose it with "
                             f"--{'train' if role == 'training' else 'test'}-split, or use --cv K to "
                             f"cross-validate over one list") from None
        raise
    return ds


def _same_images(a: Dataset, b: Dataset) -> bool:
    return [r.path for r in a.records] == [r.path for r in b.records]


def _no_train_split(ds: Dataset, split: str) -> InputError:
    found = _split_lists(ds.root, ds.name)
    return InputError(f"modality {ds.name!r} has no {split!r} list, so no training images apart from the test "
                      f"images (lists found: {', '.join(found) or 'none, class-folder layout'}); give a "
                      f"{split}.txt, or use --cv K to cross-validate over its labelled images", ds.root)


# --------------------------------------------------------------------------- scoring
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
    tr, va = pf.stratified_holdout(y, VAL_FRACTION, seed)
    if classifier == "mlp":
        head = pf.fit_mlp(x[tr], y[tr], x[va], y[va], k, seed=seed, device=device, log=log)
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
            idx = tr[pf.few_shot_indices(y[tr], shot, s)]
            n_rows = len(idx)
            present = np.unique(y[idx])
            if present.size < 2:
                continue
            if fit.head.kind == "mlp":
                head = pf.fit_mlp(x[idx], y[idx], x[va], y[va], k, seed=s, device=device)
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


def class_labels(data: ModalityData) -> tuple[list[str], np.ndarray]:
    """Classes = the data set's categories that have decoded images (category order); y per row."""
    present = set(data.cats.tolist())
    names = [c for c in data.dataset.categories if c in present]
    if len(names) < 2:
        raise InputError(f"modality {data.name!r} ({data.split}) has {len(names)} category among its decoded "
                         f"images; a classifier needs at least 2", data.dataset.root)
    index = {c: i for i, c in enumerate(names)}
    return names, np.array([index[c] for c in data.cats], dtype=np.int64)


# --------------------------------------------------------------------------- the job
@dataclass
class ProbeRun:
    results: dict
    files: dict[str, Path] = field(default_factory=dict)


def run_probe(model_dir: str | os.PathLike, modality: str | None = None, *, out_dir, train_modality: str | None = None,
              all_pairs: bool = False, data_root=None, config=None, train_split: str = "train",
              test_split: str = "val", layer: str | None = None, classifier: str = "logistic",
              C: float | None = None, cv: int | None = None, shots="1,2,5,10,20,all", seeds: int = 3, seed: int = 0,
              backend: str = "onnx", device: str = "auto", batch_size: int = 32, workers: int | None = None,
              threads: int | None = None, cache_dir=None, draft: bool = True, export_model: bool = True,
              on_step: Callable[[str], None] | None = None,
              on_start: Callable[[str, int, int], None] | None = None,
              on_batch: Callable[[str, int, int], None] | None = None) -> ProbeRun:
    """Train and score probes (module docstring); writes the files and the model folder(s)."""
    from crossmodal.runtime.devices import check_device
    from crossmodal.runtime.engine import BACKENDS
    from crossmodal.evaluate.feature_cache import model_fingerprint, rollback_new_caches, run_cache_dir
    from crossmodal.data.labels import applicable_aliases, load_aliases

    t_start, started = time.perf_counter(), utc_now()
    step = on_step or (lambda msg: None)
    if classifier not in CLASSIFIERS:
        raise InputError(f"unknown classifier {classifier!r}; choose from {', '.join(CLASSIFIERS)}")
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if C is not None and not C > 0:
        raise InputError(f"--C must be positive, not {C}")
    if seeds < 1:
        raise InputError(f"--seeds must be at least 1, not {seeds}")
    if cv is not None and cv < 2:
        raise InputError(f"--cv needs at least 2 folds, not {cv}")
    shot_list = pf.parse_shots(shots)
    device = check_device(device)
    fit_device = pf.torch_device(device)
    model_dir, out_dir = Path(model_dir), check_output_dir(Path(out_dir))
    graph = load_graph(model_dir)
    feature = layer or default_feature(graph)
    graph.resolve(feature)  # a layer the model does not have fails here
    cache_dir = run_cache_dir(cache_dir, out_dir)

    # 1. which data sets: every one checked before any image is decoded
    if all_pairs:
        if modality or train_modality or cv:
            raise InputError("--all runs the train × test grid over the modalities present; leave out "
                             "--modality, --train-modality and --cv")
        from crossmodal.evaluate.retrieval.job import present_modalities
        present = present_modalities(data_root=data_root, config=config, split=test_split)
        if not present:
            raise InputError(f"no image modality with a {test_split!r} split found under the data root / "
                             f"in the config", data_root or config)
        tests = dict(present)
        trains, skipped = {}, {}
        for name, ds in present.items():
            try:
                tds = resolve_split(name, train_split, "training", data_root=data_root, config=config)
            except InputError as exc:
                skipped[name] = str(exc)
                continue
            if _same_images(tds, ds):
                skipped[name] = str(_no_train_split(ds, train_split))
                continue
            trains[name] = tds
        if not trains:
            raise InputError("no modality has a training split: " + "; ".join(skipped.values()))
        for name, why in skipped.items():
            step(f"{name}: not trained on ({why})")
    else:
        names = modality_names(modality)
        if len(names) != 1:
            raise InputError("give one --modality (the test images), or --all for the grid")
        test_name = names[0]
        train_name = (modality_names(train_modality) or [test_name])[0]
        if cv and train_name != test_name:
            raise InputError("--cv cross-validates over one modality's images; leave out --train-modality")
        tests = {test_name: resolve_split(test_name, test_split, "test", data_root=data_root, config=config)}
        skipped = {}
        if cv:
            trains = {}
        else:
            tds = resolve_split(train_name, train_split, "training", data_root=data_root, config=config)
            if train_name == test_name and _same_images(tds, tests[test_name]):
                raise _no_train_split(tds, train_split)
            trains = {train_name: tds}
    if cv:
        ds = tests[test_name]
        counts = Counter(r.category for r in ds.records)
        if len(counts) < 2:
            raise InputError(f"modality {test_name!r} has {len(counts)} category; a classifier needs at least 2",
                             ds.root)
        few = sorted(c for c, n in counts.items() if n < cv)
        if few:
            raise InputError(f"{len(few)} categories have fewer images than the {cv} folds "
                             f"(e.g. {few[0]!r}: {counts[few[0]]})", ds.root)
    for name, ds in trains.items():  # the classes and the overlap, from the lists (before decoding)
        cats = {r.category for r in ds.records}
        if len(cats) < 2:
            raise InputError(f"the {name!r} training images ({train_split}) cover {len(cats)} category; a "
                             f"classifier needs at least 2", ds.root)
        for tname, tds in tests.items():
            if (all_pairs or tname == test_name) and not cats & {r.category for r in tds.records}:
                raise InputError(f"train and test categories do not overlap: none of the categories of the "
                                 f"{tname!r} test images is among the {len(cats)} of the {name!r} training images")
    aliases = applicable_aliases(load_aliases(), graph.labels.names) if graph.labels else {}
    fingerprint = model_fingerprint(model_dir, graph)
    wanted = ["logits", feature] if feature != "logits" else ["logits"]
    weights = identity.identity(graph)
    settings = {"train_split": train_split, "test_split": test_split, "C": C, "cv": cv, "shots": shot_list,
                "seeds": seeds, "val_fraction": VAL_FRACTION, "device_requested": device,
                "fit_device": fit_device, "batch_size": batch_size, "workers": workers, "threads": threads,
                "draft": draft, "cache_dir": str(cache_dir)}
    record = RunRecord("probe", {**settings, "mode": "cv" if cv else ("grid" if all_pairs else "pair"),
                                 "modality": modality, "train_modality": train_modality, "layer": feature,
                                 "classifier": classifier, "seed": seed, "backend": backend,
                                 "export_model": export_model, "model_dir": str(model_dir), "out_dir": str(out_dir),
                                 "data_root": None if data_root is None else str(data_root),
                                 "config": None if config is None else str(config)}, weights, started=started)
    if identity.banner(weights):
        step(identity.banner(weights).upper())
    with staged(out_dir) as stage, rollback_new_caches(cache_dir, out_dir):  # all files or none
        run = _fit_and_write(
            stage, out_dir, model_dir, graph, feature, wanted, fingerprint, aliases, trains, tests, skipped,
            test_name=None if all_pairs else test_name, train_split=train_split, test_split=test_split,
            all_pairs=all_pairs, cv=cv, classifier=classifier, C=C, shot_list=shot_list, seeds=seeds, seed=seed,
            backend=backend, device=device, fit_device=fit_device, batch_size=batch_size, workers=workers,
            threads=threads, cache_dir=cache_dir, draft=draft, export_model=export_model, settings=settings,
            record=record, step=step, on_start=on_start, on_batch=on_batch, t_start=t_start)
    run.files = {name: out_dir / path.relative_to(stage) for name, path in run.files.items()}
    return run


def _fit_and_write(stage: Path, out_dir: Path, model_dir: Path, graph: Graph, feature: str, wanted: list,
                   fingerprint: str, aliases, trains: dict, tests: dict, skipped: dict, *, test_name, train_split,
                   test_split, all_pairs, cv, classifier, C, shot_list, seeds, seed, backend, device, fit_device,
                   batch_size, workers, threads, cache_dir, draft, export_model, settings, record: RunRecord,
                   step, on_start, on_batch, t_start) -> ProbeRun:
    """Steps 2–4 of :func:`run_probe`: features, fits and scores, files written into ``stage`` (moved
    into ``out_dir`` by the caller); paths in the results name their place in ``out_dir``."""
    from crossmodal.runtime.engine import SharedEngine
    from crossmodal.evaluate.features import extract_features

    # 2. features (and the base network's logits for the baseline) from the shared cache
    runner = SharedEngine(backend, model_dir, wanted, device=device, graph=graph, threads=threads,
                           on_open=lambda b: step(f"backend: {b.summary()}"))
    data: dict[tuple[str, str], ModalityData] = {}
    try:
        for role_sets, split in ((trains, train_split), (tests, test_split)):
            for name, ds in role_sets.items():
                key = (name, split)
                if key in data:
                    continue
                tag = f"{name}/{split}"
                step(f"{tag}: {len(ds.records)} images, {len(ds.categories)} categories ({ds.layout})")
                fs = extract_features(
                    model_dir, ds, runner, wanted, device=device, batch_size=batch_size, workers=workers,
                    cache_dir=cache_dir, draft=draft, threads=threads, log=step, read=wanted,
                    on_start=(lambda d, t, m=tag: on_start(m, d, t)) if on_start else None,
                    on_batch=(lambda d, t, m=tag: on_batch(m, d, t)) if on_batch else None)
                if len(fs) == 0:
                    raise InputError(f"none of the {len(ds.records)} images of {tag} could be decoded", ds.root)
                x = np.asarray(fs[feature], dtype=np.float32)
                data[key] = ModalityData(
                    name, split, ds, x.reshape(len(x), -1), np.asarray([fs.categories[i] for i in fs.labels], dtype=object),
                    np.asarray(fs.labels), np.asarray(fs["logits"]), list(fs.paths), list(fs.failed),
                    {"path": str(fs.cache_path), "rows_computed": fs.stats.get("computed"),
                     "rows_from_cache": fs.stats.get("from_cache"), "filled_by": fs.cache_backends})
        ran = runner.engine.describe() if runner.engine is not None else None
    finally:
        runner.close()

    # 3. fits and scores
    common = {"layer": feature, "classifier": classifier, "seed": seed}
    pairs, fits, extras = [], {}, {}
    if cv:
        d = data[(test_name, test_split)]
        pair, fit, extra = _cross_validate(d, cv, classifier=classifier, C=C, seed=seed, device=fit_device,
                                           graph=graph, aliases=aliases, log=step)
        pairs.append({"modality": test_name, "train_modality": test_name, **common, **pair})
        fits[test_name], extras[(test_name, test_name)] = fit, extra
    else:
        for tname, tds in trains.items():
            td = data[(tname, train_split)]
            class_names, y = class_labels(td)
            step(f"training on {tname}/{train_split}: {len(y)} images, {len(class_names)} classes, "
                 f"{td.x.shape[1]} features ({feature}), {classifier}")
            fit = fit_head(td.x, y, class_names, classifier=classifier, C=C, seed=seed, device=fit_device, log=step)
            fits[tname] = fit
            targets = {n: data[(n, test_split)] for n in tests if all_pairs or n == test_name}
            scored = {n: score_head(fit.head, d, class_names, graph=graph, aliases=aliases) for n, d in targets.items()}
            shots_done = few_shot(fit, td.x, y, targets, shot_list, seeds, seed, device=fit_device, log=step,
                                  full_scores={n: s["top1"] for n, s in scored.items()}) if shot_list else {}
            for n, s in scored.items():
                arrays = s.pop("_arrays")
                pairs.append({"modality": n, "train_modality": tname, **common, "C": fit.C,
                              "C_grid": (fit.sweep or {}).get("C_grid", []), "sweep": fit.sweep,
                              "num_train": fit.num_train, "num_val": fit.num_val, "num_classes": len(class_names),
                              **s, "few_shot": shots_done.get(n, []),
                              "head": {k: v for k, v in fit.head.info.items() if k != "curves"}})
                extras[(tname, n)] = {"arrays": arrays, "class_names": class_names,
                                      "curves": fit.head.info.get("curves")}
    for p in pairs:
        step(f"{p['train_modality']} → {p['modality']}: probe top-1 {100 * p['top1']:.2f} %, baseline "
             + ("–" if p["baseline_top1"] is None else f"{100 * p['baseline_top1']:.2f} %")
             + f", chance {100 * p['chance_top1']:.2f} %")

    # 4. files: reports, then the model folders, probe.json last
    from crossmodal.evaluate.probe import reports as probe_reports
    results = {
        "format": FORMAT, "version": 1, "mode": "cv" if cv else ("grid" if all_pairs else "pair"),
        "model": {"dir": str(model_dir), "name": graph.name, "fingerprint": fingerprint,
                  "source_file": graph.provenance.source_file, "source_sha256": graph.provenance.source_sha256},
        "layer": feature, "classifier": classifier, "seed": seed,
        "data": {f"{n}/{s}": d.describe() for (n, s), d in data.items()},
        "split_files": {f"{n}/{s}": split_files(d.dataset) for (n, s), d in data.items()},
        "not_trained_on": skipped,
        "backend": ran or {"backend": backend, "note": "every feature came from the cache"},
        "settings": settings,
        "pairs": pairs,
    }
    if not all_pairs:
        results.update({k: v for k, v in pairs[0].items() if k not in results})
    weights = record.weights
    results.update({"banner": identity.banner(weights),
                    "weights": {**weights, "description": identity.describe(weights)}})
    files = probe_reports.write_probe(stage, results, extras)
    if export_model:
        models = {}
        for tname, fit in fits.items():
            name = "model" if not all_pairs else f"model-{tname}"
            step(f"writing the adjusted network ({fit.head.kind} head on {feature}) to {out_dir / name}")
            models[tname] = _export(model_dir, graph, fit, feature, stage / name, fingerprint,
                                    {"train_modality": tname, "train_split": train_split if not cv else test_split,
                                     "classifier": classifier, "layer": feature, "C": fit.C, "seed": seed,
                                     "cv": cv, "num_train": fit.num_train}, step)
            models[tname]["dir"] = str(out_dir / name)
        results["models"] = models
    results["timings_s"] = {"total": round(time.perf_counter() - t_start, 3)}
    results["run"] = record.block()
    files.update(probe_reports.write_json_last(stage, results))
    return ProbeRun(results, files)


def _cross_validate(d: ModalityData, k: int, *, classifier: str, C: float | None, seed: int, device: str,
                    graph: Graph, aliases, log) -> tuple[dict, Fit, dict]:
    """Stratified K-fold over ``d``'s images: pooled out-of-fold scores, per-fold top-1, and a final
    head fitted on every image (at the C chosen most often)."""
    class_names, y = class_labels(d)
    folds = pf.stratified_kfold(y, k, seed)
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


def _export(model_dir: Path, graph: Graph, fit: Fit, feature: str, target: Path, fingerprint: str,
            settings: dict, step) -> dict:
    from crossmodal.ir.store import load_ir
    from crossmodal.evaluate.probe.model import adjusted_model, write_adjusted_model
    base = load_ir(model_dir)
    model = adjusted_model(base, feature, fit.head, fit.class_names, provenance=settings, base_dir=model_dir,
                           fingerprint=fingerprint)
    del base
    artifacts = write_adjusted_model(model, target, on_step=step)
    return {"dir": str(target), "fingerprint": model.fingerprint(), "artifacts": artifacts}
