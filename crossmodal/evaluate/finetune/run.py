"""The epochs of one training run: the module, the optimiser, the epoch-0 pass, then per epoch the
training pass, the validation pass, a ``history.csv`` row, checkpoints, early stopping.

Resume is exact: ``checkpoints/last.pt`` holds the module, the optimiser, the loss scaler, every rank's
torch generator, the step counters and the running sums of an epoch under way, and the data order and
augmentation are functions of ``(seed, epoch, sample)`` (:mod:`.data`), so a run killed and resumed
ends with the weights of an uninterrupted one. ``checkpoints=False`` (search trials) writes nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from crossmodal.errors import InputError
from crossmodal.evaluate.finetune import checkpoint, ddp
from crossmodal.evaluate.finetune.data import ImageSet, batches, epoch_order, loader, shard, val_shard
from crossmodal.evaluate.finetune.loop import Trainer, evaluate, make_optimizer, summarise, train_epoch
from crossmodal.evaluate.finetune.net import build, layer_index
from crossmodal.evaluate.finetune.prepare import Context
from crossmodal.evaluate.finetune.settings import Settings, resume_changes


class OutOfMemory(InputError):
    """The device ran out of memory (one line, exit 2: a smaller --batch-size is the fix)."""


@dataclass
class Outcome:
    """A finished run: the module holding the chosen weights (``--keep``), its history, its state."""

    net: object
    history: list[dict]
    state: dict
    chosen: dict
    failed: dict = field(default_factory=dict)
    stopped_early: bool = False


def build_net(ctx: Context, s: Settings):
    import torch
    first = layer_index(ctx.graph, s.train_from)
    towers = ctx.data.modalities if s.towers == "per-modality" else ()
    net = build(ctx.ir, first=first, head=ctx.head, towers=towers, shared_from=ctx.shared_from,
                freeze_shared=s.freeze_shared)
    if s.unfreeze_at is not None:
        net.set_first(ctx.head_index)
    net.to(ctx.device)
    if ctx.device.type == "cuda":
        net.to(memory_format=torch.channels_last)
    return ddp.sync_batchnorm(net, ctx.world, ctx.device), first


def train(ctx: Context, s: Settings | None = None, *, resume: bool = False, checkpoints: bool = True,
          epoch0: dict | None = None, on_epoch: Callable[[int, dict], None] | None = None,
          log: Callable[[str], None] = lambda m: None, progress=None) -> Outcome:
    """Train ``s`` (default: the context's settings); see the module docstring. ``on_epoch(epoch, row)``
    after each epoch (a search's report and pruning); ``progress`` a tqdm-like bar factory or None."""
    try:
        return _train(ctx, s or ctx.settings, resume, checkpoints, epoch0, on_epoch, log, progress)
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise OutOfMemory(f"the device ran out of memory ({str(exc).splitlines()[0][:100]}); try a smaller "
                              f"--batch-size (now {(s or ctx.settings).batch_size} per rank)") from None
        raise


def _train(ctx, s, resume, checkpoints, epoch0, on_epoch, log, progress) -> Outcome:
    import torch

    world, dev = ctx.world, ctx.device
    torch.manual_seed(s.seed * 1000 + world.rank)
    net, first = build_net(ctx, s)
    opt = make_optimizer(net, s, ctx.head_index)
    scaler = torch.amp.GradScaler(dev.type, enabled=s.precision == "fp16")
    last = checkpoint.folder(ctx.out_dir) / checkpoint.LAST
    best_path = checkpoint.folder(ctx.out_dir) / checkpoint.BEST
    history, state, start, step0, partial, global_step, best_state = [], {"bad_epochs": 0}, 0, 0, None, 0, None
    if resume:
        ck = checkpoint.load(last)
        changes = resume_changes(ck["settings"], s.to_dict())
        if changes:
            raise InputError("--resume with changed settings: " + "; ".join(changes) + " (only --epochs may grow)",
                             last)
        net.load_state_dict(ck["model"])
        net.set_first(ck["first"])
        opt.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        checkpoint.set_rng_state(ck["rng"][min(world.rank, len(ck["rng"]) - 1)], dev)
        history, state, start, step0 = ck["history"], ck["state"], ck["epoch"], ck["step"]
        partial, global_step = ck["partial"], ck["global_step"]
        if best_path.is_file():
            best_state = checkpoint.load(best_path)["model"]
        log(f"resumed from {last}: epoch {start + 1}" + (f", step {step0}" if step0 else ""))
    elif checkpoints and last.exists():
        raise InputError("holds a run in progress or done (checkpoints/last.pt): add --resume to continue it, or "
                         "choose another --out", ctx.out_dir)
    channels_last = dev.type == "cuda"
    keep_map = None if ctx.target_map is None else torch.as_tensor(ctx.target_map)

    def wrapped():
        m = ddp.wrap(net, world, dev, find_unused=bool(net.tower_names))
        return torch.compile(m) if s.compile else m
    model = wrapped()
    spec = ctx.graph.preprocess
    train_set = ImageSet(ctx.data.train, spec, ctx.mean_image, s.augment, s.seed, substitute=True)
    val_set = ImageSet(ctx.data.val, spec, ctx.mean_image, "none", s.seed)
    val_lists = batches(val_shard(len(ctx.data.val), world.rank, world.size), s.batch_size)
    n_mods = len(ctx.data.modalities)
    failed = {"train": dict(state.get("failed", {}).get("train", {})),
              "val": dict(state.get("failed", {}).get("val", {}))}

    def validate(with_base: bool) -> dict:
        sums = evaluate(net, loader(val_set, val_lists, epoch=0, workers=s.workers), device=dev,
                        precision=s.precision, n_mods=n_mods, target_map=keep_map, mapping=ctx.mapping,
                        with_base=with_base, channels_last=channels_last, failed=failed["val"])
        return summarise(ddp.sum_all(sums, world, dev), ctx.data.modalities)

    if "epoch0" not in state:
        state["epoch0"] = epoch0 or validate(with_base=True)
    steps_per_epoch = math.ceil(len(shard(epoch_order(s.seed, 0, ctx.data.train.mods, s.balance), 0, world.size))
                                / s.batch_size)

    def save_last(epoch: int, step: int, part: dict | None, gstep: int) -> None:
        rngs = ddp.gather_objects(checkpoint.rng_state(dev), world)
        if world.main:
            state["failed"] = failed
            checkpoint.save(last, {"format": checkpoint.FORMAT, "settings": s.to_dict(), "epoch": epoch, "step": step,
                                   "global_step": gstep, "first": net.first, "model": net.state_dict(),
                                   "optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "rng": rngs,
                                   "history": history, "partial": part, "state": state})

    board = None
    if checkpoints and world.main:
        from crossmodal.evaluate.finetune.reports import Board, write_history
        board = Board(ctx.out_dir / "tb", s.tensorboard)
    stopped = False
    try:
        for epoch in range(start, s.epochs):
            if s.unfreeze_at is not None and epoch >= s.unfreeze_at and net.first != first:
                log(f"epoch {epoch + 1}: unfreezing from {s.train_from}")
                net.set_first(first)
                model = wrapped()
            begin = step0 if epoch == start else 0
            order = shard(epoch_order(s.seed, epoch, ctx.data.train.mods, s.balance), world.rank, world.size)
            lists = batches(order, s.batch_size, begin)
            tr = Trainer(net, model, opt, scaler, s, dev, world, steps_per_epoch, keep_map, global_step, channels_last)
            bar = progress(epoch, len(lists), begin) if progress else None

            def on_step(step, sums, tr=tr):
                if bar is not None:
                    bar.update(1)
                if checkpoints and s.save_every and step % s.save_every == 0 and step < steps_per_epoch:
                    save_last(epoch, step, {k: v for k, v in sums.items() if k != "seconds_now"} |
                              {"seconds": sums["seconds_now"]}, tr.global_step)
            sums = train_epoch(tr, loader(train_set, lists, epoch=epoch, workers=s.workers, pin=dev.type == "cuda"),
                               epoch=epoch, start_step=begin, partial=partial if epoch == start else None,
                               on_step=on_step, failed=failed["train"])
            if bar is not None:
                bar.close()
            global_step = tr.global_step
            tot = ddp.sum_all(np.array([sums["loss"], sums["correct"], sums["count"]], np.float64), world, dev)
            v = validate(with_base=False)
            tot = [float(t) for t in tot]
            n = max(tot[2], 1.0)
            row = {"epoch": epoch + 1, "train_loss": tot[0] / n, "train_top1": tot[1] / n, "val_loss": v["val_loss"],
                   "val_top1": v["val_top1"], "val_top5": v["val_top5"], "lr": float(opt.param_groups[0]["lr"]),
                   "seconds": float(sums["seconds"]), "images_per_s": tot[2] / max(sums["seconds"], 1e-9),
                   **{f"val_top1_{m}": pm["val_top1"] for m, pm in v["per_modality"].items()},
                   "per_modality": v["per_modality"]}
            history.append(row)
            if "best_top1" not in state or row["val_top1"] > state["best_top1"]:
                state.update(best_epoch=epoch + 1, best_top1=row["val_top1"], bad_epochs=0)
                best_state = {k: t.detach().cpu().clone() for k, t in net.state_dict().items()}
                if checkpoints and world.main and s.keep == "best":
                    checkpoint.save(best_path, {"format": checkpoint.FORMAT, "epoch": epoch + 1, "model": best_state})
            else:
                state["bad_epochs"] += 1
            log(f"epoch {epoch + 1}/{s.epochs}: train loss {row['train_loss']:.4f}, val top-1 "
                f"{100 * row['val_top1']:.2f} %, {row['images_per_s']:.1f} images/s")
            if board is not None:
                write_history(ctx.out_dir / "history.csv", history, ctx.data.modalities)
                board.epoch({k: v for k, v in row.items() if k != "per_modality"})
            if checkpoints:
                save_last(epoch + 1, 0, None, global_step)
            if on_epoch is not None:
                on_epoch(epoch + 1, row)
            if s.patience and state["bad_epochs"] >= s.patience and epoch + 1 < s.epochs:
                log(f"early stop: no better val top-1 for {s.patience} epochs")
                stopped = True
                break
    finally:
        if board is not None:
            board.close()
    for part in ddp.gather_objects(failed, world):  # every rank's undecodable files
        for split in ("train", "val"):
            failed[split].update(part[split])
    chosen_epoch = state["best_epoch"] if s.keep == "best" else len(history)
    if s.keep == "best" and best_state is not None:
        net.load_state_dict(best_state)
    chosen = history[chosen_epoch - 1] if history else {}
    return Outcome(net, history, state, chosen, failed, stopped)
