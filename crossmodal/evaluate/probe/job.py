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
from typing import Callable

import numpy as np

from crossmodal.ir import identity
from crossmodal.ir.graph import Graph
from crossmodal.ir.store import load_graph
from crossmodal.errors import InputError
from crossmodal.evaluate.probe import fit as pf
from crossmodal.evaluate.probe import splits
from crossmodal.data.datasets import modality_names
from crossmodal.io.atomic import check_output_dir
from crossmodal.reports.runs import RunRecord
from crossmodal.reports.text import decoding
from crossmodal.io.runs import staged, utc_now
from crossmodal.evaluate.probe.data import (
    ModalityData, class_labels, default_feature, no_train_split, resolve_split, same_images, split_files,
)
from crossmodal.evaluate.probe.fitting import VAL_FRACTION, Fit, cross_validate, few_shot, fit_head, score_head

FORMAT = "crossmodal-probe"
CLASSIFIERS = ("logistic", "mlp")


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
              threads: int | None = None, cache_dir=None, draft: bool = False, export_model: bool = True,
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
    shot_list = splits.parse_shots(shots)
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
            if same_images(tds, ds):
                skipped[name] = str(no_train_split(ds, train_split))
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
            if train_name == test_name and same_images(tds, tests[test_name]):
                raise no_train_split(tds, train_split)
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
    with staged(out_dir, "probe") as stage, rollback_new_caches(cache_dir, out_dir):  # all files or none
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
        pair, fit, extra = cross_validate(d, cv, classifier=classifier, C=C, seed=seed, device=fit_device,
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
        "decoding": decoding(draft),
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
    results["files_written"] = sorted(files)
    results["timings_s"] = {"total": round(time.perf_counter() - t_start, 3)}
    results["run"] = record.block()
    files.update(probe_reports.write_json_last(stage, results))
    return ProbeRun(results, files)


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
