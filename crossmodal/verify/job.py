"""Layer-by-layer numerical equivalence of a converted model across engines.

The same preprocessed float32 batch runs through every engine; each observable
IR layer is compared with the reference engine: the source weights when given,
read independently of the conversion (:mod:`~crossmodal.verify.source_reference`:
a PyTorch checkpoint in a plain torchvision VGG, a Caffe net without the RGB fold),
else the IR's NumPy evaluator in float64. Statistics are accumulated batch by batch,
so memory stays bounded whatever the number of images.

Gates (defaults): on the logits and the network's feature blob (``graph.feature_blob``:
fc7 for VGG/AlexNet, pool5 for the Caffe GoogLeNet/ResNet, avgpool for the PyTorch
ResNet/DenseNet), max|Δ| / max|ref| ≤ ``tolerance``
(1e-5), and at most ``max_top1_disagreements`` (0) top-1 disagreements. A non-finite
output where the reference is finite is an infinite error. Every requested engine
must observe the gated layers, or its gate fails with the reason. Every other layer
is reported, and the first layer (in graph order) above the tolerance is named as
where an engine diverges.

Reduced precision (``precision="fp16"`` / ``"bf16"``, :mod:`~crossmodal.runtime.precision`):
the engines run at that precision (ONNX: the cached fp16 model; torch: autocast;
Keras: the mixed policy) while the reference stays in full precision, and the gate
has its own defaults: max|Δ|/max|ref| ≤ 1e-2 on logits and fc7, top-1 agreement
≥ 99 % on the sample (at most ⌊1 % of the inputs⌋ disagreements). Engines that cannot
run at that precision (``ir``, ``tf2onnx``; ONNX at bf16) are left out with the
reason. :meth:`VerifyReport.error_growth` says per layer how much the error grew
over the layer before it, to show where precision is lost.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from crossmodal.ir.consistency import check as check_consistency
from crossmodal.errors import InputError
from crossmodal.ir.graph import IRModel
from crossmodal.ir.identity import identity
from crossmodal.runtime.engine import ALL, ENGINES, Engine, IrEngine, open_engine
from crossmodal.verify.results import (
    OPTIONAL_ENGINES, ClassifierStats, LayerStats, VerifyReport, environment, gated_blobs,
)

def compare_engines(reference: Engine, others: list[Engine], batches: Iterable[np.ndarray],
                    layers: list[str], logits_layer: str,
                    on_batch: Callable[[int], None] | None = None,
                    errors: dict[str, str] | None = None) -> tuple[dict, dict]:
    """Run every batch (N, C, H, W) float32, in the IR's channel order, through the reference
    and the other engines; accumulate stats on ``layers`` (IR layer names).

    An optional engine (tf2onnx) that fails while running is dropped and its error put
    in ``errors``; any other engine's failure is an :class:`InputError` naming its file.
    Returns (comparisons engine → layer → LayerStats, classifier engine → ClassifierStats).
    """
    errors = {} if errors is None else errors
    active = list(others)
    comparisons = {e.name: {l: LayerStats() for l in layers if l in e.observable} for e in others}
    classifier = {e.name: ClassifierStats() for e in others if logits_layer in e.observable}
    want_ref = [l for l in layers if l in reference.observable]
    for batch in batches:
        ref = _run(reference, batch, want_ref, "the reference")
        for engine in list(active):
            try:
                outs = _run(engine, batch, [l for l in layers if l in engine.observable], f"engine {engine.name}")
            except InputError as exc:
                if engine.name not in OPTIONAL_ENGINES:
                    raise
                errors[engine.name] = str(exc)
                active.remove(engine)
                comparisons.pop(engine.name)
                classifier.pop(engine.name, None)
                continue
            for layer, value in outs.items():
                if layer in ref:
                    comparisons[engine.name][layer].update(ref[layer], value)
            if engine.name in classifier and logits_layer in outs and logits_layer in ref:
                classifier[engine.name].update(ref[logits_layer], outs[logits_layer])
        if on_batch:
            on_batch(len(batch))
    for name in comparisons:  # layers the reference could not observe
        comparisons[name] = {l: s for l, s in comparisons[name].items() if s.count}
    return comparisons, classifier


def _run(engine: Engine, batch: np.ndarray, layers: list[str], what: str) -> dict[str, np.ndarray]:
    """``engine.run``, with an unexpected failure turned into one line naming the engine's file."""
    try:
        return engine.run(batch, layers)
    except InputError:
        raise
    except Exception as exc:  # mis-shaped layers, framework errors: a bad file, not a breach
        raise InputError(f"{what} ({engine.name}) failed on a {tuple(batch.shape)} batch: "
                         f"{_one_line(exc)}", engine.path) from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text.splitlines()[0][:200]}" if text else exc.__class__.__name__


def batches_of(x: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size]


