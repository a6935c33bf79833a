"""One way to run a converted model: :func:`open_engine` → :class:`Engine`.

Every engine takes the same preprocessed float32 batch ``(B, C, H, W)`` (NCHW, as the IR and
:func:`crossmodal.data.images.load_batch` give it) and returns ``{name: float32 array}`` in the
IR's layouts whatever the framework's own: maps ``(B, C, h, w)``, vectors ``(B, F)``, a flatten's
output in channel-first order. Names are public blob names of the graph (``logits``, ``fc7``,
``pool5``, ``avgpool``, ``prob``; :meth:`~crossmodal.ir.graph.Graph.resolve` maps them) or IR
layer names.

* ``engine.run(batch)`` returns the outputs the engine was opened with (``outputs=``), keyed
  as they were named — what evaluation asks for (the logits and the feature blob);
* ``engine.run(batch, layers)`` returns the IR layers ``layers`` that the engine can observe
  (:attr:`Engine.observable`), keyed by IR name — what ``verify`` asks for, layer by layer
  (open with ``outputs=ALL``). A layer an engine cannot observe (e.g. a convolution whose ReLU
  Keras fused into it) is simply absent;
* ``engine.describe()`` says what really ran: engine, device, precision, providers or framework
  devices, threads, versions, the file. It is printed and recorded in every report.

Engines (heavy frameworks are imported when one is opened):

* ``onnx`` — ``model.onnx`` on ONNX Runtime (:mod:`~crossmodal.runtime.onnx_engine`: CUDA with
  I/O binding and pinned buffers on a GPU, TensorRT with ``trt=True``, fp16 via the cached fp16
  model);
* ``keras`` — ``model.keras`` on TensorFlow (:mod:`~crossmodal.runtime.keras_engine`);
* ``torch`` — the IR's tensors in a PyTorch module (:mod:`~crossmodal.runtime.torch_engine`;
  its ``module`` also serves gradients, for Grad-CAM);
* ``ir`` — the IR's NumPy reference evaluator in float64 (:mod:`crossmodal.ir.reference`);
* ``tf2onnx`` — the saved Keras model converted by tf2onnx, an independent cross-check of the
  ONNX path (flat layers only; needs far more memory than the direct emitter on VGG16).

Devices (:mod:`~crossmodal.runtime.devices`): ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N``.
``precision`` (``fp32``, ``fp16``, ``bf16``: :mod:`~crossmodal.runtime.precision`) sets the
arithmetic; outputs are float32 whatever it is. TF32 stays off unless ``allow_tf32``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from crossmodal.errors import InputError
from crossmodal.ir.graph import Graph, IRModel
from crossmodal.ir.store import load_graph, load_ir
from crossmodal.runtime.devices import check_device

#: Every engine :func:`open_engine` opens; the first three run a model folder for evaluation.
ENGINES: tuple[str, ...] = ("torch", "ir", "keras", "onnx", "tf2onnx")
BACKENDS: tuple[str, ...] = ("onnx", "keras", "torch")
#: ``outputs=ALL``: every IR layer the engine can observe (what ``verify`` compares).
ALL = "all"


class Engine:
    """A converted model on one engine (module docstring). Subclasses implement :meth:`_run`
    (IR layer names → arrays) and :meth:`_describe`."""

    name = "?"

    def __init__(self, graph: Graph, outputs: Sequence[str] | str, observable: Iterable[str], *,
                 device: str = "cpu", path: str | os.PathLike | None = None) -> None:
        self.graph = graph
        self.observable = set(observable)
        self.device = device
        self.path = None if path is None else str(path)  # the file it runs, named when it fails
        if outputs == ALL:
            self.outputs = {l.name: l.name for l in graph.layers if l.name in self.observable}
        else:
            if not outputs:
                raise InputError("an engine needs at least one output name to return")
            # output name → IR layer name (an unknown name raises InputError here)
            self.outputs = {name: graph.resolve(name) for name in dict.fromkeys(outputs)}

    @property
    def layers(self) -> tuple[str, ...]:
        """The names :meth:`run` returns by default (those the engine was opened with)."""
        return tuple(self.outputs)

    def run(self, batch: np.ndarray, layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """``batch`` (B, C, H, W) float32 → the opened outputs by name, or the observable IR
        ``layers`` by IR name."""
        batch = self._check_batch(batch)
        want = dict(self.outputs) if layers is None else {l: l for l in layers if l in self.observable}
        if not want:
            return {}
        got = self._run(batch, list(dict.fromkeys(want.values())))
        return {name: got[ir] for name, ir in want.items()}

    def _run(self, batch: np.ndarray, layers: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def describe(self) -> dict:
        """What ran: ``{"backend": name, "device": …, …}`` (module docstring)."""
        return {"backend": self.name, "device": self.device, **self._describe()}

    def _describe(self) -> dict:
        return {}

    @property
    def info(self) -> dict:
        """:meth:`describe` without the engine's name and device (verify's report keys)."""
        return {k: v for k, v in self.describe().items() if k not in ("backend", "device")}

    def summary(self) -> str:
        """:meth:`describe` on one line, for the console."""
        return ", ".join(f"{k}={v}" for k, v in self.describe().items())

    def close(self) -> None:
        """Release the session / model (idempotent)."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != tuple(self.graph.input.shape):
            raise InputError(f"batch must be (B, {', '.join(map(str, self.graph.input.shape))}), "
                             f"got {batch.shape}")
        return batch


