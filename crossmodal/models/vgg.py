"""VGG architectures as small tables, and the names each framework gives their layers.

A VGG is a list of conv widths with ``"M"`` for a 2×2/2 max pool (the ``cfg``),
followed by a classifier ``fc6 → relu → dropout → fc7 → relu → dropout → fc8``.
From a :class:`VGGSpec` this module builds the IR graph (no weights), the
PyTorch ``nn.Module`` (for tests, the demo and the torch engine), and the names:

==========  ===================  ==========================  ===============
IR layer    torchvision key      named key (dissection)      Keras layer
==========  ===================  ==========================  ===============
conv1_1     features.0           features.conv1_1            block1_conv1
pool1       features.4           features.pool1              block1_pool
fc6         classifier.0         classifier.fc6              fc1
fc7         classifier.3         classifier.fc7              fc2
fc8 / fc8a  classifier.6         classifier.fc8a             predictions
==========  ===================  ==========================  ===============
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from crossmodal.ir.kinds import TENSOR_LAYOUTS

from crossmodal.ir.graph import Graph, InputSpec, Layer, TensorSpec

from crossmodal.ir.preprocess import Preprocess
from crossmodal.models import SpecRegistry, keras_namer

CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
    # Tiny variants for fast tests: the same code paths, a 3×5×7 map before fc6.
    "vgg_tiny": [4, "M", 3, "M"],
    "vgg_tiny3": [4, 4, "M", 6, "M", 3, "M"],
}


@dataclass(frozen=True)
class VGGSpec:
    """A concrete VGG: ``cfg``, input (C, H, W), classifier widths."""

    arch: str
    cfg: tuple[int | str, ...]
    input_shape: tuple[int, int, int] = (3, 224, 224)
    hidden: int = 4096
    num_classes: int = 1000
    final_name: str = "fc8"

    @property
    def num_pools(self) -> int:
        return sum(1 for v in self.cfg if v == "M")

    @property
    def conv_widths(self) -> tuple[int, ...]:
        return tuple(v for v in self.cfg if v != "M")

    @property
    def pool5_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the last feature map (floor pooling)."""
        _, h, w = self.input_shape
        for _ in range(self.num_pools):
            h, w = h // 2, w // 2
        return (self.conv_widths[-1], h, w)

    def parameter_count(self) -> int:
        total, cin = 0, self.input_shape[0]
        for width in self.conv_widths:
            total += width * cin * 9 + width
            cin = width
        c, h, w = self.pool5_shape
        for fin, fout in ((c * h * w, self.hidden), (self.hidden, self.hidden), (self.hidden, self.num_classes)):
            total += fin * fout + fout
        return total


_SPECS: SpecRegistry[VGGSpec] = SpecRegistry()
register_model, create_spec, list_models = _SPECS.register, _SPECS.create, _SPECS.names


@register_model
def vgg16_places365() -> VGGSpec:
    """VGG16 trained on Places365: 365 classes, 135,755,949 parameters."""
    return VGGSpec("vgg16", tuple(CFGS["vgg16"]), num_classes=365, final_name="fc8a")


@register_model
def vgg16() -> VGGSpec:
    return VGGSpec("vgg16", tuple(CFGS["vgg16"]))


@register_model
def vgg11() -> VGGSpec:
    return VGGSpec("vgg11", tuple(CFGS["vgg11"]))


@register_model
def vgg13() -> VGGSpec:
    return VGGSpec("vgg13", tuple(CFGS["vgg13"]))


@register_model
def vgg19() -> VGGSpec:
    return VGGSpec("vgg19", tuple(CFGS["vgg19"]))


@register_model
def vgg_tiny() -> VGGSpec:
    """Two blocks, input 3×20×28 → a 3×5×7 map before fc6 (C, H, W all distinct)."""
    return VGGSpec("vgg_tiny", tuple(CFGS["vgg_tiny"]), input_shape=(3, 20, 28), hidden=16, num_classes=10)


@register_model
def vgg_tiny3() -> VGGSpec:
    """Three blocks, input 3×40×56 → a 3×5×7 map before fc6."""
    return VGGSpec("vgg_tiny3", tuple(CFGS["vgg_tiny3"]), input_shape=(3, 40, 56), hidden=16, num_classes=7)


