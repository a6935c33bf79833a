"""The fine-tuning job: checked inputs (:mod:`.prepare`) → training (:mod:`.run`, or a search of
several, :mod:`.search`) → the exported model folder(s) and the reports, staged and moved into
``--out`` together at the end (:func:`crossmodal.io.runs.staged`, ``finetune.json`` last).

During the run ``OUT/`` holds only what a user watches or a resume needs: ``checkpoints/``,
``history.csv`` (a row per finished epoch), ``tb/`` (TensorBoard), a search's ``search.db``; a killed
run leaves those and no half-written model. Under torchrun every rank trains, rank 0 alone writes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from crossmodal.errors import InputError
from crossmodal.evaluate.finetune import ddp
from crossmodal.evaluate.finetune.prepare import Context, prepare
from crossmodal.evaluate.finetune.settings import Settings
from crossmodal.io.runs import read_run_report, staged, utc_now
from crossmodal.ir import identity
from crossmodal.reports.runs import RunRecord

FORMAT = "crossmodal-finetune"


@dataclass
class FinetuneRun:
    results: dict
    files: dict[str, Path] = field(default_factory=dict)


def read_against(run: Path) -> dict:
    """Another fine-tuning run's ``finetune.json`` (``--against``), checked."""
    return read_run_report(run, "finetune.json", "finetune", FORMAT)[1]


def compare(results: dict, other: dict, run: Path) -> dict:
    """Per modality, this run's val top-1/top-5 beside the other's (modalities both ran)."""
    per = {}
    for m, v in results["per_modality"].items():
        o = other.get("per_modality", {}).get(m)
        if o is not None:
            per[m] = {"this_top1": v["val_top1"], "other_top1": o["val_top1"], "this_top5": v["val_top5"],
                      "other_top5": o["val_top5"]}
    p = other.get("params", {})
    return {"run": str(run), "towers": other.get("towers", "shared"), "per_modality": per,
            "params_total": int(p.get("trainable_params", 0)) + int(p.get("frozen_params", 0)),
            "images_per_s": float(other.get("images_per_s") or 0.0), "val_top1": other.get("val_top1")}


def write_preview(ctx: Context, path: Path, n: int = 16) -> Path:
    """``--augment-preview``: the first ``n`` training images as epoch 1 augments them."""
    from crossmodal.data.images import ImageDecodeError
    from crossmodal.evaluate.finetune.data import ImageSet
    from crossmodal.evaluate.finetune.reports import preview
    s = ctx.settings
    imgs = ImageSet(ctx.data.train, ctx.graph.preprocess, ctx.mean_image, s.augment, s.seed)
    xs = []
    for i in range(len(imgs)):
        try:
            xs.append(imgs.load(i, 0))
        except ImageDecodeError:
            continue
        if len(xs) == n:
            break
    title = identity.titled(f"augmentation {s.augment}: {len(xs)} training images, epoch 1", ctx.graph)
    return preview(path, np.stack(xs), ctx.graph.preprocess, title)


def assemble(ctx: Context, outcome, *, started_s: float, search: dict | None) -> dict:
    """``finetune.json``'s content (without ``models`` and ``run``)."""
    from crossmodal.evaluate.metrics import chance_levels
    s, net, state = ctx.settings if search is None else search["settings"], outcome.net, outcome.state
    e0, chosen = state["epoch0"], outcome.chosen
    weights = identity.identity(ctx.graph)
    y = ctx.data.val.labels
    chance = chance_levels(y, len(ctx.data.classes))["chance_top1"] if ctx.target_map is None else \
        chance_levels(ctx.target_map[y], int(len(set(ctx.target_map.tolist()))))["chance_top1"]
    images = sum(h["images_per_s"] * h["seconds"] for h in outcome.history)
    seconds = sum(h["seconds"] for h in outcome.history)
    per = {}
    for m in ctx.data.modalities:
        pm, p0 = chosen["per_modality"][m], e0["per_modality"][m]
        per[m] = {"images": pm["images"], "val_top1": pm["val_top1"], "val_top5": pm["val_top5"],
                  "baseline_top1": p0["baseline_top1"], "epoch0_top1": p0["val_top1"]}
    params = net.parameter_counts()
    return {
        "format": FORMAT, "version": 1, "banner": identity.banner(weights),
        "weights": {**weights, "description": identity.describe(weights)},
        "model": {"dir": str(ctx.model_dir), "name": ctx.graph.name, "fingerprint": ctx.fingerprint},
        "modalities": ctx.data.modalities, "num_classes": len(ctx.data.classes), "towers": s.towers,
        "train_from": s.train_from, "trainable_layers": net.trainable_layers(),
        "val_top1": chosen["val_top1"], "val_top5": chosen["val_top5"], "val_loss": chosen["val_loss"],
        "best_epoch": state.get("best_epoch"), "exported_epoch": chosen["epoch"], "epochs_run": len(outcome.history),
        "stopped_early": outcome.stopped_early,
        "baseline_top1": e0["baseline_top1"], "baseline_scored": e0["baseline_scored"],
        "epoch0_top1": e0["val_top1"], "epoch0_top5": e0["val_top5"], "chance_top1": chance,
        "per_modality": per, "params": params, "trainable_params": params["trainable_params"],
        "frozen_params": params["frozen_params"], "world_size": ctx.world.size,
        "global_batch": s.batch_size * ctx.world.size, "device": str(ctx.device), "precision": s.precision,
        "images_per_s": images / seconds if seconds else 0.0, "num_train": len(ctx.data.train),
        "num_val": len(ctx.data.val), "history": [{k: v for k, v in h.items() if k != "per_modality"}
                                                   for h in outcome.history],
        "data": ctx.data.describe(), "settings": s.to_dict(), "search": search and search["summary"],
        "failed_images": [{"split": split, "path": str(getattr(ctx.data, split).paths[i]), "reason": r}
                          for split in ("train", "val") for i, r in sorted(outcome.failed.get(split, {}).items())],
        "timings_s": {"total": round(time.perf_counter() - started_s, 3)},
    }


