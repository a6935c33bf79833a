"""Seeded random checkpoints of the zoo (ResNet, DenseNet, AlexNet) in the layouts as released.

Layouts (``layout``):

* ``released``: the Places365 files: ``{'epoch', 'arch', 'state_dict', 'best_prec1'}``,
  keys under DataParallel's ``module.`` (AlexNet: only ``features.module.N``), DenseNet
  with PyTorch < 0.4 names (``norm.1``, ``conv.1``, ``norm.2``, ``conv.2``), no
  ``num_batches_tracked``;
* ``torchvision``: a bare state dict in today's names, with ``num_batches_tracked``;
* ``python2``: ``released`` written the way Python 2's torch 0.3 wrote it (:func:`save_python2`);
* ``whole``: a pickled whole ``nn.Module`` holding the ``released`` keys (whole_*_places365.pth.tar),
  readable only with ``--trust-pickle``.

Weights: He-normal convs, N(0, 2/in) dense layers, small biases, batch norm γ in
[0.5, 1.5], β and running means N(0, 0.1), running variances in [0.5, 1.5].
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from crossmodal.models import registry

LAYOUTS = ("released", "torchvision", "python2", "whole")


def create_spec(arch: str):
    fam = registry.family_of(arch)
    if fam not in registry.FAMILIES:
        raise KeyError(f"{arch!r} is not a zoo architecture; known: "
                       f"{sorted(m for f in registry.FAMILIES for m in registry.family(f).list_models())}")
    return fam, registry.family(fam).create_spec(arch)


def random_ir_weights(fam: str, spec, seed: int = 0) -> dict[str, np.ndarray]:
    """IR tensor name → float32 array for every tensor of ``spec``'s graph."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer in registry.family(fam).build_graph(spec).layers:
        for role, t in layer.tensors.items():
            shape = t.shape
            if layer.kind == "conv2d" and role == "weight":
                a = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / (shape[0] * shape[2] * shape[3])))
            elif layer.kind == "dense" and role == "weight":
                a = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / shape[1]))
            elif layer.kind == "batch_norm" and role in ("weight", "var"):
                a = rng.uniform(0.5, 1.5, shape).astype(np.float32)
            elif layer.kind == "batch_norm":
                a = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.1)
            else:  # biases
                a = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.01)
            out[t.name] = a
    return out


def _legacy_densenet(key: str) -> str:
    import re
    return re.sub(r"(\.denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", key)


def keyed(fam: str, spec, weights: dict[str, np.ndarray], layout: str) -> dict[str, np.ndarray]:
    """IR tensor names → ``layout``'s checkpoint keys (no ``num_batches_tracked``)."""
    names = registry.family(fam).torchvision_keys(spec)
    out = {names[k]: v for k, v in weights.items()}
    if layout == "torchvision":
        return out
    if fam == "alexnet":
        return {k.replace("features.", "features.module.", 1): v for k, v in out.items()}
    if fam == "densenet":
        out = {_legacy_densenet(k): v for k, v in out.items()}
    return {f"module.{k}": v for k, v in out.items()}


def write_checkpoint(arch: str, path: Path, layout: str = "released", seed: int = 0) -> dict[str, np.ndarray]:
    """Write a random ``arch`` checkpoint in ``layout`` to ``path``; returns the IR-named weights.
    Beside it goes ``<file>.origin.json`` saying the weights are random (as for VGG)."""
    import torch

    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {LAYOUTS}")
    fam, spec = create_spec(arch)
    weights = random_ir_weights(fam, spec, seed)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if layout == "whole":
        torch.save(whole_model(keyed(fam, spec, weights, "released")), tmp)
    elif layout == "torchvision":
        state = {k: torch.from_numpy(v) for k, v in keyed(fam, spec, weights, "torchvision").items()}
        for k in [k for k in state if k.endswith(".running_var")]:
            state[k[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        torch.save(state, tmp)
    else:
        state = {k: torch.from_numpy(v) for k, v in keyed(fam, spec, weights, "released").items()}
        obj = {"epoch": 90, "arch": arch, "state_dict": state, "best_prec1": 54.7}
        if layout == "python2":
            save_python2(obj, tmp)
        else:
            torch.save(obj, tmp)
    tmp.replace(path)
    from crossmodal.ir.identity import write_origin
    from crossmodal.io.hashing import file_sha256
    write_origin(path, {"kind": "random", "seed": int(seed)}, file_sha256(path))  # the weights' identity
    return weights


def whole_model(state: dict[str, np.ndarray]):
    """A pickled-whole-model stand-in: nested ``nn.Module`` objects whose ``state_dict()`` is
    ``state`` (only torch's own classes, so unpickling needs no class from this package)."""
    import torch

    root = torch.nn.Module()
    for key, value in state.items():
        node = root
        *path, leaf = key.split(".")
        for part in path:
            if part not in node._modules:
                node.add_module(part, torch.nn.Module())
            node = node._modules[part]
        tensor = torch.from_numpy(value)
        if leaf.startswith("running_"):
            node.register_buffer(leaf, tensor)
        else:
            node.register_parameter(leaf, torch.nn.Parameter(tensor, requires_grad=False))
    return root


# --- Python 2 pickles -------------------------------------------------------------------------
class _Py2Pickler(pickle._Pickler):
    """Pickles as Python 2 did: protocol 2, every ``str`` a byte string (``SHORT_BINSTRING`` /
    ``BINSTRING``), tensors through torch 0.3's ``torch._utils._rebuild_tensor``."""

    def save_str(self, obj):
        data = obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + len(data).to_bytes(4, "little") + data)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[str] = save_str

    def reducer_override(self, obj):
        import torch
        if isinstance(obj, torch.Tensor):  # torch.save's legacy writer gives TypedStorage a persistent id
            return (torch._utils._rebuild_tensor, (obj.storage(), obj.storage_offset(), tuple(obj.size()), obj.stride()))
        return NotImplemented


class _Py2PickleModule:
    """The ``pickle_module`` torch.save's legacy writer calls (``dump`` and ``Pickler``)."""

    Pickler = _Py2Pickler

    @staticmethod
    def dump(obj, f, protocol=2):
        _Py2Pickler(f, protocol).dump(obj)


def save_python2(obj, path: Path) -> None:
    """``torch.save`` in the legacy (non-zip) format, pickled the way Python 2 wrote the
    Places365 releases: protocol 2 with byte strings (see :class:`_Py2Pickler`)."""
    import warnings

    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(obj, buf, pickle_module=_Py2PickleModule, pickle_protocol=2, _use_new_zipfile_serialization=False)
    Path(path).write_bytes(buf.getvalue())
