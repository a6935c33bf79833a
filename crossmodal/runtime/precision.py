"""Reduced precision (fp16, bf16) for every engine and backend, and the fp16 ONNX model cache.

``precision`` is one of :data:`PRECISIONS`:

* ``fp32`` — full float32 everywhere (TF32 stays off unless asked for);
* ``fp16`` — ONNX Runtime runs ``model.fp16.onnx``, made from ``model.onnx`` by
  ``onnxconverter-common`` (:func:`onnxconverter_common.float16.convert_float_to_float16`
  with ``keep_io_types=True``: the input stays float32 (N, C, H, W) and every output
  float32, cast inside the graph); PyTorch runs under ``torch.autocast(dtype=float16)``;
  Keras under the ``mixed_float16`` policy (float32 variables, float16 compute);
* ``bf16`` — PyTorch under ``torch.autocast(dtype=bfloat16)``, Keras under
  ``mixed_bfloat16``. ONNX Runtime is refused (:func:`unsupported`): its CPU
  provider has almost no bf16 kernels and the converter makes no bf16 models.

Whatever the precision, the arrays an engine returns are float32, in the IR's layouts.

**The fp16 model cache** (:func:`fp16_onnx`). The fp16 model is written beside the
fp32 one (``<model>/model.fp16.onnx``) or, when the model folder is read-only, in the
cache folder (``<cache>/fp16/<key16>/model.fp16.onnx``). Its key is the fp32 model's
fingerprint: the SHA-256 of ``model.onnx``, the IR fingerprint from ``model.json``
(:meth:`IRModel.fingerprint`), the converter's version and options. The key is
recorded in the fp16 model's ``metadata_props`` (``crossmodal.fp16_key``) and in a
sidecar ``model.fp16.onnx.json``; a model whose sidecar key differs (the fp32 model
was re-converted) is rebuilt. Both files are written atomically (temporary name,
then rename), the model first, so a crash leaves a stale key, never a wrong model.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable

from crossmodal.errors import InputError

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
FP16_NAME = "model.fp16.onnx"
FP16_FORMAT = 1

#: the parity gate of reduced precision against the fp32 reference (``verify --precision``)
REDUCED_TOLERANCE = 1e-2          # max|Δ| / max|ref| on logits and fc7
REDUCED_MIN_TOP1_AGREEMENT = 0.99  # top-1 agreement with the reference on the sample


def check_precision(precision: str) -> str:
    """``fp32`` / ``fp16`` / ``bf16`` (case-insensitive; ``float16``, ``half``, ``bfloat16`` accepted)."""
    p = str(precision).strip().lower()
    p = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}.get(p, p)
    if p not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use fp32, fp16 or bf16")
    return p


def unsupported(engine: str, precision: str) -> str | None:
    """Why ``engine`` (onnx, torch, keras, ir, tf2onnx) cannot run at ``precision``; None when it can."""
    precision = check_precision(precision)
    if precision == "fp32":
        return None
    if engine == "onnx" and precision == "bf16":
        return ("ONNX Runtime is not run at bf16: its CPU provider has almost no bf16 kernels and "
                "onnxconverter-common makes fp16 models only; use --precision fp16 for ONNX, or "
                "--backend torch / keras (autocast / mixed_bfloat16) for bf16")
    if engine in ("ir", "tf2onnx"):
        return f"{engine} runs in full precision only (a reference / cross-check)"
    return None


def reduced_gate(images: int) -> int:
    """The most top-1 disagreements that keep agreement ≥ :data:`REDUCED_MIN_TOP1_AGREEMENT`
    on ``images`` inputs: ``floor(images × 1 %)`` (0 below 100 images)."""
    return int(images * (1 - REDUCED_MIN_TOP1_AGREEMENT) + 1e-9)


# --------------------------------------------------------------------------- PyTorch, Keras
def torch_dtype(precision: str):
    import torch
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[check_precision(precision)]


def torch_autocast(device_type: str, precision: str):
    """``torch.autocast(device_type, dtype)`` for fp16 / bf16; a null context for fp32."""
    import torch
    precision = check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch_dtype(precision))


def keras_policy(precision: str) -> str:
    return {"fp32": "float32", "fp16": "mixed_float16", "bf16": "mixed_bfloat16"}[check_precision(precision)]


def keras_with_precision(kmodel, precision: str):
    """``kmodel`` rebuilt with every layer under the mixed policy of ``precision`` (float32
    variables, fp16/bf16 compute), the same weights; ``kmodel`` itself for fp32.

    A saved Keras model records each layer's dtype policy, so the global policy
    (``keras.mixed_precision.set_global_policy``) would not reach it: the config is
    rewritten instead. The input layer stays float32.
    """
    policy = keras_policy(precision)
    if policy == "float32":
        return kmodel
    config = kmodel.get_config()
    for layer in config["layers"]:
        if layer.get("class_name") == "InputLayer":
            continue
        layer["config"]["dtype"] = policy
    clone = kmodel.__class__.from_config(config)
    clone.set_weights(kmodel.get_weights())
    return clone


# --------------------------------------------------------------------------- fp16 ONNX
def converter_version() -> str:
    try:
        import onnxconverter_common
    except ImportError:
        raise InputError("fp16 ONNX models need onnxconverter-common (pip install onnxconverter-common)") from None
    return getattr(onnxconverter_common, "__version__", "?")


def fp16_key(model_dir: str | os.PathLike) -> dict:
    """The fp16 model's key parts: the fp32 ``model.onnx``'s SHA-256, the IR fingerprint, the converter."""
    from crossmodal.ir.graph import IRModel
    from crossmodal.ir.store import is_ir_dir, load_graph
    from crossmodal.io.hashing import file_sha256

    model_dir = Path(model_dir)
    src = model_dir / "model.onnx"
    if not src.is_file():
        raise InputError("no model.onnx in the model folder to make the fp16 model from; convert with "
                         "--to onnx", model_dir)
    ir_fp = None
    if is_ir_dir(model_dir):
        graph = load_graph(model_dir)
        if all(t.sha256 for l in graph.layers for t in l.tensors.values()):
            ir_fp = IRModel(graph, {}).fingerprint()
    return {"format": FP16_FORMAT, "source": "model.onnx", "source_sha256": file_sha256(src),
            "ir_fingerprint": ir_fp, "converter": f"onnxconverter-common {converter_version()}",
            "keep_io_types": True}


def key_digest(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def default_model_cache(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where derived models go when the model folder is read-only: ``cache_dir``, else
    ``$CROSSMODAL_CACHE``, else ``$XDG_CACHE_HOME/crossmodal`` (``~/.cache/crossmodal``)."""
    if cache_dir:
        return Path(cache_dir)
    if os.environ.get("CROSSMODAL_CACHE"):
        return Path(os.environ["CROSSMODAL_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "crossmodal"


def fp16_location(model_dir: str | os.PathLike, digest: str, cache_dir=None) -> Path:
    """``<model>/model.fp16.onnx`` when the model folder is writable, else ``<cache>/fp16/<key16>/…``."""
    model_dir = Path(model_dir)
    if _writable(model_dir):
        return model_dir / FP16_NAME
    return default_model_cache(cache_dir) / "fp16" / digest[:16] / FP16_NAME


def cached_fp16_key(path: Path) -> str | None:
    """The key digest recorded in ``path``'s sidecar, or None (absent, unreadable)."""
    return _sidecar(path).get("key_sha256")


def _sidecar(path: Path) -> dict:
    try:
        data = json.loads(Path(f"{path}.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached_fp16_intact(path: Path) -> bool:
    """Whether the cached fp16 model is the file its sidecar recorded (its own SHA-256): a model
    edited, truncated or replaced after it was made is rebuilt, not trusted for its key alone."""
    from crossmodal.io.hashing import file_sha256
    recorded = _sidecar(path).get("sha256")
    return bool(recorded) and path.is_file() and file_sha256(path) == recorded


def convert_fp16(proto):
    """The fp32 ``onnx.ModelProto`` → an fp16 one with float32 inputs and outputs (in memory)."""
    converter_version()
    from onnxconverter_common import float16
    return float16.convert_float_to_float16(proto, keep_io_types=True)


def fp16_onnx(model_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
              log: Callable[[str], None] | None = None) -> Path:
    """The path of the fp16 ONNX model of ``model_dir``'s ``model.onnx``, built when absent
    or stale (module docstring)."""
    import onnx

    from crossmodal.io.atomic import atomic_path, write_text_atomic
    from crossmodal.io.hashing import file_sha256

    log = log or (lambda msg: None)
    model_dir = Path(model_dir)
    parts = fp16_key(model_dir)
    digest = key_digest(parts)
    path = fp16_location(model_dir, digest, cache_dir)
    if path.is_file() and cached_fp16_key(path) == digest:
        if cached_fp16_intact(path):
            return path
        log(f"the cached fp16 model {path} is not the file that was made (its SHA-256 differs): remaking it")
    log(f"making the fp16 ONNX model {path} from model.onnx ({parts['converter']}, fp32 inputs/outputs)")
    try:
        proto = onnx.load(str(model_dir / "model.onnx"))
    except Exception as exc:  # DecodeError and friends
        raise InputError(f"not a readable ONNX model ({exc.__class__.__name__})", model_dir / "model.onnx") from None
    half = convert_fp16(proto)
    del proto
    meta = {p.key: p for p in half.metadata_props}
    for key, value in (("crossmodal.precision", "fp16"), ("crossmodal.fp16_key", digest),
                       ("crossmodal.fp16_of", json.dumps(parts, sort_keys=True))):
        if key in meta:
            meta[key].value = value
        else:
            half.metadata_props.add(key=key, value=value)
    Path(f"{path}.json").unlink(missing_ok=True)  # no valid key while the model changes
    with atomic_path(path) as tmp:
        onnx.save(half, str(tmp))
        made = file_sha256(tmp)
    write_text_atomic(Path(f"{path}.json"), json.dumps({"key_sha256": digest, "key": parts, "sha256": made},
                                                       indent=2))
    return path


def add_float_outputs(proto, tensors: Iterable[str]) -> dict[str, str]:
    """Expose ``tensors`` of a (possibly fp16) graph as float32 graph outputs, each through a
    ``Cast`` node; returns tensor → output name. Tensors that are already graph outputs
    (float32 with ``keep_io_types``) are returned as they are."""
    import onnx

    existing = {o.name for o in proto.graph.output}
    names: dict[str, str] = {}
    for t in dict.fromkeys(tensors):
        if t in existing:
            names[t] = t
            continue
        out = f"{t}/float32"
        proto.graph.node.append(onnx.helper.make_node("Cast", [t], [out], name=f"cast_out_{t}",
                                                      to=onnx.TensorProto.FLOAT))
        proto.graph.output.append(onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
        names[t] = out
    return names
