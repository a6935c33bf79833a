"""DenseNets (torchvision's 121/161/169/201) as tables: growth, blocks, initial features.

Stem: 7×7/2 conv (``features.conv0``, no bias), ``norm0``, ReLU, 3×3/2 max pool. Dense
block ``b``, layer ``j``: batch norm → ReLU → 1×1 conv to ``bn_size · growth`` → batch
norm → ReLU → 3×3 conv to ``growth``, on the concatenation of the block input and every
earlier layer's output (IR layer ``features.denseblockB.denselayerJ.cat``; the block's
output, all of them joined, is the concat layer ``features.denseblockB``). Between blocks a
transition halves the channels (batch norm, ReLU, 1×1 conv) and the map (2×2/2 average
pool). Then ``features.norm5``, ReLU, global average pool (``avgpool``, the feature
vector: 1024-d for 121, 2208-d for 161) and ``classifier``.

Key layouts: torchvision's (``denselayer1.norm1.weight``); PyTorch < 0.4 saved the same
modules as ``norm.1``, ``conv.1``, ``norm.2``, ``conv.2`` (:func:`rename_legacy_key`);
a DataParallel ``module.`` prefix is stripped by the reader for every family.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from crossmodal.ir.graph import Graph

from crossmodal.ir.preprocess import Preprocess
from crossmodal.models import SpecRegistry, keras_namer
from crossmodal.models.common import GraphBuilder, torchvision_keys_of

#: name → (growth, blocks, initial features); bn_size is 4 for all.
CFGS: dict[str, tuple[int, tuple[int, ...], int]] = {
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet161": (48, (6, 12, 36, 24), 96),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
}
#: The variants keras.applications has (their layer names are given to the Keras model).
KERAS_APPLICATIONS = ("densenet121", "densenet169", "densenet201")


@dataclass(frozen=True)
class DenseNetSpec:
    arch: str
    growth: int
    blocks: tuple[int, ...]
    init_features: int
    bn_size: int = 4
    input_shape: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 365

    @property
    def features(self) -> int:
        nf = self.init_features
        for i, n in enumerate(self.blocks):
            nf += n * self.growth
            if i < len(self.blocks) - 1:
                nf //= 2
        return nf


_SPECS: SpecRegistry[DenseNetSpec] = SpecRegistry()
register_model, create_spec, list_models = _SPECS.register, _SPECS.create, _SPECS.names


def _cfg(name: str) -> DenseNetSpec:
    growth, blocks, init = CFGS[name]
    return DenseNetSpec(name, growth, blocks, init)


@register_model
def densenet121() -> DenseNetSpec:
    return _cfg("densenet121")


@register_model
def densenet161() -> DenseNetSpec:
    """Places365's densenet161: growth 48, blocks (6, 12, 36, 24), 96 initial features, 2208-d features."""
    return _cfg("densenet161")


@register_model
def densenet169() -> DenseNetSpec:
    return _cfg("densenet169")


@register_model
def densenet201() -> DenseNetSpec:
    return _cfg("densenet201")


@register_model
def densenet_tiny() -> DenseNetSpec:
    """Growth 4, blocks (2, 3), 8 initial features, bn_size 2: input 3×32×32 → 10 features."""
    return DenseNetSpec("densenet_tiny", 4, (2, 3), 8, bn_size=2, input_shape=(3, 32, 32), num_classes=10)


