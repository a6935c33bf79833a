"""IR → a clean PyTorch ``state_dict`` in today's torchvision key names (``model.pth``).

The key table comes from the network's model definition
(:func:`crossmodal.models.registry.torchvision_keys_for`): ``layer1.0.bn1.running_mean``,
``features.denseblock1.denselayer1.norm1.weight``, ``features.0.weight`` … Each batch norm
also gets today's ``num_batches_tracked`` (0), so the file is exactly what a torchvision
module's ``state_dict()`` holds and loads into one with ``strict=True``. Tensors are the
IR's, bit for bit (float32); the file is a plain ``torch.save`` zip readable with
``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from crossmodal.io.atomic import atomic_path
from crossmodal.ir.graph import IRModel


def torchvision_state_dict(model: IRModel) -> dict:
    """Key → ``torch.Tensor`` in torchvision names, in graph order."""
    import torch

    from crossmodal.models.registry import torchvision_keys_for

    keys = torchvision_keys_for(model.graph)
    state = {}
    for layer in model.graph.layers:
        for role, spec in layer.tensors.items():
            state[keys[spec.name]] = torch.from_numpy(np.array(model.weights[spec.name], dtype=np.float32, copy=True))
        if layer.kind == "batch_norm" and "mean" in layer.tensors:
            prefix = keys[layer.tensors["mean"].name].rsplit(".", 1)[0]
            state[f"{prefix}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return state


def save_torch_state(model: IRModel, path: Path) -> Path:
    """Write :func:`torchvision_state_dict` to ``path`` atomically."""
    import torch

    path = Path(path)
    state = torchvision_state_dict(model)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path
