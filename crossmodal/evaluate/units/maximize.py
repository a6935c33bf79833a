"""Activation maximisation: what input a unit wants, by regularised gradient ascent on the input.

The regularised recipe of Yosinski et al. 2015 ("Understanding neural networks through deep
visualization"): start from noise (or from an image: the amplified "dream" variant), then repeat

1. jitter: roll the input by a random shift of at most ``jitter`` pixels (capped at an eighth of
   the unit's receptive field), step, roll back;
2. step: ``x += lr · (range / 255) · g / mean|g|`` with ``g`` = ∂ objective / ∂x (``lr`` in grey
   levels of a 0–255 image, whatever the preprocessing's scale);
3. L2 decay: ``x *= 1 − decay``; every ``blur_every`` steps a Gaussian blur of ``blur`` pixels;
4. clip to the range real images take in the network's preprocessing space.

The objective is the unit's mean over the layer's grid (the "channel" objective of Olah et al.
2017: the gradient reaches the input through every position where the layers below are active,
where the centre position alone is often cut off by a ReLU at zero; the top-K's score, the maximum
over positions, rises with it). For a ``relu`` layer the ascent pushes the layer's input (the
pre-activation): a unit at zero after its ReLU has no gradient. Everything
happens in the preprocessing space (what the network reads); the picture is shown de-normalised
(:func:`.geometry.denormalise`). Seeded: the noise and the shifts come from ``numpy`` with ``seed``,
so two runs on the CPU give identical images.

Layouts: ``x`` torch ``(1, C, H, W)`` float32 on the module's device; the returned picture
``(H, W, 3)`` uint8.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossmodal.errors import InputError
from crossmodal.evaluate.units.geometry import denormalise
from crossmodal.ir.graph import Graph


@dataclass(frozen=True)
class Settings:
    steps: int = 64
    lr: float = 4.0
    decay: float = 1e-3
    blur: float = 0.5
    blur_every: int = 4
    jitter: int = 8
    seed: int = 0
    noise: float = 10.0   # std of the starting noise, in 0–255 pixel units, around mid grey


def pixel_to_input(pixels: np.ndarray, graph: Graph, mean_image: np.ndarray | None = None) -> np.ndarray:
    """RGB pixels ``(H, W, 3)`` float in 0–255 → one preprocessed sample ``(C, H, W)`` float32."""
    spec = graph.preprocess
    x = np.asarray(pixels, np.float32)
    if spec.value_range == "0-1":
        x = x / 255.0
    if spec.channel_order == "L":
        x = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    elif spec.channel_order == "BGR":
        x = x[..., ::-1]
    x = np.ascontiguousarray(x.transpose(2, 0, 1))
    c = x.shape[0]
    if mean_image is not None:
        from crossmodal.data.images import crop_mean_image
        x = x - crop_mean_image(mean_image, tuple(spec.crop), c)
    else:
        x = x - np.asarray(spec.mean, np.float32).reshape(c, 1, 1)
    return (x / np.asarray(spec.std, np.float32).reshape(c, 1, 1)).astype(np.float32)


def target_layer(graph: Graph, layer: str) -> str:
    """The layer the ascent pushes: a ``relu``'s input (its pre-activation), else ``layer``."""
    l = graph.layer(layer)
    if l.kind == "relu" and l.inputs[0] != graph.input.name:
        return l.inputs[0]
    return layer


def maximize(module, graph: Graph, layer: str, unit: int, *, settings: Settings = Settings(),
             start: np.ndarray | None = None, mean_image: np.ndarray | None = None,
             window: int | None = None, device="cpu") -> dict:
    """Ascend ``unit`` of ``layer`` (module docstring). ``module``: the IR's torch module
    (:func:`~crossmodal.emitters.to_torch.build_torch`, parameters frozen); ``start``: a preprocessed
    ``(C, H, W)`` image, else noise; ``window``: the unit's receptive field (caps the jitter).

    Returns ``{"image": (H, W, 3) uint8, "objective": [first, last], "max": [first, last]}`` —
    ``max``: the unit's maximum over positions at ``layer`` (the score the top-K ranks by)."""
    import torch

    s = settings
    if s.steps < 1:
        raise InputError(f"--steps must be at least 1, not {s.steps}")
    rng = np.random.default_rng(s.seed)
    h, w = (int(v) for v in graph.preprocess.crop)
    if start is None:
        noise = 128.0 + s.noise * rng.standard_normal((h, w, 3))
        start = pixel_to_input(noise, graph, mean_image)
    x = torch.from_numpy(np.ascontiguousarray(start, np.float32))[None].to(device)
    lo = torch.from_numpy(pixel_to_input(np.zeros((h, w, 3)), graph, mean_image))[None].to(device)
    hi = torch.from_numpy(pixel_to_input(np.full((h, w, 3), 255.0), graph, mean_image))[None].to(device)
    lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
    scale = (hi - lo) / 255.0
    push = target_layer(graph, layer)
    jitter = max(0, min(int(s.jitter), (window or 10 ** 6) // 8))
    kernel = _gaussian(s.blur, x.shape[1], device) if s.blur > 0 else None
    stop = max((layer, push), key=[l.name for l in graph.layers].index)

    def measure(inp):
        with torch.no_grad():
            out = module.forward_layers(inp, {layer, push}, stop=stop)
        return float(out[push][0, unit].mean()), float(out[layer][0, unit].max())

    first = measure(x)
    for step in range(s.steps):
        dy, dx = (int(v) for v in rng.integers(-jitter, jitter + 1, size=2)) if jitter else (0, 0)
        xs = torch.roll(x, shifts=(dy, dx), dims=(2, 3)).detach().requires_grad_(True)
        with torch.enable_grad():
            obj = module.forward_layers(xs, {push}, stop=push)[push][0, unit].mean()
            (g,) = torch.autograd.grad(obj, xs)
        g = torch.roll(g, shifts=(-dy, -dx), dims=(2, 3))
        with torch.no_grad():
            x = x + s.lr * scale * g / (g.abs().mean() + 1e-8)
            x = x * (1.0 - s.decay)
            if kernel is not None and (step + 1) % max(1, s.blur_every) == 0:
                x = torch.nn.functional.conv2d(x, kernel, padding=kernel.shape[-1] // 2, groups=x.shape[1])
            x = torch.maximum(torch.minimum(x, hi), lo)
    last = measure(x)
    picture = denormalise(x.detach().cpu().numpy(), graph.preprocess, mean_image)[0]
    return {"image": picture, "objective": [first[0], last[0]], "max": [first[1], last[1]],
            "pushed": push, "steps": s.steps, "seed": s.seed}


def _gaussian(sigma: float, channels: int, device):
    import torch

    radius = max(1, int(round(2 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-t ** 2 / (2 * sigma ** 2))
    k2 = np.outer(k, k)
    k2 /= k2.sum()
    return torch.from_numpy(np.tile(k2[None, None], (channels, 1, 1, 1)).astype(np.float32)).to(device)
