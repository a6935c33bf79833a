"""The ``units`` job: what each unit of a layer responds to, in every modality.

Every input is checked before an image is decoded (the layer has a spatial map, the units exist,
each modality resolves and has images, ``--draw`` and ``--against`` make sense): bad input is one
:class:`~crossmodal.errors.InputError` and nothing is written. Then, per modality, one streamed pass
(:func:`.cache.run_pass`; resumable, cached under ``<out>/cache`` by default), the top-K per unit
(:func:`.cache.read_top`), boxes (:mod:`.geometry`), agreement and its chance level
(:mod:`.agreement`), optional activation maximisation (:mod:`.maximize`), and the files
(:mod:`.reports`, :mod:`.gallery`), staged and moved into ``out`` only when the run succeeded.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from crossmodal.data.datasets import modality_names, resolve_modality
from crossmodal.errors import InputError
from crossmodal.evaluate.feature_cache import OK, read_mean_image, rollback_new_caches, run_cache_dir
from crossmodal.evaluate.units import agreement as agr
from crossmodal.evaluate.units import reports
from crossmodal.evaluate.units.cache import read_top, run_pass
from crossmodal.evaluate.units.geometry import crop_box, image_size, original_box
from crossmodal.evaluate.units.maximize import Settings
from crossmodal.evaluate.units.selection import drawn, parse_units
from crossmodal.io.atomic import check_output_dir
from crossmodal.io.runs import staged, utc_now
from crossmodal.ir import identity
from crossmodal.ir.consistency import check as check_consistency
from crossmodal.ir.kinds import infer_shapes
from crossmodal.ir.receptive_field import check_layer, default_layer, receptive_fields
from crossmodal.ir.store import load_graph
from crossmodal.reports.runs import RunRecord

Step = Callable[[str], None]


def _limit(dataset, limit: int | None):
    n = len(dataset.records)
    if limit is None or limit >= n:
        return dataset
    return replace(dataset, records=[dataset.records[i] for i in (np.arange(limit) * n) // limit])


def prepare(model_dir: Path, modality: str, *, layer: str | None, units: str | None, top: int, draw: str,
            maximize: str | None, limit: int | None, against: Path | None, **data) -> dict:
    """Everything checked before any image is decoded (module docstring)."""
    if top < 1:
        raise InputError(f"--top must be at least 1, not {top}")
    graph = load_graph(model_dir)
    check_consistency(graph, model_dir)
    shapes = infer_shapes(graph)
    chosen = check_layer(graph, layer, shapes) if layer else default_layer(graph, shapes)
    count = int(shapes[chosen][0])
    unit_list = parse_units(units, count)
    max_units = parse_units(maximize, count, "--maximize") if maximize else []
    if draw not in ("auto", "all", "none"):
        missing = [u for u in parse_units(draw, count, "--draw") if u not in set(unit_list)]
        if missing:
            raise InputError(f"--draw: unit {missing[0]} is not among the units of this run (--units)")
    names = modality_names(modality)
    if not names:
        raise InputError("--modality: give at least one modality (natural, clipart, sketch …)")
    explicit = [k for k in ("images", "list_file", "categories") if data.get(k) is not None]
    if explicit and len(names) > 1:
        raise InputError(f"--{explicit[0].replace('_file', '')} names one modality's files: give one --modality "
                         f"with it, or use --data-root / --config for several")
    datasets = []
    for name in names:
        ds = _limit(resolve_modality(name, **data), limit)
        if not ds.records:
            raise InputError(f"modality {ds.name!r} has no images ({len(ds.missing)} listed files are missing)",
                             ds.files.get("list", ds.root))
        datasets.append(ds)
    earlier = reports.read_against(against) if against else None
    return {"graph": graph, "shapes": shapes, "layer": chosen, "units": unit_list, "maximize": max_units,
            "datasets": datasets, "against": earlier}


def run_units(model_dir, modality: str, *, out_dir, layer: str | None = None, units: str | None = None,
              top: int = 8, draw: str = "auto", maximize: str | None = None, from_image=None,
              max_settings: Settings = Settings(), backend: str = "onnx", device: str = "auto",
              precision: str = "fp32", batch_size: int = 32, workers: int | None = None,
              threads: int | None = None, limit: int | None = None, cache_dir=None, draft: bool = False,
              chance_rounds: int = 100, against=None, data: dict | None = None, on_step: Step | None = None,
              on_start=None, on_batch=None) -> dict:
    """The whole command; returns the summary written to ``units.json``. ``data``: the keywords of
    :func:`~crossmodal.data.datasets.resolve_modality` (``data_root``, ``config``, ``split`` …);
    ``on_start(name, done, total)`` / ``on_batch(name, done, total)``: progress per modality."""
    import os

    step = on_step or (lambda msg: None)
    started = utc_now()
    model_dir, out_dir = Path(model_dir), check_output_dir(Path(out_dir))
    draw = (draw or "auto").strip().lower()
    p = prepare(model_dir, modality, layer=layer, units=units, top=top, draw=draw, maximize=maximize,
                limit=limit, against=Path(against) if against else None, **(data or {}))
    graph, layer_name, unit_list = p["graph"], p["layer"], p["units"]
    start_image = _start_image(from_image, graph, model_dir) if from_image else None
    shape = tuple(int(v) for v in p["shapes"][layer_name])
    rf = receptive_fields(graph)[layer_name]
    mean_image = read_mean_image(model_dir, graph)
    weights = identity.identity(graph)
    if identity.banner(graph):
        step(identity.banner(graph).upper())
    step(f"layer {layer_name!r}: {shape[0]} units on a {shape[1]}×{shape[2]} grid, receptive field "
         f"{rf.size[0]} px, stride {rf.stride[0]}; {len(unit_list)} units, top {top}")
    settings = {"model_dir": str(model_dir), "out_dir": str(out_dir), "layer": layer_name, "top": top,
                "units": units or "all", "draw": draw, "maximize": maximize, "backend": backend,
                "precision": precision, "batch_size": batch_size, "limit": limit, "chance_rounds": chance_rounds,
                "from": str(from_image) if from_image else None,
                "max_settings": dataclasses.asdict(max_settings) if maximize else None}
    record = RunRecord("units", settings, weights, started=started)
    cache = run_cache_dir(cache_dir, out_dir)
    workers = max(1, int(workers or min(8, (os.cpu_count() or 2) - 1)))
    opened: list = []

    def engine():
        if not opened:
            from crossmodal.runtime.engine import open_engine
            opened.append(open_engine(backend, model_dir, [layer_name], device=device, precision=precision,
                                      threads=threads, graph=graph))
            step(f"engine: {opened[0].summary()}")
        return opened[0]

    passes = []
    try:
        with rollback_new_caches(cache, out_dir):
            t0 = time.perf_counter()
            for ds in p["datasets"]:
                passes.append(run_pass(model_dir, graph, ds, layer_name, shape, engine=engine, cache_dir=cache,
                                       mean_image=mean_image, batch_size=batch_size, workers=workers, draft=draft,
                                       precision=precision,
                                       on_start=(lambda d, n, name=ds.name: on_start(name, d, n)) if on_start else None,
                                       on_batch=(lambda d, n, name=ds.name: on_batch(name, d, n)) if on_batch else None,
                                       log=step))
                if not (passes[-1].status == OK).any():
                    raise InputError(f"none of the {len(ds.records)} images of modality {ds.name!r} decoded: "
                                     + "; ".join(f"{a}: {b}" for a, b in passes[-1].failed[:3]))
            pass_seconds = time.perf_counter() - t0
    finally:
        for e in opened:
            e.close()
    tops = {ps.name: read_top(ps.path, unit_list, top) for ps in passes}
    vocab = agr.vocabulary([ps.categories for ps in passes])
    index = {c: i for i, c in enumerate(vocab)}
    labels = {ps.name: np.array([index[ps.categories[l]] for l in ps.labels], np.int64) for ps in passes}
    codes = {m: np.where(t.images >= 0, labels[m][np.clip(t.images, 0, None)], -1) for m, t in tops.items()}
    result = agr.agreement(codes, len(vocab))
    chance = agr.chance(codes, {m: t.images for m, t in tops.items()}, labels, len(vocab), rounds=chance_rounds,
                        valid={ps.name: ps.status == OK for ps in passes})
    entries = _entries(passes, tops, unit_list, rf, graph, vocab, codes)
    strength = np.array([np.mean([t.values[u][t.values[u] > -np.inf].mean() if (t.values[u] > -np.inf).any()
                                  else 0.0 for t in tops.values()]) for u in range(len(unit_list))])
    picked = drawn(draw, unit_list, result.score, strength)
    maximized = _maximize(model_dir, graph, layer_name, p["maximize"], rf, max_settings, start_image, mean_image,
                          device, step) if p["maximize"] else {}
    summary = reports.summary(graph=graph, weights=weights, layer=layer_name, shape=shape, rf=rf, passes=passes,
                              unit_list=unit_list, entries=entries, result=result, chance=chance, vocab=vocab,
                              top=top, picked=picked, maximized=maximized, against=p["against"], draft=draft,
                              pass_seconds=pass_seconds, record=record)
    with staged(out_dir, "units") as stage:
        reports.write_all(stage, summary, entries, picked, maximized, graph, mean_image, draft, step)
    return summary


def _entries(passes, tops, unit_list, rf, graph, vocab, codes) -> list[dict]:
    """Per unit (in ``unit_list`` order): ``{modality: [{path, value, box, crop_box, category}]}``."""
    crop = tuple(int(v) for v in graph.preprocess.crop)
    sizes: dict = {}
    out = []
    for k, unit in enumerate(unit_list):
        per = {}
        for ps in passes:
            rows = []
            for img, value, pos in tops[ps.name].entries(k):
                path = ps.paths[img]
                cbox = crop_box(rf, pos, ps.grid, crop)
                if path not in sizes:
                    try:
                        sizes[path] = image_size(path)
                    except OSError:
                        sizes[path] = None
                obox = original_box(cbox, sizes[path], graph.preprocess) if sizes[path] else None
                rows.append({"path": str(path), "value": value, "position": list(divmod(pos, ps.grid[1])),
                             "crop_box": [round(v, 2) for v in cbox],
                             "box": None if obox is None else [round(v, 2) for v in obox],
                             "category": ps.categories[int(ps.labels[img])]})
            per[ps.name] = rows
        out.append(per)
    return out


def _start_image(path, graph, model_dir):
    from crossmodal.data.images import load_image
    return load_image(Path(path), graph.preprocess, read_mean_image(model_dir, graph))


def _maximize(model_dir, graph, layer, units, rf, settings, start, mean_image, device, step) -> dict:
    from crossmodal.evaluate.units.maximize import maximize
    from crossmodal.runtime.engine import open_engine

    eng = open_engine("torch", model_dir, [layer], device=device, graph=graph)
    out = {}
    try:
        for u in units:
            t0 = time.perf_counter()
            r = maximize(eng.module, graph, layer, u, settings=settings, start=start, mean_image=mean_image,
                         window=int(min(rf.size)), device=eng.torch_device)
            step(f"maximised unit {u}: {r['max'][0]:.3g} → {r['max'][1]:.3g} ({time.perf_counter() - t0:.1f} s)")
            out[u] = r
    finally:
        eng.close()
    return out
