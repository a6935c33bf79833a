"""Every setting of a fine-tuning run, checked in one place; what a resume may change; the learning-rate
schedule as a pure function of the step.

A run's settings are saved in its checkpoint. ``--resume`` refuses settings that differ from the saved
ones (naming each), except those in :data:`FREE_ON_RESUME` (they change neither the weights nor the
data order: workers, export targets, how often to save) and ``epochs``, which may grow.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from crossmodal.errors import InputError

OPTIMIZERS = ("sgd", "adamw", "rmsprop")
SCHEDULES = ("cosine", "step", "none")
PRECISIONS = ("fp32", "bf16", "fp16")
AUGMENTS = ("none", "light", "strong")
HEADS = ("new", "keep")
KEEPS = ("best", "last")
BALANCES = ("modality", "none")
TOWERS = ("shared", "per-modality")
EXPORT_TARGETS = ("ir", "onnx", "keras", "torch")
#: Settings a resumed run may change: they affect neither the weights nor the data order.
FREE_ON_RESUME = ("workers", "to", "save_every", "device", "out_dir", "tensorboard", "augment_preview")
#: SGD's momentum (the Keras transfer-learning guide's and torchvision's recipes).
SGD_MOMENTUM = 0.9
#: The step schedule multiplies the rate by this every ``step_every`` epochs.
STEP_GAMMA = 0.1


@dataclass
class Settings:
    """The options of ``crossmodal finetune`` (see its ``--help``); paths as strings."""

    model_dir: str
    modalities: list[str]
    out_dir: str
    data_root: str | None = None
    config: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    balance: str = "modality"
    train_from: str = "head"
    unfreeze_at: int | None = None
    base_lr_mult: float = 1.0
    head: str = "new"
    label_map: str | None = None
    augment: str = "light"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    sched: str = "cosine"
    warmup_epochs: float = 0.0
    step_every: int | None = None
    clip_grad: float | None = None
    precision: str = "fp32"
    compile: bool = False
    patience: int | None = None
    keep: str = "best"
    seed: int = 0
    towers: str = "shared"
    shared_from: str | None = None
    freeze_shared: bool = False
    # free on resume
    workers: int = 0
    to: list[str] = field(default_factory=lambda: ["ir", "onnx", "keras"])
    save_every: int | None = None
    device: str = "auto"
    tensorboard: bool = True
    augment_preview: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> "Settings":
        """Raise :class:`InputError` (one line) for a value out of range or a contradiction."""
        choices = {"optimizer": OPTIMIZERS, "sched": SCHEDULES, "precision": PRECISIONS, "augment": AUGMENTS,
                   "head": HEADS, "keep": KEEPS, "balance": BALANCES, "towers": TOWERS}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise InputError(f"--{key.replace('_', '-')} must be one of {', '.join(allowed)}, "
                                 f"not {getattr(self, key)!r}")
        if not self.modalities:
            raise InputError("no modality given: --modality sketch (or several, comma-separated)")
        for key in ("epochs", "batch_size"):
            if int(getattr(self, key)) < 1:
                raise InputError(f"--{key.replace('_', '-')} must be at least 1, not {getattr(self, key)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"--lr must be a positive number, not {self.lr}")
        if self.base_lr_mult < 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise InputError("--base-lr-mult, --weight-decay and --warmup-epochs must not be negative")
        if not 0 <= self.label_smoothing < 1:
            raise InputError(f"--label-smoothing must lie in [0, 1), not {self.label_smoothing}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise InputError(f"--clip-grad must be positive, not {self.clip_grad}")
        if self.unfreeze_at is not None:
            if self.train_from == "head":
                raise InputError("--unfreeze-at needs --train-from LAYER: the layers that join the head at "
                                 "that epoch")
            if not 0 < self.unfreeze_at < self.epochs:
                raise InputError(f"--unfreeze-at must lie between 1 and --epochs - 1 ({self.epochs - 1}), "
                                 f"not {self.unfreeze_at}")
        if self.patience is not None and self.patience < 1:
            raise InputError(f"--patience must be at least 1, not {self.patience}")
        if self.step_every is not None and self.step_every < 1:
            raise InputError(f"--step-every must be at least 1, not {self.step_every}")
        if self.save_every is not None and self.save_every < 1:
            raise InputError(f"--save-every must be at least 1 step, not {self.save_every}")
        bad = [t for t in self.to if t not in EXPORT_TARGETS]
        if bad or "ir" not in self.to:
            raise InputError(f"--to takes {', '.join(EXPORT_TARGETS)} (ir always), not {','.join(self.to)}")
        if self.towers == "per-modality":
            if len(self.modalities) < 2:
                raise InputError("--towers per-modality needs two modalities or more (--modality clipart,sketch)")
            if not self.shared_from:
                raise InputError("--towers per-modality needs --shared-from LAYER: the first layer the "
                                 "modalities share")
            if self.head != "new":
                raise InputError("--towers per-modality trains a new head (--head new)")
        elif self.shared_from or self.freeze_shared:
            raise InputError("--shared-from and --freeze-shared go with --towers per-modality")
        return self


def resume_changes(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The settings of ``new`` that a resume of a run saved with ``saved`` may not take, as
    ``"name: old → new"`` (empty: the resume may go on). ``epochs`` may grow, never shrink."""
    out = []
    for key in sorted(set(saved) | set(new)):
        if key in FREE_ON_RESUME:
            continue
        old, value = saved.get(key), new.get(key)
        if key == "epochs":
            if value is not None and old is not None and value < old:
                out.append(f"epochs: {old} → {value} (may only grow)")
            continue
        if old != value:
            out.append(f"{key}: {old!r} → {value!r}")
    return out


def lr_factor(step: int, steps_per_epoch: int, s: Settings) -> float:
    """The learning rate's multiplier at optimiser step ``step`` (0-based, counted over the run).

    Linear warm-up from ``1 / (warm-up steps)`` to 1 over ``warmup_epochs``; then ``cosine`` decays
    to 0 at the end of ``epochs`` (half a cosine over the steps after the warm-up), ``step`` multiplies
    by :data:`STEP_GAMMA` every ``step_every`` epochs (default: a third of the run), ``none`` stays 1.
    """
    steps_per_epoch = max(1, int(steps_per_epoch))
    warm = int(round(s.warmup_epochs * steps_per_epoch))
    if step < warm:
        return (step + 1) / warm
    total = s.epochs * steps_per_epoch
    if s.sched == "cosine":
        span = max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / span)))
    if s.sched == "step":
        every = s.step_every or max(1, s.epochs // 3)
        return STEP_GAMMA ** ((step // steps_per_epoch) // every)
    return 1.0
