"""The images a fine-tuning run trains and validates on: data sets, seeded augmentation, epoch orders.

* :func:`load_data` resolves each modality's ``--train-split`` and ``--val-split`` lists as ``probe``
  does (CMPlaces label lists or class folders); the classes are the union of the modalities'
  categories by name (the first modality's order, then names the others add).
* :class:`ImageSet` decodes and augments one sample in a data-loader worker. Its randomness is a
  function of ``(seed, epoch, sample index)`` alone, so the same sample gets the same augmentation
  whatever the worker count, the rank or a resume in the middle of an epoch. ``augment="none"`` and
  validation preprocess exactly as ``baseline`` does (the IR's spec); ``light`` = random resized crop
  (area 0.7–1 of the image, aspect 3/4–4/3) + horizontal flip; ``strong`` adds a rotation (±15°), a
  shear (±10°, white fill: clip art and sketches are drawn on white), colour jitter (brightness,
  contrast, saturation ×0.7–1.3) and grayscale (p = 0.1).
* :func:`epoch_order` is the training order of an epoch (a permutation seeded by ``(seed, epoch)``;
  ``balance="modality"`` draws every modality as often as the largest); :func:`shard` splits it over
  ranks (padded to equal length so every rank takes the same number of steps), :func:`val_shard`
  splits validation exactly (no padding: each image once).

Samples are ``(C, H, W)`` float32 (the IR's preprocessing); a training file that fails to decode is
replaced by the next one that decodes, a validation file is dropped from its batch; both are reported.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from crossmodal.data.datasets import Dataset
from crossmodal.data.images import ImageDecodeError, load_rgb, preprocess
from crossmodal.errors import InputError
from crossmodal.ir.graph import Preprocess

WHITE = (255, 255, 255)


@dataclass
class Split:
    """One split over every modality: ``paths``, class ``labels`` (into the run's classes) and
    modality indices ``mods``, one per image, in list order (modality by modality)."""

    paths: list[Path]
    labels: np.ndarray
    mods: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class RunData:
    """The run's classes, its training and validation splits, and the data sets they came from."""

    modalities: list[str]
    classes: list[str]
    train: Split
    val: Split
    datasets: dict[str, Dataset] = field(default_factory=dict)

    def describe(self) -> dict:
        from crossmodal.evaluate.probe.job import split_files
        out = {}
        for key, ds in self.datasets.items():
            out[key] = {"root": str(ds.root), "layout": ds.layout, "num_images": len(ds.records),
                        "num_missing": len(ds.missing), "num_categories": len(ds.categories),
                        "files": split_files(ds)}
        return out


def load_data(modalities: Sequence[str], *, data_root=None, config=None, train_split: str = "train",
              val_split: str = "val") -> RunData:
    """Every modality's two splits, checked: a split with no image, or the same list for both, is
    refused (one line naming it)."""
    from crossmodal.evaluate.probe.job import resolve_split

    datasets, classes = {}, []
    for m in modalities:
        for split, role in ((train_split, "training"), (val_split, "test")):
            ds = resolve_split(m, split, role, data_root=data_root, config=config)
            if not ds.records:
                raise InputError(f"modality {m!r}: the {split!r} split has no image", ds.files.get("list", ds.root))
            datasets[f"{m}/{split}"] = ds
            classes += [c for c in ds.categories if c not in classes]
        a, b = datasets[f"{m}/{train_split}"], datasets[f"{m}/{val_split}"]
        if [r.path for r in a.records] == [r.path for r in b.records]:
            raise InputError(f"modality {m!r}: the {train_split!r} and {val_split!r} splits are the same images; "
                             f"give a separate --train-split list", a.root)
    index = {c: i for i, c in enumerate(classes)}

    def split(name: str) -> Split:
        paths, labels, mods = [], [], []
        for k, m in enumerate(modalities):
            for r in datasets[f"{m}/{name}"].records:
                paths.append(r.path)
                labels.append(index[r.category])
                mods.append(k)
        return Split(paths, np.asarray(labels, np.int64), np.asarray(mods, np.int64))
    return RunData(list(modalities), classes, split(train_split), split(val_split), datasets)


# --------------------------------------------------------------------------- augmentation
def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream of one sample in one epoch (independent of workers, ranks and resumes)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


def _resized_crop(img, rng: np.random.Generator, size: tuple[int, int], resample):
    """Random area 0.7–1, aspect 3/4–4/3 (log-uniform) crop, resized to ``size`` (W, H)."""
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(0.7, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return img.resize(size, resample, box=(x0, y0, x0 + cw, y0 + ch))
    return img.resize(size, resample)


def augment_image(img, level: str, rng: np.random.Generator, size: tuple[int, int], resample):
    """An RGB PIL image → an augmented RGB PIL image of ``size`` (W, H) (see the module docstring)."""
    from PIL import Image, ImageEnhance

    if level == "strong":
        img = img.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR, fillcolor=WHITE)
        t = math.tan(math.radians(float(rng.uniform(-10, 10))))
        img = img.transform(img.size, Image.Transform.AFFINE, (1, t, -t * img.size[1] / 2, 0, 1, 0),
                            resample=Image.Resampling.BILINEAR, fillcolor=WHITE)
    img = _resized_crop(img, rng, size, resample)
    if rng.uniform() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if level == "strong":
        for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            img = enhance(img).enhance(float(rng.uniform(0.7, 1.3)))
        if rng.uniform() < 0.1:
            img = img.convert("L").convert("RGB")
    return img


class ImageSet:
    """A map-style data set for ``torch.utils.data.DataLoader``: item ``i`` → ``(x, label, modality,
    index, failures)`` with ``x`` float32 ``(C, H, W)`` and ``failures`` the ``(index, reason)`` of files
    that did not decode. With ``substitute`` (training) a file that does not decode is replaced by the
    next one that does (so every rank's batch is full and takes its step under DDP); without it
    (validation) ``x`` is None. Set :attr:`epoch` before each epoch's loader is made (workers copy it)."""

    def __init__(self, split: Split, spec: Preprocess, mean_image: np.ndarray | None, augment: str,
                 seed: int, substitute: bool = False) -> None:
        self.substitute = substitute
        from crossmodal.data.images import INTERPOLATIONS, crop_mean_image
        self.split, self.spec, self.augment, self.seed, self.epoch = split, spec, augment, int(seed), 0
        self.mean = None if mean_image is None else crop_mean_image(mean_image, tuple(spec.crop), spec.channels)
        h, w = (int(v) for v in spec.crop)
        self.size = (w, h)
        self.resample = INTERPOLATIONS[spec.interpolation.lower()]
        self.direct = dataclasses.replace(spec, resize=(h, w), crop=(h, w))  # the augmented image is the crop

    def __len__(self) -> int:
        return len(self.split)

    def load(self, i: int, epoch: int):
        img = load_rgb(self.split.paths[i])
        if self.augment == "none":
            return preprocess(img, self.spec, self.mean)
        img = augment_image(img, self.augment, sample_rng(self.seed, epoch, i), self.size, self.resample)
        return preprocess(img, self.direct, self.mean)

    def __getitem__(self, i: int):
        i, failures = int(i), []
        for j in ([i] + [(i + k) % len(self) for k in range(1, min(len(self), 64))] if self.substitute else [i]):
            try:
                x = self.load(j, self.epoch)
            except ImageDecodeError as exc:
                failures.append((j, exc.reason))
                continue
            return x, int(self.split.labels[j]), int(self.split.mods[j]), j, failures
        return None, int(self.split.labels[i]), int(self.split.mods[i]), i, failures


def collate(items):
    """Samples → ``{"x": (B, C, H, W), "y": (B,), "m": (B,), "idx": (B,), "failed": [(i, reason)]}``
    (torch tensors; samples that did not decode dropped, B may then be 0)."""
    import torch
    ok = [it for it in items if it[0] is not None]
    failed = [f for it in items for f in it[4]]
    x = torch.from_numpy(np.stack([it[0] for it in ok])) if ok else torch.zeros((0,))
    as_long = lambda k: torch.tensor([it[k] for it in ok], dtype=torch.int64)  # noqa: E731
    return {"x": x, "y": as_long(1), "m": as_long(2), "idx": as_long(3), "failed": failed}


# --------------------------------------------------------------------------- orders and shards
def epoch_order(seed: int, epoch: int, mods: np.ndarray, balance: str) -> np.ndarray:
    """The training order of ``epoch``: indices into the split, a permutation seeded by
    ``(seed, epoch)``; with ``balance="modality"`` every modality is drawn as often as the
    largest (the smaller ones repeated, then topped up at random without repeats)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 7])
    mods = np.asarray(mods)
    kinds = np.unique(mods)
    if balance == "modality" and len(kinds) > 1:
        most = max(int((mods == k).sum()) for k in kinds)
        parts = []
        for k in kinds:
            own = np.flatnonzero(mods == k)
            reps, extra = divmod(most, len(own))
            parts += [np.tile(own, reps), rng.choice(own, extra, replace=False)]
        idx = np.concatenate(parts)
    else:
        idx = np.arange(len(mods))
    return idx[rng.permutation(len(idx))]


def shard(order: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank ``rank``'s part of an epoch's order: padded (repeating its start) to a multiple of
    ``world`` so every rank takes the same number of steps, then every ``world``-th index."""
    if world <= 1:
        return order
    pad = (-len(order)) % world
    order = np.concatenate([order, order[:pad]]) if pad else order
    return order[rank::world]


def val_shard(n: int, rank: int, world: int) -> np.ndarray:
    """Rank ``rank``'s validation images: every ``world``-th, no padding (each image exactly once)."""
    return np.arange(n)[rank::world]


def batches(indices: np.ndarray, batch_size: int, start: int = 0) -> list[list[int]]:
    """Consecutive batches of ``indices`` from batch number ``start`` on (a resume mid-epoch)."""
    return [indices[i:i + batch_size].tolist() for i in range(start * batch_size, len(indices), batch_size)]


def loader(imageset: ImageSet, batch_lists: list[list[int]], *, epoch: int, workers: int, pin: bool = False):
    """A ``DataLoader`` over the given batches of ``imageset`` at ``epoch`` (workers decode and
    augment; the loader's own generator is fixed so it draws nothing from torch's global RNG)."""
    import torch
    imageset.epoch = epoch
    return torch.utils.data.DataLoader(imageset, batch_sampler=batch_lists, num_workers=workers, collate_fn=collate,
                                       pin_memory=pin, generator=torch.Generator().manual_seed(epoch),
                                       persistent_workers=False)
