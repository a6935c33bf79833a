"""The Python API: load a converted model folder once, then classify, extract features
and explain images from a notebook, without a subprocess.

>>> import crossmodal
>>> m = crossmodal.load_model("models/vgg16-pt", backend="onnx", device="auto")
>>> m.predict("bedroom.jpg", k=5)[0]["top"][0]        # {'label': '/b/bedroom', 'index': 52, 'prob': 0.91}
>>> m.features(["a.jpg", "b.png"], layer="fc7").shape  # (2, 4096)
>>> r = m.cam("sketch.png", method="gradcam")          # r.maps: (1, 1, 224, 224) in [0, 1]

Inputs (``images``): one item or a list of items, each a file path, a ``PIL.Image``,
an ``(H, W, 3)`` uint8 array (an image, preprocessed here), a preprocessed float32
``(3, H, W)`` sample or a ``(B, 3, H, W)`` batch (used as given). Paths are decoded
and preprocessed exactly as ``baseline`` does (:mod:`crossmodal.data.images`,
the preprocessing recorded in the model). A file that does not decode raises
:class:`~crossmodal.data.images.ImageDecodeError`, or with ``on_error="skip"``
is left out and listed in :attr:`Batch.failures`.

Classification and features run on the chosen backend (``onnx`` default,
``keras``, ``torch``); maps always run on the IR's PyTorch module (gradients),
built on first use.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from crossmodal.ir.graph import Graph
from crossmodal.ir.store import load_graph
from crossmodal.errors import InputError

#: The demo's indoor/outdoor rule, printed with every vote.
IO_RULE = "mean IO label (1 indoor, 2 outdoor) of the top-10 classes < 1.5 → indoor, else outdoor"
IO_TOP = 10
ATTRIBUTES_TOP = 9


@dataclass
class Batch:
    """Preprocessed images: ``x`` float32 ``(B, 3, H, W)``; ``sources[i]`` names row i
    (a path, or ``<image i>`` for an in-memory input); ``failures``: ``(source, reason)``."""

    x: np.ndarray
    sources: list[str]
    failures: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class CamResult:
    """Maps of a batch: ``maps`` float32 ``(B, K, H, W)`` in [0, 1] at the input crop;
    ``targets`` int64 ``(B, K)``; ``scores`` float32 ``(B, K)`` their softmax probabilities;
    ``logits`` ``(B, num_classes)``; the ``layer`` and ``method`` that made them."""

    maps: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    layer: str
    method: str
    sources: list[str]
    failures: list[tuple[str, str]] = field(default_factory=list)
    grid: tuple[int, int] = (0, 0)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def io_vote(probs: np.ndarray, io_labels: Sequence[int]) -> tuple[str, float]:
    """The demo's vote for one image: mean IO label (1/2) of its top-10 classes → ("indoor"|"outdoor", mean)."""
    order = np.argsort(-np.asarray(probs), kind="stable")[:IO_TOP]
    mean = float(np.mean(np.asarray(io_labels)[order]))
    return ("indoor" if mean < 1.5 else "outdoor"), mean


def normalise_label(name: str) -> str:
    """``/b/bedroom`` → ``bedroom``; ``/s/stadium/baseball`` → ``stadium_baseball``."""
    from crossmodal.data.labels import normalise
    return normalise(name)


@dataclass
class Attributes:
    """SUN scene attributes: ``W`` float32 ``(A, F)`` and ``names`` (A); responses = W · features."""

    W: np.ndarray
    names: list[str]

    def top(self, features: np.ndarray, n: int = ATTRIBUTES_TOP) -> list[list[dict]]:
        """Per row of ``features`` ``(B, F)``: the ``n`` strongest attributes, best first."""
        resp = np.asarray(features, np.float64).reshape(len(features), -1) @ self.W.T.astype(np.float64)
        order = np.argsort(-resp, axis=1, kind="stable")[:, :n]
        return [[{"label": self.names[j], "score": float(resp[i, j])} for j in row] for i, row in enumerate(order)]


