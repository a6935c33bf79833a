"""Engines that run a converted model and return any IR layer's output, NCHW.

Every engine takes the same preprocessed float32 batch (N, C, H, W) and returns
``{ir_layer_name: array}`` with maps in NCHW (Keras' NHWC outputs are transposed
back), so outputs compare one to one. Layers an engine cannot observe (e.g. a
conv whose ReLU Keras fused into it) are simply absent. Heavy frameworks are
imported when an engine is created.

Reduced precision (TF32) is switched off in every engine unless ``allow_tf32``, and
``device="cpu"`` keeps every engine on the CPU (TensorFlow included). ``Engine.path``
is the file an engine runs, named when it fails.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from crossmodal.ir.graph import IRModel
from crossmodal.errors import InputError
from crossmodal.models import annotate

ENGINES = ("torch", "ir", "keras", "onnx", "tf2onnx")


@dataclass
class Engine:
    name: str
    run: Callable[[np.ndarray, list[str]], dict[str, np.ndarray]]
    observable: set[str]
    device: str = "cpu"
    info: dict = field(default_factory=dict)
    path: str | None = None  # the file it runs, named in errors


def ir_engine(model: IRModel, dtype=np.float64) -> Engine:
    from crossmodal.ir import reference

    def run(x, layers):
        return reference.run(model, x, layers, dtype=dtype)
    return Engine("ir", run, {l.name for l in model.graph.layers},
                  info={"dtype": np.dtype(dtype).name, "evaluator": "crossmodal.ir.reference"})


def set_torch_precision(allow_tf32: bool) -> None:
    """TF32 off (full fp32 matmul and cuDNN convolutions) unless ``allow_tf32``."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.set_float32_matmul_precision("high" if allow_tf32 else "highest")


