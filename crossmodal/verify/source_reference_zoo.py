"""``torch-source`` for the zoo (ResNet, DenseNet, AlexNet): plain torchvision-layout modules.

Written independently of the reader and of :mod:`crossmodal.models`: the modules below
are torchvision's ResNet / DenseNet / AlexNet restated (ReLUs, residual sums and
concatenations as their own parameter-free modules, so forward hooks see each of them),
sized from the checkpoint's own tensor shapes, and the raw checkpoint goes in with
``load_state_dict(strict=True)`` after this module's own renaming (DataParallel's
``module.``, AlexNet's ``features.module.``, DenseNet's pre-0.4 ``norm.1`` …). A renaming
or layout bug in the reader therefore shows as a load failure or a divergence.
Hooked module paths are the IR's layer names (the IR names layers by torchvision path).
Only the family and, for wideresnet18, the missing stem pool come from the IR's name.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from crossmodal.errors import InputError

FAMILY_PREFIXES = {"resnet": "resnet", "wideresnet": "resnet", "wide-resnet": "resnet", "densenet": "densenet",
                   "alexnet": "alexnet"}


def family_of(name: str) -> str | None:
    for prefix, fam in FAMILY_PREFIXES.items():
        if name.startswith(prefix):
            return fam
    return None


def rename(raw) -> dict:
    """Raw checkpoint keys → torchvision's, by this module's own rules."""
    out = {}
    for key, value in raw.items():
        key = str(key)
        while key.startswith("module."):
            key = key[7:]
        key = key.replace("features.module.", "features.")
        key = re.sub(r"(denselayer\d+)\.(norm|relu|conv)\.([12])\.", r"\1.\2\3.", key)
        out[key] = value
    return out


def _modules():
    import torch
    import torch.nn as nn

    class Add(nn.Module):
        def forward(self, a, b):
            return a + b

    class Cat(nn.Module):
        def forward(self, xs):
            return torch.cat(xs, 1)

    class Basic(nn.Module):
        expansion = 1

        def __init__(self, cin, planes, stride, down):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn1, self.relu1 = nn.BatchNorm2d(planes), nn.ReLU()
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = down
            self.add, self.out = Add(), nn.ReLU()

        def forward(self, x):
            y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
            return self.out(self.add(y, x if self.downsample is None else self.downsample(x)))

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin, planes, stride, down):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
            self.bn1, self.relu1 = nn.BatchNorm2d(planes), nn.ReLU()
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2, self.relu2 = nn.BatchNorm2d(planes), nn.ReLU()
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.downsample = down
            self.add, self.out = Add(), nn.ReLU()

        def forward(self, x):
            y = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
            y = self.bn3(self.conv3(y))
            return self.out(self.add(y, x if self.downsample is None else self.downsample(x)))

    class ResNet(nn.Module):
        def __init__(self, block, layers, width, num_classes, cin, stem_pool, pool_kernel):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, width, 7, 2, 3, bias=False)
            self.bn1, self.relu = nn.BatchNorm2d(width), nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1) if stem_pool else nn.Identity()
            inplanes = width
            for s, n in enumerate(layers):
                planes, blocks = width * 2 ** s, []
                for i in range(n):
                    stride = 1 if s == 0 or i else 2
                    down = None
                    if i == 0 and (stride != 1 or inplanes != planes * block.expansion):
                        down = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
                                             nn.BatchNorm2d(planes * block.expansion))
                    blocks.append(block(inplanes, planes, stride, down))
                    inplanes = planes * block.expansion
                setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
            self.avgpool = nn.AvgPool2d(pool_kernel) if pool_kernel else nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(inplanes, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x).flatten(1))

    class DenseLayer(nn.Module):
        def __init__(self, cin, growth, bn_size, first):
            super().__init__()
            self.cat = None if first else Cat()
            self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU()
            self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
            self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth), nn.ReLU()
            self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

        def forward(self, feats):
            x = feats[0] if self.cat is None else self.cat(feats)
            return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))

    class DenseBlock(nn.ModuleDict):
        def forward(self, x):
            feats = [x]
            for layer in self.values():
                feats.append(layer(feats))
            return torch.cat(feats, 1)

    class DenseNet(nn.Module):
        def __init__(self, growth, blocks, init, bn_size, num_classes, cin):
            super().__init__()
            f = nn.Sequential()
            f.add_module("conv0", nn.Conv2d(cin, init, 7, 2, 3, bias=False))
            f.add_module("norm0", nn.BatchNorm2d(init))
            f.add_module("relu0", nn.ReLU())
            f.add_module("pool0", nn.MaxPool2d(3, 2, 1))
            nf = init
            for i, n in enumerate(blocks):
                f.add_module(f"denseblock{i + 1}", DenseBlock(
                    {f"denselayer{j + 1}": DenseLayer(nf + j * growth, growth, bn_size, j == 0) for j in range(n)}))
                nf += n * growth
                if i < len(blocks) - 1:
                    t = nn.Sequential()
                    t.add_module("norm", nn.BatchNorm2d(nf))
                    t.add_module("relu", nn.ReLU())
                    t.add_module("conv", nn.Conv2d(nf, nf // 2, 1, bias=False))
                    t.add_module("pool", nn.AvgPool2d(2, 2))
                    f.add_module(f"transition{i + 1}", t)
                    nf //= 2
            f.add_module("norm5", nn.BatchNorm2d(nf))
            self.features, self.relu = f, nn.ReLU()
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(nf, num_classes)

        def forward(self, x):
            return self.classifier(self.avgpool(self.relu(self.features(x))).flatten(1))

    class AlexNet(nn.Module):
        def __init__(self, widths, hidden, num_classes, cin, side):
            super().__init__()
            a, b, c, d, e = widths
            self.features = nn.Sequential(
                nn.Conv2d(cin, a, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
                nn.Conv2d(a, b, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
                nn.Conv2d(b, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, d, 3, padding=1), nn.ReLU(),
                nn.Conv2d(d, e, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
            self.avgpool = nn.AdaptiveAvgPool2d((side, side))  # torchvision: (6, 6)
            self.classifier = nn.Sequential(
                nn.Dropout(), nn.Linear(e * side * side, hidden), nn.ReLU(), nn.Dropout(), nn.Linear(hidden, hidden),
                nn.ReLU(), nn.Linear(hidden, num_classes))

        def forward(self, x):
            return self.classifier(self.avgpool(self.features(x)).flatten(1))

    return {"Basic": Basic, "Bottleneck": Bottleneck, "ResNet": ResNet, "DenseNet": DenseNet, "AlexNet": AlexNet}


def build_module(arch: str, num_classes: int, cin: int, shapes, input_hw: tuple[int, int] = (224, 224)):
    """A plain module of ``arch``'s family sized from ``shapes`` (torchvision key → shape)."""
    m, fam = _modules(), family_of(arch)
    if fam == "resnet":
        counts = [1 + max([int(mt.group(2)) for k in shapes
                           if (mt := re.match(rf"^layer({s})\.(\d+)\.conv1\.weight$", k))], default=-1)
                  for s in range(1, 5)]
        block = m["Bottleneck"] if "layer1.0.conv3.weight" in shapes else m["Basic"]
        wide = arch.startswith("wide")
        kernel = (14 if arch == "wideresnet18" else input_hw[0] // 16) if wide else None
        return m["ResNet"](block, counts, shapes["conv1.weight"][0], num_classes, cin, not wide, kernel)
    if fam == "densenet":
        blocks: dict[int, int] = {}
        for k in shapes:
            if mt := re.match(r"^features\.denseblock(\d+)\.denselayer(\d+)\.", k):
                blocks[int(mt.group(1))] = max(blocks.get(int(mt.group(1)), 0), int(mt.group(2)))
        first = "features.denseblock1.denselayer1"
        growth = shapes[f"{first}.conv2.weight"][0]
        return m["DenseNet"](growth, [blocks[i] for i in sorted(blocks)], shapes["features.conv0.weight"][0],
                             shapes[f"{first}.conv1.weight"][0] // growth, num_classes, cin)
    if fam == "alexnet":
        widths = [shapes[f"features.{i}.weight"][0] for i in (0, 3, 6, 8, 10)]
        side = int(round((shapes["classifier.1.weight"][1] / widths[-1]) ** 0.5))
        return m["AlexNet"](widths, shapes["classifier.1.weight"][0], num_classes, cin, side)
    raise InputError(f"no plain reference module for {arch!r}")


def hook_names(module, fam: str, ir_layers: set[str]) -> dict[str, str]:
    """Module path → IR layer name, for every module whose output the IR has."""
    if fam == "alexnet":
        feats = ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3", "conv4", "relu4",
                 "conv5", "relu5", "pool5"]
        cls = ["drop6", "fc6", "relu6", "drop7", "fc7", "relu7", "fc8"]
        names = {f"features.{i}": n for i, n in enumerate(feats)}
        names.update({f"classifier.{i}": n for i, n in enumerate(cls)})
    else:
        names = {path: path for path, _ in module.named_modules() if path}
    return {p: n for p, n in names.items() if n in ir_layers}


def torch_zoo_source_engine(model, source: Path, *, device: str = "cpu", allow_tf32: bool = False,
                            trust_pickle: bool = False):
    """The checkpoint in a plain module of its family, as engine ``torch-source``."""
    import torch

    from crossmodal.runtime.devices import set_torch_precision, torch_device
    from crossmodal.runtime.engine import FunctionEngine
    from crossmodal.verify.source_reference import load_raw_state

    graph = model.graph
    fam = family_of(graph.name)
    state = rename(load_raw_state(source, trust_pickle=trust_pickle))
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    head = {"resnet": "fc.weight", "densenet": "classifier.weight", "alexnet": "classifier.6.weight"}[fam]
    first = {"resnet": "conv1.weight", "densenet": "features.conv0.weight", "alexnet": "features.0.weight"}[fam]
    if head not in shapes or first not in shapes:
        raise InputError(f"does not load into a plain torchvision {graph.name}: no {head if head not in shapes else first}",
                         source)
    h, w = graph.input.shape[1:]
    module = build_module(graph.name, shapes[head][0], shapes[first][1], shapes, (h, w))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"does not load into a plain torchvision {graph.name} "
                         f"({' '.join(str(exc).split())[:300]})", source) from None
    set_torch_precision(allow_tf32)
    dev = torch_device(device)
    module = module.to(dev).eval()
    ir_layers = {l.name for l in graph.layers}
    names = hook_names(module, fam, ir_layers)
    seen: dict = {}
    modules = dict(module.named_modules())
    for path, ir in names.items():
        modules[path].register_forward_hook(lambda _m, _i, out, ir=ir: seen.__setitem__(ir, out))
    logits = graph.resolve("logits")
    observable = set(names.values()) | ({"prob", "flatten"} & ir_layers)

    def run(x, layers):
        seen.clear()
        with torch.inference_mode():
            xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(dev)
            if fam == "alexnet":
                seen["flatten"] = module.avgpool(module.features(xt)).flatten(1)
                module.classifier(seen["flatten"])
            else:
                module(xt)
            seen["prob"] = torch.softmax(seen[logits], dim=1)
        out = {}
        for layer in layers:
            if layer in observable and layer in seen:
                v = seen[layer]
                out[layer] = (v.flatten(1) if layer == "avgpool" else v).float().cpu().numpy()
        return out
    dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return FunctionEngine("torch-source", graph, run, observable, device=str(dev),
                          info={"torch": torch.__version__, "device_name": dev_name, "allow_tf32": allow_tf32,
                                "source": str(source),
                                "module": f"plain torchvision-layout {graph.name}, forward hooks"},
                          path=source)
