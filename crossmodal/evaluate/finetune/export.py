"""The trained weights as model folders: the base IR with every layer's tensors taken from the trained
module (one modality's tower for a tower run), the new head and its labels; the job writes it through
the convert pipeline (IR + ONNX + Keras, ``--to torch`` too; :func:`~crossmodal.evaluate.probe.model.write_adjusted_model`), so ``baseline``, ``retrieval``, ``probe``, ``explain``,
``predict`` and ``verify`` read them like any converted model.

Pure part: :func:`trained_ir` (IR + module → IR). Frozen layers keep the base's arrays (bit for bit:
they are the same arrays), batch-norm layers that trained get their new running statistics.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from crossmodal.ir import identity
from crossmodal.ir.graph import IRModel, Labels, Layer, Provenance, TensorSpec

#: torch module state names → IR tensor roles
ROLES = {"weight": "weight", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def module_arrays(module) -> dict[str, np.ndarray]:
    """An IR layer's module → ``{role: float32 array}`` (its parameters and batch-norm statistics)."""
    out = {}
    for key, value in module.state_dict().items():
        if key in ROLES and value is not None:
            out[ROLES[key]] = value.detach().float().cpu().numpy()
    return out


def trained_ir(base: IRModel, net, *, classes: Sequence[str] | None, ident: dict, notes: Sequence[str],
               tower: str | None = None, base_dir: str = "", fingerprint: str = "") -> IRModel:
    """The base network with the trained weights of ``net`` (modality ``tower``'s copies for the tower
    layers). ``classes``: the new head's labels (None: ``--head keep``, the network's labels stay)."""
    g = base.graph
    weights = dict(base.weights)
    layers = []
    for layer in g.layers:
        if layer.name not in net.names:
            layers.append(layer)
            continue
        i = net.names.index(layer.name)
        mods = net.modules_of(i)
        in_tower = bool(net.tower_names) and net.tower_lo <= i < net.shared_from
        mod = mods[net.tower_names.index(tower)] if in_tower and tower is not None else mods[0]
        arrays = module_arrays(mod)
        if layer.name == net.head and classes is not None:
            w, b = arrays["weight"], arrays["bias"]
            for spec in layer.tensors.values():
                weights.pop(spec.name, None)
            layer = Layer(layer.name, "dense", list(layer.inputs),
                          {**layer.attrs, "out_features": int(w.shape[0])},
                          {"weight": TensorSpec(f"{layer.name}.weight", tuple(w.shape), "OI"),
                           "bias": TensorSpec(f"{layer.name}.bias", tuple(b.shape), "O")})
        elif not (net.trains(i) or _is_trained_bn(layer, i, net)):
            layers.append(layer)  # frozen: the base's arrays, untouched
            continue
        new_specs = {}
        for role, spec in layer.tensors.items():
            arr = np.ascontiguousarray(arrays[role], np.float32)
            weights[spec.name] = arr
            new_specs[role] = dataclasses.replace(spec, sha256="", shape=tuple(arr.shape))
        layers.append(dataclasses.replace(layer, tensors=new_specs))
    labels = g.labels if classes is None else Labels(list(classes), None, "crossmodal finetune: the data set's categories")
    prov = Provenance(source_file=str(base_dir), source_sha256=fingerprint,
                      source_format="crossmodal-ir + fine-tuning", reader="crossmodal finetune",
                      weights_identity={**ident, "base": identity.identity(g), "tower": tower,
                                        "base_fingerprint": fingerprint},
                      notes=[f"base model {g.name!r} from {base_dir}, fingerprint {fingerprint}", *notes])
    graph = dataclasses.replace(g, name=f"{g.name}-finetune" + (f"-{tower}" if tower else ""), layers=layers,
                                labels=labels, provenance=prov, tensors=dict(g.tensors))
    return IRModel(graph, weights)


def _is_trained_bn(layer: Layer, i: int, net) -> bool:
    """A tower's layers are trained even when the network's current stage is the head only."""
    return bool(net.tower_names) and net.tower_lo <= i < net.shared_from