def load_attributes(w_path: str | os.PathLike, names_path: str | os.PathLike) -> Attributes:
    """``W_sceneattribute_*.npy`` (A, F) and ``labels_sunattribute.txt`` (A lines)."""
    w_path, names_path = Path(w_path), Path(names_path)
    try:
        W = np.load(w_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"not a readable .npy matrix ({exc.__class__.__name__})", w_path) from None
    if W.ndim != 2 or not np.issubdtype(W.dtype, np.number):
        raise InputError(f"attribute matrix must be 2-D numbers (attributes × features), got {W.shape} {W.dtype}",
                         w_path)
    try:
        names = [ln.strip() for ln in names_path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"unreadable attribute names ({exc.__class__.__name__})", names_path) from None
    if len(names) != W.shape[0]:
        raise InputError(f"{len(names)} attribute names for a matrix of {W.shape[0]} rows ({w_path.name})",
                         names_path)
    return Attributes(W.astype(np.float32), names)


class Model:
    """A converted model folder, opened once. See the module docstring for inputs."""

    def __init__(self, model_dir: str | os.PathLike, backend: str = "onnx", device: str = "auto", *,
                 threads: int | None = None, draft: bool = False, workers: int | None = None) -> None:
        from crossmodal.runtime.devices import check_device
        from crossmodal.runtime.engine import BACKENDS
        from crossmodal.evaluate.feature_cache import read_mean_image

        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        self.model_dir = Path(model_dir)
        self.graph: Graph = load_graph(self.model_dir)
        self.backend_name, self.device = backend, check_device(device)
        self.threads, self.draft, self.workers = threads, draft, workers
        self.mean_image = read_mean_image(self.model_dir, self.graph)
        self._backend = None
        self._torch = None
        #: ``(path, reason)`` of the files the last ``predict`` / ``cam`` with ``on_error="skip"`` left out
        self.skipped: list[tuple[str, str]] = []
        self._shapes: dict[str, tuple[int, ...]] | None = None

    # ------------------------------------------------------------------ metadata
    @property
    def labels(self) -> list[str]:
        """Class names in output order (``class_<i>`` when the model carries none)."""
        lab = self.graph.labels
        return list(lab.names) if lab and lab.names else [f"class_{i}" for i in range(self.graph.num_classes)]

    @property
    def io_labels(self) -> list[int] | None:
        """Indoor (1) / outdoor (2) per class, when converted with ``--io-labels``."""
        lab = self.graph.labels
        return list(lab.indoor_outdoor) if lab and lab.indoor_outdoor else None

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.graph.input.shape[1]), int(self.graph.input.shape[2])

    @property
    def feature_layer(self) -> str:
        """The layer whose output feeds the logits (dropout skipped): ``relu7`` (fc7) on VGG16,
        the pooled vector on a GAP network — the features the scene-attribute matrix reads."""
        layer = self.graph.layer(self.graph.resolve("logits"))
        while True:
            src = layer.inputs[0]
            if src == self.graph.input.name:
                return src
            layer = self.graph.layer(src)
            if layer.kind != "dropout":
                return layer.name

    @property
    def feature_width(self) -> int:
        return int(self.graph.layer(self.graph.resolve("logits")).attrs["in_features"])

    def class_index(self, name: str | int) -> int:
        """A label (``/b/bedroom``, ``bedroom``, case-insensitive) or index → index; an
        unknown name raises InputError listing close matches."""
        labels = self.labels
        if isinstance(name, (int, np.integer)) or (isinstance(name, str) and name.isdigit()):
            i = int(name)
            if not 0 <= i < len(labels):
                raise InputError(f"class index {i} out of range (0–{len(labels) - 1})")
            return i
        exact = {lab: i for i, lab in enumerate(labels)}
        if name in exact:
            return exact[name]
        norm = {normalise_label(lab): i for i, lab in enumerate(labels)}
        key = normalise_label(name)
        if key in norm:
            return norm[key]
        close = difflib.get_close_matches(key, list(norm), n=5, cutoff=0.6)
        hint = f"close matches: {', '.join(labels[norm[c]] for c in close)}" if close else \
            f"the model has {len(labels)} labels, e.g. {', '.join(labels[:3])}"
        raise InputError(f"the model has no class {name!r}; {hint}")

    # ------------------------------------------------------------------ inputs
    def preprocess(self, image: Any) -> np.ndarray:
        """One path / PIL image / (H, W, 3) uint8 array → float32 ``(3, H, W)``."""
        from PIL import Image

        from crossmodal.data.images import load_image, preprocess
        if isinstance(image, (str, os.PathLike)):
            return load_image(image, self.graph.preprocess, self.mean_image, self.draft)
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim in (2, 3):
            image = Image.fromarray(image)
        if isinstance(image, Image.Image):
            return preprocess(image, self.graph.preprocess, self.mean_image)
        raise InputError(f"cannot preprocess a {type(image).__name__}; give a path, a PIL image "
                         "or an (H, W, 3) uint8 array")

    def load(self, images: Any, on_error: str = "raise") -> Batch:
        """Any accepted input(s) → a :class:`Batch` (paths decoded on a thread pool)."""
        from crossmodal.data.images import ImageDecodeError, load_batch
        if on_error not in ("raise", "skip"):
            raise InputError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        rows: list[np.ndarray] = []
        sources: list[str] = []
        failures: list[tuple[str, str]] = []
        shape = tuple(self.graph.input.shape)
        paths = [it for it in items if isinstance(it, (str, os.PathLike))]
        if paths:
            decoded, failed = load_batch(paths, self.graph.preprocess, self.mean_image, workers=self.workers,
                                         draft=self.draft)
            bad = {str(p) for p, _ in failed}
            if failed and on_error == "raise":
                p, reason = failed[0]
                raise ImageDecodeError(reason, p)
            failures += [(str(p), r) for p, r in failed]
            it_decoded = iter(decoded)
        for i, it in enumerate(items):
            if isinstance(it, (str, os.PathLike)):
                if str(Path(it)) in bad:
                    continue
                rows.append(next(it_decoded))
                sources.append(str(it))
            elif isinstance(it, np.ndarray) and it.dtype != np.uint8 and it.ndim in (3, 4):
                arr = np.asarray(it, np.float32).reshape((-1, *it.shape[-3:]))
                if tuple(arr.shape[1:]) != shape:
                    raise InputError(f"a preprocessed input must be (3, H, W) = {shape}, got {it.shape}")
                rows.extend(arr)
                sources += [f"<image {i}>" if len(arr) == 1 else f"<image {i}.{j}>" for j in range(len(arr))]
            else:
                rows.append(self.preprocess(it))
                sources.append(f"<image {i}>")
        x = np.stack(rows).astype(np.float32) if rows else np.zeros((0, *shape), np.float32)
        return Batch(x, sources, failures)

    def display(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed ``(B, 3, H, W)`` → the cropped RGB images ``(B, H, W, 3)`` uint8 (the
        preprocessing undone: std, mean or mean image, channel order, value range)."""
        spec = self.graph.preprocess
        x = np.asarray(x, np.float32) * np.asarray(spec.std, np.float32).reshape(1, 3, 1, 1)
        if self.mean_image is not None:
            from crossmodal.data.images import crop_mean_image
            x = x + crop_mean_image(self.mean_image, tuple(spec.crop))[None]
        else:
            x = x + np.asarray(spec.mean, np.float32).reshape(1, 3, 1, 1)
        if spec.channel_order == "BGR":
            x = x[:, ::-1]
        if spec.value_range == "0-1":
            x = x * 255.0
        return np.clip(np.rint(x), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)

    # ------------------------------------------------------------------ backend
    def backend(self, layers: Sequence[str]):
        """The inference backend, (re)opened when it lacks one of ``layers``."""
        from crossmodal.runtime.engine import open_engine
        if self._backend is None or not set(layers) <= set(self._backend.layers):
            wanted = list(dict.fromkeys([*(self._backend.layers if self._backend else ()), *layers]))
            self.close_backend()
            self._backend = open_engine(self.backend_name, self.model_dir, wanted, device=self.device,
                                        graph=self.graph, threads=self.threads)
        return self._backend

    def run(self, x: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        """The backend on a preprocessed batch → ``{layer: array}`` (IR layouts)."""
        if len(x) == 0:
            return {name: np.zeros((0,)) for name in layers}
        return self.backend(layers).run(x)

    def logits(self, images: Any) -> np.ndarray:
        """``(B, num_classes)`` pre-softmax scores."""
        return self.run(self.load(images).x, ["logits"])["logits"]

    def features(self, images: Any, layer: str | None = None) -> np.ndarray:
        """One layer's output for the images: ``(B, F)`` vectors or ``(B, C, h, w)`` maps (NCHW);
        ``layer`` defaults to the network's feature blob (``fc7`` on VGG16/AlexNet, ``avgpool`` on
        the PyTorch ResNets and DenseNets, ``pool5`` on the Caffe GoogLeNet/ResNet), as the CLI's."""
        layer = layer or self.graph.feature_blob
        self.graph.resolve(layer)
        return self.run(self.load(images).x, [layer])[layer]

    def predict(self, images: Any, k: int = 5, attributes: Attributes | None = None,
                on_error: str = "raise") -> list[dict]:
        """Per image: ``{"path", "top": [{label, index, prob}] best first, "io", "io_mean",
        "attributes"}``. ``io`` ("indoor"/"outdoor", the demo's vote, :data:`IO_RULE`) needs
        the model's IO labels, else None; ``attributes`` (top 9 ``{label, score}``) needs an
        :class:`Attributes` whose width matches :attr:`feature_width`, else None."""
        batch = self._load_skipping(images, on_error)
        return self.predict_batch(batch, k, attributes)

    def _load_skipping(self, images: Any, on_error: str) -> Batch:
        """:meth:`load` for the public calls: with ``on_error="skip"`` the files left out are kept in
        :attr:`skipped` and named in a warning, as the CLI names them (never dropped without a word)."""
        batch = self.load(images, on_error)
        self.skipped = list(batch.failures)
        if batch.failures:
            import warnings
            shown = "; ".join(f"{p}: {r}" for p, r in batch.failures[:3])
            more = f" and {len(batch.failures) - 3} more" if len(batch.failures) > 3 else ""
            warnings.warn(f"{len(batch.failures)} image(s) skipped (did not decode): {shown}{more}",
                          UserWarning, stacklevel=3)
        return batch

    def check_attributes(self, attributes: Attributes | None) -> None:
        if attributes is not None and attributes.W.shape[1] != self.feature_width:
            raise InputError(f"the attribute matrix is {attributes.W.shape[0]} × {attributes.W.shape[1]}, but "
                             f"this network's features ({self.feature_layer!r}, the input of the last dense "
                             f"layer) have {self.feature_width} values")

    def predict_batch(self, batch: Batch, k: int = 5, attributes: Attributes | None = None) -> list[dict]:
        self.check_attributes(attributes)
        layers = ["logits"] + ([self.feature_layer] if attributes is not None else [])
        out = self.run(batch.x, layers)
        if not len(batch.x):
            return []
        probs = softmax(out["logits"])
        labels, io = self.labels, self.io_labels
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        attrs = attributes.top(out[self.feature_layer]) if attributes is not None else None
        results = []
        for i, src in enumerate(batch.sources):
            vote = io_vote(probs[i], io) if io else (None, None)
            results.append({"path": src,
                            "top": [{"label": labels[j], "index": int(j), "prob": float(probs[i, j])}
                                    for j in order[i]],
                            "io": vote[0], "io_mean": vote[1],
                            "attributes": attrs[i] if attrs is not None else None})
        return results

    # ------------------------------------------------------------------ maps
    def torch_module(self):
        """The IR's PyTorch module (eval, parameters frozen) on the device, and that device: the
        runtime's torch engine (:mod:`crossmodal.runtime.torch_engine`), opened once for maps."""
        if self._torch is None:
            from crossmodal.runtime.engine import ALL, open_engine
            engine = open_engine("torch", self.model_dir, ALL, device=self.device, graph=self.graph,
                                 threads=self.threads)
            self._torch = (engine.module, engine.torch_device)
        return self._torch

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample output shape of every layer (one zero-input forward pass, once)."""
        if self._shapes is None:
            from crossmodal.explain.cam import layer_shapes
            module, dev = self.torch_module()
            self._shapes = layer_shapes(module, self.graph, dev)
        return self._shapes

    def explain_setup(self, method: str = "auto", layer: str | None = None) -> tuple[str, str, Any]:
        """Check ``method`` and ``layer`` before any image is read → (method, layer, head)."""
        from crossmodal.explain.cam import resolve_method
        from crossmodal.ir.heads import find_pooled_head
        from crossmodal.ir.receptive_field import check_layer, default_layer
        head = find_pooled_head(self.graph, self.shapes)
        chosen = check_layer(self.graph, layer, self.shapes) if layer is not None else None
        method = resolve_method(method, head, chosen)
        chosen = chosen or (head.features if method == "cam" else default_layer(self.graph, self.shapes))
        return method, chosen, head

    def cam(self, images: Any, target: str | int | Sequence[str | int] | None = None, top: int = 1,
            method: str = "auto", layer: str | None = None, on_error: str = "raise") -> CamResult:
        """Maps for ``target`` (a class name or index, or several; default each image's
        top-``top`` classes). ``method``: ``auto`` (CAM on a GAP + dense head, else Grad-CAM),
        ``cam``, ``gradcam``, ``gradcam++``; ``layer``: default the last spatial ReLU (VGG16:
        ``relu5_3``) or the CAM head's features."""
        method, chosen, head = self.explain_setup(method, layer)
        classes = None
        if target is not None:
            targets = target if isinstance(target, (list, tuple)) else [target]
            classes = [self.class_index(t) for t in targets]
        return self.cam_batch(self._load_skipping(images, on_error), classes, top, method, chosen, head)

    def cam_batch(self, batch: Batch, classes, top: int, method: str, layer: str, head) -> CamResult:
        """Maps of a loaded batch; ``classes``: None (top-``top``), ``(K,)`` for every row or
        ``(B, K)`` per row (−1: the row's top-1); ``method`` / ``layer`` / ``head`` from
        :meth:`explain_setup`."""
        import torch

        from crossmodal.explain.cam import compute_maps, upsample_normalise
        module, dev = self.torch_module()
        H, W = self.input_size
        if not len(batch.x):
            K = np.asarray(classes).shape[-1] if classes is not None else top
            return CamResult(np.zeros((0, K, H, W), np.float32), np.zeros((0, K), np.int64),
                             np.zeros((0, K), np.float32), np.zeros((0, self.graph.num_classes), np.float32),
                             layer, method, [], batch.failures)
        x = torch.from_numpy(np.ascontiguousarray(batch.x)).to(dev)
        raw, targets, logits = compute_maps(module, self.graph, x, layer, method, classes=classes, top=top,
                                            head=head)
        probs = softmax(logits)
        scores = np.take_along_axis(probs, targets, axis=1)
        return CamResult(upsample_normalise(raw, (H, W)), targets, scores, logits, layer, method,
                         batch.sources, batch.failures, tuple(raw.shape[-2:]))

    # ------------------------------------------------------------------ lifetime
    def close_backend(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def close(self) -> None:
        self.close_backend()
        self._torch = None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_model(model_dir: str | os.PathLike, backend: str = "onnx", device: str = "auto", **options) -> Model:
    """Open a converted model folder (``model.json`` + ``weights.h5``, ``model.onnx`` /
    ``model.keras``). ``backend``: ``onnx`` | ``keras`` | ``torch``; ``device``: ``auto`` |
    ``cpu`` | ``cuda`` | ``cuda:N``; options: ``threads``, ``draft`` (JPEG draft decoding),
    ``workers`` (decoding threads)."""
    return Model(model_dir, backend, device, **options)
