"""Reading an ``.onnx`` file as data, with bounded work: the proto, its initializers as NumPy arrays,
its nodes as plain records, its one image input and its metadata.

The file is untrusted: a truncated or non-ONNX file, an initializer larger than
:data:`MAX_TENSOR_ELEMENTS`, more than :data:`MAX_NODES` nodes, external data outside the model's
folder, an opset outside 7..21 or a second image input are each one :class:`InputError` (or
:class:`UnsupportedError`) naming the file. Initializers stored as external data are read from the
model's folder (``onnx.external_data_helper``) after their paths are checked.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossmodal.errors import InputError, UnsupportedError

#: Opsets of the default domain this reader takes.
OPSETS = (7, 21)
#: Bounds on the work a file can ask for.
MAX_TENSOR_ELEMENTS = 1 << 31      # one initializer: 8 GiB of float32
MAX_TOTAL_ELEMENTS = 1 << 32       # all of them together
MAX_NODES = 100_000


@dataclass
class Node:
    """One ONNX node: ``name`` (made unique, ``op_type`` + index when the file has none)."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    domain: str = ""
    doc: str = ""


@dataclass
class OnnxFile:
    path: Path
    opset: int
    nodes: list[Node]
    initializers: dict[str, np.ndarray]
    input_name: str
    input_dims: list            # per dimension: an int, or a str / None for a dynamic one
    outputs: list[str]
    metadata: dict[str, str] = field(default_factory=dict)
    producer: str = ""
    graph_name: str = ""


def _attr(a) -> Any:
    from onnx import helper
    value = helper.get_attribute_value(a)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
    if hasattr(value, "dims") and hasattr(value, "data_type"):  # a TensorProto (Constant's value)
        from onnx import numpy_helper
        return numpy_helper.to_array(value)
    return value


def _elements(t) -> int:
    n = 1
    for d in t.dims:
        n *= int(d)
    return n


def _check_external(proto, path: Path) -> None:
    """Every external-data location is a plain file inside the model's folder."""
    from onnx import TensorProto
    root = path.parent.resolve()
    for t in proto.graph.initializer:
        if t.data_location != TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        target = (root / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(root):
            raise InputError(f"initializer {t.name!r} keeps its data at {location!r}, outside the model's folder",
                             path)
        if not target.is_file():
            raise InputError(f"initializer {t.name!r}: its external data file {location!r} is missing", path)


def load_onnx(path: Path) -> OnnxFile:
    """Parse ``path`` (module docstring); no node is run."""
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper

    path = Path(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable ONNX model (truncated or not ONNX: {str(exc).splitlines()[0][:120]})",
                         path) from None
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", path) from None
    g = proto.graph
    if not len(g.node):
        raise InputError("not a readable ONNX model (no graph nodes: truncated or not ONNX)", path)
    if len(g.node) > MAX_NODES:
        raise InputError(f"{len(g.node)} nodes, more than this reader takes ({MAX_NODES})", path)
    sizes = {t.name: _elements(t) for t in g.initializer}
    big = [n for n, s in sizes.items() if s > MAX_TENSOR_ELEMENTS]
    if big or sum(sizes.values()) > MAX_TOTAL_ELEMENTS:
        what = f"initializer {big[0]!r} has {sizes[big[0]]:,} elements" if big else \
            f"its initializers hold {sum(sizes.values()):,} elements"
        raise InputError(f"{what}: beyond this reader's bound ({MAX_TENSOR_ELEMENTS:,} per tensor)", path)
    opset = next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not OPSETS[0] <= opset <= OPSETS[1]:
        raise UnsupportedError(f"ONNX opset {opset}: this reader takes opsets {OPSETS[0]} to {OPSETS[1]}", path)
    _check_external(proto, path)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in g.initializer):
        from onnx.external_data_helper import load_external_data_for_model
        try:
            load_external_data_for_model(proto, str(path.parent))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read its external data ({exc})", path) from None
    try:
        inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    except (ValueError, TypeError) as exc:
        raise InputError(f"an initializer does not decode ({str(exc)[:120]})", path) from None
    for name, arr in inits.items():
        if arr.size != sizes[name]:
            raise InputError(f"initializer {name!r} holds {arr.size} values for dims {list(arr.shape)}", path)
    images = [i for i in g.input if i.name not in inits]
    if len(images) != 1:
        raise UnsupportedError(f"{len(images)} graph inputs {[i.name for i in images]}; one image input is "
                               "supported", path)
    tt = images[0].type.tensor_type
    if tt.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
        raise UnsupportedError(f"input {images[0].name!r} is not a float tensor", path)
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
            for d in tt.shape.dim]
    nodes, taken = [], set()
    for i, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{i}"
        while name in taken:
            name += "_"
        taken.add(name)
        try:
            attrs = {a.name: _attr(a) for a in n.attribute}
        except (ValueError, TypeError) as exc:
            raise InputError(f"node {name!r} ({n.op_type}): an attribute does not decode ({exc})", path) from None
        nodes.append(Node(name, n.op_type, list(n.input), list(n.output), attrs, n.domain, n.doc_string))
    return OnnxFile(path, opset, nodes, inits, images[0].name, dims, [o.name for o in g.output],
                    {p.key: p.value for p in proto.metadata_props}, proto.producer_name, g.name)
