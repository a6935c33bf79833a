"""Class activation maps on the IR's PyTorch module: CAM, Grad-CAM, Grad-CAM++.

Layouts: the network input is ``(B, 3, H, W)`` float32 (preprocessed, NCHW); a
layer's activations ``A`` are ``(B, C, h, w)``; maps on the layer's grid are
``(B, K, h, w)`` (K target classes per image); :func:`upsample_normalise` brings
them to the input crop ``(B, K, H, W)`` in ``[0, 1]``.

* **CAM** (Zhou et al. 2016) needs the head "global average pooling → (flatten /
  dropout) → one dense = the logits" (:func:`~crossmodal.ir.heads.find_pooled_head`): map^c = Σ_k w_ck A^k
  with ``w`` the dense weight (K_all, C), no bias, no ReLU (the Places365 demo also
  zeroes negative weights; we do not: that is not CAM's definition).
* **Grad-CAM** (Selvaraju et al. 2017): α_k^c = mean_ij ∂y^c/∂A^k_ij with y^c the
  pre-softmax logit, map = ReLU(Σ_k α_k^c A^k). On a CAM head it equals
  ReLU(CAM) / (h·w).
* **Grad-CAM++** (Chattopadhay et al. 2018), in the closed form for an exponential
  score that needs only first-order gradients g = ∂y^c/∂A:
  a_ij = g² / (2 g² + Σ_ab A_ab · g³), w_k = Σ_ij a_ij ReLU(g_ij), map = ReLU(Σ_k w_k A^k).
  It weighs every positive location rather than averaging the gradient, so a scene
  with several instances of its evidence (beds, seats, windows) is lit at all of
  them rather than at the strongest — chosen over Score-CAM, which costs one forward
  pass per channel (512 on VGG16's conv5_3).

Gradients: the module's parameters never require grad; a forward hook swaps the
chosen layer's output for a detached leaf that does, so autograd records only the
layers after it (memory of the prefix is freed at once).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from crossmodal.ir.graph import Graph
from crossmodal.ir.heads import PooledHead
from crossmodal.errors import InputError

METHODS: tuple[str, ...] = ("auto", "cam", "gradcam", "gradcam++")


def layer_shapes(module, graph: Graph, device="cpu") -> dict[str, tuple[int, ...]]:
    """Per-sample output shape of every layer (``(C, h, w)`` for maps), from one forward
    pass of a zero input through ``module`` (:func:`~crossmodal.emitters.to_torch.build_torch`);
    works for any layer kind the emitter knows."""
    import torch
    x = torch.zeros((1, *graph.input.shape), dtype=torch.float32, device=device)
    with torch.inference_mode():
        out = module.forward_layers(x, None)
    return {name: tuple(int(v) for v in t.shape[1:]) for name, t in out.items()}


def resolve_method(method: str, head: PooledHead | None, layer: str | None) -> str:
    """``auto`` → ``cam`` on a CAM head (when no other layer was asked for), else ``gradcam``."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method == "cam":
        if head is None:
            raise InputError("--method cam needs a network ending in global average pooling + one dense "
                             "layer (ResNet, DenseNet, GoogLeNet); use --method gradcam")
        if layer is not None and layer != head.features:
            raise InputError(f"CAM is defined on the pooled layer {head.features!r} only; "
                             f"use --method gradcam for {layer!r}")
    if method == "auto":
        return "cam" if head is not None and layer in (None, head.features) else "gradcam"
    return method


def target_classes(logits: np.ndarray, classes: Sequence[int] | np.ndarray | None, top: int) -> np.ndarray:
    """``(B, K)`` int64 target class indices: ``classes`` (K,) for every image, or ``(B, K)``
    per image (−1: that image's top-1), else each image's top-``top``."""
    order = np.argsort(-logits, axis=1, kind="stable")
    if classes is None:
        return order[:, :top].astype(np.int64)
    arr = np.asarray(classes, dtype=np.int64)
    arr = np.tile(arr, (logits.shape[0], 1)) if arr.ndim == 1 else arr.copy()
    return np.where(arr < 0, order[:, :1], arr)


def compute_maps(module, graph: Graph, x, layer: str, method: str, *, classes=None,
                 top: int = 1, head: PooledHead | None = None):
    """Maps on ``layer``'s grid for a batch ``x`` (torch ``(B, 3, H, W)`` on the module's device).

    Returns ``(maps, targets, logits)``: ``maps`` float32 ``(B, K, h, w)``, ``targets``
    int64 ``(B, K)`` (see :func:`target_classes`),
    ``logits`` float32 ``(B, num_classes)``, all NumPy.
    """
    import torch

    logits_name = graph.resolve("logits")
    if method == "cam":
        if head is None:
            raise InputError("CAM needs a global-average-pooling head")
        with torch.inference_mode():
            out = module.forward_layers(x, {head.features, logits_name}, stop=logits_name)
        A, y = out[head.features].float(), out[logits_name].float()
        targets = target_classes(y.cpu().numpy(), classes, top)
        w = module.layer(head.dense).weight.detach().float()                 # (K_all, C)
        wt = w[torch.from_numpy(targets).to(w.device)]                         # (B, K, C)
        maps = torch.einsum("bkc,bchw->bkhw", wt, A)
        return maps.cpu().numpy().astype(np.float32), targets, y.cpu().numpy()

    def swap(_mod, _inp, output):
        return output.detach().requires_grad_(True)

    handle = module.layer(layer).register_forward_hook(swap)
    try:
        with torch.enable_grad():
            out = module.forward_layers(x, {layer, logits_name}, stop=logits_name)
            A, y = out[layer], out[logits_name]
            targets = target_classes(y.detach().cpu().numpy(), classes, top)
            tt = torch.from_numpy(targets).to(y.device)
            maps = []
            for j in range(targets.shape[1]):
                score = y.gather(1, tt[:, j:j + 1]).sum()  # each image's score depends on its own A only
                (g,) = torch.autograd.grad(score, A, retain_graph=j < targets.shape[1] - 1)
                maps.append(_combine(A.detach(), g, method))
    finally:
        handle.remove()
    maps = torch.stack(maps, 1)
    return maps.cpu().numpy().astype(np.float32), targets, y.detach().float().cpu().numpy()


def _combine(A, g, method: str):
    """Channel weights from the gradient ``g`` (B, C, h, w) → ReLU(Σ_k w_k A^k), (B, h, w)."""
    import torch
    if method == "gradcam":
        alpha = g.mean(dim=(2, 3))
    elif method == "gradcam++":
        g2, g3 = g.pow(2), g.pow(3)
        denom = 2 * g2 + A.sum(dim=(2, 3), keepdim=True) * g3
        a = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                        torch.zeros_like(denom))
        alpha = (a * torch.relu(g)).sum(dim=(2, 3))
    else:
        raise InputError(f"unknown gradient method {method!r}")
    return torch.relu(torch.einsum("bc,bchw->bhw", alpha, A))


def upsample_normalise(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(B, K, h, w)`` → ``(B, K, H, W)`` float32: bilinear (half-pixel centres, as
    ``F.interpolate(align_corners=False)`` and OpenCV's resize) then min-max per map to
    [0, 1]; a constant map (all zero, e.g. Grad-CAM with no positive evidence) is all zero."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(maps, np.float32))
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
    lo = t.amin(dim=(2, 3), keepdim=True)
    span = t.amax(dim=(2, 3), keepdim=True) - lo
    out = torch.where(span > 0, (t - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                      torch.zeros_like(t))
    return out.numpy().astype(np.float32)