def arch_of(conv_widths: Sequence[int], pools_after: Sequence[int]) -> tuple[str, tuple[int | str, ...]]:
    """Name the architecture whose cfg has these conv widths and pool positions.

    ``pools_after`` lists the indices of convs followed by a pool. Returns
    (name or "vgg-custom", cfg).
    """
    cfg: list[int | str] = []
    for i, width in enumerate(conv_widths):
        cfg.append(int(width))
        if i in pools_after:
            cfg.append("M")
    for name, table in CFGS.items():
        if list(table) == cfg:
            return name, tuple(cfg)
    return "vgg-custom", tuple(cfg)


# --- names -----------------------------------------------------------------------------------
def conv_names(cfg: Sequence[int | str]) -> list[tuple[str, str, str]]:
    """For each cfg entry: (IR name, torchvision module index, Keras name).

    Convs are ``conv{block}_{i}``, pools ``pool{block}``; their ReLUs share the
    conv's suffix (``relu{block}_{i}``).
    """
    names, block, i, idx = [], 1, 1, 0
    for v in cfg:
        if v == "M":
            names.append((f"pool{block}", str(idx), f"block{block}_pool"))
            block, i, idx = block + 1, 1, idx + 1
        else:
            names.append((f"conv{block}_{i}", str(idx), f"block{block}_conv{i}"))
            i, idx = i + 1, idx + 2
    return names


def build_graph(spec: VGGSpec, preprocess: Preprocess | None = None, name: str | None = None) -> Graph:
    """The IR graph of ``spec`` (tensor specs without hashes; weights come from a reader)."""
    layers: list[Layer] = []
    prev, cin = "input", spec.input_shape[0]

    def add(layer: Layer) -> None:
        nonlocal prev
        layers.append(layer)
        prev = layer.name

    def tensors(layer_name: str, kind: str, wshape: tuple[int, ...], out: int) -> dict[str, TensorSpec]:
        return {
            "weight": TensorSpec(f"{layer_name}.weight", wshape, TENSOR_LAYOUTS[(kind, "weight")]),
            "bias": TensorSpec(f"{layer_name}.bias", (out,), TENSOR_LAYOUTS[(kind, "bias")]),
        }

    for v, (ir_name, _, _) in zip(spec.cfg, conv_names(spec.cfg)):
        if v == "M":
            add(Layer(ir_name, "max_pool2d", [prev],
                      {"kernel": (2, 2), "stride": (2, 2), "pad": (0, 0), "ceil_mode": False}))
        else:
            width = int(v)
            add(Layer(ir_name, "conv2d", [prev],
                      {"kernel": (3, 3), "stride": (1, 1), "pad": (1, 1),
                       "in_channels": cin, "out_channels": width},
                      tensors(ir_name, "conv2d", (width, cin, 3, 3), width)))
            add(Layer(ir_name.replace("conv", "relu"), "relu", [prev]))
            cin = width
    pool5 = prev
    c, h, w = spec.pool5_shape
    add(Layer("flatten", "flatten", [prev], {"shape": (c, h, w)}))
    dims = [(c * h * w, spec.hidden), (spec.hidden, spec.hidden), (spec.hidden, spec.num_classes)]
    for n, (fin, fout) in zip(("6", "7", None), dims):
        fc = f"fc{n}" if n else spec.final_name
        add(Layer(fc, "dense", [prev], {"in_features": fin, "out_features": fout},
                  tensors(fc, "dense", (fout, fin), fout)))
        if n:
            add(Layer(f"relu{n}", "relu", [prev]))
            add(Layer(f"drop{n}", "dropout", [prev], {"rate": 0.5}))
    add(Layer("prob", "softmax", [prev], {"axis": 1}))
    graph = Graph(
        name=name or spec.arch,
        input=InputSpec(shape=spec.input_shape,
                        channel_order=(preprocess or Preprocess()).channel_order,
                        value_range=(preprocess or Preprocess()).value_range),
        layers=layers,
        outputs=[spec.final_name, "prob"],
        preprocess=preprocess or Preprocess(),
        blobs={"pool5": pool5, "fc6": "relu6", "fc7": "relu7",
               "logits": spec.final_name, "prob": "prob"},
        feature_blob="fc7",
    )
    graph.keras_names = keras_names(graph)
    return graph


def torchvision_keys(spec: VGGSpec) -> dict[str, str]:
    """IR tensor name → torchvision ``state_dict`` key (``features.0.weight`` …)."""
    out = {}
    for v, (ir_name, idx, _) in zip(spec.cfg, conv_names(spec.cfg)):
        if v != "M":
            out[f"{ir_name}.weight"], out[f"{ir_name}.bias"] = f"features.{idx}.weight", f"features.{idx}.bias"
    for fc, idx in (("fc6", 0), ("fc7", 3), (spec.final_name, 6)):
        out[f"{fc}.weight"], out[f"{fc}.bias"] = f"classifier.{idx}.weight", f"classifier.{idx}.bias"
    return out