class FunctionEngine(Engine):
    """An engine around a function ``(batch, IR layers) → {layer: array}``: the independent source
    references of :mod:`crossmodal.verify` (plain torch modules, OpenCV's Caffe importer) run
    through it, so verify compares every engine alike."""

    def __init__(self, name: str, graph: Graph, fn: Callable[[np.ndarray, list[str]], Mapping[str, np.ndarray]],
                 observable: Iterable[str], *, device: str = "cpu", info: dict | None = None,
                 path: str | os.PathLike | None = None) -> None:
        self.name = name
        self._fn = fn
        self._info = dict(info or {})
        super().__init__(graph, ALL, observable, device=device, path=path)

    def _run(self, batch, layers):
        return dict(self._fn(batch, layers))

    def _describe(self) -> dict:
        return dict(self._info)


class IrEngine(Engine):
    """The IR's NumPy reference evaluator (:mod:`crossmodal.ir.reference`), float64 by default."""

    name = "ir"

    def __init__(self, model: IRModel, outputs: Sequence[str] | str = ALL, dtype=np.float64) -> None:
        super().__init__(model.graph, outputs, [l.name for l in model.graph.layers])
        self.model, self.dtype = model, np.dtype(dtype)

    def _run(self, batch, layers):
        from crossmodal.ir import reference
        return reference.run(self.model, batch, layers, dtype=self.dtype)

    def _describe(self) -> dict:
        return {"dtype": self.dtype.name, "evaluator": "crossmodal.ir.reference"}


def open_engine(name: str, model: str | os.PathLike | IRModel, outputs: Sequence[str] | str | None = None, *,
                device: str = "auto", precision: str = "fp32", allow_tf32: bool = False,
                threads: int | None = None, graph: Graph | None = None, **options) -> Engine:
    """Open engine ``name`` (:data:`ENGINES`) on a converted model.

    ``model``: the model folder (``model.json`` + ``weights.h5``, ``model.onnx``, ``model.keras``),
    or an :class:`~crossmodal.ir.graph.IRModel` already loaded (``ir`` and ``torch`` only).
    ``outputs``: names :meth:`Engine.run` returns by default (default: the logits and the network's
    feature blob, ``graph.feature_blob``), or :data:`ALL` for every layer (verify). ``graph``: the
    folder's graph when already loaded. ``options`` (onnx only): ``io_binding``, ``spinning``,
    ``trt``, ``cache_dir`` (fp16 model, TensorRT engines), ``pinned``, ``max_batch``, ``log``.
    """
    if name not in ENGINES:
        raise InputError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
    device = check_device(device)
    loaded = model if isinstance(model, IRModel) else None
    model_dir = None if loaded is not None else Path(model)
    if graph is None:
        graph = loaded.graph if loaded is not None else load_graph(model_dir)
    outputs = outputs if outputs is not None else ("logits", graph.feature_blob)
    if name != "onnx":
        onnx_only = sorted(k for k, v in options.items() if k not in ("log", "cache_dir", "max_batch") and v)
        if onnx_only:
            raise InputError(f"{', '.join(onnx_only)}: for the onnx engine only, not {name}")
        options = {}
    if name in ("onnx", "keras", "tf2onnx") and model_dir is None:
        raise InputError(f"the {name} engine runs a model folder's files: give the folder, not an IRModel")
    if name == "ir":
        return IrEngine(loaded if loaded is not None else load_ir(model_dir), outputs)
    if name == "torch":
        from crossmodal.runtime.torch_engine import TorchEngine
        return TorchEngine(loaded if loaded is not None else load_ir(model_dir), outputs, device=device,
                           precision=precision, allow_tf32=allow_tf32, threads=threads)
    if name == "keras":
        from crossmodal.runtime.keras_engine import KerasEngine
        return KerasEngine(model_dir, graph, outputs, device=device, precision=precision,
                           allow_tf32=allow_tf32, threads=threads)
    if name == "tf2onnx":
        from crossmodal.runtime.tf2onnx_engine import Tf2OnnxEngine
        return Tf2OnnxEngine(model_dir, graph, outputs)
    from crossmodal.runtime.onnx_engine import OnnxEngine
    return OnnxEngine(model_dir, graph, outputs, device=device, precision=precision, allow_tf32=allow_tf32,
                      threads=threads, **options)


class SharedEngine:
    """An engine opened on first call and shared by several data sets.

    Pass it as the ``backend`` of :func:`~crossmodal.evaluate.features.extract_features` for each
    data set: it is opened only when some rows need computing (a run served wholly from the cache
    never loads a framework), and :meth:`close` closes it if it was opened. ``on_open(engine)`` is
    called once, after opening.
    """

    def __init__(self, name: str, model_dir: str | os.PathLike, outputs: Sequence[str], *,
                 on_open=None, **options) -> None:
        self.name, self.model_dir, self.outputs = name, Path(model_dir), list(outputs)
        self.options, self.on_open = options, on_open
        self.engine: Engine | None = None

    def __call__(self) -> Engine:
        if self.engine is None:
            self.engine = open_engine(self.name, self.model_dir, self.outputs, **self.options)
            if self.on_open:
                self.on_open(self.engine)
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
