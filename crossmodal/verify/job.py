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

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from crossmodal.ir.consistency import check as check_consistency
from crossmodal.ir.identity import banner, describe, identity
from crossmodal.runtime.engines import Engine
from crossmodal.ir.graph import IRModel
from crossmodal.errors import InputError

GATED_BLOBS = ("logits", "fc7")  # a VGG's; a run gates gated_blobs(graph.feature_blob)


def gated_blobs(feature_blob: str = "fc7") -> tuple[str, ...]:
    """The public blobs whose comparison gates a run: the logits and the network's feature blob."""
    return tuple(dict.fromkeys(("logits", feature_blob)))
OPTIONAL_ENGINES = ("tf2onnx",)  # a cross-check: its failures are reported, never fatal


@dataclass
class LayerStats:
    """Running comparison of one engine's layer output with the reference.

    ``rel`` = max|Δ| / max|ref|; ``cosine_min`` = the lowest per-sample cosine similarity.
    """

    max_abs: float = 0.0
    max_ref: float = 0.0
    sum_abs: float = 0.0
    count: int = 0
    cosine_min: float = 1.0
    shape_mismatch: str | None = None
    nonfinite: int = 0  # elements non-finite in one of the two and not equal in both

    def update(self, ref: np.ndarray, out: np.ndarray) -> None:
        """Add one batch: ``ref`` and ``out`` of the same shape (N, …)."""
        if ref.shape != out.shape:  # a diverging layer, e.g. ceil vs floor pooling
            self.shape_mismatch = f"{tuple(out.shape[1:])} vs reference {tuple(ref.shape[1:])}"
            self.max_abs, self.count = float("inf"), self.count + 1
            return
        ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
        finite = np.isfinite(ref64) & np.isfinite(out64)
        # NaN or ±inf on either side counts as an infinite error, unless both sides hold the same value
        bad = ~finite & ~((ref64 == out64) | (np.isnan(ref64) & np.isnan(out64)))
        r, o = np.where(finite, ref64, 0.0), np.where(finite, out64, 0.0)
        diff = np.abs(o - r)
        n_bad = int(bad.sum())
        self.nonfinite += n_bad
        self.max_abs = float("inf") if n_bad else max(self.max_abs, float(diff.max(initial=0.0)))
        self.max_ref = max(self.max_ref, float(np.abs(r).max(initial=0.0)))
        self.sum_abs += float(diff.sum())
        self.count += diff.size
        r, o = r.reshape(len(r), -1), o.reshape(len(o), -1)
        norms = np.linalg.norm(r, axis=1) * np.linalg.norm(o, axis=1)
        dots = np.einsum("ij,ij->i", r, o)
        cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1), np.where(
            np.linalg.norm(r - o, axis=1) == 0, 1.0, 0.0))
        cos = np.where(bad.reshape(len(bad), -1).any(axis=1), -np.inf, cos)
        self.cosine_min = min(self.cosine_min, float(cos.min(initial=1.0)))

    @property
    def rel(self) -> float:
        if self.shape_mismatch or self.nonfinite:
            return float("inf")
        return self.max_abs / self.max_ref if self.max_ref > 0 else (0.0 if self.max_abs == 0 else float("inf"))

    def to_dict(self) -> dict:
        mean = float("inf") if self.nonfinite else self.sum_abs / max(self.count, 1)
        out = {"max_abs": _finite(self.max_abs), "rel": _finite(self.rel),
               "mean_abs": _finite(mean), "cosine_min": _finite(self.cosine_min)}
        if self.shape_mismatch:
            out["shape_mismatch"] = self.shape_mismatch
        if self.nonfinite:
            out["nonfinite"] = self.nonfinite
        return out


def _finite(v: float) -> float | None:
    """JSON has no infinity: a non-finite figure (shape mismatch, NaN output) is written as null."""
    return v if np.isfinite(v) else None


