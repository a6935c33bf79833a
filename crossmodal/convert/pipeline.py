"""The convert job: source (checkpoint, Caffe files, an ONNX model or an IR directory) → IR → targets.

All outputs are written into a staging folder inside the output directory and
moved into place only when every requested target succeeded, so a failed run
leaves the output directory as it was (and removes it again when the run created it).

Preprocessing the user gives (``--preprocess``) must crop to the network input's
(H, W); a default preset is fitted to it (crop set to the input size, noted in the
provenance). The input spec's channel order and value range follow the preprocessing.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from crossmodal._version import __version__
from crossmodal.ir import consistency
from crossmodal.ir import identity
from crossmodal.ir.preprocess import PREPROCESS_PRESETS, Preprocess
from crossmodal.convert.preprocess_options import (  # noqa: F401  (resolve_preprocess: public here too)
    PreprocessOptions, choose_preprocess, resolve_preprocess,
)
from crossmodal.ir.graph import IRModel
from crossmodal.ir.validation import with_hashes
from crossmodal.ir.store import is_ir_dir, load_ir, save_ir
from crossmodal.errors import InputError
from crossmodal.io.hashing import file_sha256
from crossmodal.io.mapped import release_pages
from crossmodal.models.cards import find_card_for_sha256

TARGETS = ("ir", "keras", "onnx", "torch")
#: What a plain ``convert`` writes (``torch``: a torchvision-keyed state dict, on request).
DEFAULT_TARGETS = ("ir", "keras", "onnx")


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
            "weights": identity.describe(g),
            "preprocess": g.preprocess.to_dict(),
            "artifacts": [dataclasses.asdict(a) for a in self.artifacts],
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def read_source(source: Path, *, caffemodel: Path | None = None, trust_pickle: bool = False,
                input_size: tuple[int, int] | None = None, preprocess: str | Preprocess | None = None,
                mean_file: Path | None = None, mean_mode: str = "channel",
                rgb_input: bool = False, arch: str | None = None,
                preprocess_options: PreprocessOptions | None = None, feature_layer: str | None = None) -> IRModel:
    """Read any supported source into an IR model.

    ``preprocess_options`` (``--mean``/``--std``/``--scale``/``--channel-order``/``--resize``) and
    ``feature_layer`` go with the formats that carry no preprocessing (ONNX); ``preprocess`` then
    is their base spec."""
    source = Path(source)
    if source.suffix.lower() == ".onnx" and source.is_file():
        if arch is not None:
            raise InputError("--arch goes with a PyTorch checkpoint, not an ONNX model")
        return _read_onnx(source, input_size, preprocess, preprocess_options, feature_layer)
    if source.suffix.lower() in (".keras", ".h5", ".hdf5") and source.is_file() and feature_layer is None:
        return _read_keras(source, input_size, preprocess, preprocess_options, arch)
    if (preprocess_options is not None and preprocess_options.fields_given) or feature_layer is not None:
        raise InputError("--mean, --std, --scale, --channel-order, --resize and --feature-layer go with a source "
                         "that carries no preprocessing (an .onnx model); use --preprocess here")
    given = None if preprocess is None else resolve_preprocess(preprocess)
    if is_ir_dir(source):
        model = load_ir(source)
        if given is not None:
            set_preprocess(model, given)
        return model
    if source.suffix == ".prototxt":
        if arch is not None:
            raise InputError("--arch goes with a PyTorch checkpoint, not a Caffe .prototxt")
        from crossmodal.readers.from_caffe import read_caffe
        return read_caffe(source, caffemodel, mean_file=mean_file, mean_mode=mean_mode,
                          preprocess=given, rgb_input=rgb_input)  # checks a given spec's crop itself
    if source.is_dir():
        raise InputError("is a folder without an IR (model.json); give a checkpoint file or an IR folder", source)
    if source.suffix == ".caffemodel":
        raise InputError("is a Caffe caffemodel: give the network's deploy prototxt as WEIGHTS and this file "
                         "with --caffemodel", source)
    from crossmodal.readers.from_torch import read_torch_checkpoint
    model = read_torch_checkpoint(source, trust_pickle=trust_pickle, input_size=input_size, arch=arch,
                                  preprocess=given or resolve_preprocess(None, _default_preset(source)))
    if given is not None:
        _check_mean_image(model, given)
        given.check_fits(model.graph.input.shape)
    else:
        _fit_default(model)
    return model


#: Provenance notes that start with this are printed by ``convert`` as ``note:`` lines.
SOURCE_NOTE = "source: "


def _read_onnx(source: Path, input_size, preprocess, options: PreprocessOptions | None,
               feature_layer: str | None) -> IRModel:
    """An ONNX model (:mod:`crossmodal.readers.from_onnx`) with the preprocessing chosen by
    :func:`~crossmodal.convert.preprocess_options.choose_preprocess`."""
    from crossmodal.readers.from_onnx import read_onnx

    read = read_onnx(source, input_size=input_size, feature_layer=feature_layer)
    model = read.model
    if isinstance(preprocess, Preprocess):
        options = dataclasses.replace(options or PreprocessOptions(), preset=None)
        spec, note = choose_preprocess(options, model.graph.input.shape[1:], preprocess)
        note = None
    else:
        if preprocess is not None:
            options = dataclasses.replace(options or PreprocessOptions(), preset=preprocess)
        spec, note = choose_preprocess(options, model.graph.input.shape[1:], read.carried_preprocess)
    g = model.graph
    g.preprocess = spec
    g.input = dataclasses.replace(g.input, channel_order=spec.channel_order, value_range=spec.value_range)
    if note:
        g.provenance.notes.append(SOURCE_NOTE + note)
    if any(n.startswith("source layout NHWC") for n in g.provenance.notes):
        g.provenance.notes.append(SOURCE_NOTE + "an NHWC input: the IR and its models are channels-first "
                                  "(model.onnx takes NCHW, model.keras NHWC as always)")
    return model


def _read_keras(source: Path, input_size, preprocess, options: PreprocessOptions | None, arch) -> IRModel:
    """A Keras model or weights-only file (:mod:`crossmodal.readers.from_keras`): the reader's default
    preprocessing (torchvision's; Caffe's for ``--arch`` weights) unless the user gave a spec or fields."""
    from crossmodal.readers.from_keras import read_keras

    model = read_keras(source, input_size=input_size, arch=arch)
    g = model.graph
    if preprocess is not None:
        options = dataclasses.replace(options or PreprocessOptions(), preset=None if isinstance(preprocess, Preprocess)
                                      else preprocess)
    if isinstance(preprocess, Preprocess) or (options is not None and options.given):
        base = preprocess if isinstance(preprocess, Preprocess) else g.preprocess
        spec, _ = choose_preprocess(options, g.input.shape[1:], base)
        g.provenance.notes = [n for n in g.provenance.notes if not n.startswith("preprocessing:")]
        set_preprocess(model, spec)
    else:
        g.provenance.notes = [SOURCE_NOTE + n if n.startswith("preprocessing:") else n for n in g.provenance.notes]
        _fit_default(model)
    return model


def set_preprocess(model: IRModel, spec: Preprocess) -> None:
    """Replace an IR's preprocessing (e.g. ``--preprocess`` on an IR folder): the input
    spec's channel order and value range follow it, its crop must be the input size,
    and a mean image it names must be in the IR. Noted in the provenance."""
    g = model.graph
    spec.check_fits(g.input.shape)
    _check_mean_image(model, spec)
    if spec == g.preprocess:
        return
    g.provenance.notes.append(f"preprocess replaced: {g.preprocess.name} → {spec.name} "
                              f"(input {spec.channel_order} {spec.value_range})")
    g.preprocess = spec
    g.input = dataclasses.replace(g.input, channel_order=spec.channel_order, value_range=spec.value_range)


def _check_mean_image(model: IRModel, spec: Preprocess) -> None:
    if spec.mean_image and spec.mean_image not in model.weights:
        raise InputError(f"preprocessing {spec.name!r} names the mean image {spec.mean_image!r}, which the "
                         f"model does not hold (convert the Caffe model with --mean-file --mean-mode image)")


def _fit_default(model: IRModel) -> None:
    """A default preset (the user gave none) cropping another size than the input: crop to the input."""
    g = model.graph
    _, h, w = g.input.shape
    if tuple(g.preprocess.crop) != (h, w):
        g.provenance.notes.append(f"preprocess: {g.preprocess.name} preset crop {g.preprocess.crop[0]}×"
                                  f"{g.preprocess.crop[1]} set to the input size {h}×{w}")
        g.preprocess = dataclasses.replace(g.preprocess, crop=(h, w))


def _default_preset(source: Path) -> str:
    """The preprocessing a known checkpoint was trained with (model cards), else torchvision."""
    try:
        from crossmodal.models.cards import find_card_for_file
        card = find_card_for_file(source)
    except ImportError:  # pragma: no cover - cards are part of the package
        card = None
    return getattr(card, "preprocess", None) or "torchvision"


#: framework → the distributions that provide it (the first one installed counts).
FRAMEWORKS: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-macos", "tensorflow-intel"),
    "keras": ("keras",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                    "onnxruntime-silicon"),
    "h5py": ("h5py",),
    "numpy": ("numpy",),
    "safetensors": ("safetensors",),
    "protobuf": ("protobuf",),
}


def framework_versions() -> dict[str, str]:
    """Python and every framework's installed version, from package metadata (no imports);
    a framework that is not installed is left out."""
    out = {"python": sys.version.split()[0]}
    for name, dists in FRAMEWORKS.items():
        for dist in dists:
            try:
                out[name] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return out


def check_writable(out_dir: Path) -> list[Path]:
    """Create ``out_dir`` if needed and probe it; returns the folders this call created
    (deepest first), for :func:`remove_created` after a failed run."""
    created = [p for p in [out_dir, *out_dir.parents] if not p.exists()]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".crossmodal-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        remove_created(created)
        raise InputError(f"output directory is not writable ({exc.strerror or exc})", out_dir) from None
    return created


def remove_created(created: list[Path]) -> None:
    """Remove the folders a run created, deepest first, as long as they are empty."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return