def torch_device(device: str):
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` → a ``torch.device`` (InputError if CUDA is absent)."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("CUDA was asked for, but PyTorch sees no GPU here")
    want_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available() and _cuda_runs(torch))
    return torch.device(device if device.startswith("cuda") else "cuda" if want_gpu else "cpu")


def _cuda_runs(torch) -> bool:
    """``auto``: a GPU only after a real kernel ran on it (a listed GPU may still fail to start)."""
    try:
        return float((torch.ones(8, device="cuda") * 2).sum().item()) == 16.0
    except Exception:  # driver / architecture mismatch: the CPU it is
        return False


def torch_engine(model: IRModel, device: str = "cpu", allow_tf32: bool = False, label: str = "torch",
                 precision: str = "fp32") -> Engine:
    """The IR's tensors in a PyTorch network (:mod:`~crossmodal.emitters.to_torch`);
    ``precision`` fp16/bf16 runs it under ``torch.autocast`` (outputs returned as float32)."""
    import torch

    from crossmodal.emitters.to_torch import build_torch
    from crossmodal.runtime.precision import check_precision, torch_autocast

    precision = check_precision(precision)
    set_torch_precision(allow_tf32)
    dev = torch_device(device)
    module = build_torch(model).to(dev)

    def run(x, layers):
        with torch.inference_mode(), torch_autocast(dev.type, precision):
            out = module.forward_layers(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(dev), set(layers))
        return {k: v.float().cpu().numpy() for k, v in out.items()}
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return Engine(label, run, {l.name for l in model.graph.layers}, str(dev),
                  {"torch": torch.__version__, "device_name": name, "allow_tf32": allow_tf32,
                   "precision": precision if precision == "fp32" else f"{precision} (torch.autocast)"})


def tf_device(device: str, num_gpus: int) -> tuple[str, str]:
    """``cpu`` / ``cuda[:N]`` / ``auto`` → (TensorFlow device, our device name):
    ``("/CPU:0", "cpu")`` or ``("/GPU:N", "cuda:N")``; ``auto`` takes GPU 0 when
    TensorFlow sees one. A GPU TensorFlow does not see is an error."""
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= num_gpus:
            raise InputError(f"{device} was asked for, but TensorFlow sees {num_gpus} GPU(s) here")
        return f"/GPU:{index}", f"cuda:{index}"
    if device == "auto" and num_gpus:
        return "/GPU:0", "cuda:0"
    return "/CPU:0", "cpu"


def tf_gpus(tf) -> list:
    """TensorFlow's GPUs, with memory growth on (else TensorFlow takes all GPU memory at start,
    and the torch / ONNX Runtime engines beside it in the same process run out)."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError):  # already initialised: its setting stays
            pass
    return gpus


def keras_engine(model_path: Path, graph, allow_tf32: bool = False, device: str = "cpu",
                 precision: str = "fp32") -> Engine:
    """A saved ``.keras`` model, with a sub-model on the layers that match IR layers.

    ``device``: placed on the TensorFlow device :func:`tf_device` gives (``cpu`` pins
    ``/CPU:0``, else TensorFlow would take any GPU it sees).
    """
    import keras
    import tensorflow as tf

    from crossmodal.emitters.to_keras import keras_outputs, through_dropout

    tf.config.experimental.enable_tensor_float_32_execution(allow_tf32)
    gpus = tf_gpus(tf)
    tf_dev, _ = tf_device(device, len(gpus))
    placed = lambda: tf.device(tf_dev)  # noqa: E731
    with placed():
        try:
            kmodel = keras.saving.load_model(model_path, safe_mode=True, compile=False)
        except Exception as exc:  # a corrupt archive raises many kinds
            raise InputError(f"not a loadable Keras model ({exc.__class__.__name__})", model_path) from None
        from crossmodal.runtime.precision import keras_policy, keras_with_precision
        kmodel = keras_with_precision(kmodel, precision)  # fp16/bf16: the mixed policy on every layer
    annotate(graph)  # IR files before format 1.2 (all VGGs) did not record their Keras names
    expected = keras_outputs(graph)
    mapping = {ir: k for ir, k in expected.items() if _has_layer(kmodel, k)}
    if not mapping:
        names = list(dict.fromkeys(expected.values()))
        raise InputError(f"has none of the Keras layers this IR maps to ({', '.join(names[:4])}, …): "
                         "not a model converted from this IR", model_path)

    def run(x, layers):
        wanted = [l for l in layers if l in mapping]
        if not wanted:
            return {}
        knames = list(dict.fromkeys(mapping[l] for l in wanted))
        with placed():
            sub = keras.Model(kmodel.input, [kmodel.get_layer(k).output for k in knames])
            outs = sub(np.ascontiguousarray(x.transpose(0, 2, 3, 1), np.float32), training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        by_k = {k: np.asarray(o, dtype=np.float32) for k, o in zip(knames, outs)}
        return {l: _to_ir_layout(by_k[mapping[l]], through_dropout(graph, graph.layer(l))) for l in wanted}
    where = "gpu" if tf_dev.startswith("/GPU") else "cpu"
    return Engine("keras", run, set(mapping), where,
                  {"keras": keras.__version__, "tensorflow": tf.__version__, "allow_tf32": allow_tf32,
                   "precision": keras_policy(precision),
                   "tf_device": tf_dev, "devices": [d.name for d in gpus] or ["cpu"]},
                  path=str(model_path))


def _has_layer(kmodel, name: str) -> bool:
    try:
        kmodel.get_layer(name)
        return True
    except ValueError:
        return False


def _to_ir_layout(a: np.ndarray, layer) -> np.ndarray:
    """Keras output → IR layout: maps NHWC → NCHW; a flatten's HWC order → CHW order."""
    if a.ndim == 4:
        return a.transpose(0, 3, 1, 2)
    if layer.kind == "flatten":
        c, h, w = layer.attrs["shape"]
        return a.reshape(len(a), h, w, c).transpose(0, 3, 1, 2).reshape(len(a), -1)
    return a


def onnx_providers(device: str, allow_tf32: bool = False) -> list:
    """ONNX Runtime providers for ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``auto``);
    see :func:`crossmodal.runtime.ort_session.choose_providers`."""
    import onnxruntime as ort

    from crossmodal.runtime.ort_session import choose_providers
    return choose_providers(device, list(ort.get_available_providers()), allow_tf32=allow_tf32)


def onnx_session(source, device: str = "cpu", allow_tf32: bool = False, *, threads: int | None = None,
                 spinning: bool | None = None, **options):
    """An InferenceSession on ``source`` (path or serialized bytes); returns (session, providers used).

    :func:`crossmodal.runtime.ort_session.open_session` does the work: with ``auto`` a
    GPU is kept only after a warm-up run succeeded on it, else the CPU; ``cuda`` without
    a working CUDA provider is an error. ``options``: ``trt``, ``precision``, ``trt_cache``.
    """
    from crossmodal.runtime.ort_session import open_session

    sess, info = open_session(source, device, allow_tf32=allow_tf32, threads=threads, spinning=spinning,
                              **options)
    return sess, info.providers


def onnx_layer_outputs(proto, graph) -> dict[str, str]:
    """IR layer name → the ONNX tensor holding its output (a dropout, which has no node,
    maps to its input's tensor)."""
    from crossmodal.emitters.to_onnx import layer_tensors

    tensors = layer_tensors(proto)
    mapping: dict[str, str] = {}
    for layer in graph.layers:
        if layer.name in tensors:
            mapping[layer.name] = tensors[layer.name]
        elif layer.kind == "dropout" and layer.inputs[0] in mapping:
            mapping[layer.name] = mapping[layer.inputs[0]]
    return mapping


def add_graph_outputs(proto, tensors) -> None:
    """Append ``tensors`` (names) to ``proto``'s graph outputs, in order, skipping present ones."""
    import onnx

    existing = {o.name for o in proto.graph.output}
    for t in dict.fromkeys(tensors):
        if t not in existing:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))


def onnx_engine(model_path: Path, graph, device: str = "cpu", allow_tf32: bool = False,
                label: str = "onnx", proto=None, precision: str = "fp32", cache_dir=None) -> Engine:
    """An ONNX model, with every IR layer's tensor added as an extra graph output.

    ``precision="fp16"``: the cached fp16 model beside ``model_path``
    (:func:`~crossmodal.runtime.precision.fp16_onnx`), its layers exposed through
    float32 casts."""
    import onnx
    import onnxruntime as ort

    from crossmodal.runtime import precision as P

    precision = P.check_precision(precision)
    if P.unsupported("onnx", precision):
        raise InputError(P.unsupported("onnx", precision))
    if precision == "fp16":
        model_path = P.fp16_onnx(Path(model_path).parent, cache_dir)
        proto = None
    if proto is None:
        try:
            proto = onnx.load(str(model_path))
        except Exception as exc:  # DecodeError and friends
            raise InputError(f"not a readable ONNX model ({exc.__class__.__name__})", model_path) from None
    mapping = onnx_layer_outputs(proto, graph)
    if precision == "fp16":
        outputs = P.add_float_outputs(proto, mapping.values())
        mapping = {l: outputs[t] for l, t in mapping.items()}
    else:
        add_graph_outputs(proto, mapping.values())
    sess, providers = onnx_session(proto.SerializeToString(), device, allow_tf32)
    input_name = sess.get_inputs()[0].name

    def run(x, layers):
        wanted = [l for l in layers if l in mapping]
        names = list(dict.fromkeys(mapping[l] for l in wanted))
        outs = dict(zip(names, sess.run(names, {input_name: np.ascontiguousarray(x, np.float32)})))
        return {l: outs[mapping[l]] for l in wanted}
    dev = "cuda" if providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "cpu"
    return Engine(label, run, set(mapping), dev, {"onnxruntime": ort.__version__, "providers": providers,
                                                 "allow_tf32": allow_tf32, "precision": precision,
                                                 "model": Path(model_path).name}, path=str(model_path))


def tf2onnx_engine(keras_path: Path, graph, opset: int = 17) -> Engine:
    """An independent ONNX path: the saved Keras model converted by tf2onnx (a cross-check).

    Its tensors follow TensorFlow's layout (NHWC), so only flat outputs (dense layers,
    logits) are compared. Needs far more memory than the direct emitter on VGG16.
    """
    import keras
    import tensorflow as tf

    if not hasattr(np, "product"):  # tf2onnx 1.17 calls np.product, removed in NumPy 2
        np.product = np.prod  # type: ignore[attr-defined]
    import tf2onnx

    from crossmodal.emitters.to_keras import keras_outputs

    annotate(graph)
    kmodel = keras.saving.load_model(keras_path, safe_mode=True, compile=False)
    flat = {ir: k for ir, k in keras_outputs(graph).items() if graph.layer(ir).kind in ("dense", "relu", "dropout")
            and _has_layer(kmodel, k) and len(kmodel.get_layer(k).output.shape) == 2}
    if not flat:
        raise InputError("has no flat (dense) layer this IR maps to", keras_path)
    knames = list(dict.fromkeys(flat.values()))
    sub = keras.Model(kmodel.input, [kmodel.get_layer(k).output for k in knames])
    c, h, w = graph.input.shape
    spec = (tf.TensorSpec((None, h, w, c), tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(sub, input_signature=spec, opset=opset)
    sess, providers = onnx_session(proto.SerializeToString(), "cpu")
    out_names = [o.name for o in sess.get_outputs()]

    def run(x, layers):
        outs = dict(zip(knames, sess.run(out_names, {sess.get_inputs()[0].name: np.ascontiguousarray(
            x.transpose(0, 2, 3, 1), np.float32)})))
        return {l: outs[flat[l]] for l in layers if l in flat}
    return Engine("tf2onnx", run, set(flat), "cpu", {"tf2onnx": tf2onnx.__version__, "providers": providers},
                  path=str(keras_path))


def available(names: Iterable[str]) -> list[str]:
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise InputError(f"unknown engine(s) {unknown}; choose from {list(ENGINES)}")
    return list(names)
