"""ResNets (torchvision's, 18 to 152) and the Places365 authors' "wideresnet18", as tables.

A ResNet is a stem (7×7/2 conv, batch norm, ReLU, 3×3/2 max pool), four stages of
``layers`` blocks (basic: two 3×3 convs; bottleneck: 1×1, 3×3, 1×1 ×4), a global
average pool and ``fc``. Stage ``s`` has ``width · 2^s`` planes, its first block
strides 2 (except stage 0) and gets a ``downsample`` (1×1 conv + batch norm) where the
shape changes. The IR names layers by their torchvision module paths:

===================  ==========================  =========================
IR layer             torchvision key prefix      Keras (ResNet50/101/152)
===================  ==========================  =========================
conv1, bn1, relu     conv1., bn1.                conv1_conv, conv1_bn, …
layer1.0.conv1       layer1.0.conv1.             conv2_block1_1_conv
layer1.0.bn1         layer1.0.bn1.               conv2_block1_1_bn
layer1.0.downsample.0  layer1.0.downsample.0.    conv2_block1_0_conv
layer1.0.add / .out  (functional)                conv2_block1_add / _out
avgpool, fc          fc.                         avg_pool, predictions
===================  ==========================  =========================

``wideresnet18`` (Places365, 2017): the basic ResNet-18 without the stem max pool and with
a fixed ``AvgPool2d(14)`` before ``fc``, so layer4 is 14×14 at 224×224; its keys are
resnet18's. Here that pool is a global average, and the graph builder asserts the 14×14 map.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from crossmodal.ir.graph import Graph

from crossmodal.ir.preprocess import Preprocess

from crossmodal.ir.kinds import infer_shapes
from crossmodal.errors import InputError
from crossmodal.models import SpecRegistry, keras_namer
from crossmodal.models.common import GraphBuilder, torchvision_keys_of

#: (block kind, blocks per stage) of each depth.
CFGS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}


@dataclass(frozen=True)
class ResNetSpec:
    """A concrete ResNet. ``pool_kernel``: the size of layer4's map the final pool
    expects (``AvgPool2d(k)``, wideresnet18's 14), or None for a global average."""

    arch: str
    block: str
    layers: tuple[int, int, int, int]
    input_shape: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 365
    width: int = 64
    stem_pool: bool = True
    pool_kernel: int | None = None

    @property
    def features(self) -> int:
        return self.width * 8 * EXPANSION[self.block]


_SPECS: SpecRegistry[ResNetSpec] = SpecRegistry()
register_model, create_spec, list_models = _SPECS.register, _SPECS.create, _SPECS.names


def _depth(name: str) -> ResNetSpec:
    block, layers = CFGS[name]
    return ResNetSpec(name, block, layers)


@register_model
def resnet18() -> ResNetSpec:
    return _depth("resnet18")


@register_model
def resnet34() -> ResNetSpec:
    return _depth("resnet34")


@register_model
def resnet50() -> ResNetSpec:
    return _depth("resnet50")


@register_model
def resnet101() -> ResNetSpec:
    return _depth("resnet101")


@register_model
def resnet152() -> ResNetSpec:
    return _depth("resnet152")


@register_model
def wideresnet18() -> ResNetSpec:
    """Places365's wideresnet18: resnet18 without the stem max pool, AvgPool2d(14)."""
    return ResNetSpec("wideresnet18", "basic", (2, 2, 2, 2), stem_pool=False, pool_kernel=14)


@register_model
def resnet_tiny() -> ResNetSpec:
    """Basic blocks, one per stage, width 4: input 3×64×64 → a 32×2×2 layer4."""
    return ResNetSpec("resnet_tiny", "basic", (1, 1, 1, 1), (3, 64, 64), num_classes=10, width=4)


@register_model
def resnet_tiny_bottleneck() -> ResNetSpec:
    """Bottleneck blocks (1, 2, 1, 1), width 4: input 3×64×64 → a 128×2×2 layer4."""
    return ResNetSpec("resnet_tiny_bottleneck", "bottleneck", (1, 2, 1, 1), (3, 64, 64), num_classes=10, width=4)


@register_model
def wideresnet_tiny() -> ResNetSpec:
    """The wide variant's differences at width 4: no max pool, input 3×64×64 → layer4 4×4 under AvgPool2d(4)."""
    return ResNetSpec("wideresnet_tiny", "basic", (1, 1, 1, 1), (3, 64, 64), num_classes=10, width=4,
                      stem_pool=False, pool_kernel=4)


def build_graph(spec: ResNetSpec, preprocess: Preprocess | None = None, name: str | None = None) -> Graph:
    """The IR graph of ``spec`` (tensor specs without hashes)."""
    b = GraphBuilder()
    x = b.conv("conv1", "input", spec.input_shape[0], spec.width, 7, 2, 3)
    x = b.relu("relu", b.bn("bn1", x, spec.width))
    if spec.stem_pool:
        x = b.max_pool("maxpool", x, 3, 2, 1)
    inplanes, exp = spec.width, EXPANSION[spec.block]
    for s, n in enumerate(spec.layers):
        planes = spec.width * 2 ** s
        for i in range(n):
            p, stride, shortcut = f"layer{s + 1}.{i}", (1 if s == 0 or i else 2), x
            if spec.block == "basic":
                y = b.relu(f"{p}.relu1", b.bn(f"{p}.bn1", b.conv(f"{p}.conv1", x, inplanes, planes, 3, stride, 1), planes))
                y = b.bn(f"{p}.bn2", b.conv(f"{p}.conv2", y, planes, planes, 3, 1, 1), planes)
            else:
                y = b.relu(f"{p}.relu1", b.bn(f"{p}.bn1", b.conv(f"{p}.conv1", x, inplanes, planes, 1), planes))
                y = b.relu(f"{p}.relu2", b.bn(f"{p}.bn2", b.conv(f"{p}.conv2", y, planes, planes, 3, stride, 1), planes))
                y = b.bn(f"{p}.bn3", b.conv(f"{p}.conv3", y, planes, planes * exp, 1), planes * exp)
            if stride != 1 or inplanes != planes * exp:
                shortcut = b.bn(f"{p}.downsample.1",
                                b.conv(f"{p}.downsample.0", x, inplanes, planes * exp, 1, stride), planes * exp)
            x = b.relu(f"{p}.out", b.add(f"{p}.add", [y, shortcut]))
            inplanes = planes * exp
    layer4 = x
    x = b.global_avg_pool("avgpool", x)
    b.softmax("prob", b.dense("fc", x, inplanes, spec.num_classes))
    graph = b.graph(name or spec.arch, spec.input_shape, preprocess, {"layer4": layer4, "avgpool": "avgpool"},
                    "avgpool", "fc")
    if spec.pool_kernel is not None:
        _, h, w = infer_shapes(graph)[layer4]
        if (h, w) != (spec.pool_kernel, spec.pool_kernel):
            raise InputError(f"{spec.arch} pools layer4 with AvgPool2d({spec.pool_kernel}), which averages the "
                             f"whole map only when it is {spec.pool_kernel}×{spec.pool_kernel}; at input "
                             f"{spec.input_shape[1]}×{spec.input_shape[2]} it is {h}×{w}")
    graph.keras_names = keras_names(graph) if spec.block == "bottleneck" else {}
    return graph


def torchvision_keys(spec: ResNetSpec) -> dict[str, str]:
    """IR tensor name → torchvision ``state_dict`` key (``layer1.0.bn1.mean`` → ``…running_mean``)."""
    return torchvision_keys_of(build_graph(spec))


def keras_names(graph: Graph) -> dict[str, str]:
    """IR layer → keras.applications ResNet50/101/152 name (``conv2_block1_1_conv`` …)."""
    import re
    fixed = {"conv1": "conv1_conv", "bn1": "conv1_bn", "relu": "conv1_relu", "maxpool": "pool1_pool",
             "avgpool": "avg_pool", "fc": "predictions"}
    out = {}
    for layer in graph.layers:
        if layer.name in fixed:
            out[layer.name] = fixed[layer.name]
            continue
        m = re.match(r"^layer(\d)\.(\d+)\.(.+)$", layer.name)
        if not m:
            continue
        stem, rest = f"conv{int(m.group(1)) + 1}_block{int(m.group(2)) + 1}", m.group(3)
        part = {"downsample.0": "0_conv", "downsample.1": "0_bn", "add": "add", "out": "out"}.get(rest)
        if part is None:
            kind, j = re.match(r"^(conv|bn|relu)(\d)$", rest).groups()
            part = f"{j}_{kind}"
        out[layer.name] = f"{stem}_{part}"
    return out


@keras_namer
def keras_names_if_resnet(graph: Graph) -> dict[str, str] | None:
    """Keras names of a bottleneck ResNet graph read from an IR without them."""
    names = {l.name for l in graph.layers}
    if "layer1.0.conv3" in names and "fc" in names:
        return keras_names(graph)
    return None


def detect(shapes: Mapping[str, tuple[int, ...]], hint: str | None = None) -> ResNetSpec | None:
    """The ResNet whose torchvision keys (normalised) these are, or None when the keys are
    not a ResNet's. Depth from the blocks per stage, basic vs bottleneck from ``conv3``,
    width from ``conv1``, classes from ``fc``. ``hint`` ("wideresnet18" …) picks the wide
    variant, which the keys cannot reveal."""
    if "conv1.weight" not in shapes or "fc.weight" not in shapes or "layer1.0.conv1.weight" not in shapes:
        return None
    import re
    counts = [0, 0, 0, 0]
    for key in shapes:
        m = re.match(r"^layer([1-4])\.(\d+)\.conv1\.weight$", key)
        if m:
            counts[int(m.group(1)) - 1] = max(counts[int(m.group(1)) - 1], int(m.group(2)) + 1)
    block = "bottleneck" if "layer1.0.conv3.weight" in shapes else "basic"
    layers = tuple(counts)
    arch = next((name for name, cfg in CFGS.items() if cfg == (block, layers)), f"resnet-custom-{block}")
    width = int(shapes["conv1.weight"][0])
    spec = ResNetSpec(arch, block, layers, (int(shapes["conv1.weight"][1]), 224, 224),
                      int(shapes["fc.weight"][0]), width)
    if hint and hint.startswith("wideresnet"):
        spec = replace(spec, arch="wideresnet18" if arch == "resnet18" else f"wide-{arch}", stem_pool=False,
                       pool_kernel=14)
    return spec


def torchvision_keys_for_graph(graph: Graph) -> dict[str, str] | None:
    """IR tensor → torchvision key for a ResNet graph (layers named by module path), else None."""
    names = {l.name for l in graph.layers}
    return torchvision_keys_of(graph) if {"conv1", "layer1.0.conv1", "fc"} <= names else None