@dataclass
class ClassifierStats:
    """Top-1 / top-5 agreement of an engine's logits with the reference's."""

    n: int = 0
    top1_agree: int = 0
    top5_set_agree: int = 0

    def update(self, ref: np.ndarray, out: np.ndarray) -> None:
        k = min(5, ref.shape[1])
        self.n += len(ref)
        self.top1_agree += int((ref.argmax(1) == out.argmax(1)).sum())
        ref5 = np.sort(np.argsort(-ref, axis=1, kind="stable")[:, :k], axis=1)
        out5 = np.sort(np.argsort(-out, axis=1, kind="stable")[:, :k], axis=1)
        self.top5_set_agree += int((ref5 == out5).all(axis=1).sum())

    def to_dict(self) -> dict:
        return {"images": self.n, "top1_agreement": self.top1_agree / max(self.n, 1),
                "top5_set_agreement": self.top5_set_agree / max(self.n, 1),
                "argmax_flips": self.n - self.top1_agree}


def _breach(rel: float, limit: float) -> bool:
    """True unless ``rel ≤ limit`` (so NaN is a breach)."""
    return not rel <= limit


@dataclass
class VerifyReport:
    """Everything one verification found: per engine and IR layer a :class:`LayerStats`,
    per engine a :class:`ClassifierStats`, engine errors, the limits and the environment."""

    reference: str
    layers: list[str]
    blobs: dict[str, str]
    tolerance: float
    inputs: dict
    engines: dict[str, dict] = field(default_factory=dict)
    comparisons: dict[str, dict[str, LayerStats]] = field(default_factory=dict)
    classifier: dict[str, ClassifierStats] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    max_top1_disagreements: int = 0
    allow_tf32: bool = False
    feature_blob: str = "fc7"
    precision: str = "fp32"
    skipped: dict[str, str] = field(default_factory=dict)  # engines left out at this precision
    #: The weights' identity (:mod:`crossmodal.ir.identity`), as ``model.json`` records it.
    weights: dict = field(default_factory=dict)

    def gates(self) -> list[dict]:
        """One row per engine and check; an engine that cannot observe a gated layer fails, with a reason."""
        rows = []
        gated = {self.blobs.get(b, b): b for b in gated_blobs(self.feature_blob)
                 if self.blobs.get(b, b) in self.layers}
        logits = self.blobs.get("logits", "logits")
        for engine, layers in self.comparisons.items():
            for layer, blob in gated.items():
                check = f"{blob} max|Δ|/max|ref|"
                if layer in layers:
                    rel = layers[layer].rel
                    rows.append({"engine": engine, "check": check, "value": _finite(rel),
                                 "limit": self.tolerance, "passed": not _breach(rel, self.tolerance)})
                else:
                    rows.append({"engine": engine, "check": check, "value": None, "limit": self.tolerance,
                                 "passed": False, "reason": f"{engine} cannot observe {layer} ({blob})"})
            check = "top-1 disagreements"
            if engine in self.classifier and self.classifier[engine].n:
                flips = self.classifier[engine].n - self.classifier[engine].top1_agree
                rows.append({"engine": engine, "check": check, "value": flips,
                             "limit": self.max_top1_disagreements, "passed": flips <= self.max_top1_disagreements})
            else:
                rows.append({"engine": engine, "check": check, "value": None, "limit": self.max_top1_disagreements,
                             "passed": False, "reason": f"{engine} cannot observe the logits ({logits})"})
        return rows

    def error_growth(self) -> dict[str, list[dict]]:
        """Per engine, every compared layer in graph order with its ``rel`` and ``growth``:
        ``rel`` over the ``rel`` of the engine's previous compared layer (None for the first,
        or when either is zero or non-finite)."""
        out: dict[str, list[dict]] = {}
        for engine, layers in self.comparisons.items():
            rows, prev = [], None
            for layer in self.layers:
                if layer not in layers:
                    continue
                rel = layers[layer].rel
                growth = rel / prev if prev and np.isfinite(prev) and np.isfinite(rel) and prev > 0 else None
                rows.append({"layer": layer, "rel": _finite(rel), "growth": growth})
                prev = rel
            out[engine] = rows
        return out

    def first_divergence(self) -> dict[str, str | None]:
        return {engine: next((l for l in self.layers if l in layers and _breach(layers[l].rel, self.tolerance)),
                             None)
                for engine, layers in self.comparisons.items()}

    @property
    def passed(self) -> bool:
        gates = self.gates()
        return bool(gates) and all(g["passed"] for g in gates) and not self.errors_that_fail()

    def errors_that_fail(self) -> dict[str, str]:
        """Engine failures that fail the run (tf2onnx is an optional cross-check)."""
        return {k: v for k, v in self.errors.items() if k not in OPTIONAL_ENGINES}

    def to_json(self) -> dict:
        return {
            "passed": self.passed,
            "weights": {**self.weights, "description": describe(self.weights)},
            "banner": banner(self.weights),
            "reference": self.reference,
            "tolerance": {"rel": self.tolerance, "top1_disagreements": self.max_top1_disagreements,
                          "gated": list(gated_blobs(self.feature_blob))},
            "allow_tf32": self.allow_tf32,
            "precision": self.precision,
            "skipped_engines": self.skipped,
            "error_growth": self.error_growth() if self.precision != "fp32" else None,
            "inputs": self.inputs,
            "engines": self.engines,
            "layers": self.layers,
            "blobs": self.blobs,
            "comparisons": {e: {l: s.to_dict() for l, s in layers.items()} for e, layers in self.comparisons.items()},
            "classifier": {e: c.to_dict() for e, c in self.classifier.items()},
            "gates": self.gates(),
            "first_divergence": self.first_divergence(),
            "errors": self.errors,
            "environment": self.environment,
        }


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment(seed: int | None) -> dict:
    import sys
    env = {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
           "cpu": cpu_model(), "numpy": np.__version__, "seed": seed}
    for name in ("torch", "tensorflow", "keras", "onnx", "onnxruntime", "tf2onnx"):
        mod = sys.modules.get(name)
        if mod is not None:
            env[name] = getattr(mod, "__version__", "?")
    return env


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
    if prototxt is not None or source.suffix == ".caffemodel":
        if prototxt is None:
            raise InputError("a .caffemodel source needs --prototxt (the deploy prototxt)", source)
        return S.caffe_source_engine(model, prototxt, source)
    return S.torch_source_engine(model, source, device=device, allow_tf32=allow_tf32, trust_pickle=trust_pickle)


