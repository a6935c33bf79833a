"""The source weights as a reference engine for ``verify``, independent of the conversion.

A PyTorch checkpoint is loaded raw (``torch.load(weights_only=True)`` unless the
caller trusts pickles; ``.safetensors`` through safetensors' own loader), its keys
are only *renamed* to torchvision's ``features.N.weight`` / ``classifier.N.weight``
(with the pure naming tables of :mod:`crossmodal.models.vgg` and the reader's
:func:`~crossmodal.readers.from_torch.normalise_key`), and the tensors go
unchanged into a plain torchvision-layout ``nn.Module``
(:func:`~crossmodal.models.vgg.build_torch_module`) with ``load_state_dict(strict=True)``.
Intermediates are collected with ``register_forward_hook`` and named after the IR
layers. Nothing here goes through the IR, the reader's ``to_ir`` or the IR→torch
emitter, so a fault in those (a conv kernel transposed H↔W, say) shows up as a
divergence instead of being reproduced in the reference.

A Caffe source is run by OpenCV's own Caffe importer (:mod:`~crossmodal.verify.source_reference_caffe`).

Every engine takes the preprocessed float32 batch (N, C, H, W) in the IR's channel
order and returns ``{ir_layer_name: array}``, maps NCHW, flat layers (N, F).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from crossmodal.runtime.devices import set_torch_precision, torch_device
from crossmodal.runtime.engine import Engine, FunctionEngine
from crossmodal.ir.graph import IRModel
from crossmodal.errors import InputError


def load_raw_state(path: Path, *, trust_pickle: bool = False) -> dict:
    """The checkpoint's tensors as saved: key → ``torch.Tensor`` (keys not yet normalised).

    Read by the reader's file loader (:func:`~crossmodal.readers.from_torch.load_raw`:
    format sniffed from the bytes, always through ``torch.load`` — ``weights_only`` unless
    ``trust_pickle`` — never the reader's torch-free unpickler; training checkpoints
    unwrapped); what makes this reference independent starts after that — no renaming to
    IR names, no layout change, no IR.
    """
    import torch

    from crossmodal.readers.from_torch import load_raw

    out = {}
    for key, value in load_raw(path, trust_pickle=trust_pickle, with_torch=True).items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor):
            raise InputError(f"entry {key!r} is a {type(value).__name__}, not a tensor", path)
        out[key] = value
    return out


def torchvision_state(raw: Mapping, input_size: tuple[int, int], source: Path):
    """Rename a raw state dict's keys to torchvision's; returns (VGGSpec, renamed state).

    Renaming only: ``module.`` wrappers are stripped and, for the named layout
    (``features.conv1_1.weight``), keys are mapped through the IR tensor names of
    :func:`~crossmodal.models.vgg.named_keys` / :func:`~crossmodal.models.vgg.torchvision_keys`.
    The tensors themselves are the file's, untouched.
    """
    from crossmodal.readers.from_torch import infer_spec, normalise_key
    from crossmodal.models.vgg import named_keys, torchvision_keys

    state = {normalise_key(str(k)): v for k, v in raw.items()}
    spec, layout = infer_spec(state, input_size=input_size, source=source)
    if layout == "named":
        tv = torchvision_keys(spec)
        rename = {named: tv[ir] for ir, named in named_keys(spec).items()}
        state = {rename.get(k, k): v for k, v in state.items()}
    return spec, state


def hook_names(spec) -> dict[str, str]:
    """torchvision module path (``features.0``, ``classifier.3``) → IR layer name."""
    from crossmodal.models.vgg import conv_names

    out = {}
    for v, (ir_name, idx, _) in zip(spec.cfg, conv_names(spec.cfg)):
        out[f"features.{idx}"] = ir_name
        if v != "M":
            out[f"features.{int(idx) + 1}"] = ir_name.replace("conv", "relu")
    fcs = ("fc6", "relu6", "drop6", "fc7", "relu7", "drop7", spec.final_name)
    out.update({f"classifier.{i}": name for i, name in enumerate(fcs)})
    return out


def torch_source_engine(model: IRModel, source: Path, *, device: str = "cpu", allow_tf32: bool = False,
                        trust_pickle: bool = False) -> Engine:
    """The PyTorch checkpoint ``source`` in a plain torchvision VGG, as engine ``torch-source``.

    Observes every IR layer it has a module for (convs, ReLUs, pools, ``flatten`` = the
    features' output flattened channel-first, dense layers, dropout) and ``prob``
    (softmax of the logits), restricted to layers the IR graph has.
    """
    import torch

    from crossmodal.verify import source_reference_zoo as zoo
    from crossmodal.models.vgg import build_torch_module

    if zoo.family_of(model.graph.name):  # ResNet, DenseNet, AlexNet: their own plain modules
        return zoo.torch_zoo_source_engine(model, source, device=device, allow_tf32=allow_tf32,
                                           trust_pickle=trust_pickle)
    h, w = model.graph.input.shape[1:]
    spec, state = torchvision_state(load_raw_state(source, trust_pickle=trust_pickle), (h, w), source)
    module = build_torch_module(spec)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # missing/unexpected keys, shapes
        raise InputError(f"does not load into a plain torchvision {spec.arch} "
                         f"({' '.join(str(exc).split())[:300]})", source) from None
    set_torch_precision(allow_tf32)
    dev = torch_device(device)
    module = module.to(dev).eval()
    ir_layers = {l.name for l in model.graph.layers}
    names = {path: ir for path, ir in hook_names(spec).items() if ir in ir_layers}
    seen: dict[str, "torch.Tensor"] = {}
    modules = dict(module.named_modules())
    for path, ir in names.items():
        modules[path].register_forward_hook(lambda _m, _i, out, ir=ir: seen.__setitem__(ir, out))
    logits_name = hook_names(spec)["classifier.6"]
    observable = set(names.values()) | ({"flatten"} & ir_layers) | ({"prob"} & ir_layers)

    def run(x, layers):
        seen.clear()
        with torch.inference_mode():
            xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(dev)
            seen["flatten"] = module.features(xt).flatten(1)
            module.classifier(seen["flatten"])
            seen["prob"] = torch.softmax(seen[logits_name], dim=1)
        return {l: seen[l].float().cpu().numpy() for l in layers if l in observable and l in seen}
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return FunctionEngine("torch-source", model.graph, run, observable, device=str(dev),
                          info={"torch": torch.__version__, "device_name": name, "allow_tf32": allow_tf32,
                                "source": str(source), "module": f"plain torchvision {spec.arch}, forward hooks"},
                          path=source)
