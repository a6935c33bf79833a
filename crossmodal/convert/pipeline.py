"""The convert job: source (checkpoint, Caffe files or an IR directory) → IR → targets.

All outputs are written into a staging folder inside the output directory and
moved into place only when every requested target succeeded, so a failed run
leaves the output directory as it was.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from crossmodal import __version__
from crossmodal.convert.ir import PREPROCESS_PRESETS, IRModel, Preprocess, with_hashes
from crossmodal.convert.ir_io import is_ir_dir, load_ir, save_ir
from crossmodal.errors import InputError

TARGETS = ("ir", "keras", "onnx")


@dataclass
class Artifact:
    kind: str
    path: str
    bytes: int
    sha256: str


@dataclass
class ConvertResult:
    model: IRModel
    artifacts: list[Artifact] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        g = self.model.graph
        return {
            "model": g.name,
            "num_classes": g.num_classes,
            "parameters": g.parameter_count(),
            "source": dataclasses.asdict(g.provenance),
            "preprocess": g.preprocess.to_dict(),
            "artifacts": [dataclasses.asdict(a) for a in self.artifacts],
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def resolve_preprocess(value: str | Preprocess | None, default: str = "torchvision") -> Preprocess:
    """A preset name (``torchvision``, ``places365``, ``caffe``), a JSON file or JSON text."""
    import json

    if isinstance(value, Preprocess):
        return value
    value = value or default
    if value in PREPROCESS_PRESETS:
        return PREPROCESS_PRESETS[value]
    if value.lstrip().startswith("{"):
        text, source = value, None
    elif Path(value).is_file():
        text, source = Path(value).read_text(), Path(value)
    else:
        raise InputError(f"--preprocess takes {sorted(PREPROCESS_PRESETS)}, a JSON file or JSON text; "
                         f"got {value!r}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"preprocessing spec is not valid JSON ({exc})", source) from None
    if not isinstance(data, dict):
        raise InputError("preprocessing spec must be a JSON object", source)
    return Preprocess.from_dict(data, source)


def read_source(source: Path, *, caffemodel: Path | None = None, trust_pickle: bool = False,
                input_size: tuple[int, int] | None = None, preprocess: str | Preprocess | None = None,
                mean_file: Path | None = None, mean_mode: str = "channel",
                rgb_input: bool = False) -> IRModel:
    """Read any supported source into an IR model."""
    source = Path(source)
    if is_ir_dir(source):
        model = load_ir(source)
        if preprocess is not None:
            model.graph.preprocess = resolve_preprocess(preprocess)
        return model
    if source.suffix == ".prototxt":
        from crossmodal.convert.readers.from_caffe import read_caffe
        return read_caffe(source, caffemodel, mean_file=mean_file, mean_mode=mean_mode,
                          preprocess=None if preprocess is None else resolve_preprocess(preprocess),
                          rgb_input=rgb_input)
    if source.is_dir():
        raise InputError("is a folder without an IR (model.json); give a checkpoint file or an IR folder", source)
    from crossmodal.convert.readers.from_torch import read_torch_checkpoint
    return read_torch_checkpoint(source, trust_pickle=trust_pickle, input_size=input_size,
                                 preprocess=resolve_preprocess(preprocess, _default_preset(source)))


def _default_preset(source: Path) -> str:
    """The preprocessing a known checkpoint was trained with (model cards), else torchvision."""
    try:
        from crossmodal.models.cards import find_card_for_file
        card = find_card_for_file(source)
    except ImportError:  # pragma: no cover - cards are part of the package
        card = None
    return getattr(card, "preprocess", None) or "torchvision"


def framework_versions() -> dict[str, str]:
    import numpy
    out = {"python": sys.version.split()[0], "numpy": numpy.__version__}
    for name in ("torch", "onnx", "keras", "tensorflow", "h5py"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", "?")
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".crossmodal-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"output directory is not writable ({exc.strerror or exc})", out_dir) from None


def convert(source: Path, out_dir: Path, *, targets: Iterable[str] = TARGETS,
            labels: Path | None = None, io_labels: Path | None = None,
            opset: int | None = None, onnx_outputs: Iterable[str] = ("fc7",),
            on_step: Callable[[str], None] | None = None, **read_options) -> ConvertResult:
    """Run the whole conversion; ``read_options`` go to :func:`read_source`."""
    from crossmodal.convert.label_files import read_labels

    targets = list(dict.fromkeys(targets))
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise InputError(f"unknown target(s) {unknown}; choose from {list(TARGETS)}")
    out_dir = Path(out_dir)
    check_writable(out_dir)
    step = on_step or (lambda msg: None)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    step(f"reading {source}")
    model = read_source(Path(source), **read_options)
    if labels is not None:
        model.graph.labels = read_labels(labels, io_labels, model.graph.num_classes)
    elif io_labels is not None:
        raise InputError("--io-labels needs --labels")
    prov = model.graph.provenance
    prov.tool_version = f"crossmodal {__version__}"
    prov.framework_versions = {**framework_versions(), **prov.framework_versions}
    prov.created = prov.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    model = with_hashes(model)  # once: the IR, the ONNX metadata and the fingerprint reuse them
    timings["read"] = time.perf_counter() - t0

    staging = out_dir / f".crossmodal-staging-{os.getpid()}"
    staging.mkdir(exist_ok=True)
    written: list[tuple[str, Path]] = []
    try:
        if "ir" in targets:
            t = time.perf_counter()
            step("writing IR (model.json + weights.h5)")
            written += [("ir-graph", p) if p.suffix == ".json" else ("ir-weights", p) for p in save_ir(model, staging)]
            timings["ir"] = time.perf_counter() - t
        if "onnx" in targets:
            from crossmodal.convert.emitters.to_onnx import DEFAULT_OPSET, build_onnx_skeleton, save_onnx
            t = time.perf_counter()
            step(f"emitting ONNX (opset {opset or DEFAULT_OPSET}, checked)")
            proto, arrays = build_onnx_skeleton(model, opset=opset or DEFAULT_OPSET, extra_outputs=list(onnx_outputs))
            written += [("onnx" if p.suffix == ".onnx" else "onnx-data", p)
                        for p in save_onnx(proto, staging / "model.onnx", arrays=arrays)]
            del proto, arrays
            timings["onnx"] = time.perf_counter() - t
        if "keras" in targets:
            t = time.perf_counter()
            step("emitting Keras 3 (.keras + .weights.h5)")
            from crossmodal.convert.emitters.to_keras import build_keras, save_keras
            kmodel, _ = build_keras(model)
            written += list(zip(("keras", "keras-weights"), save_keras(kmodel, staging / "model.keras")))
            del kmodel
            timings["keras"] = time.perf_counter() - t
        artifacts = []
        for kind, path in written:
            final = out_dir / path.name
            os.replace(path, final)
            artifacts.append(Artifact(kind, str(final), final.stat().st_size, _sha256(final)))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    timings["total"] = time.perf_counter() - t0
    return ConvertResult(model, artifacts, timings)