def _reference_label(engine: Engine, source: Path) -> str:
    if engine.name == "torch-source":
        module = engine.info.get("module", "")
        what = module.split(",")[0] if "layout" in module else "plain torchvision VGG"
        return f"torch-source ({source.name} in a {what}, loaded without the reader's IR)"
    return f"caffe-source ({source.name}: Caffe's own BGR network, NumPy float64)"


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
    from crossmodal.runtime import engines as E
    from crossmodal.runtime import precision as P
    from crossmodal.ir.store import load_ir

    step = on_step or (lambda msg: None)
    precision = P.check_precision(precision)
    if tolerance is None:
        tolerance = 1e-5 if precision == "fp32" else P.REDUCED_TOLERANCE
    model_dir = Path(model_dir)
    model = load_ir(model_dir)
    graph = model.graph
    check_consistency(graph, model_dir)
    names = E.available(engines)
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
        reference = E.ir_engine(model)
        ref_label = "ir (NumPy reference evaluator, float64)"
    gated = [graph.blobs.get(b, b) for b in gated_blobs(graph.feature_blob) if graph.blobs.get(b, b) in wanted]
    blind = [l for l in gated if l not in reference.observable]
    if blind:
        raise InputError(f"the reference {reference.name} cannot observe the gated layer(s) {blind}")
    others, errors, skipped = [], {}, {}
    builders = {
        "ir": lambda: E.ir_engine(model),
        "torch": lambda: E.torch_engine(model, device, allow_tf32, label="torch", precision=precision),
        "keras": lambda: E.keras_engine(_need(model_dir / "model.keras"), graph, allow_tf32, device,
                                        precision=precision),
        "onnx": lambda: E.onnx_engine(_need(model_dir / "model.onnx"), graph, device, allow_tf32,
                                      precision=precision, cache_dir=cache_dir),
        "tf2onnx": lambda: E.tf2onnx_engine(_need(model_dir / "model.keras"), graph),
    }
    files = {"keras": model_dir / "model.keras", "onnx": model_dir / "model.onnx",
             "tf2onnx": model_dir / "model.keras"}
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
            others.append(builders[name]())
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


def _need(path: Path) -> Path:
    if not path.is_file():
        raise InputError(f"missing {path.name}: convert with --to including "
                         f"{'keras' if path.suffix == '.keras' else 'onnx'}", path.parent)
    return path
