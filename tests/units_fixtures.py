"""Fixtures of the units tests: a hand-built colour network and a planted three-modality data set.

The network (16 × 16 RGB input, plain preprocessing): ``c1`` a 1 × 1 convolution, unit 0 =
R − (G + B)/2 ("red"), unit 1 = G − (R + B)/2 ("green"), unit 2 = B − (R + G)/2 → ``r1`` ReLU →
``c2`` a 3 × 3 convolution (pad 1) copying each channel's centre tap → ``r2`` ReLU (the last spatial
ReLU: the default layer) → max-pool 2 → flatten → dense: the logits.

The data (class folders ``<root>/<modality>/<category>/*.png``): in every modality the *beach*
images carry a red square (so unit 0's top images are beaches everywhere: one concept), while the
green square sits on *forest* photos, *kitchen* clip art and *desert* sketches (unit 1's top images
change category with the modality: no common concept). Everything else is grey with noise.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from crossmodal.ir.graph import Graph, InputSpec, IRModel, Labels, Layer, TensorSpec
from crossmodal.ir.preprocess import Preprocess
from crossmodal.ir.store import save_ir

PLAIN = Preprocess(resize=(16, 16), crop=(16, 16), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), name="plain")
CATEGORIES = ("beach", "forest", "kitchen", "desert")
GREEN_ON = {"natural": "forest", "clipart": "kitchen", "sketch": "desert"}


def _t(name, shape, layout):
    return TensorSpec(name, tuple(shape), layout)


def conv(name, src, cin, cout, k=3, stride=1, pad=1, dilation=1):
    attrs = {"kernel": (k, k), "stride": (stride, stride), "pad": (pad, pad), "in_channels": cin,
             "out_channels": cout}
    if dilation != 1:
        attrs["dilation"] = (dilation, dilation)
    return Layer(name, "conv2d", [src], attrs,
                 {"weight": _t(f"{name}.weight", (cout, cin, k, k), "OIHW"), "bias": _t(f"{name}.bias", (cout,), "O")})


def dense(name, src, fin, fout):
    return Layer(name, "dense", [src], {"in_features": fin, "out_features": fout},
                 {"weight": _t(f"{name}.weight", (fout, fin), "OI"), "bias": _t(f"{name}.bias", (fout,), "O")})


def save_graph(out: Path, layers, weights, labels, size=16, preprocess=PLAIN, blobs=None) -> Path:
    """A hand-built network as a model folder: the last layer the logits (unless ``blobs`` says), the
    one before it the feature blob. The explain tests build theirs with it too."""
    graph = Graph(name="hand", input=InputSpec(shape=(3, size, size)), layers=layers, outputs=[layers[-1].name],
                  preprocess=preprocess, labels=Labels(list(labels)), blobs=blobs or {"logits": layers[-1].name},
                  feature_blob=layers[-2].name)
    out.mkdir(parents=True)
    save_ir(IRModel(graph, {k: np.asarray(v, np.float32) for k, v in weights.items()}), out)
    return out


def colour_model(out: Path) -> Path:
    k1 = np.zeros((3, 3, 1, 1))
    for c in range(3):
        k1[c, :, 0, 0] = -0.5
        k1[c, c, 0, 0] = 1.0
    k2 = np.zeros((3, 3, 3, 3))
    for c in range(3):
        k2[c, c, 1, 1] = 1.0
    rng = np.random.default_rng(0)
    layers = [conv("c1", "input", 3, 3, k=1, pad=0), Layer("r1", "relu", ["c1"]), conv("c2", "r1", 3, 3),
              Layer("r2", "relu", ["c2"]),
              Layer("p1", "max_pool2d", ["r2"], {"kernel": (2, 2), "stride": (2, 2), "pad": (0, 0)}),
              Layer("flat", "flatten", ["p1"], {"shape": (3, 8, 8)}), dense("fc", "flat", 192, 4)]
    w = {"c1.weight": k1, "c1.bias": np.zeros(3), "c2.weight": k2, "c2.bias": np.zeros(3),
         "fc.weight": rng.normal(0, .1, (4, 192)), "fc.bias": np.zeros(4)}
    return save_graph(out, layers, w, [f"/{c[0]}/{c}" for c in CATEGORIES])


def planted_image(path: Path, rng, colour: str | None, strength: float, size=(20, 16)) -> Path:
    """Grey noise ``size`` (W, H) with a ``colour`` square (red/green) of the given strength (0–1)."""
    w, h = size
    a = np.clip(128 + rng.normal(0, 6, (h, w, 3)), 0, 255)
    if colour:
        y, x = rng.integers(0, h - 5), rng.integers(0, w - 5)
        ch = {"red": 0, "green": 1}[colour]
        a[y:y + 5, x:x + 5] = 60
        a[y:y + 5, x:x + 5, ch] = 60 + 190 * strength
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.astype(np.uint8)).save(path)
    return path


def planted_data(root: Path, per_category: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for modality, green in GREEN_ON.items():
        for cat in CATEGORIES:
            for i in range(per_category):
                colour = "red" if cat == "beach" else "green" if cat == green else None
                planted_image(root / modality / cat / f"{cat}_{i}.png", rng, colour, 0.6 + 0.1 * i,
                              size=(20 + 4 * (i % 2), 16))
    return root