def named_keys(spec: VGGSpec) -> dict[str, str]:
    """IR tensor name → the dissection project's named key (``features.conv1_1.weight`` …)."""
    out = {}
    for v, (ir_name, _, _) in zip(spec.cfg, conv_names(spec.cfg)):
        if v != "M":
            for role in ("weight", "bias"):
                out[f"{ir_name}.{role}"] = f"features.{ir_name}.{role}"
    for fc in ("fc6", "fc7", spec.final_name):
        for role in ("weight", "bias"):
            out[f"{fc}.{role}"] = f"classifier.{fc}.{role}"
    return out


_VGG_KINDS = frozenset({"conv2d", "relu", "max_pool2d", "avg_pool2d", "flatten", "dense", "dropout", "softmax"})


@keras_namer
def keras_names_if_vgg(graph: Graph) -> dict[str, str] | None:
    """:func:`keras_names` for a plain chain of VGG layer kinds ending in dense layers, else None."""
    chain = all(len(l.inputs) == 1 for l in graph.layers)
    if not chain or not {l.kind for l in graph.layers} <= _VGG_KINDS or not any(l.kind == "dense" for l in graph.layers):
        return None
    return keras_names(graph)


def keras_names(graph: Graph) -> dict[str, str]:
    """IR layer name → keras.applications-style name, derived from the layer sequence.

    A conv and the ReLU after it become one Keras layer (``block1_conv1``, activation
    relu) named after the conv; dense layers become ``fc1``, ``fc2``, …, the last one
    ``predictions``. Pools are ``block{b}_pool``; dropout and softmax have no Keras layer.
    """
    names, block, conv_i, dense = {}, 1, 1, [l for l in graph.layers if l.kind == "dense"]
    for layer in graph.layers:
        if layer.kind == "conv2d":
            names[layer.name] = f"block{block}_conv{conv_i}"
            conv_i += 1
        elif layer.kind in ("max_pool2d", "avg_pool2d"):
            names[layer.name] = f"block{block}_pool"
            block, conv_i = block + 1, 1
        elif layer.kind == "flatten":
            names[layer.name] = "flatten"
        elif layer.kind == "dense":
            pos = dense.index(layer)
            names[layer.name] = "predictions" if pos == len(dense) - 1 else f"fc{pos + 1}"
    return names


def build_torch_module(spec: VGGSpec):
    """A torchvision-layout ``nn.Module`` for ``spec`` (``features``/``classifier``).

    Its ``state_dict`` keys are torchvision's; no AdaptiveAvgPool (input size fixed
    by ``spec.input_shape``). ReLUs are not in-place so forward hooks see clean tensors.
    """
    import torch.nn as nn

    feats, cin = [], spec.input_shape[0]
    for v in spec.cfg:
        if v == "M":
            feats.append(nn.MaxPool2d(2, 2))
        else:
            feats += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU()]
            cin = int(v)
    c, h, w = spec.pool5_shape

    class VGG(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(*feats)
            self.classifier = nn.Sequential(
                nn.Linear(c * h * w, spec.hidden), nn.ReLU(), nn.Dropout(),
                nn.Linear(spec.hidden, spec.hidden), nn.ReLU(), nn.Dropout(),
                nn.Linear(spec.hidden, spec.num_classes),
            )

        def forward(self, x):
            return self.classifier(self.features(x).flatten(1))

    return VGG()


def torchvision_keys_for_graph(graph: Graph) -> dict[str, str] | None:
    """IR tensor → torchvision key for a VGG graph (``conv1_1`` … three dense layers), read from
    a checkpoint or from Caffe; None for any other graph."""
    cfg: list[int | str] = []
    dense = [l for l in graph.layers if l.kind == "dense"]
    for layer in graph.layers:
        if layer.kind == "conv2d":
            cfg.append(int(layer.attrs["out_channels"]))
        elif layer.kind == "max_pool2d":
            cfg.append("M")
    names = [l.name for l in graph.layers if l.kind in ("conv2d", "max_pool2d")]
    if len(dense) != 3 or not cfg or names != [n for n, _, _ in conv_names(cfg)]:
        return None
    if [l.name for l in dense[:2]] != ["fc6", "fc7"]:
        return None
    keys = torchvision_keys(VGGSpec("vgg", tuple(cfg), final_name=dense[2].name))
    owned = {t.name for l in graph.layers for t in l.tensors.values()}
    return keys if set(keys) == owned else None