def export_models(ctx: Context, outcome, stage: Path, s: Settings, log) -> dict:
    """The model folder(s) into ``stage``: ``model/`` or, for towers, ``model-<modality>/`` each."""
    from crossmodal.evaluate.finetune.export import trained_ir
    from crossmodal.evaluate.probe.model import write_adjusted_model
    ident = {"kind": "finetune", "modalities": ctx.data.modalities, "train_from": s.train_from, "head": s.head,
             "towers": s.towers, "epoch": outcome.chosen.get("epoch")}
    notes = ["fine-tuning settings: " + ", ".join(f"{k}={v}" for k, v in s.to_dict().items()),
             "data lists: " + ", ".join(f"{k} {f['sha256'][:16]}" for d in ctx.data.describe().values()
                                        for k, f in d["files"].items() if isinstance(f, dict))]
    classes = ctx.data.classes if ctx.target_map is None else None
    towers = ctx.data.modalities if s.towers == "per-modality" else [None]
    out = {}
    for tower in towers:
        folder = "model" if tower is None else f"model-{tower}"
        log(f"exporting {folder}/ ({', '.join(s.to)})")
        model = trained_ir(ctx.ir, outcome.net, classes=classes, ident=ident, notes=notes, tower=tower,
                           base_dir=str(ctx.model_dir), fingerprint=ctx.fingerprint)
        arts = write_adjusted_model(model, stage / folder, s.to)
        out[tower or "all"] = {"dir": str(ctx.out_dir / folder), "modality": tower,
                               "weights": identity.describe(model.graph),
                               "artifacts": [{**a, "path": str(ctx.out_dir / folder / Path(a["path"]).name)}
                                             for a in arts]}
    return out


def run_finetune(s: Settings, *, resume: bool = False, against: Path | None = None, search=None,
                 on_step: Callable[[str], None] | None = None, progress=None) -> FinetuneRun:
    """The whole job (module docstring). ``search``: a :class:`~.search.SearchSettings` (``--search N``)."""
    from crossmodal.evaluate.finetune.reports import write_reports
    from crossmodal.evaluate.finetune.run import train

    t0, started = time.perf_counter(), utc_now()
    log = on_step or (lambda m: None)
    other = read_against(against) if against is not None else None
    if search is not None:
        search.check(s)
    ctx = prepare(s)
    world = ctx.world
    if not world.main:
        log = lambda m: None  # noqa: E731 - rank 0 speaks for the run
        progress = None
    try:
        weights = identity.identity(ctx.graph)
        if identity.banner(weights):
            log(identity.banner(weights).upper())
        log(f"{len(ctx.data.train)} training and {len(ctx.data.val)} validation images, {len(ctx.data.classes)} "
            f"classes ({', '.join(ctx.data.modalities)}); device {ctx.device}, world size {world.size}")
        if s.augment_preview and world.main:
            log(f"augmentation preview → {write_preview(ctx, ctx.out_dir / 'augment_preview.png')}")
        search_info = None
        if search is not None:
            from crossmodal.evaluate.finetune.search import run_search
            outcome, search_info = run_search(ctx, search, log=log)
            s_used = search_info["settings"]
        else:
            outcome, s_used = train(ctx, resume=resume, log=log, progress=progress), s
        files: dict[str, Path] = {}
        results: dict = {}
        if world.main:
            results = assemble(ctx, outcome, started_s=t0, search=search_info)
            if other is not None:
                results["against"] = compare(results, other, Path(against))
            record = RunRecord("finetune", {**s.to_dict(), "resume": resume,
                                            "against": None if against is None else str(against)},
                               weights, started=started)
            with staged(ctx.out_dir, "finetune") as stage:
                results["models"] = export_models(ctx, outcome, stage, s_used, log)
                if search_info is not None:
                    from crossmodal.evaluate.finetune.search import write_search_files
                    files.update({n: ctx.out_dir / n for n in write_search_files(stage, search_info, results)})
                results["run"] = record.block()
                written = write_reports(stage, results)
            files.update({name: ctx.out_dir / name for name in written})
            files.update({f"model-{k}" if k != "all" else "model": Path(v["dir"]) for k, v in results["models"].items()})
        ddp.barrier(world)
        return FinetuneRun(results, files)
    finally:
        ddp.teardown(world)
