"""Inference backends of the evaluation: ONNX Runtime (default), Keras/TensorFlow, PyTorch.

Every backend has one interface:

* ``backend.run(batch)`` takes the preprocessed ``float32`` batch ``(B, 3, H, W)``
  (NCHW, as the IR and :func:`crossmodal.data.images.load_batch` give it) and
  returns ``{name: array}`` for every feature name the backend was opened with,
  in the IR's layouts: ``logits`` ``(B, K)``, ``fc7`` ``(B, 4096)``, ``pool5``
  ``(B, 512, 7, 7)`` (maps NCHW, whatever the framework's own layout);
* ``backend.describe()`` says what really ran: the backend, the device
  (``cpu``, ``cuda:0``), the execution providers or framework devices, thread
  settings and framework versions. It is printed and recorded in reports.

Feature names are public blob names of the graph (``logits``, ``fc7``, ``pool5``,
``fc6``, ``prob``) or IR layer names; :meth:`Graph.resolve` maps them.

Devices: ``auto`` (a GPU when one really works, else the CPU), ``cpu``, ``cuda``
or ``cuda:N`` (an error when that GPU cannot be used).

* **onnx** — ``model.onnx`` (``model.fp16.onnx`` at ``precision="fp16"``, see
  :mod:`crossmodal.runtime.precision`). On a GPU: the CUDA execution provider
  (TensorRT first with ``trt=True``, engines cached in ``<cache>/trt``) with I/O
  binding: each batch is copied into a pinned (page-locked) host buffer and from
  there once into a device ``OrtValue`` reused from batch to batch; outputs are
  bound on the device and copied to the host only when :meth:`run` returns them.
  ``auto`` keeps a GPU only after a warm-up run succeeded on it
  (:mod:`crossmodal.runtime.ort_session`; onnxruntime-gpu lists CUDA even where
  there is no GPU) and falls back to the CPU provider, saying why in
  :meth:`describe` (``fallback``). On the CPU, ``threads`` sets ``intra_op_num_threads``
  (default: ONNX Runtime's own, one per physical core) and spinning is turned
  off, so that idle intra-op workers yield the CPU to the image-decoding threads
  of :mod:`~crossmodal.evaluate.features` (and to anything else on a shared
  machine) instead of busy-waiting. ``benchmarks/bench_baseline.py --sweep``
  measured the choices on 2 cores: ORT's default thread count (2) is right, one
  thread halves the throughput; spinning and 1 vs 2 decoding workers made no
  difference beyond noise there, since decoding is ~2 % of the work beside
  VGG16 on a CPU. Feature names that are not outputs of the file (``pool5``)
  are added as extra graph outputs in memory.
* **keras** — ``model.keras``, one sub-model built once whose outputs are the
  Keras layers holding the wanted features (:func:`keras_outputs`); input
  transposed to NHWC, maps transposed back. GPU where TensorFlow sees one.
* **torch** — the IR (``model.json`` + ``weights.h5``) in a PyTorch module
  (:func:`~crossmodal.emitters.to_torch.build_torch`, through
  :func:`~crossmodal.runtime.engines.torch_engine`); CUDA where available.

Frameworks are imported when a backend is opened. TF32 stays off unless
``allow_tf32``. ``precision`` (``fp32``, ``fp16``, ``bf16``): the arithmetic
(:mod:`crossmodal.runtime.precision`); outputs are float32 whatever it is, and
:meth:`describe` states it with the providers / devices that really ran.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from crossmodal.ir.graph import Graph
from crossmodal.ir.store import load_graph
from crossmodal.errors import InputError
from crossmodal.models import annotate

BACKENDS: tuple[str, ...] = ("onnx", "keras", "torch")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(device: str) -> str:
    """Validate ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N``; returns it lower-cased."""
    dev = str(device).strip().lower()
    if not _DEVICE.match(dev):
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    return dev


def _cuda_index(device: str) -> int:
    return int(device.split(":")[1]) if ":" in device else 0


class Backend:
    """Base class: ``run`` a batch, ``describe`` what ran, ``close`` (also as a context manager)."""

    name = "?"

    def __init__(self, graph: Graph, layers: Sequence[str]) -> None:
        if not layers:
            raise InputError("a backend needs at least one feature name to return")
        self.graph = graph
        self.layers = tuple(dict.fromkeys(layers))
        # feature name → IR layer name (an unknown name raises InputError here)
        self.ir_layers = {name: graph.resolve(name) for name in self.layers}

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError

    def summary(self) -> str:
        """:meth:`describe` on one line, for the console."""
        return ", ".join(f"{k}={v}" for k, v in self.describe().items())

    def close(self) -> None:
        """Release the session / model (idempotent)."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != tuple(self.graph.input.shape):
            raise InputError(f"batch must be (B, {', '.join(map(str, self.graph.input.shape))}), "
                             f"got {batch.shape}")
        return batch


