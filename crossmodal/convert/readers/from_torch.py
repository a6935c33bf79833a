"""PyTorch VGG checkpoints → IR.

Accepted layouts (after :func:`normalise_key` strips ``module.`` wrappers):

* torchvision: ``features.{N}.weight`` … ``classifier.{0,3,6}.bias``, bare or in a
  training checkpoint ``{'state_dict': …, 'epoch': …, 'arch': …}``;
* named (the Places365 authors' dissection conversion): ``features.conv1_1.weight``
  … ``classifier.fc8a.bias``.

Files: ``.pth``, ``.pth.tar``, ``.pt`` (``torch.load(weights_only=True)``; a pickled
whole model only with ``trust_pickle=True``) and ``.safetensors``.
The architecture (conv widths, pool positions), class count and hidden width are
inferred from the tensors' names and shapes.
"""
from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from crossmodal.convert.ir import IRModel, Preprocess, Provenance
from crossmodal.errors import InputError, UnsupportedError
from crossmodal.models.vgg import VGGSpec, arch_of, build_graph, named_keys, torchvision_keys

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


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_state_dict(path: Path, *, trust_pickle: bool = False) -> dict[str, np.ndarray]:
    """Read a checkpoint file into name → float32 array (keys normalised)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
        try:
            raw = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"not a readable safetensors file ({exc})", path) from None
    else:
        raw = _torch_load(path, trust_pickle)
    return _to_arrays(raw, path)


def _torch_load(path: Path, trust_pickle: bool):
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text and "GLOBAL" in text.upper():
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = found.group(1) if found else "a Python class"
            raise InputError(
                f"holds a pickled Python object ({what}), e.g. a whole model "
                "(whole_*_places365.pth.tar); unpickling it would run code from the file. "
                "Convert a state_dict instead, or re-run with --trust-pickle if you trust its source",
                path) from None
        raise InputError(f"not a readable PyTorch checkpoint ({_first_line(text)})", path) from None
    except Exception as exc:  # torch.load raises anything from KeyError to RuntimeError on garbage
        raise InputError(f"not a readable PyTorch checkpoint, truncated or corrupt "
                         f"({exc.__class__.__name__}: {_first_line(str(exc))})", path) from None
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        obj = obj.state_dict()
    return obj


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else "no detail"


def _to_arrays(obj, path: Path) -> dict[str, np.ndarray]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise InputError("holds no state_dict (expected a mapping of tensor names to tensors)", path)
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
                         f"features.convB_I keys; found {_some(unexpected)}", source)
    if layout == "torchvision":
        bn = [k for k in state if _TV_FEATURE.match(k) and state[k].ndim == 1 and k.endswith(".weight")]
        if bn or any(k.endswith(("running_mean", "running_var")) for k in state):
            raise UnsupportedError("batch-norm VGG (vgg*_bn) is not supported", source)
        idx = sorted({int(_TV_FEATURE.match(k).group(1)) for k in state if _TV_FEATURE.match(k)})
        widths = [state[f"features.{i}.weight"].shape[0] for i in idx if f"features.{i}.weight" in state]
        pools = [n for n, (a, b) in enumerate(zip(idx, idx[1:])) if b - a == 3] + [len(idx) - 1]
        bad_gaps = [(a, b) for a, b in zip(idx, idx[1:]) if b - a not in (2, 3)]
        if bad_gaps:
            raise InputError(f"features indices {bad_gaps} fit no VGG (conv, relu[, pool]) pattern", source)
        fc_keys = {n: f"classifier.{n}" for n in (0, 3, 6)}
        final_name, first_conv = "fc8", f"features.{idx[0]}.weight"
    else:
        convs = sorted({(int(m.group(1)), int(m.group(2))) for k in state if (m := _NAMED_FEATURE.match(k))})
        widths = [state[f"features.conv{b}_{i}.weight"].shape[0] for b, i in convs
                  if f"features.conv{b}_{i}.weight" in state]
        pools = [n for n, (a, b) in enumerate(zip(convs, convs[1:])) if a[0] != b[0]] + [len(convs) - 1]
        fcs = sorted({m.group(1) for k in state if (m := _NAMED_CLASSIFIER.match(k))}, key=_natural)
        final_name = fcs[-1] if fcs and fcs[-1] not in ("fc6", "fc7") else "fc8"
        fc_keys = {0: "classifier.fc6", 3: "classifier.fc7", 6: f"classifier.{final_name}"}
        first_conv = f"features.conv{convs[0][0]}_{convs[0][1]}.weight" if convs else ""
    missing = [k for k in [first_conv] + [f"{v}.weight" for v in fc_keys.values()] if k not in state]
    if missing or not widths:
        raise InputError(f"missing keys: {_some(missing or ['features.*'])}", source)
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


def _natural(key: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _some(keys, limit: int = 8) -> str:
    keys = list(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def to_ir(state: Mapping[str, np.ndarray], spec: VGGSpec, layout: str, *,
          preprocess: Preprocess | None = None, source: object = None) -> IRModel:
    """Rename checkpoint keys onto the IR, checking missing/unexpected keys and shapes."""
    graph = build_graph(spec, preprocess, name=spec.arch)
    key_of = torchvision_keys(spec) if layout == "torchvision" else named_keys(spec)
    missing = [k for k in key_of.values() if k not in state]
    unexpected = sorted(set(state) - set(key_of.values()), key=_natural)
    problems = []
    if missing:
        problems.append(f"missing keys: {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_some(unexpected)}")
    weights: dict[str, np.ndarray] = {}
    for layer in graph.layers:
        for t in layer.tensors.values():
            key = key_of[t.name]
            if key in state:
                if tuple(state[key].shape) != tuple(t.shape):
                    problems.append(f"{key} has shape {tuple(state[key].shape)}, expected {t.shape}")
                weights[t.name] = np.ascontiguousarray(state[key])
    if problems:
        raise InputError(f"does not fit {spec.arch} ({layout} layout): " + "; ".join(problems), source)
    return IRModel(graph, weights)


def read_torch_checkpoint(path: Path, *, trust_pickle: bool = False, preprocess: Preprocess | None = None,
                          input_size: tuple[int, int] | None = None) -> IRModel:
    """Read a checkpoint file into an IR model with provenance filled in."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    path = Path(path)
    with ThreadPoolExecutor(max_workers=1) as pool:  # hash the file while torch reads it
        source_sha256 = pool.submit(file_sha256, path) if path.is_file() else None
        state = load_state_dict(path, trust_pickle=trust_pickle)
        spec, layout = infer_spec(state, input_size=input_size, source=path)
        model = to_ir(state, spec, layout, preprocess=preprocess, source=path)
        source_sha256 = source_sha256.result()
    model.graph.provenance = Provenance(
        source_file=path.name, source_sha256=source_sha256,
        source_format="safetensors" if path.suffix == ".safetensors" else "pytorch",
        reader=f"crossmodal.convert.readers.from_torch ({layout} keys)",
        framework_versions={"torch": torch.__version__},
    )
    return model