def convert(source: Path, out_dir: Path, *, targets: Iterable[str] = DEFAULT_TARGETS,
            labels: Path | None = None, io_labels: Path | None = None,
            opset: int | None = None, onnx_outputs: Iterable[str] | None = None,
            on_step: Callable[[str], None] | None = None, **read_options) -> ConvertResult:
    """Run the whole conversion; ``read_options`` go to :func:`read_source`.

    ``onnx_outputs``: blobs the ONNX model outputs after ``logits`` and ``prob`` (default:
    the network's feature blob, ``graph.feature_blob``). Targets and the ONNX opset are checked before anything is read or written; the
    output folder is created (and removed again on failure when this run created it).
    """
    targets = list(dict.fromkeys(targets))
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise InputError(f"unknown target(s) {unknown}; choose from {list(TARGETS)}")
    if opset is not None and "onnx" not in targets:
        raise InputError(f"an ONNX opset ({opset}) was given, but the targets {targets} leave out onnx")
    if "onnx" in targets:
        from crossmodal.emitters.to_onnx import DEFAULT_OPSET, check_opset
        opset = check_opset(DEFAULT_OPSET if opset is None else opset)
    out_dir = Path(out_dir)
    created = check_writable(out_dir)
    try:
        return _convert(source, out_dir, targets, labels, io_labels, opset, onnx_outputs, on_step, read_options)
    except BaseException:
        remove_created(created)
        raise


