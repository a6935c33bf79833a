"""The official Caffe Places365 networks: which deploy prototxt each is, and its class count.

The graph of each network is read from its own deploy prototxt (published by the
Places365 authors; ``$CROSSMODAL_SHARED_DATA/places365/`` here) by the generic Caffe
reader; what is specific to a network is only which file it is and its class count.
Seeded random caffemodels for them: :mod:`crossmodal.readers.caffe_random`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from crossmodal.errors import InputError


@dataclass(frozen=True)
class CaffeArch:
    """A published Caffe network: its deploy prototxt's file name and its class count."""

    name: str
    prototxt: str
    num_classes: int
    labels: str = "categories_places365.txt"


#: ``crossmodal demo --arch NAME`` → the network.
CAFFE_ARCHS: dict[str, CaffeArch] = {a.name: a for a in (
    CaffeArch("alexnet-caffe", "deploy_alexnet_places365.prototxt", 365),
    CaffeArch("googlenet-caffe", "deploy_googlenet_places365.prototxt", 365),
    CaffeArch("resnet152-caffe", "deploy_resnet152_places365.prototxt", 365),
    CaffeArch("resnet152-hybrid1365-caffe", "deploy_resnet152_hybrid1365.prototxt", 1365, "categories_hybrid1365.txt"),
    CaffeArch("vgg16-caffe", "deploy_vgg16_places365.prototxt", 365),
    CaffeArch("vgg16-hybrid1365-caffe", "deploy_vgg16_hybrid1365.prototxt", 1365, "categories_hybrid1365.txt"),
)}


def shared_places365() -> Path:
    """``$CROSSMODAL_SHARED_DATA/places365`` (default ``../shared/data/places365`` beside the checkout)."""
    root = os.environ.get("CROSSMODAL_SHARED_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data"
    return Path(root) / "places365"


def find_prototxt(arch: str, prototxt: Path | None = None) -> Path:
    """The deploy prototxt of ``arch``: ``prototxt`` when given, else the one in the shared data."""
    if arch not in CAFFE_ARCHS:
        raise InputError(f"unknown Caffe architecture {arch!r}; known: {sorted(CAFFE_ARCHS)}")
    if prototxt is not None:
        if not Path(prototxt).is_file():
            raise InputError("no such file", prototxt)
        return Path(prototxt)
    path = shared_places365() / CAFFE_ARCHS[arch].prototxt
    if not path.is_file():
        raise InputError(f"{arch} needs its deploy prototxt {CAFFE_ARCHS[arch].prototxt}: give --prototxt PATH, "
                         "or set CROSSMODAL_SHARED_DATA to the folder whose places365/ holds it", path.parent)
    return path
