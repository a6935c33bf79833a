"""The Places365 authors' published accuracies of their networks on the Places365-Standard validation
set (36,500 photos, 365 classes; center crop), from the study's table of the family: a point of
orientation beside a baseline run of the same network — on another data set and label set, so never
a like-for-like comparison — and for no other network (a ResNet-18 is not a ResNet-152).

:func:`reference_for` tells the network from the graph's name: the PyTorch zoo's architecture names
and the official Caffe prototxts' ``name:`` fields. The hybrid 1365-class networks, and every network
the table has no row for, get None.
"""
from __future__ import annotations

DATASET = "Places365-Standard validation (36,500 natural photos, 365 classes)"
NOTE = ("published by the Places365 authors on their own validation set; a different data set and label set "
        "from the CMPlaces modalities evaluated here, so a point of orientation, not a like-for-like comparison")

#: network → (top-1, top-5) on Places365-Standard validation, fractions
ACCURACY: dict[str, tuple[float, float]] = {
    "AlexNet-Places365": (0.5317, 0.8289),
    "GoogLeNet-Places365": (0.5363, 0.8388),
    "VGG16-Places365": (0.5524, 0.8491),
    "ResNet152-Places365": (0.5474, 0.8508),
}

#: graph names (lower case) → the network they are
_NAMES = {"alexnet": "AlexNet-Places365", "caffenet-places365": "AlexNet-Places365",
          "googlenet-places365": "GoogLeNet-Places365",
          "vgg16": "VGG16-Places365", "vgg-places365": "VGG16-Places365",
          "resnet152": "ResNet152-Places365", "resnet-152-places365": "ResNet152-Places365"}


def reference_for(graph_name: str, num_classes: int) -> dict | None:
    """The published Places365 accuracy of the network named ``graph_name`` with ``num_classes``
    outputs, as ``{model, dataset, top1, top5, note}``, or None when the table has none for it."""
    model = _NAMES.get(str(graph_name).strip().lower())
    if model is None or num_classes != 365:
        return None
    top1, top5 = ACCURACY[model]
    return {"model": model, "dataset": DATASET, "top1": top1, "top5": top5, "note": NOTE}
