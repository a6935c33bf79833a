"""Save and load an IR directory: ``model.json`` (the graph) + ``weights.h5`` (the tensors).

``weights.h5`` holds one dataset per tensor, named as in the graph, with
attributes ``layout`` and ``sha256``. Every tensor's SHA-256 is also in
``model.json`` (layer tensors in their layer, others such as the Caffe mean image
``preprocess.mean_image`` (3, H, W) in ``tensors``) and is checked on load; an IR
of format 1.0, written before ``tensors`` existed, loads with its extra tensors
unchecked. Both files are written to temporary names and renamed, so a failed
save leaves no partial IR.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from crossmodal.ir.graph import Graph, IRModel, tensor_sha256

from crossmodal.ir.validation import layer_tensor_names, validate, with_hashes
from crossmodal.errors import InputError

GRAPH_FILE = "model.json"
WEIGHTS_FILE = "weights.h5"


def is_ir_dir(path: Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / GRAPH_FILE).is_file()


def atomic_target(path: Path) -> Path:
    """A temporary sibling of ``path`` to write to before ``os.replace``."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def save_ir(model: IRModel, out_dir: Path) -> tuple[Path, Path]:
    """Write ``model`` into ``out_dir``; returns (graph path, weights path)."""
    import h5py

    out_dir = Path(out_dir)
    model = with_hashes(model)
    validate(model)
    graph_path, weights_path = out_dir / GRAPH_FILE, out_dir / WEIGHTS_FILE
    tmp_w, tmp_g = atomic_target(weights_path), atomic_target(graph_path)
    try:
        with h5py.File(tmp_w, "w") as f:
            f.attrs["format"] = "crossmodal-ir-weights"
            for layer in model.graph.layers:
                for spec in layer.tensors.values():
                    ds = f.create_dataset(spec.name, data=model.weights[spec.name])
                    ds.attrs["layout"] = spec.layout
                    ds.attrs["sha256"] = spec.sha256
            for name, spec in model.graph.tensors.items():   # extra tensors (e.g. a mean image)
                ds = f.create_dataset(name, data=model.weights[name])
                ds.attrs["layout"] = spec.layout
                ds.attrs["sha256"] = spec.sha256
        tmp_g.write_text(json.dumps(model.graph.to_dict(), indent=1))
        os.replace(tmp_w, weights_path)
        os.replace(tmp_g, graph_path)
    finally:
        for tmp in (tmp_w, tmp_g):
            tmp.unlink(missing_ok=True)
    return graph_path, weights_path


def load_graph(ir_dir: Path) -> Graph:
    path = Path(ir_dir) / GRAPH_FILE
    if not path.is_file():
        raise InputError(f"no IR here (missing {GRAPH_FILE}); convert a model first", ir_dir)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc})", path) from None
    return Graph.from_dict(data, path)


def _records_extras(graph: Graph) -> bool:
    """Whether the graph's format records the hashes of tensors no layer owns (1.1 on)."""
    try:
        major, minor = (int(v) for v in (graph.format_version.split(".") + ["0"])[:2])
    except ValueError:
        return True
    return (major, minor) >= (1, 1)


def load_ir(ir_dir: Path, *, check_hashes: bool = True) -> IRModel:
    """Load an IR directory, checking every tensor's SHA-256 against the graph.

    Layer tensors and the graph's other ``tensors`` (the mean image) are checked;
    a dataset the graph does not account for is refused (format 1.1 on).
    """
    import h5py

    graph = load_graph(ir_dir)
    path = Path(ir_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise InputError(f"IR weights missing ({WEIGHTS_FILE})", ir_dir)
    weights: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            names = []
            f.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
            for name in names:
                weights[name] = f[name][()]
    except OSError as exc:
        raise InputError(f"unreadable HDF5 ({exc})", path) from None
    bad = []
    specs = [spec for layer in graph.layers for spec in layer.tensors.values()] + list(graph.tensors.values())
    for spec in specs:
        if spec.name not in weights:
            bad.append(f"{spec.name} missing")
        elif check_hashes and spec.sha256 and tensor_sha256(weights[spec.name]) != spec.sha256:
            bad.append(f"{spec.name} SHA-256 mismatch")
    if _records_extras(graph):
        known = layer_tensor_names(graph) | set(graph.tensors)
        bad += [f"{name} is not recorded in {GRAPH_FILE}" for name in sorted(set(weights) - known)]
    if bad:
        raise InputError("weights do not match the graph: " + ", ".join(bad), path)
    model = IRModel(graph, weights)
    validate(model)
    return model


def read_tensor(ir_dir: Path, graph: Graph, name: str) -> np.ndarray:
    """One tensor of an IR folder (e.g. the mean image), read alone and checked against
    the SHA-256 ``graph`` records for it (unchecked in a format 1.0 IR, which has none)."""
    import h5py

    path = Path(ir_dir) / WEIGHTS_FILE
    try:
        with h5py.File(path, "r") as f:
            arr = f[name][()]
    except (OSError, KeyError):
        raise InputError(f"tensor {name!r} is not in the weights", path) from None
    spec = graph.tensors.get(name) or next(
        (t for l in graph.layers for t in l.tensors.values() if t.name == name), None)
    if spec is None and _records_extras(graph):
        raise InputError(f"tensor {name!r} is not recorded in {GRAPH_FILE}", path)
    if spec is not None and spec.sha256 and tensor_sha256(arr) != spec.sha256:
        raise InputError(f"{name} SHA-256 mismatch", path)
    return arr
