"""Fine-tuning throughput, shared by ``bench_finetune.py`` (CPU) and ``gpu_check.py`` (a lent GPU).

* :func:`make_net` — the fine-tuning module (:func:`crossmodal.evaluate.finetune.net.build`) of a
  full-size network with seeded random weights, built in memory (VGG16-Places365 or ResNet-50);
* :func:`tool_rate` — images/s of the tool's training loop
  (:func:`crossmodal.evaluate.finetune.loop.train_epoch`) over pre-decoded batches;
* :func:`bare_rate` — images/s of a hand-written PyTorch loop (zero_grad, forward under autocast,
  cross-entropy, backward, step) over the same module and the same batches.

The two arms alternate (bare, tool, bare, tool …) and each keeps its best pass, so drift on a shared
machine hits both.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: per network: the first layer of the last block, and the whole network's first layer
TRAIN_FROM = {"vgg16": ("conv5_1", "conv1_1"), "resnet50": ("layer4.0.conv1", "conv1")}


def random_ir(arch: str):
    """A full-size IR with seeded random weights (no file written)."""
    from crossmodal.ir.graph import IRModel
    if arch == "vgg16":
        from crossmodal.models.synthetic import random_state_dict
        from crossmodal.models.vgg import build_graph, create_spec
        spec = create_spec("vgg16_places365")
        return IRModel(build_graph(spec), random_state_dict(spec, seed=0))
    from crossmodal.models import registry
    from crossmodal.models.synthetic_zoo import create_spec, random_ir_weights
    fam, spec = create_spec(arch)
    return IRModel(registry.family(fam).build_graph(spec), random_ir_weights(fam, spec, seed=0))


def make_net(arch: str, train_from: str, device: str = "cpu", classes: int = 205):
    """The trainable module (new head of ``classes`` rows) on ``device``; channels-last on a GPU."""
    import numpy as np
    import torch
    from crossmodal.evaluate.finetune.net import build, head_name, layer_index
    ir = random_ir(arch)
    head = head_name(ir.graph)
    d = ir.weights[f"{head}.weight"].shape[1]
    rng = np.random.default_rng(0)
    net = build(ir, first=layer_index(ir.graph, train_from),
                head=((rng.standard_normal((classes, d)) * 0.01).astype(np.float32), np.zeros(classes, np.float32)))
    del ir
    dev = torch.device(device)
    net.to(dev)
    if dev.type == "cuda":
        net.to(memory_format=torch.channels_last)
    return net


def batches(n: int, batch: int, device: str, size: int = 224, classes: int = 205, seed: int = 0) -> list[dict]:
    """``n`` pre-decoded batches (host memory, as a data loader hands them over)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    return [{"x": torch.randn(batch, 3, size, size, generator=g), "y": torch.randint(0, classes, (batch,), generator=g),
             "m": torch.zeros(batch, dtype=torch.int64), "idx": torch.arange(batch), "failed": []} for _ in range(n)]


def _sync(device) -> None:
    import torch
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def tool_rate(net, data: list[dict], *, device: str, precision: str = "fp32", lr: float = 1e-3) -> float:
    """Images/s of the tool's loop over ``data`` (one pass)."""
    import torch
    from crossmodal.evaluate.finetune import ddp
    from crossmodal.evaluate.finetune.loop import Trainer, make_optimizer, train_epoch
    from crossmodal.evaluate.finetune.settings import Settings
    s = Settings(model_dir="-", modalities=["x"], out_dir="-", lr=lr, precision=precision, sched="none")
    dev = torch.device(device)
    if not hasattr(net, "_bench_opt"):
        net._bench_opt = make_optimizer(net, s, net.h_index)
    tr = Trainer(net, net, net._bench_opt, torch.amp.GradScaler(dev.type, enabled=precision == "fp16"), s, dev,
                 ddp.World(), len(data), channels_last=dev.type == "cuda")
    _sync(device)
    t0 = time.perf_counter()
    sums = train_epoch(tr, data, epoch=0)
    _sync(device)
    return sums["count"] / (time.perf_counter() - t0)


def bare_rate(net, data: list[dict], *, device: str, precision: str = "fp32", lr: float = 1e-3) -> float:
    """Images/s of a plain hand-written loop over the same module and batches."""
    import contextlib
    import torch
    import torch.nn.functional as F
    dev = torch.device(device)
    if not hasattr(net, "_bare_opt"):
        net._bare_opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    opt = net._bare_opt
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    net.train()
    _sync(device)
    t0, n = time.perf_counter(), 0
    for b in data:
        x = b["x"].to(dev, non_blocking=True)
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        y = b["y"].to(dev, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype) if dtype else contextlib.nullcontext():
            out = net(x)
        loss = F.cross_entropy(out.float(), y)
        loss.backward()
        opt.step()
        n += len(y)
    _sync(device)
    return n / (time.perf_counter() - t0)


def compare(net, data, *, device: str, precision: str = "fp32", rounds: int = 2) -> dict:
    """Alternating passes of both loops (a warm-up pass of each first); the best of each."""
    bare_rate(net, data[:1], device=device, precision=precision)
    tool_rate(net, data[:1], device=device, precision=precision)
    tool, bare = [], []
    for _ in range(rounds):
        bare.append(bare_rate(net, data, device=device, precision=precision))
        tool.append(tool_rate(net, data, device=device, precision=precision))
    return {"tool_images_per_s": max(tool), "bare_images_per_s": max(bare), "ratio": max(tool) / max(bare)}