def random_inputs(model: IRModel, n: int, seed: int) -> np.ndarray:
    """``n`` random-pixel images, preprocessed by the model's own spec: (n, C, H, W) float32."""
    from PIL import Image

    from crossmodal.data.images import preprocess

    spec, rng = model.graph.preprocess, np.random.default_rng(seed)
    h, w = spec.resize if isinstance(spec.resize, tuple) else (spec.resize, spec.resize)
    mean_image = model.weights.get(spec.mean_image) if spec.mean_image else None
    imgs = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for _ in range(n)]
    return np.stack([preprocess(img, spec, mean_image) for img in imgs]).astype(np.float32)


def image_inputs(model: IRModel, folder: Path, workers: int = 2) -> tuple[np.ndarray, list[str], list]:
    """Every readable image under ``folder``, preprocessed: (array, files used, failures)."""
    from crossmodal.data.images import list_images, load_batch

    files = list_images(folder)
    if not files:
        raise InputError("no JPEG/PNG/BMP/GIF/WebP image in this folder", folder)
    spec = model.graph.preprocess
    mean_image = model.weights.get(spec.mean_image) if spec.mean_image else None
    x, failures = load_batch(files, spec, mean_image, workers=workers)
    if len(x) == 0:
        raise InputError(f"none of the {len(files)} image files could be read "
                         f"(first: {failures[0][0]}: {failures[0][1]})", folder)
    failed = {str(f[0]) for f in failures}
    return x, [str(f) for f in files if str(f) not in failed], failures


def check_input_size(model: IRModel) -> None:
    spec, shape = model.graph.preprocess, model.graph.input.shape
    if tuple(spec.crop) != tuple(shape[1:]):
        raise InputError(f"the preprocessing crops to {spec.crop[0]}×{spec.crop[1]}, but this model takes "
                         f"{shape[1]}×{shape[2]} inputs (its fc6 fixes the size)")


def _source_engine(model: IRModel, source: Path, prototxt: Path | None, device: str, allow_tf32: bool,
                   trust_pickle: bool) -> Engine:
    """The reference built from the original weights, independently of the conversion
    (:mod:`~crossmodal.verify.source_reference`), after checking they are the IR's source."""
    from crossmodal.verify import source_reference as S
    from crossmodal.io.hashing import file_sha256

    recorded = model.graph.provenance.source_sha256
    actual = file_sha256(source)
    if recorded and recorded != actual:
        raise InputError(f"is not the checkpoint this IR was made from (SHA-256 {actual[:12]}…, the IR "
                         f"records {recorded[:12]}… from {model.graph.provenance.source_file})", source)
    if source.suffix.lower() == ".onnx":
        from crossmodal.verify.source_reference_onnx import onnx_source_engine
        return onnx_source_engine(model, source, device=device)
    if prototxt is not None or source.suffix == ".caffemodel":
        if prototxt is None:
            raise InputError("a .caffemodel source needs --prototxt (the deploy prototxt)", source)
        from crossmodal.verify.source_reference_caffe import caffe_source_engine
        return caffe_source_engine(model, prototxt, source)
    return S.torch_source_engine(model, source, device=device, allow_tf32=allow_tf32, trust_pickle=trust_pickle)


def _reference_label(engine: Engine, source: Path) -> str:
    if engine.name == "onnx-source":
        return f"onnx-source ({source.name} on ONNX Runtime {engine.info.get('onnxruntime')}, the source file itself)"
    if engine.name == "torch-source":
        module = engine.info.get("module", "")
        what = module.split(",")[0] if "layout" in module else "plain torchvision VGG"
        return f"torch-source ({source.name} in a {what}, loaded without the reader's IR)"
    return f"caffe-source ({source.name}: Caffe's own BGR network in {engine.info.get('implementation')}, " \
           f"OpenCV {engine.info.get('opencv')})"


