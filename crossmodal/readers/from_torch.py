"""PyTorch VGG checkpoints → IR.

Accepted layouts (after :func:`normalise_key` strips ``module.`` wrappers):

* torchvision: ``features.{N}.weight`` … ``classifier.{0,3,6}.bias``, bare or in a
  training checkpoint ``{'state_dict': …, 'epoch': …, 'arch': …}``;
* named (the Places365 authors' dissection conversion): ``features.conv1_1.weight``
  … ``classifier.fc8a.bias``.

Files: ``.pth``, ``.pth.tar``, ``.pt`` (``torch.load(weights_only=True)``; a pickled
whole model only with ``trust_pickle=True``) and ``.safetensors``. The loader is
picked from the file's first bytes (:func:`sniff_format`), not its name, so a file
that is no checkpoint is named as such before torch sees it.
The architecture (conv widths, pool positions), class count and hidden width are
inferred from the tensors' names and shapes.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from crossmodal.ir.graph import IRModel, Provenance

from crossmodal.ir.preprocess import Preprocess
from crossmodal.readers.state_match import match_state, some
from crossmodal.errors import InputError, UnsupportedError
from crossmodal.io.hashing import file_sha256
from crossmodal.models.vgg import CFGS, VGGSpec, arch_of, build_graph, create_spec, named_keys, torchvision_keys

_TV_FEATURE = re.compile(r"^features\.(\d+)\.(weight|bias)$")
_TV_CLASSIFIER = re.compile(r"^classifier\.(\d+)\.(weight|bias)$")
_NAMED_FEATURE = re.compile(r"^features\.conv(\d+)_(\d+)\.(weight|bias)$")
_NAMED_CLASSIFIER = re.compile(r"^classifier\.(fc\d+a?)\.(weight|bias)$")


def normalise_key(key: str) -> str:
    """Strip DataParallel wrappers: ``module.features.0.weight`` and
    ``features.module.0.weight`` (CSAIL wrapped only ``model.features``) →
    ``features.0.weight``."""
    while key.startswith("module."):
        key = key[len("module."):]
    return key.replace("features.module.", "features.", 1)


#: What :func:`sniff_format` can answer; the first three are loadable.
FORMATS = ("zip", "pickle", "safetensors", "empty", "text", "unknown")


def sniff_format(path: Path) -> str:
    """What a file holds, from its first bytes: ``zip`` (``torch.save``, 'PK'),
    ``pickle`` (legacy ``torch.save``, protocol byte 0x80), ``safetensors`` (8-byte
    little-endian header length, then '{'), or ``empty`` / ``text`` / ``unknown``."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "empty"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= 100 << 20:
        return "safetensors"
    if head[0] == 0x80:
        return "pickle"
    for cut in range(4):  # the 512-byte window may end inside a multi-byte character
        try:
            text = head[:len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if all(c.isprintable() or c in "\t\r\n" for c in text):
            return "text"
        break
    return "unknown"


def _not_a_checkpoint(path: Path, kind: str) -> InputError:
    with open(path, "rb") as f:
        head = f.read(40)
    what = {
        "empty": "an empty file",
        "text": f"a text file starting {(head.decode('utf-8', 'replace').strip().splitlines() or [''])[0][:30]!r}",
        "unknown": f"unrecognised bytes {head[:8].hex(' ')}",
    }[kind]
    return InputError(f"not a PyTorch checkpoint ({what}); expected a torch.save file (zip or legacy "
                      "pickle) or a safetensors file", path)


def load_state_dict(path: Path, *, trust_pickle: bool = False) -> dict[str, np.ndarray]:
    """Read a checkpoint file into name → float32 array (keys normalised)."""
    return _to_arrays(load_raw(path, trust_pickle=trust_pickle), path)


def load_raw(path: Path, *, trust_pickle: bool = False, with_torch: bool = False) -> Mapping:
    """A checkpoint's state dict as saved: key (not normalised) → ``torch.Tensor`` (or NumPy
    array, from safetensors). The format is sniffed from the file's first bytes, not its
    suffix; a training checkpoint ``{'state_dict': …}`` (or ``model_state_dict``, ``model``)
    is unwrapped; a pickled whole model (only with ``trust_pickle``) gives its ``state_dict()``.
    """
    return load_checkpoint(path, trust_pickle=trust_pickle, with_torch=with_torch)[0]


def load_checkpoint(path: Path, *, trust_pickle: bool = False, with_torch: bool = False) -> tuple[Mapping, object]:
    """:func:`load_raw`, and the training checkpoint's ``arch`` entry (None when it has none).

    Python 2 pickles (the Places365 releases: strings pickled as byte strings) are read
    with ``encoding="latin1"``, which leaves every ASCII name as it was. A ``torch.save``
    file is read without torch (:mod:`~crossmodal.readers.torch_pickle`, tensors as
    NumPy arrays) where that reader knows everything in it, else with
    ``torch.load(weights_only=True)``; ``with_torch`` always asks torch (verify's reference).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path)
    kind = sniff_format(path)
    if kind == "safetensors":
        raw = _safetensors_load(path)
    elif kind in ("zip", "pickle"):
        from crossmodal.readers import torch_pickle
        raw = None
        if kind == "zip":  # before either reader: torch.load would inflate a compressed member
            torch_pickle.check_zip(path)
        if not (trust_pickle or with_torch):
            try:
                raw = torch_pickle.load(path, kind)
            except torch_pickle.NotWeightsOnly:
                raw = None
        if raw is None:
            raw = _torch_load(path, trust_pickle)
            check_views(raw, path)
    elif path.suffix == ".safetensors" and kind == "unknown":
        raise InputError("not a readable safetensors file (it does not start with an 8-byte header length "
                         "and a JSON header)", path)
    else:
        raise _not_a_checkpoint(path, kind)
    arch = raw.get("arch") if isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping) else None
    return _unwrap(raw, path), arch


def _safetensors_load(path: Path):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    named = "" if path.suffix == ".safetensors" else f"a safetensors file named {path.suffix or 'without suffix'}, "
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{named}not a readable safetensors file ({_first_line(str(exc))})", path) from None


def _torch_load(path: Path, trust_pickle: bool):
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch warns that encoding is ignored; it does reach the unpickler
            warnings.filterwarnings("ignore", message="pickle_load_args only works")
            if path.suffix == ".safetensors":  # torch.load would hand a path so named to safetensors
                with open(path, "rb") as f:
                    obj = torch.load(f, map_location="cpu", weights_only=not trust_pickle, encoding="latin1")
            else:
                obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle, encoding="latin1")
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"GLOBAL ([\w.]+) was not an allowed global", text)
        if found and not _corrupt_global(found.group(1)):
            raise InputError(
                f"a pickled object that needs --trust-pickle: it holds {found.group(1)}, e.g. a whole model "
                "(whole_*_places365.pth.tar), and unpickling it runs code from the file. Convert a state_dict "
                "instead, or re-run with --trust-pickle if you trust its source", path) from None
        raise InputError(f"not a readable PyTorch checkpoint, truncated or corrupt ({_torch_detail(text)})",
                         path) from None
    except (AttributeError, ImportError) as exc:
        if trust_pickle:  # a whole model whose class is not importable here
            raise InputError(f"a pickled object whose class cannot be loaded here ({_first_line(str(exc))}); "
                             "convert its state_dict instead", path) from None
        raise InputError(f"not a readable PyTorch checkpoint ({_first_line(str(exc))})", path) from None
    except Exception as exc:  # torch.load raises anything from KeyError to RuntimeError on garbage
        raise InputError(f"not a readable PyTorch checkpoint, truncated or corrupt "
                         f"({exc.__class__.__name__}: {_first_line(str(exc))})", path) from None
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        obj = obj.state_dict()
    return obj


def check_views(obj, path: Path) -> None:
    """Refuse tensors that hold more elements than their storages (stride-0 ``expand`` views), or
    together more than ``VIEW_FACTOR`` times them: torch.load keeps them as cheap views, but every
    later step would copy them whole (the bounds of :mod:`~crossmodal.readers.torch_pickle`). Looks
    one level into training containers (``{'state_dict': …}``)."""
    from crossmodal.readers.torch_pickle import VIEW_FACTOR

    values = list(obj.values()) if isinstance(obj, Mapping) else []
    values += [v for inner in values if isinstance(inner, Mapping) for v in inner.values()]
    storages: dict[int, int] = {}
    elements, seen = 0, set()
    for value in values:
        if not hasattr(value, "untyped_storage") or not hasattr(value, "element_size") or id(value) in seen:
            continue
        seen.add(id(value))
        storage = value.untyped_storage()
        held = storage.nbytes() // max(value.element_size(), 1)
        if value.numel() > held:
            raise InputError(f"refused: a tensor of {value.numel():,} elements on a storage of {held:,} "
                             "(a stride-0 view, copied it would fill memory)", path)
        storages[storage.data_ptr()] = held
        elements += value.numel()
    if elements > VIEW_FACTOR * sum(storages.values()):
        raise InputError(f"refused: tensors that together hold more than {VIEW_FACTOR}× the elements of their "
                         "storages", path)


def _corrupt_global(name: str) -> bool:
    """A refused ``torch.*`` global that does not exist in the loaded torch: a name cut by
    truncation (``torch._utils._rebuild_tens``), not a pickled object."""
    import sys
    module, _, attr = name.rpartition(".")
    if module.split(".")[0] != "torch" or module not in sys.modules:
        return False
    return not hasattr(sys.modules[module], attr)


def _torch_detail(text: str) -> str:
    """The informative part of torch's weights-only error, without its advice to drop
    ``weights_only`` (which would run code from an untrusted file)."""
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S)
    detail = found.group(1) if found else text
    if "Weights only load failed" in detail:
        return "the weights-only unpickler refused it"
    return _first_line(" ".join(detail.split()))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else "no detail"


def _unwrap(obj, path: Path) -> Mapping:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise InputError("holds no state_dict (expected a mapping of tensor names to tensors)", path)
    return obj


def _to_arrays(obj: Mapping, path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu()
            value = value.float().numpy() if value.is_floating_point() else value.numpy()
        if not isinstance(value, np.ndarray):
            raise InputError(f"entry {key!r} is a {type(value).__name__}, not a tensor", path)
        out[normalise_key(str(key))] = value.astype(np.float32, copy=False)
    return out


def infer_spec(state: Mapping[str, np.ndarray], *, input_size: tuple[int, int] | None = None,
               source: object = None) -> tuple[VGGSpec, str]:
    """Infer the VGG spec and key layout ("torchvision" or "named") from a state_dict."""
    tv = [k for k in state if _TV_FEATURE.match(k) or _TV_CLASSIFIER.match(k)]
    named = [k for k in state if _NAMED_FEATURE.match(k) or _NAMED_CLASSIFIER.match(k)]
    layout = "torchvision" if len(tv) >= len(named) else "named"
    known = tv if layout == "torchvision" else named
    if not known:
        unexpected = sorted(set(state), key=_natural)
        raise InputError("not a VGG checkpoint: no features.N / classifier.N or "
                         f"features.convB_I keys; found {some(unexpected)}", source)
    if layout == "torchvision":
        bn = [k for k in state if _TV_FEATURE.match(k) and state[k].ndim == 1 and k.endswith(".weight")]
        if bn or any(k.endswith(("running_mean", "running_var")) for k in state):
            raise UnsupportedError("batch-norm VGG (vgg*_bn) is not supported", source)
        idx = sorted({int(_TV_FEATURE.match(k).group(1)) for k in state if _TV_FEATURE.match(k)})
        _check_conv_keys(state, [f"features.{i}" for i in idx], layout, source)
        widths = [state[f"features.{i}.weight"].shape[0] for i in idx if f"features.{i}.weight" in state]
        pools = [n for n, (a, b) in enumerate(zip(idx, idx[1:])) if b - a == 3] + [len(idx) - 1]
        bad_gaps = [(a, b) for a, b in zip(idx, idx[1:]) if b - a not in (2, 3)]
        if bad_gaps:
            guesses = "; ".join(f"after features.{a} the next conv is features.{a + 2} or features.{a + 3}, "
                                f"not features.{b}" for a, b in bad_gaps)
            raise InputError(f"features indices fit no VGG (conv, relu[, pool]) pattern, a layer's keys are "
                             f"missing: {guesses}", source)
        fc_keys = {n: f"classifier.{n}" for n in (0, 3, 6)}
        final_name, first_conv = "fc8", f"features.{idx[0]}.weight"
    else:
        convs = sorted({(int(m.group(1)), int(m.group(2))) for k in state if (m := _NAMED_FEATURE.match(k))})
        _check_conv_keys(state, [f"features.conv{b}_{i}" for b, i in convs], layout, source)
        widths = [state[f"features.conv{b}_{i}.weight"].shape[0] for b, i in convs
                  if f"features.conv{b}_{i}.weight" in state]
        pools = [n for n, (a, b) in enumerate(zip(convs, convs[1:])) if a[0] != b[0]] + [len(convs) - 1]
        fcs = sorted({m.group(1) for k in state if (m := _NAMED_CLASSIFIER.match(k))}, key=_natural)
        final_name = fcs[-1] if fcs and fcs[-1] not in ("fc6", "fc7") else "fc8"
        fc_keys = {0: "classifier.fc6", 3: "classifier.fc7", 6: f"classifier.{final_name}"}
        first_conv = f"features.conv{convs[0][0]}_{convs[0][1]}.weight" if convs else ""
    missing = [k for k in [first_conv] + [f"{v}.weight" for v in fc_keys.values()] if k not in state]
    if missing or not widths:
        raise InputError(f"missing keys: {some(missing or ['features.*'])}", source)
    arch, cfg = arch_of(widths, pools)
    fc6 = state[f"{fc_keys[0]}.weight"]
    hidden, num_classes = fc6.shape[0], state[f"{fc_keys[6]}.weight"].shape[0]
    cin = state[first_conv].shape[1]
    n_pools = len(pools)
    if input_size is None:
        side = math.isqrt(max(fc6.shape[1] // max(widths[-1], 1), 0))
        if side * side * widths[-1] != fc6.shape[1]:
            raise InputError(f"fc6 takes {fc6.shape[1]} inputs, not a square map of {widths[-1]} "
                             "channels: give the input size (--input-size HxW)", source)
        input_size = (side * 2 ** n_pools, side * 2 ** n_pools)
    spec = VGGSpec(arch, cfg, (int(cin), *input_size), int(hidden), int(num_classes), final_name)
    return spec, layout


def _check_conv_keys(state: Mapping[str, np.ndarray], layers: list[str], layout: str, source: object) -> None:
    """Name the conv keys a checkpoint lacks where the gap would mislead the architecture
    guess: a layer with a bias but no weight, and whole layers missing inside the sequence.

    Named keys: ``conv2_2`` without ``conv2_1``, or blocks 1 and 3 without block 2, are
    sure gaps. Torchvision keys: indices must start at 0 and step by 2 (conv, relu) or 3
    (… pool); where they do not, the smallest standard configuration (:data:`CFGS`)
    holding the present layers with the fewest missing (``features.2`` between
    ``features.0`` and ``features.5`` of a VGG16) names them. A missing bias alone is left
    to :func:`to_ir`, which reports it with every other problem; a missing last layer
    cannot be told from a shorter custom VGG.
    """
    gap, like = [], ""
    if layout == "named":
        blocks: dict[int, set[int]] = {}
        for m in (re.match(r"^features\.conv(\d+)_(\d+)$", p) for p in layers):
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        for b in range(1, max(blocks, default=0) + 1):
            have = blocks.get(b, set())
            gap += [f"features.conv{b}_{i}" for i in range(1, max(have, default=1) + 1) if i not in have]
    else:
        idx = sorted(int(p.rsplit(".", 1)[1]) for p in layers)
        if idx and (idx[0] != 0 or any(b - a not in (2, 3) for a, b in zip(idx, idx[1:]))):
            present, best = set(layers), None
            for arch, cfg in CFGS.items():
                keys = torchvision_keys(VGGSpec(arch, tuple(cfg))).values()
                expected = {k.rsplit(".", 1)[0] for k in keys if k.startswith("features.")}
                inside = sorted((e for e in expected - present if int(e.rsplit(".", 1)[1]) < idx[-1]), key=_natural)
                if present <= expected and (best is None or (len(inside), len(expected)) < best[2]):
                    best = (arch, inside, (len(inside), len(expected)))
            if best is not None:
                gap, like = best[1], f" (the others fit {best[0]})"
            elif idx[0] != 0:
                gap = ["features.0"]
            else:
                return
    if not gap and all(f"{p}.weight" in state for p in layers):
        return
    layers = sorted(set(layers) | set(gap), key=_natural)
    missing = [f"{p}.{role}" for p in layers for role in ("weight", "bias") if f"{p}.{role}" not in state]
    raise InputError(f"missing keys: {some(missing)}{like}", source)


def _natural(key: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def to_ir(state: Mapping[str, np.ndarray], spec: VGGSpec, layout: str, *,
          preprocess: Preprocess | None = None, source: object = None) -> IRModel:
    """Rename checkpoint keys onto the IR, checking missing/unexpected keys and shapes."""
    graph = build_graph(spec, preprocess, name=spec.arch)
    key_of = torchvision_keys(spec) if layout == "torchvision" else named_keys(spec)
    unexpected = sorted(set(state) - set(key_of.values()), key=_natural)
    return match_state(graph, key_of, state, unexpected, what=f"{spec.arch} ({layout} layout)", source=source)


def read_torch_checkpoint(path: Path, *, trust_pickle: bool = False, preprocess: Preprocess | None = None,
                          input_size: tuple[int, int] | None = None, arch: str | None = None) -> IRModel:
    """Read a checkpoint file into an IR model with provenance filled in.

    The zoo's families (ResNet, DenseNet, AlexNet: :mod:`~crossmodal.readers.torch_zoo`)
    are tried first, then VGG; ``arch`` (``--arch``) names the architecture instead.
    """
    from concurrent.futures import ThreadPoolExecutor

    from crossmodal.readers import torch_zoo

    path = Path(path)
    notes = []
    with ThreadPoolExecutor(max_workers=1) as pool:  # hash the file while torch reads it
        source_sha256 = pool.submit(file_sha256, path) if path.is_file() else None
        raw, checkpoint_arch = load_checkpoint(path, trust_pickle=trust_pickle)
        state = _to_arrays(raw, path)
        del raw
        canonical = torch_zoo.canonical_state(state)
        found = torch_zoo.detect(canonical, arch=arch, file_name=path.name, checkpoint_arch=checkpoint_arch)
        if found is not None:
            fam, spec, notes = found
            model = torch_zoo.to_ir(canonical, fam, spec, input_size=input_size, preprocess=preprocess, source=path)
            layout = f"{fam}, torchvision"
        else:
            try:
                spec, layout = infer_spec(state, input_size=input_size, source=path)
            except InputError as exc:
                if arch is None and "not a VGG checkpoint" in str(exc):
                    raise torch_zoo.unknown_layout(state, path) from None
                raise
            if arch is not None and arch != spec.arch and create_spec(arch).cfg != spec.cfg:
                raise InputError(f"--arch {arch}, but the keys are a {spec.arch}'s", path)
            model = to_ir(state, spec, layout, preprocess=preprocess, source=path)
        source_sha256 = source_sha256.result()
    kind = sniff_format(path)
    if (kind == "safetensors") != (path.suffix == ".safetensors"):
        notes.append(f"a {'safetensors' if kind == 'safetensors' else 'torch.save'} file named {path.suffix!r}: "
                     "read by its content")
    model.graph.provenance = Provenance(
        source_file=path.name, source_sha256=source_sha256,
        source_format="safetensors" if kind == "safetensors" else "pytorch",
        reader=f"crossmodal.readers.from_torch ({layout} keys)",
        framework_versions=_torch_version(), notes=list(notes),
    )
    return model


def _torch_version() -> dict[str, str]:
    """torch's installed version from its metadata (the reader may not have imported it)."""
    import importlib.metadata
    try:
        return {"torch": importlib.metadata.version("torch")}
    except importlib.metadata.PackageNotFoundError:
        return {}
