"""The zoo's families (ResNet, DenseNet, AlexNet) for the PyTorch reader and the torch emitter.

Each family module has ``create_spec``/``list_models`` (registered specs, tiny test
variants among them), ``build_graph(spec, preprocess)``, ``torchvision_keys(spec)``
(IR tensor → torchvision key) and ``detect(shapes, hint)`` (a spec from a normalised
state dict's key → shape map, or None when the keys are not the family's). VGG keeps its
own inference in the reader (:func:`crossmodal.readers.from_torch.infer_spec`).

Key layouts are small pure renamings applied in :func:`canonical_key`, after the reader
stripped the DataParallel wrappers (``module.``, AlexNet's ``features.module.``):
DenseNet's PyTorch < 0.4 names (``norm.1`` → ``norm1``). ``num_batches_tracked``
(PyTorch ≥ 0.4.1 batch norm) is not a weight and is dropped (:func:`is_bookkeeping`).
"""
from __future__ import annotations

import importlib
import re
from typing import Mapping

FAMILIES = ("resnet", "densenet", "alexnet")
#: Order in which detection asks the families (VGG comes after them, in the reader).
TRIED = ("resnet", "densenet", "alexnet", "vgg")


def family(name: str):
    """The family module ``crossmodal.models.{name}``."""
    return importlib.import_module(f"crossmodal.models.{name}")


def family_of(arch: str) -> str | None:
    """The family that registers ``arch`` (``resnet18`` → resnet, ``vgg16`` → vgg), or None."""
    for name in (*FAMILIES, "vgg"):
        if arch in family(name).list_models():
            return name
    return None


def list_models() -> list[str]:
    """Every registered architecture, VGG's included."""
    return sorted(m for name in (*FAMILIES, "vgg") for m in family(name).list_models())


def is_bookkeeping(key: str) -> bool:
    """A batch norm's ``num_batches_tracked`` counter: no weight, ignored."""
    return key.endswith(".num_batches_tracked")


def canonical_key(key: str) -> str:
    """A (wrapper-stripped) key in today's torchvision names: DenseNet's pre-0.4
    ``denselayerN.norm.1`` / ``conv.1`` / ``norm.2`` / ``conv.2`` → ``norm1`` …"""
    return family("densenet").rename_legacy_key(key)


def wide_hint(arch: str | None, file_name: str | None, checkpoint_arch: object) -> tuple[str | None, str]:
    """What tells wideresnet18 from resnet18 (identical keys): ``--arch``, else the file name,
    else the checkpoint's ``arch`` entry. Returns (hint, how it was told)."""
    if arch:
        return arch, "--arch"
    if file_name and "wideresnet" in file_name.lower():
        return "wideresnet18", f"the file name {file_name!r}"
    if isinstance(checkpoint_arch, bytes):
        checkpoint_arch = checkpoint_arch.decode("latin1")
    if isinstance(checkpoint_arch, str) and checkpoint_arch:
        return checkpoint_arch, f"the checkpoint's arch entry {checkpoint_arch!r}"
    return None, ""


def detect(shapes: Mapping[str, tuple[int, ...]], *, arch: str | None = None, file_name: str | None = None,
           checkpoint_arch: object = None) -> tuple[str, object, list[str]] | None:
    """(family, spec, notes) of the zoo network whose canonical keys these are, or None.

    ``arch`` (``--arch``) is a registered name: its spec (class count and input channels
    from the keys) is used, and must fit the keys (checked by the reader). Without it the
    family is the first whose ``detect`` claims the keys; a basic 18-layer ResNet is
    wideresnet18 when the file name or the checkpoint's ``arch`` says so, else resnet18,
    with a note saying which was chosen.
    """
    from dataclasses import replace

    hint, told = wide_hint(arch, file_name, checkpoint_arch)
    if arch:
        fam = family_of(arch)
        if fam is None:
            from crossmodal.errors import InputError
            raise InputError(f"unknown --arch {arch!r}; known: {', '.join(list_models())}")
        if fam == "vgg":
            return None
        found = family(fam).detect(shapes, arch)
        spec = family(fam).create_spec(arch)
        if found is not None:
            spec = replace(spec, num_classes=found.num_classes,
                           input_shape=(found.input_shape[0], *spec.input_shape[1:]))
        return fam, spec, [f"architecture {arch} (given by --arch)"]
    for fam in FAMILIES:
        spec = family(fam).detect(shapes, hint)
        if spec is None:
            continue
        notes = []
        if fam == "resnet" and spec.block == "basic" and spec.layers == (2, 2, 2, 2):
            if spec.arch == "resnet18" and not (hint or "").startswith("wideresnet"):
                why = (f"{told} says {hint!r}" if hint else "no --arch, file name or checkpoint arch entry says "
                       "otherwise")
                notes.append(f"architecture resnet18 chosen: wideresnet18 has the same keys and {why} "
                             "(give --arch wideresnet18 for the wide variant)")
            elif spec.arch == "wideresnet18":
                notes.append(f"architecture wideresnet18 chosen from {told}")
        return fam, spec, notes
    return None


def unmatched_keys(keys) -> list[str]:
    """The keys (in natural order) that no family's layout explains, for the error message."""
    def natural(key: str):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]
    return sorted(keys, key=natural)


def torchvision_keys_for(graph) -> dict[str, str]:
    """IR tensor → torchvision ``state_dict`` key, from the model definition of ``graph``'s family.

    Raises UnsupportedError for a graph no family knows (e.g. a Caffe GoogLeNet)."""
    for name in (*FAMILIES, "vgg"):
        keys = family(name).torchvision_keys_for_graph(graph)
        if keys is not None:
            return keys
    from crossmodal.errors import UnsupportedError
    raise UnsupportedError(f"{graph.name}: no torchvision layout is known for this network (families: "
                           f"{', '.join((*FAMILIES, 'vgg'))}); convert to ir, keras or onnx instead")
