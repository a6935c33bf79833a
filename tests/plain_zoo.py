"""AlexNet and DenseNet written out with plain ``torch.nn``, as torchvision's source defines them, with no
code or key table from ``crossmodal``: their own ``state_dict()`` is the checkpoint, and the release
layouts (AlexNet's ``features.module.N``, DenseNet's ``module.`` prefix and pre-0.4 ``norm.1``) and
the IR names are spelled out here by hand. A swapped or wrong entry in the toolkit's key tables then
shows up as a mismatch, which a round trip through the same tables cannot show.
"""
from __future__ import annotations

import re

import torch
from torch import nn

#: alexnet_tiny's shape: conv widths, input, hidden units, classes, the adaptive pool's size.
ALEXNET_TINY = {"widths": (8, 12, 16, 12, 8), "input": (3, 127, 127), "hidden": 16, "classes": 10, "pool": 3}
#: densenet_tiny's shape: growth, blocks, initial features, bn_size, input, classes.
DENSENET_TINY = {"growth": 4, "blocks": (2, 3), "init": 8, "bn_size": 2, "input": (3, 32, 32), "classes": 10}


class PlainAlexNet(nn.Module):
    def __init__(self, widths, hidden, classes, pool) -> None:
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        self.features = nn.Sequential(
            nn.Conv2d(3, w1, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(w1, w2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(w2, w3, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w3, w4, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w4, w5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(w5 * pool * pool, hidden), nn.ReLU(),
            nn.Dropout(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


#: torchvision key prefix → IR layer (written out, not taken from crossmodal.models.alexnet)
ALEXNET_IR = {"features.0": "conv1", "features.3": "conv2", "features.6": "conv3", "features.8": "conv4",
              "features.10": "conv5", "classifier.1": "fc6", "classifier.4": "fc7", "classifier.6": "fc8"}


def alexnet_release_key(key: str) -> str:
    """Only ``model.features`` was wrapped in DataParallel in the Places365 release."""
    return key.replace("features.", "features.module.", 1) if key.startswith("features.") else key


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU()
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth), nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, inputs):
        x = torch.cat(inputs, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class _DenseBlock(nn.ModuleDict):
    def __init__(self, n: int, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        for j in range(n):
            self.add_module(f"denselayer{j + 1}", _DenseLayer(cin + j * growth, growth, bn_size))

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class PlainDenseNet(nn.Module):
    def __init__(self, growth, blocks, init, bn_size, classes) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, init, 7, 2, 3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(init))
        self.features.add_module("relu0", nn.ReLU())
        self.features.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        nf = init
        for i, n in enumerate(blocks):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(n, nf, growth, bn_size))
            nf += n * growth
            if i != len(blocks) - 1:
                t = nn.Sequential()
                t.add_module("norm", nn.BatchNorm2d(nf))
                t.add_module("relu", nn.ReLU())
                t.add_module("conv", nn.Conv2d(nf, nf // 2, 1, bias=False))
                t.add_module("pool", nn.AvgPool2d(2, 2))
                self.features.add_module(f"transition{i + 1}", t)
                nf //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(nf))
        self.classifier = nn.Linear(nf, classes)

    def forward(self, x):
        out = torch.relu(self.features(x))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def densenet_release_key(key: str) -> str:
    """DataParallel's ``module.`` and PyTorch < 0.4's ``norm.1`` / ``relu.1`` / ``conv.1`` names."""
    return "module." + re.sub(r"\.(norm|relu|conv)([12])\.", r".\1.\2.", key)


def densenet_ir_name(key: str) -> str | None:
    """torchvision key → IR tensor name (the IR keeps torchvision's module paths; batch norm's
    statistics are ``mean`` / ``var``); None for ``num_batches_tracked``."""
    if key.endswith("num_batches_tracked"):
        return None
    return key.replace(".running_mean", ".mean").replace(".running_var", ".var")


def randomise(module: nn.Module, seed: int) -> nn.Module:
    """Every parameter and batch-norm statistic drawn at random (variances positive), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (0.1 if t.ndim > 1 else 0.05))
    return module.eval()


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class PlainResNet18(nn.Module):
    """torchvision's ResNet-18 (v1.5: the stride on the 3×3 conv), written out here."""

    def __init__(self, classes: int = 365) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, cin = (64, 128, 256, 512), 64
        for i, w in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(_BasicBlock(cin, w, stride), _BasicBlock(w, w, 1)))
            cin = w
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
