"""The IR's tensors in a PyTorch module (:func:`~crossmodal.emitters.to_torch.build_torch`), on the CPU or a GPU.

``precision`` fp16/bf16 runs it under ``torch.autocast`` (outputs returned as float32). The module
(``engine.module``, parameters frozen, on ``engine.torch_device``) also serves what needs
gradients through the network: Grad-CAM and Grad-CAM++ (:mod:`crossmodal.explain.cam`).
"""
from __future__ import annotations

from typing import Sequence

from crossmodal.ir.graph import IRModel
from crossmodal.runtime.devices import set_torch_precision, torch_device
from crossmodal.runtime.engine import Engine
from crossmodal.runtime.precision import check_precision, torch_autocast


class TorchEngine(Engine):
    """An IR model as a torch module (module docstring)."""

    name = "torch"

    def __init__(self, model: IRModel, outputs: Sequence[str] | str, *, device: str = "auto",
                 precision: str = "fp32", allow_tf32: bool = False, threads: int | None = None,
                 label: str = "torch") -> None:
        import torch

        from crossmodal.emitters.to_torch import build_torch

        self.name = label
        self.precision = check_precision(precision)
        if threads:
            torch.set_num_threads(int(threads))
        set_torch_precision(allow_tf32)
        self.torch_device = torch_device(device)
        self.module = build_torch(model).to(self.torch_device)
        for p in self.module.parameters():
            p.requires_grad_(False)
        dev = self.torch_device
        super().__init__(model.graph, outputs, [l.name for l in model.graph.layers],
                         device=f"cuda:{dev.index or 0}" if dev.type == "cuda" else "cpu")
        self.allow_tf32 = allow_tf32
        self.device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
        self._torch = torch
        # graph order: a run stops at the last layer it was asked for (nothing after it is computed)
        self._order = {l.name: i for i, l in enumerate(model.graph.layers)}

    def _run(self, batch, layers):
        torch = self._torch
        with torch.inference_mode(), torch_autocast(self.torch_device.type, self.precision):
            out = self.module.forward_layers(torch.from_numpy(batch).to(self.torch_device), set(layers),
                                             stop=max(layers, key=self._order.__getitem__, default=None))
        return {k: v.float().cpu().numpy() for k, v in out.items()}

    def _describe(self) -> dict:
        return {"precision": self.precision,
                "autocast": self.precision != "fp32", "device_name": self.device_name,
                "threads": self._torch.get_num_threads(), "allow_tf32": self.allow_tf32,
                "torch": self._torch.__version__}

    def close(self) -> None:
        self.module = None