#: The note of a conversion without labels (``convert`` prints it even under ``-q``).
NO_LABELS_NOTE = ("no labels given or found beside the weights: the {n} classes are named class_0 …; give --labels "
                  "(crossmodal fetch places365-labels gets the published list)")


def _convert(source, out_dir: Path, targets: list[str], labels, io_labels, opset, onnx_outputs,
             on_step, read_options) -> ConvertResult:
    from crossmodal.readers.label_files import read_labels

    step = on_step or (lambda msg: None)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    step(f"reading {source}")
    model = read_source(Path(source), **read_options)
    if labels is None and io_labels is not None:
        raise InputError("--io-labels needs --labels")
    if labels is None and model.graph.labels is None:  # the release's label file where fetch puts it
        from crossmodal.models.cards import label_files_beside
        found = label_files_beside(read_options.get("caffemodel") or source, model.graph.num_classes)
        if found is not None:
            labels, io_labels = found
            step(f"labels: {labels.name}" + (f" and {io_labels.name}" if io_labels else "")
                 + " beside the weights (give --labels to choose others)")
        else:  # said by the caller once the conversion succeeded (NO_LABELS_NOTE)
            model.graph.provenance.notes.append(NO_LABELS_NOTE.format(n=model.graph.num_classes))
    if labels is not None:
        model.graph.labels = read_labels(labels, io_labels, model.graph.num_classes)
    prov = model.graph.provenance
    prov.tool_version = f"crossmodal {__version__}"
    prov.framework_versions = {**framework_versions(), **prov.framework_versions}
    prov.created = prov.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    from crossmodal.models import annotate
    annotate(model.graph)  # Keras names of a known architecture read from a generic format
    if not prov.weights_identity:  # an IR folder keeps the identity it records
        weights_file = read_options.get("caffemodel") or Path(source)
        prov.weights_identity = identity.resolve(weights_file, prov.source_sha256, find_card_for_sha256)
    model = with_hashes(model)  # once: the IR, the ONNX metadata and the fingerprint reuse them
    consistency.check(model.graph, source)  # input spec, preprocessing and first layer agree
    if "keras" in targets:  # refuse inexpressible layers before any file is written
        from crossmodal.emitters.to_keras import check_keras
        check_keras(model.graph)
    if "torch" in targets:  # refuse a network without a torchvision layout before any file is written
        from crossmodal.models.registry import torchvision_keys_for
        torchvision_keys_for(model.graph)
    timings["read"] = time.perf_counter() - t0

    staging = out_dir / f".crossmodal-staging-{os.getpid()}"
    staging.mkdir(exist_ok=True)
    written: list[tuple[str, Path]] = []
    digests: dict[Path, str] = {}  # SHA-256 of files hashed as they were written
    try:
        if "ir" in targets:
            t = time.perf_counter()
            step("writing IR (model.json + weights.h5)")
            written += [("ir-graph", p) if p.suffix == ".json" else ("ir-weights", p) for p in save_ir(model, staging)]
            timings["ir"] = time.perf_counter() - t
        if "onnx" in targets:
            from crossmodal.emitters.onnx_file import save_onnx
            from crossmodal.emitters.to_onnx import build_onnx_skeleton
            t = time.perf_counter()
            step(f"emitting ONNX (opset {opset}, checked)")
            proto, arrays = build_onnx_skeleton(model, opset=opset, extra_outputs=[model.graph.feature_blob] if onnx_outputs is None else list(onnx_outputs))
            written += [("onnx" if p.suffix == ".onnx" else "onnx-data", p)
                        for p in save_onnx(proto, staging / "model.onnx", arrays=arrays, digests=digests)]
            del proto, arrays
            timings["onnx"] = time.perf_counter() - t
        if "torch" in targets:
            from crossmodal.emitters.torch_state import save_torch_state
            t = time.perf_counter()
            step("writing a torchvision-keyed state dict (model.pth)")
            written.append(("torch", save_torch_state(model, staging / "model.pth")))
            timings["torch"] = time.perf_counter() - t
        if "keras" in targets:
            t = time.perf_counter()
            step("emitting Keras 3 (.keras + .weights.h5)")
            from crossmodal.emitters.keras_weights import save_keras
            from crossmodal.emitters.to_keras import build_keras
            release_pages(model.weights.values())  # each layer reads its tensors back as it is built
            kmodel, _ = build_keras(model)
            release_pages(model.weights.values())  # saving copies every variable once more
            written += list(zip(("keras", "keras-weights"), save_keras(kmodel, staging / "model.keras")))
            del kmodel
            timings["keras"] = time.perf_counter() - t
        artifacts = []
        for kind, path in written:
            final = out_dir / path.name
            os.replace(path, final)
            artifacts.append(Artifact(kind, str(final), final.stat().st_size, digests.get(path) or file_sha256(final)))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    timings["total"] = time.perf_counter() - t0
    return ConvertResult(model, artifacts, timings)
