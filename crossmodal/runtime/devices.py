"""Devices: the names a user gives (``auto``, ``cpu``, ``cuda``, ``cuda:N``) and what each framework makes
of them, with reduced-precision matrix maths (TF32) off unless asked for.

``auto`` takes a GPU only when one really works (a kernel ran on it), else the CPU; ``cuda`` /
``cuda:N`` is an error where that GPU cannot be used.
"""
from __future__ import annotations

import re

from crossmodal.errors import InputError

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(device: str) -> str:
    """Validate ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N``; returns it lower-cased."""
    dev = str(device).strip().lower()
    if not _DEVICE.match(dev):
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    return dev


def cuda_index(device: str) -> int:
    """``cuda:N`` → N; ``cuda`` / ``auto`` → 0."""
    return int(device.split(":")[1]) if ":" in device else 0


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


def tf_device(device: str, num_gpus: int) -> tuple[str, str]:
    """``cpu`` / ``cuda[:N]`` / ``auto`` → (TensorFlow device, our device name):
    ``("/CPU:0", "cpu")`` or ``("/GPU:N", "cuda:N")``; ``auto`` takes GPU 0 when
    TensorFlow sees one. A GPU TensorFlow does not see is an error."""
    if device.startswith("cuda"):
        index = cuda_index(device)
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
