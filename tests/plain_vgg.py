"""Test checkpoints built without the project's key tables.

The project's synthetic checkpoints (``crossmodal.models.synthetic``) are keyed with
the same tables (``torchvision_keys``, ``named_keys``) the reader and the ``verify``
reference use, so a wrong table would be wrong on both sides and go unseen. Here the
network is a plain ``torch.nn`` VGG written out in this file, its keys are its own
``state_dict()``'s, and every other name — the dissection project's named keys, the
IR layer names — is written out by hand below.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

#: vgg_tiny3 (cfg 4, 4, M, 6, M, 3, M; input 3×40×56; hidden 16; 7 classes), by hand.
TINY3 = {"cfg": [4, 4, "M", 6, "M", 3, "M"], "input": (3, 40, 56), "hidden": 16, "classes": 7}

#: module path in a torchvision VGG → IR layer name
TINY3_LAYERS = {
    "features.0": "conv1_1", "features.1": "relu1_1", "features.2": "conv1_2", "features.3": "relu1_2",
    "features.4": "pool1", "features.5": "conv2_1", "features.6": "relu2_1", "features.7": "pool2",
    "features.8": "conv3_1", "features.9": "relu3_1", "features.10": "pool3",
    "classifier.0": "fc6", "classifier.1": "relu6", "classifier.2": "drop6",
    "classifier.3": "fc7", "classifier.4": "relu7", "classifier.5": "drop7", "classifier.6": "fc8",
}

#: torchvision key prefix → the dissection project's named key prefix
TINY3_NAMED = {
    "features.0": "features.conv1_1", "features.2": "features.conv1_2", "features.5": "features.conv2_1",
    "features.8": "features.conv3_1", "classifier.0": "classifier.fc6", "classifier.3": "classifier.fc7",
    "classifier.6": "classifier.fc8",
}

LAYOUTS = ("torchvision", "dataparallel", "csail", "named", "safetensors")


def plain_vgg(seed: int = 0, net: dict = TINY3):
    """A torchvision-style VGG as plain ``nn.Sequential``s, seeded (PyTorch's default init)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers, cin = [], net["input"][0]
    for v in net["cfg"]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
            cin = v
    _, h, w = net["input"]
    pools = net["cfg"].count("M")
    flat = cin * (h >> pools) * (w >> pools)

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.Linear(flat, net["hidden"]), nn.ReLU(), nn.Dropout(),
                                            nn.Linear(net["hidden"], net["hidden"]), nn.ReLU(), nn.Dropout(),
                                            nn.Linear(net["hidden"], net["classes"]))

        def forward(self, x):
            return self.classifier(self.features(x).flatten(1))

    module = Plain().eval()
    with torch.no_grad():  # biases big enough that a swapped bias shows
        for p in module.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.5)
    return module


def write_plain_checkpoint(module, path: Path, layout: str, named: dict = TINY3_NAMED) -> Path:
    """Save ``module.state_dict()`` in ``layout``; only the wrapping / renaming is done here."""
    import torch

    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    if layout == "named":
        state = {named[k.rsplit(".", 1)[0]] + "." + k.rsplit(".", 1)[1]: v for k, v in state.items()}
    elif layout == "dataparallel":
        state = {"module." + k: v for k, v in state.items()}
    elif layout == "csail":
        state = {("features.module." + k[len("features."):] if k.startswith("features.") else k): v
                 for k, v in state.items()}
    path = Path(path)
    if layout == "safetensors":
        from safetensors.torch import save_file
        save_file(state, str(path))
    else:
        torch.save({"epoch": 90, "arch": "vgg", "state_dict": state} if layout == "csail" else state, path)
    return path


def plain_outputs(module, x: np.ndarray, layers: dict = TINY3_LAYERS) -> dict[str, np.ndarray]:
    """Every layer's output of ``module`` on ``x``, named by the hand-written table (forward hooks)."""
    import torch

    seen, handles = {}, []
    modules = dict(module.named_modules())
    for path, name in layers.items():
        handles.append(modules[path].register_forward_hook(
            lambda _m, _i, out, name=name: seen.__setitem__(name, out.detach().numpy().copy())))
    try:
        with torch.no_grad():
            module(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
    finally:
        for h in handles:
            h.remove()
    return seen


def ir_weights(module, layers: dict = TINY3_LAYERS) -> dict[str, np.ndarray]:
    """IR tensor name (``conv1_2.weight``) → the module's tensor, through the hand-written table."""
    out = {}
    for key, value in module.state_dict().items():
        path, role = key.rsplit(".", 1)
        out[f"{layers[path]}.{role}"] = value.numpy().copy()
    return out
