"""Retrieval through modality towers: each modality's images go through its own model folder (a
``crossmodal finetune --towers per-modality`` run's ``model-<modality>/``), and the features meet in the
space the towers share. Scoring and reports are the retrieval job's (:func:`.job.score_pair`,
:mod:`.reports`); only the feature pass differs (one model per modality).

``--model-per-modality sketch=DIR,clipart=DIR`` or a fine-tune run folder (its ``model-*/`` folders)
name the models (:func:`tower_models`).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Sequence

from crossmodal.data.datasets import ModalityAbsent, canonical_modality, modality_names, resolve_modality
from crossmodal.errors import InputError
from crossmodal.evaluate.retrieval.job import FORMAT, RetrievalRun, as_modality_features, score_pair
from crossmodal.io.atomic import check_output_dir
from crossmodal.io.runs import staged, utc_now
from crossmodal.ir import identity
from crossmodal.ir.store import is_ir_dir, load_graph
from crossmodal.reports.runs import RunRecord
from crossmodal.reports.text import decoding


def tower_models(value: str | os.PathLike) -> dict[str, Path]:
    """``"sketch=DIR,clipart=DIR"`` or a fine-tune run folder holding ``model-<modality>/`` → ``{modality: DIR}``."""
    text = str(value)
    if "=" not in text:
        run = Path(text)
        found = {p.name[len("model-"):]: p for p in sorted(run.glob("model-*")) if is_ir_dir(p)}
        if not found:
            raise InputError("no tower model folders here (model-<modality>/ of a crossmodal finetune --towers "
                             "per-modality run); or give --model-per-modality sketch=DIR,clipart=DIR", run)
        return {canonical_modality(m): p for m, p in found.items()}
    out = {}
    for item in (v.strip() for v in text.split(",") if v.strip()):
        name, sep, folder = item.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise InputError(f"--model-per-modality takes MODALITY=DIR pairs, comma-separated; not {item!r}")
        if not is_ir_dir(Path(folder)):
            raise InputError("no model here (model.json): convert a model or give a tower folder", folder)
        out[canonical_modality(name)] = Path(folder)
    return out


def run_tower_retrieval(models: dict[str, Path], queries: str | Sequence[str] | None = None,
                        targets: str | Sequence[str] | None = None, *, all_pairs: bool = False, out_dir,
                        layer: str | None = None, metric: str = "cosine", k: int = 10, data_root=None, config=None,
                        split: str = "val", backend: str = "onnx", device: str = "auto", batch_size: int = 32,
                        workers: int | None = None, threads: int | None = None, cache_dir=None, draft: bool = False,
                        precision: str = "fp32", on_step: Callable[[str], None] | None = None,
                        on_start=None, on_batch=None) -> RetrievalRun:
    """Score every (query, target) pair with each modality's features from its own model (module
    docstring); the same files as ``retrieval`` (``retrieval.json`` names the model of each modality)."""
    from crossmodal.evaluate.feature_cache import model_fingerprint, run_cache_dir
    from crossmodal.evaluate.features import extract_features
    from crossmodal.evaluate.retrieval import reports
    from crossmodal.runtime.devices import check_device
    from crossmodal.runtime.engine import SharedEngine

    t0, started = time.perf_counter(), utc_now()
    step = on_step or (lambda msg: None)
    device = check_device(device)
    out_dir = check_output_dir(Path(out_dir))
    if all_pairs:
        q_names = t_names = list(models)
    else:
        q_names = modality_names(queries)
        t_names = modality_names(targets) or q_names
        if not q_names:
            raise InputError("no query modality given; use e.g. --query sketch --target clipart, or --all")
    names = list(dict.fromkeys(q_names + t_names))
    missing = [n for n in names if n not in models]
    if missing:
        raise InputError(f"no tower model for {', '.join(missing)} (have {', '.join(models)})")
    graphs = {n: load_graph(models[n]) for n in names}
    layer = layer or graphs[names[0]].feature_blob
    for n, g in graphs.items():
        g.resolve(layer)
    datasets = {}
    for n in names:
        try:
            datasets[n] = resolve_modality(n, data_root=data_root, config=config, split=split)
        except ModalityAbsent as exc:
            raise InputError(f"modality {n!r} is absent from the data: {exc}") from None
    cache_dir = run_cache_dir(cache_dir, out_dir)
    weights = identity.identity(graphs[names[0]])
    settings = {"batch_size": batch_size, "workers": workers, "threads": threads, "precision": precision,
                "draft": draft, "device_requested": device, "cache_dir": str(cache_dir)}
    record = RunRecord("retrieval", {**settings, "models": {n: str(models[n]) for n in names}, "queries": q_names,
                                     "targets": t_names, "layer": layer, "metric": metric, "k": k, "split": split,
                                     "backend": backend}, weights, started=started)
    with staged(out_dir, "retrieval") as stage:
        feats, ran = {}, {}
        for n in names:
            runner = SharedEngine(backend, models[n], ["logits", layer], device=device, graph=graphs[n],
                                   threads=threads, precision=precision)
            try:
                step(f"{n}: {len(datasets[n].records)} images through {models[n]}")
                fs = extract_features(models[n], datasets[n], runner, ["logits", layer], device=device,
                                      batch_size=batch_size, workers=workers, cache_dir=cache_dir, draft=draft,
                                      threads=threads, log=step, read=[layer], precision=precision,
                                      on_start=(lambda d, t, m=n: on_start(m, d, t)) if on_start else None,
                                      on_batch=(lambda d, t, m=n: on_batch(m, d, t)) if on_batch else None)
                feats[n] = as_modality_features(n, datasets[n], fs, layer)
                ran[n] = runner.engine.describe() if runner.engine is not None else None
            finally:
                runner.close()
        pairs = [score_pair(feats[q], feats[t], metric=metric, k=k) for q in q_names for t in t_names]
        results = {
            "format": FORMAT, "version": 1, "banner": identity.banner(weights),
            "weights": {**weights, "description": identity.describe(weights)},
            "model": {"dir": ", ".join(f"{n}={models[n]}" for n in names), "name": "towers: " + ", ".join(
                f"{n} {graphs[n].name}" for n in names), "fingerprint": model_fingerprint(models[names[0]], graphs[names[0]])},
            "models_per_modality": {n: {"dir": str(models[n]), "name": graphs[n].name,
                                        "fingerprint": model_fingerprint(models[n], graphs[n]),
                                        "weights": identity.describe(graphs[n])} for n in names},
            "layer": layer, "metric": metric, "k": k, "split": split, "queries": q_names, "targets": t_names,
            "backend": next((b for b in ran.values() if b), None) or {"backend": backend, "note": "from the cache"},
            "modalities": {n: f.describe() for n, f in feats.items()}, "pairs": pairs,
            "published": reports.published_comparison(pairs), "precision": precision, "decoding": decoding(draft), "settings": settings,
            "timings_s": {"total": round(time.perf_counter() - t0, 3)},
        }
        results["run"] = record.block()
        written = reports.write_retrieval(stage, results)
    return RetrievalRun(results, {name: out_dir / name for name in written})
