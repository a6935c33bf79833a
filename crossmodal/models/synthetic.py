"""Seeded random VGG checkpoints in every key layout a user meets.

Used by ``crossmodal demo``, the tests, the benchmarks and CI's parity check, where
the real Places365 weights cannot be downloaded. The weights are random: the
numbers such a model produces are meaningless as predictions, but every
conversion and verification step runs on them exactly as on real weights.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from crossmodal.models.vgg import VGGSpec, named_keys, torchvision_keys

#: layout name → how the state_dict is wrapped / keyed
LAYOUTS = ("torchvision", "csail", "dataparallel", "named", "safetensors")


def random_state_dict(spec: VGGSpec, seed: int = 0, bias_std: float = 0.01) -> dict[str, np.ndarray]:
    """IR tensor name → float32 array: He-normal convs (fan-out), N(0, 0.01) dense, small biases."""
    rng = np.random.default_rng(seed)
    out = {}
    from crossmodal.models.vgg import build_graph
    for layer in build_graph(spec).layers:
        if layer.kind == "conv2d":
            o, i, kh, kw = layer.tensors["weight"].shape
            std = np.sqrt(2.0 / (o * kh * kw))
        elif layer.kind == "dense":
            o, i = layer.tensors["weight"].shape
            std = np.sqrt(2.0 / i)  # keeps activations O(1) through the classifier
        else:
            continue
        w = rng.standard_normal(layer.tensors["weight"].shape, dtype=np.float32)
        w *= np.float32(std)
        out[layer.tensors["weight"].name] = w
        out[layer.tensors["bias"].name] = (rng.standard_normal(o, dtype=np.float32) * np.float32(bias_std))
    return out


def keyed(spec: VGGSpec, weights: dict[str, np.ndarray], layout: str) -> dict[str, np.ndarray]:
    """Rename IR tensor names to ``layout``'s checkpoint keys."""
    if layout in ("named",):
        names = named_keys(spec)
    else:
        names = torchvision_keys(spec)
    out = {names[k]: v for k, v in weights.items()}
    if layout == "dataparallel":
        out = {"module." + k: v for k, v in out.items()}
    elif layout == "csail":  # CSAIL's training wrapped only model.features in DataParallel
        out = {k.replace("features.", "features.module.", 1): v for k, v in out.items()}
    return out


def write_checkpoint(spec: VGGSpec, path: Path, layout: str = "named", seed: int = 0) -> dict[str, np.ndarray]:
    """Write a random checkpoint of ``spec`` in ``layout``; returns the IR-named weights.

    ``csail`` wraps the state_dict as ``{'epoch', 'arch', 'state_dict', 'best_prec1'}``
    like the Places365 training script; ``safetensors`` writes a ``.safetensors`` file.
    Beside it goes ``<file>.origin.json`` saying the weights are random (seed, SHA-256), which
    the converter records as the weights' identity (:mod:`crossmodal.ir.identity`).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {LAYOUTS}")
    weights = random_state_dict(spec, seed)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if layout == "safetensors":
        from safetensors.numpy import save_file
        save_file(keyed(spec, weights, "torchvision"), str(tmp))
    else:
        import torch
        state = {k: torch.from_numpy(v) for k, v in keyed(spec, weights, layout).items()}
        obj = {"epoch": 90, "arch": spec.arch, "state_dict": state, "best_prec1": 0.0} if layout == "csail" else state
        torch.save(obj, tmp)
    tmp.replace(path)
    from crossmodal.ir.identity import write_origin
    from crossmodal.io.hashing import file_sha256
    write_origin(path, {"kind": "random", "seed": int(seed)}, file_sha256(path))
    return weights
