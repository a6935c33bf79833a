"""Grad-CAM++ against an independent reference written here from the paper (Chattopadhay et al., WACV
2018, the closed form for an exponential output Y^c = exp(S^c), Eq. 19-20), on a network whose head is
not a global pool: a plain ``torch.nn`` VGG (``plain_vgg.py``, flatten + three dense layers) whose
gradients come from autograd on that module, not from crossmodal's torch module or its Grad-CAM code.

    α_ij^kc = (∂S^c/∂A^k_ij)² / (2 (∂S^c/∂A^k_ij)² + Σ_ab A^k_ab (∂S^c/∂A^k_ij)³)
    w_k^c   = Σ_ij α_ij^kc · ReLU(∂Y^c/∂A^k_ij),   ∂Y^c/∂A = exp(S^c) ∂S^c/∂A
    L^c     = ReLU(Σ_k w_k^c A^k)

exp(S^c) is one positive factor per map, so maps are compared after scaling each to its maximum."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from plain_vgg import TINY3, plain_vgg, write_plain_checkpoint


def paper_gradcam_pp(module, x: torch.Tensor, layer_index: int, classes: np.ndarray) -> np.ndarray:
    """(B, h, w) maps of ``classes`` (B,) on ``module.features[layer_index]``'s output, by the formulas."""
    seen = {}
    handle = module.features[layer_index].register_forward_hook(lambda m, i, o: seen.__setitem__("A", o))
    try:
        S = module(x.requires_grad_(True))
    finally:
        handle.remove()
    A = seen["A"]
    maps = []
    for b, c in enumerate(classes):
        (dS,) = torch.autograd.grad(S[b, c], A, retain_graph=True)
        dS, Ab = dS[b].double(), A[b].detach().double()                 # (K, h, w)
        num = dS ** 2
        den = 2 * dS ** 2 + Ab.sum(dim=(1, 2), keepdim=True) * dS ** 3
        alpha = torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)), torch.zeros_like(den))
        dY = torch.exp(S[b, c].detach().double()) * dS
        w = (alpha * torch.relu(dY)).sum(dim=(1, 2))                     # (K,)
        maps.append(torch.relu((w[:, None, None] * Ab).sum(0)).numpy())
    return np.stack(maps)


def _scaled(m: np.ndarray) -> np.ndarray:
    top = m.reshape(len(m), -1).max(axis=1)
    return m / np.where(top > 0, top, 1)[:, None, None]


@pytest.mark.parametrize("layer, index", [("relu3_1", 9), ("relu2_1", 6)])
def test_gradcam_pp_equals_the_papers_formulas_on_a_flatten_dense_head(tmp_path, layer, index):
    import crossmodal
    from crossmodal.convert.pipeline import convert
    from crossmodal.explain.cam import compute_maps

    module = plain_vgg(seed=1)  # every unit of both layers alive on these inputs
    ckpt = write_plain_checkpoint(module, tmp_path / "plain.pth", "torchvision")
    convert(ckpt, tmp_path / "m", targets=["ir"], input_size=TINY3["input"][1:])
    x = np.random.default_rng(2).standard_normal((4, *TINY3["input"])).astype(np.float32)
    with crossmodal.load_model(tmp_path / "m", backend="torch", device="cpu") as m:
        method, chosen, head = m.explain_setup("gradcam++", layer)
        assert head is None and chosen == layer  # flatten + dense: no CAM head
        mod, _ = m.torch_module()
        ours, targets, _ = compute_maps(mod, m.graph, torch.from_numpy(x), chosen, method, top=1)
    ref = paper_gradcam_pp(module, torch.from_numpy(x), index, targets[:, 0])
    assert (ref.reshape(len(ref), -1).max(axis=1) > 0).all()  # every map has evidence to compare
    np.testing.assert_allclose(_scaled(ours[:, 0]), _scaled(ref), rtol=1e-4, atol=1e-5)
    # and it is not Grad-CAM: the two weightings differ on this head
    with crossmodal.load_model(tmp_path / "m", backend="torch", device="cpu") as m:
        mod, _ = m.torch_module()
        plain, _, _ = compute_maps(mod, m.graph, torch.from_numpy(x), chosen, "gradcam", top=1)
    assert np.abs(_scaled(plain[:, 0]) - _scaled(ref)).max() > 1e-2