def build_graph(spec: DenseNetSpec, preprocess: Preprocess | None = None, name: str | None = None) -> Graph:
    """The IR graph of ``spec`` (tensor specs without hashes)."""
    b = GraphBuilder()
    nf = spec.init_features
    x = b.conv("features.conv0", "input", spec.input_shape[0], nf, 7, 2, 3)
    x = b.relu("features.relu0", b.bn("features.norm0", x, nf))
    x = b.max_pool("features.pool0", x, 3, 2, 1)
    inner = spec.bn_size * spec.growth
    for i, n in enumerate(spec.blocks, start=1):
        block, parts = f"features.denseblock{i}", [x]
        for j in range(1, n + 1):
            p, cin = f"{block}.denselayer{j}", nf + (j - 1) * spec.growth
            y = parts[0] if j == 1 else b.concat(f"{p}.cat", list(parts))
            y = b.relu(f"{p}.relu1", b.bn(f"{p}.norm1", y, cin))
            y = b.relu(f"{p}.relu2", b.bn(f"{p}.norm2", b.conv(f"{p}.conv1", y, cin, inner, 1), inner))
            parts.append(b.conv(f"{p}.conv2", y, inner, spec.growth, 3, 1, 1))
        x = b.concat(block, parts)
        nf += n * spec.growth
        if i < len(spec.blocks):
            t = f"features.transition{i}"
            x = b.relu(f"{t}.relu", b.bn(f"{t}.norm", x, nf))
            x = b.avg_pool(f"{t}.pool", b.conv(f"{t}.conv", x, nf, nf // 2, 1), 2, 2)
            nf //= 2
    x = b.relu("relu", b.bn("features.norm5", x, nf))
    x = b.global_avg_pool("avgpool", x)
    b.softmax("prob", b.dense("classifier", x, nf, spec.num_classes))
    graph = b.graph(name or spec.arch, spec.input_shape, preprocess, {"features": "relu", "avgpool": "avgpool"},
                    "avgpool", "classifier")
    graph.keras_names = keras_names(graph) if spec.arch in KERAS_APPLICATIONS else {}
    return graph


def torchvision_keys(spec: DenseNetSpec) -> dict[str, str]:
    """IR tensor name → torchvision ``state_dict`` key."""
    return torchvision_keys_of(build_graph(spec))


_LEGACY = re.compile(r"(\.denselayer\d+\.(?:norm|relu|conv))\.([12])\.")


def rename_legacy_key(key: str) -> str:
    """PyTorch < 0.4 DenseNet names → today's: ``denselayer1.norm.1.weight`` → ``denselayer1.norm1.weight``
    (a key already in today's form is returned unchanged)."""
    return _LEGACY.sub(r"\1\2.", key)


def keras_names(graph: Graph) -> dict[str, str]:
    """IR layer → keras.applications DenseNet121/169/201 name (``conv2_block1_0_bn`` …)."""
    fixed = {"features.conv0": "conv1_conv", "features.norm0": "conv1_bn", "features.relu0": "conv1_relu",
             "features.pool0": "pool1", "features.norm5": "bn", "relu": "relu", "avgpool": "avg_pool",
             "classifier": "predictions"}
    sizes = {}
    for layer in graph.layers:
        m = re.match(r"^features\.denseblock(\d+)\.denselayer(\d+)\.", layer.name)
        if m:
            sizes[int(m.group(1))] = max(sizes.get(int(m.group(1)), 0), int(m.group(2)))
    parts = {"norm1": "0_bn", "relu1": "0_relu", "conv1": "1_conv", "norm2": "1_bn", "relu2": "1_relu",
             "conv2": "2_conv"}
    out = {}
    for layer in graph.layers:
        name = layer.name
        if name in fixed:
            out[name] = fixed[name]
        elif m := re.match(r"^features\.denseblock(\d+)\.denselayer(\d+)\.(\w+)$", name):
            stage, j, part = int(m.group(1)) + 1, int(m.group(2)), m.group(3)
            out[name] = (f"conv{stage}_block{j - 1}_concat" if part == "cat"
                         else f"conv{stage}_block{j}_{parts[part]}")
        elif m := re.match(r"^features\.denseblock(\d+)$", name):
            out[name] = f"conv{int(m.group(1)) + 1}_block{sizes[int(m.group(1))]}_concat"
        elif m := re.match(r"^features\.transition(\d+)\.(norm|relu|conv|pool)$", name):
            out[name] = f"pool{int(m.group(1)) + 1}_{ {'norm': 'bn'}.get(m.group(2), m.group(2))}"
    return out


@keras_namer
def keras_names_if_densenet(graph: Graph) -> dict[str, str] | None:
    """Keras names of a DenseNet-121/169/201 graph read from an IR without them."""
    if graph.name in KERAS_APPLICATIONS and any(l.name == "features.denseblock1" for l in graph.layers):
        return keras_names(graph)
    return None


def detect(shapes: Mapping[str, tuple[int, ...]], hint: str | None = None) -> DenseNetSpec | None:
    """The DenseNet whose (normalised, renamed) keys these are, or None: growth from the first
    layer's 3×3 conv, bn_size from its 1×1 conv, blocks from the layers per block."""
    first = "features.denseblock1.denselayer1"
    if "features.conv0.weight" not in shapes or f"{first}.conv2.weight" not in shapes:
        return None
    if "classifier.weight" not in shapes:
        return None
    blocks: dict[int, int] = {}
    for key in shapes:
        m = re.match(r"^features\.denseblock(\d+)\.denselayer(\d+)\.", key)
        if m:
            blocks[int(m.group(1))] = max(blocks.get(int(m.group(1)), 0), int(m.group(2)))
    sizes = tuple(blocks.get(i, 0) for i in range(1, max(blocks) + 1))
    growth = int(shapes[f"{first}.conv2.weight"][0])
    init = int(shapes["features.conv0.weight"][0])
    bn_size = max(int(shapes[f"{first}.conv1.weight"][0]) // growth, 1) if f"{first}.conv1.weight" in shapes else 4
    arch = next((n for n, cfg in CFGS.items() if cfg == (growth, sizes, init) and bn_size == 4), "densenet-custom")
    return DenseNetSpec(arch, growth, sizes, init, bn_size, (int(shapes["features.conv0.weight"][1]), 224, 224),
                        int(shapes["classifier.weight"][0]))


def torchvision_keys_for_graph(graph: Graph) -> dict[str, str] | None:
    """IR tensor → torchvision key for a DenseNet graph (layers named by module path), else None."""
    names = {l.name for l in graph.layers}
    return torchvision_keys_of(graph) if {"features.conv0", "features.denseblock1", "classifier"} <= names else None