def run_verify(model_dir: Path, *, engines: Iterable[str] = ("torch", "ir", "keras", "onnx"),
               source: Path | None = None, prototxt: Path | None = None, images: Path | None = None,
               random: int = 2, seed: int = 0, batch_size: int = 2, layers: str | list[str] = "all",
               tolerance: float | None = None, max_top1_disagreements: int | None = None,
               device: str = "cpu", allow_tf32: bool = False, trust_pickle: bool = False,
               precision: str = "fp32", cache_dir: Path | None = None,
               on_step: Callable[[str], None] | None = None,
               on_batch: Callable[[int], None] | None = None) -> VerifyReport:
    """Verify the converted models in ``model_dir`` against the reference. See module doc.

    ``tolerance`` / ``max_top1_disagreements``: None takes the precision's defaults
    (fp32: 1e-5 and 0; fp16/bf16: 1e-2 and ⌊1 % of the inputs⌋). ``cache_dir``: where
    the fp16 ONNX model goes when the model folder is read-only.

    Raises :class:`InputError` on bad input, when an engine (other than tf2onnx) cannot be
    started or fails while running, and when no engine is left to compare with the reference.
    """
    from crossmodal.ir.store import load_ir
    from crossmodal.runtime import precision as P

    step = on_step or (lambda msg: None)
    precision = P.check_precision(precision)
    if tolerance is None:
        tolerance = 1e-5 if precision == "fp32" else P.REDUCED_TOLERANCE
    model_dir = Path(model_dir)
    model = load_ir(model_dir)
    graph = model.graph
    check_consistency(graph, model_dir)
    names = list(engines)
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise InputError(f"unknown engine(s) {unknown}; choose from {list(ENGINES)}")
    check_input_size(model)
    if max_top1_disagreements is not None and max_top1_disagreements < 0:
        raise InputError(f"the top-1 disagreement limit must be ≥ 0, not {max_top1_disagreements}")
    if layers == "all" or layers == ["all"]:
        wanted = [l.name for l in graph.layers]
    else:
        wanted = list(dict.fromkeys(graph.resolve(l) for l in layers))
        for blob in gated_blobs(graph.feature_blob):
            if blob in graph.blobs and graph.blobs[blob] not in wanted:
                wanted.append(graph.blobs[blob])
        wanted.sort(key=[l.name for l in graph.layers].index)

    if images is not None:
        step(f"reading images from {images}")
        x, files, failures = image_inputs(model, images)
        inputs = {"kind": "images", "folder": str(images), "count": len(x), "files": files,
                  "unreadable": [{"path": str(p), "reason": r} for p, r in failures]}
    else:
        x = random_inputs(model, random, seed)
        inputs = {"kind": "random", "count": len(x), "seed": seed}
    inputs["preprocess"] = graph.preprocess.to_dict()
    if max_top1_disagreements is None:
        max_top1_disagreements = 0 if precision == "fp32" else P.reduced_gate(len(x))

    if source is not None:
        step(f"loading the source {source} (independently of the conversion)")
        reference = _source_engine(model, Path(source), prototxt, device, allow_tf32, trust_pickle)
        ref_label = _reference_label(reference, Path(source))
    else:
        reference = IrEngine(model)
        ref_label = "ir (NumPy reference evaluator, float64)"
    gated = [graph.blobs.get(b, b) for b in gated_blobs(graph.feature_blob) if graph.blobs.get(b, b) in wanted]
    blind = [l for l in gated if l not in reference.observable]
    if blind:
        raise InputError(f"the reference {reference.name} cannot observe the gated layer(s) {blind}")
    others, errors, skipped = [], {}, {}
    files = {"keras": model_dir / "model.keras", "onnx": model_dir / "model.onnx",
             "tf2onnx": model_dir / "model.keras"}

    def start(name: str) -> Engine:
        target = model if name in ("ir", "torch") else model_dir
        return open_engine(name, target, ALL, graph=graph, device=device, allow_tf32=allow_tf32,
                           precision=precision, **({"cache_dir": cache_dir} if name == "onnx" else {}))
    for name in dict.fromkeys(names):
        if name == reference.name:  # the IR evaluator is the reference: nothing to compare it with
            continue
        why = P.unsupported(name, precision)
        if why:
            skipped[name] = why
            step(f"leaving out {name} at {precision}: {why}")
            continue
        step(f"starting engine {name}")
        try:
            others.append(start(name))
        except Exception as exc:  # tf2onnx is optional: any failure is reported, the rest run
            if name in OPTIONAL_ENGINES:
                errors[name] = str(exc) if isinstance(exc, InputError) else _one_line(exc)
                step(f"{name} did not start: {errors[name]}")
                continue
            if isinstance(exc, InputError):
                raise
            raise InputError(f"the {name} engine cannot start: {_one_line(exc)}", files.get(name)) from None
    if not others:
        why = f" ({'; '.join(f'{k}: {v}' for k, v in errors.items())})" if errors else ""
        asked = ", ".join(names) or "none"
        why += f" ({'; '.join(f'{k}: {v}' for k, v in skipped.items())})" if skipped else ""
        raise InputError(f"nothing to compare: the reference is {reference.name} and the engines asked for "
                         f"({asked}) leave no other engine{why}; add engines (--engines torch,keras,onnx)"
                         + (" or give --source" if source is None else ""))
    step(f"comparing {len(wanted)} layers on {len(x)} inputs, batch {batch_size}")
    comparisons, classifier = compare_engines(reference, others, batches_of(x, batch_size), wanted,
                                              graph.resolve("logits"), on_batch, errors)
    if not comparisons:
        raise InputError("nothing to compare: every engine failed ("
                         + "; ".join(f"{k}: {v}" for k, v in errors.items()) + ")")
    return VerifyReport(ref_label, wanted, dict(graph.blobs), tolerance, inputs,
                        engines={e.name: {"device": e.device, **e.info} for e in [reference, *others]
                                 if e is reference or e.name in comparisons},
                        comparisons=comparisons, classifier=classifier, errors=errors,
                        environment=environment(seed if images is None else None),
                        max_top1_disagreements=max_top1_disagreements, allow_tf32=allow_tf32,
                        feature_blob=graph.feature_blob, precision=precision, skipped=skipped,
                        weights=identity(graph))

