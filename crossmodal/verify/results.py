"""What ``verify`` measured: running statistics per engine and layer (:class:`LayerStats`), the
classifier's agreement (:class:`ClassifierStats`), the gates and the whole report
(:class:`VerifyReport`, its JSON), and the machine it ran on.

``rel`` = max|Δ| / max|ref| over every value seen; a non-finite output where the reference is
finite is an infinite error. Pure: arrays in, numbers out.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass, field

import numpy as np

from crossmodal.ir.identity import banner, describe

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
