"""One epoch of training and the exact validation pass, as plain functions over a :class:`Trainer`.

Per step: the learning rate of each parameter group set from the schedule
(:func:`~crossmodal.evaluate.finetune.settings.lr_factor`) → forward under autocast (bf16/fp16) →
cross-entropy (label smoothing) → backward (fp16: through the loss scaler) → gradient clipping → the
optimiser's step. Loss and accuracy are summed on the device and read back only every
:data:`CHECK_EVERY` steps and at the end of the epoch (one host sync, not one per step); a non-finite
loss stops the run at the first such check with the epoch and step (:class:`NonFiniteLoss`), before
anything is saved.

Validation runs the bare module (never the DDP wrapper: ranks hold different numbers of batches) in
eval mode over each rank's exact share of the images; sums per modality (images, loss, top-1, top-5,
and for the epoch-0 pass the unadjusted network's muted top-1) are added over the ranks.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from crossmodal.errors import CrossmodalError
from crossmodal.evaluate.finetune.settings import SGD_MOMENTUM, Settings, lr_factor

#: steps between reads of the loss on the host (the non-finite check)
CHECK_EVERY = 25
#: columns of the per-modality validation sums
VAL_COLUMNS = ("images", "loss", "top1", "top5", "base_scored", "base_top1")


class NonFiniteLoss(CrossmodalError):
    """The loss turned NaN or infinite (exit code 1): the run stops, the last good checkpoint stays."""


def make_optimizer(net, s: Settings, head_index: int):
    """One optimiser for the whole run: the head (and the layers after it) at ``--lr``, the layers
    below at ``--lr × --base-lr-mult``; parameters frozen now get no gradient and are skipped."""
    import torch
    head, base = [], []
    for i, name in enumerate(net.names):
        params = [p for mod in net.modules_of(i) for p in mod.parameters()]
        (head if i >= head_index else base).extend(params)
    groups = [{"params": head, "lr": s.lr, "lr_mult": 1.0}]
    if base:
        groups.append({"params": base, "lr": s.lr * s.base_lr_mult, "lr_mult": s.base_lr_mult})
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=SGD_MOMENTUM, weight_decay=s.weight_decay)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.RMSprop(groups, lr=s.lr, weight_decay=s.weight_decay)


def autocast(device, precision: str):
    import torch
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class Trainer:
    """What a step needs: the bare module ``net``, the module that trains (``model``: ``net``, its DDP
    wrapper or a compiled one), optimiser, loss scaler, settings, device, targets map (``--head keep``:
    class → network label), world."""

    net: object
    model: object
    optimizer: object
    scaler: object
    settings: Settings
    device: object
    world: object
    steps_per_epoch: int
    target_map: object = None
    global_step: int = 0
    channels_last: bool = False
    timings: dict = field(default_factory=dict)

    def to_device(self, batch: dict):
        import torch
        x = batch["x"].to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        y = batch["y"].to(self.device, non_blocking=True)
        if self.target_map is not None:
            y = self.target_map.to(self.device)[y]
        return x, y, batch["m"].to(self.device, non_blocking=True)


def train_epoch(tr: Trainer, batches: Iterable[dict], *, epoch: int, start_step: int = 0, partial: dict | None = None,
                on_step: Callable[[int, dict], None] | None = None, failed: dict | None = None) -> dict:
    """Train over ``batches`` (the epoch's from ``start_step`` on); returns the epoch's sums
    ``{"loss", "correct", "count", "steps", "seconds"}`` (this rank's; ``partial``: sums carried over
    from a resumed part). ``on_step(step, sums)`` runs after every step (checkpoints, progress)."""
    import torch
    import torch.nn.functional as F

    s = tr.settings
    sums = dict(partial or {"loss": 0.0, "correct": 0, "count": 0, "seconds": 0.0})
    loss_acc = torch.zeros((), device=tr.device, dtype=torch.float64)
    hit_acc = torch.zeros((), device=tr.device, dtype=torch.int64)
    bad_step = torch.full((), -1, device=tr.device, dtype=torch.int64)
    trainable = [p for p in tr.net.parameters() if p.requires_grad]
    tr.model.train()
    tr.optimizer.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    step = start_step

    def flush():
        nonlocal loss_acc, hit_acc
        bad = int(bad_step.item())
        if bad >= 0:
            raise NonFiniteLoss(f"the loss turned non-finite at epoch {epoch + 1}, step {bad + 1}: training "
                                f"stopped; the last good checkpoint is kept (try a lower --lr, --clip-grad, "
                                f"or --precision fp32)")
        sums["loss"] += float(loss_acc.item())
        sums["correct"] += int(hit_acc.item())
        loss_acc.zero_()
        hit_acc.zero_()

    for batch in batches:
        if failed is not None and batch["failed"]:
            failed.update(batch["failed"])
        if batch["y"].numel() == 0:
            step += 1
            continue
        x, y, m = tr.to_device(batch)
        factor = lr_factor(tr.global_step, tr.steps_per_epoch, s)
        for g in tr.optimizer.param_groups:
            g["lr"] = s.lr * g["lr_mult"] * factor
        with autocast(tr.device, s.precision):
            logits = tr.model(x, m)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=s.label_smoothing)
        tr.scaler.scale(loss).backward()
        if s.clip_grad:
            tr.scaler.unscale_(tr.optimizer)
            torch.nn.utils.clip_grad_norm_(trainable, s.clip_grad)
        tr.scaler.step(tr.optimizer)
        tr.scaler.update()
        tr.optimizer.zero_grad(set_to_none=True)  # no gradient held through the next forward pass
        detached = loss.detach()
        bad_step = torch.where((bad_step < 0) & ~torch.isfinite(detached), torch.full_like(bad_step, step), bad_step)
        loss_acc += detached.double() * len(y)
        hit_acc += (logits.detach().argmax(1) == y).sum()
        sums["count"] += len(y)
        step += 1
        tr.global_step += 1
        if step % CHECK_EVERY == 0:
            flush()
        if on_step is not None:
            flush()
            sums["seconds_now"] = sums["seconds"] + time.perf_counter() - t0
            on_step(step, sums)
    flush()
    sums["seconds"] += time.perf_counter() - t0
    sums.pop("seconds_now", None)
    sums["steps"] = step
    return sums


def evaluate(net, batches: Iterable[dict], *, device, precision: str, n_mods: int, target_map=None,
             mapping=None, with_base: bool = False, channels_last: bool = False,
             failed: dict | None = None) -> np.ndarray:
    """This rank's validation sums, ``(n_mods, len(VAL_COLUMNS))`` float64 (see the module docstring).

    ``mapping`` (a :class:`~crossmodal.data.labels.LabelMapping` of the network's labels onto the
    classes): ``with_base`` scores the unadjusted network (the base head on the head's input) with
    muting; with ``target_map`` (``--head keep``) the trained head's top-1/top-5 are muted too.
    """
    import torch
    import torch.nn.functional as F
    from crossmodal.data.labels import score

    sums = np.zeros((n_mods, len(VAL_COLUMNS)), np.float64)
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for batch in batches:
            if failed is not None and batch["failed"]:
                failed.update(batch["failed"])
            if batch["y"].numel() == 0:
                continue
            x = batch["x"].to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y, m = batch["y"].numpy(), batch["m"].numpy()
            with autocast(device, precision):
                logits, feats = net.logits_and_features(x, batch["m"].to(device))
            logits = logits.float()
            if target_map is not None:  # the network's own labels: muted scoring, loss on mapped targets
                yt = target_map[batch["y"]].to(device)
                loss = F.cross_entropy(logits, yt, reduction="none").cpu().numpy()
                sc = score(logits.cpu().numpy(), y, mapping, unmapped="keep", k=5)
                top1, top5 = sc.top1, sc.topk
            else:
                yt = batch["y"].to(device)
                loss = F.cross_entropy(logits, yt, reduction="none").cpu().numpy()
                top = logits.topk(min(5, logits.shape[1]), dim=1).indices.cpu().numpy()
                top1, top5 = top[:, 0] == y, (top == y[:, None]).any(1)
            cols = [np.ones(len(y)), loss, top1, top5]
            if with_base and mapping is not None:
                sc = score(net.base_logits(feats).cpu().numpy(), y, mapping, unmapped="exclude", k=5)
                cols += [sc.included, sc.top1]
            else:
                cols += [np.zeros(len(y)), np.zeros(len(y))]
            for k in range(n_mods):
                rows = m == k
                sums[k] += [float(np.asarray(c, np.float64)[rows].sum()) for c in cols]
    net.train(was_training)
    return sums


def summarise(sums: np.ndarray, modalities: list[str]) -> dict:
    """Validation sums → ``{"val_loss", "val_top1", "val_top5", "baseline_top1", "per_modality"}``."""
    def one(row):
        n, loss, t1, t5, bn, b1 = (float(v) for v in row)
        return {"images": int(n), "val_loss": loss / n if n else float("nan"),
                "val_top1": t1 / n if n else float("nan"), "val_top5": t5 / n if n else float("nan"),
                "baseline_top1": b1 / bn if bn else None, "baseline_scored": int(bn)}
    out = one(sums.sum(0))
    out["per_modality"] = {m: one(sums[k]) for k, m in enumerate(modalities)}
    return out
