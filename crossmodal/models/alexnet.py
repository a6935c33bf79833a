"""AlexNet (torchvision's single-tower version; Places365: 365 outputs) as a table.

``features``: conv 11×11/4 p2 (64) → ReLU → max 3/2 → conv 5×5 p2 (192) → ReLU → max 3/2 →
conv 3×3 p1 (384) → ReLU → conv (256) → ReLU → conv (256) → ReLU → max 3/2; an
``AdaptiveAvgPool2d((6, 6))``, which is an identity on the 6×6 map of a 224×224 input
(the graph builder asserts that map); ``classifier``: dropout → fc6 (9216→4096) → ReLU →
dropout → fc7 → ReLU → fc8.

==========  ==================  ==========================
IR layer    torchvision key     Places365 release
==========  ==================  ==========================
conv1       features.0          features.module.0
conv2       features.3          features.module.3
conv3..5    features.6/8/10     features.module.6/8/10
fc6, fc7    classifier.1, .4    classifier.1, .4
fc8         classifier.6        classifier.6
==========  ==================  ==========================

(Only ``model.features`` was wrapped in DataParallel: the reader's ``features.module.``
→ ``features.`` renaming.) The feature vector is ``fc7`` (after its ReLU), as for VGG.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from crossmodal.models import SpecRegistry
from crossmodal.ir.graph import Graph
from crossmodal.ir.preprocess import Preprocess
from crossmodal.ir.kinds import infer_shapes
from crossmodal.errors import InputError
from crossmodal.models.common import GraphBuilder

#: (IR name, features index, kernel, stride, pad) of each conv; max pools after conv1, conv2, conv5.
CONVS = (("conv1", 0, 11, 4, 2), ("conv2", 3, 5, 1, 2), ("conv3", 6, 3, 1, 1), ("conv4", 8, 3, 1, 1),
         ("conv5", 10, 3, 1, 1))
POOL_AFTER = {"conv1": "pool1", "conv2": "pool2", "conv5": "pool5"}
FCS = (("fc6", 1), ("fc7", 4), ("fc8", 6))


@dataclass(frozen=True)
class AlexNetSpec:
    arch: str = "alexnet"
    widths: tuple[int, int, int, int, int] = (64, 192, 384, 256, 256)
    input_shape: tuple[int, int, int] = (3, 224, 224)
    hidden: int = 4096
    num_classes: int = 365
    pool_size: int = 6  # AdaptiveAvgPool2d((6, 6)): must be an identity here


_SPECS: SpecRegistry[AlexNetSpec] = SpecRegistry()
register_model, create_spec, list_models = _SPECS.register, _SPECS.create, _SPECS.names


@register_model
def alexnet() -> AlexNetSpec:
    """Places365's AlexNet: torchvision shapes, 365 classes."""
    return AlexNetSpec()


@register_model
def alexnet_tiny() -> AlexNetSpec:
    """Widths (8, 12, 16, 12, 8), input 3×127×127 → an 8×3×3 map, 16 hidden, 10 classes."""
    return AlexNetSpec("alexnet_tiny", (8, 12, 16, 12, 8), (3, 127, 127), 16, 10, pool_size=3)


def build_graph(spec: AlexNetSpec, preprocess: Preprocess | None = None, name: str | None = None) -> Graph:
    """The IR graph of ``spec``; InputError when the map before the classifier is not
    ``pool_size``² (AdaptiveAvgPool2d would then resample it)."""
    b = GraphBuilder()
    x, cin = "input", spec.input_shape[0]
    for (conv, _, k, s, p), width in zip(CONVS, spec.widths):
        x = b.relu(conv.replace("conv", "relu"), b.conv(conv, x, cin, width, k, s, p, bias=True))
        if conv in POOL_AFTER:
            x = b.max_pool(POOL_AFTER[conv], x, 3, 2)
        cin = width
    pool5 = x
    graph = b.graph(name or spec.arch, spec.input_shape, preprocess, {}, "fc7", "fc8")
    c, h, w = infer_shapes(graph)[pool5]
    if (h, w) != (spec.pool_size, spec.pool_size):
        raise InputError(f"{spec.arch}'s AdaptiveAvgPool2d(({spec.pool_size}, {spec.pool_size})) is an identity only "
                         f"on a {spec.pool_size}×{spec.pool_size} map; at input {spec.input_shape[1]}×"
                         f"{spec.input_shape[2]} pool5 is {h}×{w}")
    x = b.flatten("flatten", x, (c, h, w))
    dims = [(c * h * w, spec.hidden), (spec.hidden, spec.hidden), (spec.hidden, spec.num_classes)]
    for (fc, _), (fin, fout) in zip(FCS, dims):
        if fc != "fc8":
            x = b.dropout(fc.replace("fc", "drop"), x)
        x = b.dense(fc, x, fin, fout)
        if fc != "fc8":
            x = b.relu(fc.replace("fc", "relu"), x)
    b.softmax("prob", x)
    graph = b.graph(name or spec.arch, spec.input_shape, preprocess,
                    {"pool5": pool5, "fc6": "relu6", "fc7": "relu7"}, "fc7", "fc8")
    return graph


def torchvision_keys(spec: AlexNetSpec) -> dict[str, str]:
    """IR tensor name → torchvision ``state_dict`` key (``conv1.weight`` → ``features.0.weight``)."""
    out = {}
    for conv, idx, *_ in CONVS:
        for role in ("weight", "bias"):
            out[f"{conv}.{role}"] = f"features.{idx}.{role}"
    for fc, idx in FCS:
        for role in ("weight", "bias"):
            out[f"{fc}.{role}"] = f"classifier.{idx}.{role}"
    return out


def detect(shapes: Mapping[str, tuple[int, ...]], hint: str | None = None) -> AlexNetSpec | None:
    """An AlexNet's (normalised) keys: an 11×11 ``features.0`` and ``classifier.1``/``.6``; else None."""
    w = shapes.get("features.0.weight")
    if w is None or len(w) != 4 or tuple(w[2:]) != (11, 11) or "classifier.6.weight" not in shapes:
        return None
    if "classifier.1.weight" not in shapes:
        return None
    widths = tuple(int(shapes[f"features.{idx}.weight"][0]) if f"features.{idx}.weight" in shapes else 0
                   for _, idx, *_ in CONVS)
    import math
    default = AlexNetSpec()
    fc6_in = int(shapes["classifier.1.weight"][1]) if len(shapes["classifier.1.weight"]) == 2 else 0
    side = math.isqrt(fc6_in // widths[-1]) if widths[-1] else 0
    arch = "alexnet" if widths == default.widths and side == 6 else "alexnet-custom"
    return AlexNetSpec(arch, widths, (int(w[1]), 224, 224), int(shapes["classifier.1.weight"][0]),
                       int(shapes["classifier.6.weight"][0]), pool_size=side or 6)


def torchvision_keys_for_graph(graph: Graph) -> dict[str, str] | None:
    """IR tensor → torchvision key for an AlexNet graph (conv1 11×11, conv1..5, fc6..8), else None."""
    layers = {l.name: l for l in graph.layers}
    wanted = {c for c, *_ in CONVS} | {f for f, _ in FCS}
    if not wanted <= set(layers) or tuple(layers["conv1"].attrs.get("kernel", ())) != (11, 11):
        return None
    keys = torchvision_keys(AlexNetSpec())
    return {t.name: keys[t.name] for l in graph.layers for t in l.tensors.values()}