# --------------------------------------------------------------------------- ONNX Runtime
def _has_external_data(proto) -> bool:
    """Whether any initializer of ``proto`` keeps its bytes in an external file."""
    import onnx
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


class OnnxBackend(Backend):
    """``model.onnx`` on ONNX Runtime (CUDA with I/O binding on a GPU, CPU otherwise)."""

    name = "onnx"

    def __init__(self, model_dir: Path, graph: Graph, layers: Sequence[str], device: str = "auto",
                 threads: int | None = None, allow_tf32: bool = False, io_binding: bool | None = None,
                 spinning: bool = False, precision: str = "fp32", trt: bool = False,
                 cache_dir: str | os.PathLike | None = None, pinned: bool | None = None, max_batch: int = 256,
                 log=None):
        import onnxruntime as ort

        from crossmodal.runtime import precision as P
        from crossmodal.runtime.ort_session import open_session

        super().__init__(graph, layers)
        self.precision = P.check_precision(precision)
        if P.unsupported("onnx", self.precision):
            raise InputError(P.unsupported("onnx", self.precision))
        path = Path(model_dir) / "model.onnx"
        if not path.is_file():
            raise InputError("no model.onnx in the model folder; convert with --to onnx "
                             "or choose --backend torch or keras", model_dir)
        if self.precision == "fp16" and not trt:  # TensorRT makes its own fp16 kernels from the fp32 model
            path = P.fp16_onnx(model_dir, cache_dir, log=log)
        self.model_file = str(path)
        self.spinning = spinning
        import onnx

        from crossmodal.runtime.engines import add_graph_outputs, onnx_layer_outputs

        try:  # the graph without external tensor data: enough to see its outputs
            head = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # DecodeError and friends
            raise InputError(f"not a readable ONNX model ({exc.__class__.__name__})", path) from None
        present = {o.name for o in head.graph.output}
        self.outputs = {n: n for n in self.layers if n in present}
        missing = [n for n in self.layers if n not in present]
        source = str(path)
        if missing:  # add the IR layers' tensors as graph outputs, in memory
            proto = onnx.load(str(path)) if _has_external_data(head) else head
            tensors = onnx_layer_outputs(proto, graph)
            for name in missing:
                if self.ir_layers[name] not in tensors:
                    raise InputError(f"{path.name} has no tensor for {name!r} (IR layer {self.ir_layers[name]!r})",
                                     path)
                self.outputs[name] = tensors[self.ir_layers[name]]
            if path.name == P.FP16_NAME:  # fp16 tensors reach the outputs through float32 casts
                cast = P.add_float_outputs(proto, [self.outputs[n] for n in missing])
                self.outputs.update({n: cast[self.outputs[n]] for n in missing})
            else:
                add_graph_outputs(proto, [self.outputs[n] for n in missing])
            source = proto.SerializeToString()
        del head
        self.trt = trt
        trt_cache = (Path(cache_dir) if cache_dir else P.default_model_cache()) / "trt" if trt else None
        self.sess, self.session_info = open_session(
            source, device, allow_tf32=allow_tf32, threads=threads, spinning=spinning, trt=trt,
            precision=self.precision, trt_cache=trt_cache, max_batch=max_batch)
        self.providers = self.session_info.providers
        if trt and self.precision == "fp16" and self.providers[0] != "TensorrtExecutionProvider":
            # the fp32 model would run, labelled fp16: refuse instead
            raise InputError(f"--trt --precision fp16: TensorRT did not start ({self.session_info.fallback}); "
                             "without --trt the fp16 ONNX model runs on CUDA")
        self.on_gpu = self.session_info.on_gpu
        self.device = f"cuda:{_cuda_index(device)}" if self.on_gpu else "cpu"
        self.io_binding = self.on_gpu if io_binding is None else bool(io_binding)
        self.pinned = self.on_gpu and self.io_binding if pinned is None else bool(pinned) and self.on_gpu
        self.input_name = self.sess.get_inputs()[0].name
        self.names = list(dict.fromkeys(self.outputs.values()))
        self._ort = ort
        self._device_input = None  # (shape, OrtValue on the device), reused while the batch shape holds
        self._host = None          # pinned host staging buffer (numpy view of a page-locked torch tensor)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        batch = self._check_batch(batch)
        if self.io_binding:
            outs = self._run_bound(batch)
        else:
            outs = dict(zip(self.names, self.sess.run(self.names, {self.input_name: batch})))
        return {n: outs[t] for n, t in self.outputs.items()}

    def _staged(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` copied into the pinned host buffer (grown when needed); ``batch`` itself
        when pinning is off or unavailable."""
        if not self.pinned:
            return batch
        if self._host is None or self._host.size < batch.size:
            try:
                import torch
                self._host = torch.empty(batch.size, dtype=torch.float32, pin_memory=True).numpy()
            except Exception:  # no CUDA-enabled torch: pageable memory, said in describe()
                self.pinned = False
                return batch
        host = self._host[:batch.size].reshape(batch.shape)
        np.copyto(host, batch)
        return host

    def _run_bound(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """One host→device copy of the input, outputs bound on the device, then read back."""
        kind, index = ("cuda", _cuda_index(self.device)) if self.on_gpu else ("cpu", 0)
        binding = self.sess.io_binding()
        if self._device_input is None or self._device_input[0] != batch.shape:
            self._device_input = (batch.shape, self._ort.OrtValue.ortvalue_from_shape_and_type(
                batch.shape, np.float32, kind, index))
        value = self._device_input[1]
        value.update_inplace(self._staged(batch))
        binding.bind_ortvalue_input(self.input_name, value)
        for name in self.names:
            binding.bind_output(name, kind, index)
        self.sess.run_with_iobinding(binding)
        return dict(zip(self.names, binding.copy_outputs_to_cpu()))  # read back once, when returned

    def describe(self) -> dict:
        opts = self.sess.get_session_options()
        out = {"backend": self.name, "device": self.device, "precision": self.precision,
               "model_file": Path(self.model_file).name, **self.session_info.to_dict(),
               "io_binding": self.io_binding, "pinned_host_buffers": self.pinned,
               "intra_op_threads": opts.intra_op_num_threads or "default (physical cores)",
               "spinning": self.spinning, "onnxruntime": self._ort.__version__}
        if self.trt:
            out["trt"] = True
        return out

    def close(self) -> None:
        self.sess = self._device_input = self._host = None


# --------------------------------------------------------------------------- Keras / TensorFlow
class KerasBackend(Backend):
    """``model.keras`` on TensorFlow: one sub-model whose outputs are the wanted features."""

    name = "keras"

    def __init__(self, model_dir: Path, graph: Graph, layers: Sequence[str], device: str = "auto",
                 threads: int | None = None, allow_tf32: bool = False, precision: str = "fp32"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import keras
        import tensorflow as tf

        from crossmodal.emitters.to_keras import keras_outputs
        from crossmodal.runtime.engines import tf_device, tf_gpus

        super().__init__(graph, layers)
        path = Path(model_dir) / "model.keras"
        if not path.is_file():
            raise InputError("no model.keras in the model folder; convert with --to keras "
                             "or choose --backend onnx or torch", model_dir)
        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            except RuntimeError:  # TensorFlow already initialised: keep its pools
                pass
        tf.config.experimental.enable_tensor_float_32_execution(allow_tf32)
        gpus = tf_gpus(tf)
        self.tf_device, self.device = tf_device(device, len(gpus))
        try:
            kmodel = keras.saving.load_model(path, safe_mode=True, compile=False)
        except Exception as exc:  # a corrupt archive raises many kinds
            raise InputError(f"not a loadable Keras model ({exc.__class__.__name__}: {str(exc)[:120]})",
                             path) from None
        from crossmodal.runtime.precision import check_precision, keras_policy, keras_with_precision
        self.precision = check_precision(precision)
        with tf.device(self.tf_device):
            kmodel = keras_with_precision(kmodel, self.precision)
        self.policy = keras_policy(self.precision)
        annotate(graph)  # IR files before format 1.2 (all VGGs) did not record their Keras names
        exposed = keras_outputs(graph)
        self.kernel_layers: dict[str, str] = {}
        for name, ir in self.ir_layers.items():
            if ir not in exposed:
                raise InputError(f"the Keras model has no layer holding {name!r} (IR layer {ir!r})", path)
            self.kernel_layers[name] = exposed[ir]
        knames = list(dict.fromkeys(self.kernel_layers.values()))
        with tf.device(self.tf_device):
            self.sub = keras.Model(kmodel.input, [kmodel.get_layer(k).output for k in knames])
        self.knames = knames
        self.versions = {"keras": keras.__version__, "tensorflow": tf.__version__}
        self.tf_devices = [d.name for d in gpus] or ["cpu"]
        self._tf = tf

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        batch = self._check_batch(batch)
        with self._tf.device(self.tf_device):
            outs = self.sub.predict_on_batch(np.ascontiguousarray(batch.transpose(0, 2, 3, 1)))
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        by_k = {k: np.asarray(o, dtype=np.float32) for k, o in zip(self.knames, outs)}
        return {name: self._ir_layout(by_k[k], self.ir_layers[name]) for name, k in self.kernel_layers.items()}

    def _ir_layout(self, a: np.ndarray, ir_layer: str) -> np.ndarray:
        """Keras' NHWC maps → NCHW; a flatten's HWC order → the IR's CHW order."""
        from crossmodal.runtime.engines import _to_ir_layout  # the one place that knows the rule
        return np.ascontiguousarray(_to_ir_layout(a, self.graph.layer(ir_layer)))

    def describe(self) -> dict:
        return {"backend": self.name, "device": self.device, "precision": self.precision,
                "keras_policy": self.policy, "tf_device": self.tf_device, "tf_devices": self.tf_devices,
                **self.versions}

    def close(self) -> None:
        self.sub = None


# --------------------------------------------------------------------------- PyTorch
class TorchBackend(Backend):
    """The IR's tensors in a PyTorch module (cuda where available)."""

    name = "torch"

    def __init__(self, model_dir: Path, graph: Graph, layers: Sequence[str], device: str = "auto",
                 threads: int | None = None, allow_tf32: bool = False, precision: str = "fp32"):
        import torch

        from crossmodal.runtime.precision import check_precision

        from crossmodal.runtime.engines import torch_engine
        from crossmodal.ir.store import load_ir

        super().__init__(graph, layers)
        if threads:
            torch.set_num_threads(int(threads))
        model = load_ir(model_dir)
        self.precision = check_precision(precision)
        self.engine = torch_engine(model, device=device, allow_tf32=allow_tf32, precision=self.precision)
        del model
        self.device = self.engine.device if self.engine.device != "cuda" else "cuda:0"
        self.wanted = sorted(set(self.ir_layers.values()))
        self._torch = torch

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        batch = self._check_batch(batch)
        outs = self.engine.run(batch, self.wanted)
        return {name: np.ascontiguousarray(outs[ir]) for name, ir in self.ir_layers.items()}

    def describe(self) -> dict:
        info = self.engine.info
        return {"backend": self.name, "device": self.device, "precision": self.precision,
                "autocast": self.precision != "fp32", "device_name": info.get("device_name"),
                "threads": self._torch.get_num_threads(),
                "torch": info.get("torch")}

    def close(self) -> None:
        self.engine = None


_CLASSES = {"onnx": OnnxBackend, "keras": KerasBackend, "torch": TorchBackend}


def open_backend(name: str, model_dir: str | os.PathLike, layers: Sequence[str] | None = None, *,
                 device: str = "auto", graph: Graph | None = None, threads: int | None = None,
                 allow_tf32: bool = False, precision: str = "fp32", **options) -> Backend:
    """Open backend ``name`` (``onnx``, ``keras``, ``torch``) on a converted model folder.

    ``layers``: feature names to return from :meth:`Backend.run` (default: the logits and the
    network's feature blob, ``graph.feature_blob``). ``graph``: the
    folder's graph when already loaded. ``options``: backend-specific
    (onnx: ``io_binding`` forces I/O binding on or off, ``spinning`` lets idle
    intra-op threads busy-wait, ``trt`` TensorRT first, ``cache_dir`` for the fp16 model
    and TensorRT engines, ``pinned`` pinned host buffers, ``max_batch`` TensorRT's profile).
    ``precision``: every backend (fp32, fp16, bf16; onnx: not bf16).
    """
    if name not in _CLASSES:
        raise InputError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    device = check_device(device)
    model_dir = Path(model_dir)
    graph = graph if graph is not None else load_graph(model_dir)
    layers = layers if layers is not None else ("logits", graph.feature_blob)
    if name != "onnx":
        onnx_only = sorted(k for k, v in options.items() if k not in ("log", "cache_dir", "max_batch") and v)
        if onnx_only:
            raise InputError(f"{', '.join(onnx_only)}: for the onnx backend only, not {name}")
        options = {}
    return _CLASSES[name](model_dir, graph, layers, device=device, threads=threads,
                          allow_tf32=allow_tf32, precision=precision, **options)


class SharedBackend:
    """A backend opened on first call and shared by several data sets.

    Pass it as the ``backend`` of :func:`~crossmodal.evaluate.features.extract_features`
    for each data set: it is opened only when some rows need computing (a run
    served wholly from the cache never loads a framework), and :meth:`close`
    closes it if it was opened. ``on_open(backend)`` is called once, after opening.
    """

    def __init__(self, name: str, model_dir: str | os.PathLike, layers: Sequence[str], *,
                 on_open=None, **options) -> None:
        self.name, self.model_dir, self.layers = name, Path(model_dir), list(layers)
        self.options, self.on_open = options, on_open
        self.backend: Backend | None = None

    def __call__(self) -> Backend:
        if self.backend is None:
            self.backend = open_backend(self.name, self.model_dir, self.layers, **self.options)
            if self.on_open:
                self.on_open(self.backend)
        return self.backend

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None
