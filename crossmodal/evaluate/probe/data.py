"""The probe's data: a modality's split lists resolved as ``baseline`` does, and the features, labels
and logits of its images (:class:`ModalityData`); the classes a probe learns.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossmodal.ir.graph import Graph
from crossmodal.errors import InputError
from crossmodal.data.datasets import Dataset, ModalityAbsent, resolve_modality
from crossmodal.io.hashing import file_sha256


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


def same_images(a: Dataset, b: Dataset) -> bool:
    return [r.path for r in a.records] == [r.path for r in b.records]


def no_train_split(ds: Dataset, split: str) -> InputError:
    found = _split_lists(ds.root, ds.name)
    return InputError(f"modality {ds.name!r} has no {split!r} list, so no training images apart from the test "
                      f"images (lists found: {', '.join(found) or 'none, class-folder layout'}); give a "
                      f"{split}.txt, or use --cv K to cross-validate over its labelled images", ds.root)


def class_labels(data: ModalityData) -> tuple[list[str], np.ndarray]:
    """Classes = the data set's categories that have decoded images (category order); y per row."""
    present = set(data.cats.tolist())
    names = [c for c in data.dataset.categories if c in present]
    if len(names) < 2:
        raise InputError(f"modality {data.name!r} ({data.split}) has {len(names)} category among its decoded "
                         f"images; a classifier needs at least 2", data.dataset.root)
    index = {c: i for i, c in enumerate(names)}
    return names, np.array([index[c] for c in data.cats], dtype=np.int64)
