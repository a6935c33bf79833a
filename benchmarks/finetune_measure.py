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

#: per network: the first layer of the last block, and the whole network's first layer (the tiny ones:
#: gpu_check --smoke)
TRAIN_FROM = {"vgg16": ("conv5_1", "conv1_1"), "resnet50": ("layer4.0.conv1", "conv1"),
              "vgg_tiny3": ("conv3_1", "conv1_1"), "resnet_tiny": ("layer4.0.conv1", "conv1")}


def random_ir(arch: str):
    """An IR with seeded random weights (no file written): ``vgg16`` is VGG16-Places365."""
    from crossmodal.ir.graph import IRModel
    from crossmodal.models.vgg import list_models
    if arch == "vgg16" or arch in list_models():
        from crossmodal.models.synthetic import random_state_dict
        from crossmodal.models.vgg import build_graph, create_spec
        spec = create_spec("vgg16_places365" if arch == "vgg16" else arch)
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
    net.bench_input = tuple(int(v) for v in ir.graph.input.shape)
    del ir
    dev = torch.device(device)
    net.to(dev)
    if dev.type == "cuda":
        net.to(memory_format=torch.channels_last)
    return net


def batches(n: int, batch: int, device: str, shape=(3, 224, 224), classes: int = 205, seed: int = 0) -> list[dict]:
    """``n`` pre-decoded batches ``(batch, *shape)`` (host memory, as a data loader hands them over)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    return [{"x": torch.randn(batch, *shape, generator=g), "y": torch.randint(0, classes, (batch,), generator=g),
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


def section(archs, *, device: str, precision: str, batch: int, steps: int, peak_batch: int, budget_left,
            log=print) -> list[dict]:
    """gpu_check's fine-tuning rows: per network and ``--train-from`` (last block, whole network) the tool's
    loop against the bare loop at ``precision`` (channels-last on a GPU), and on a GPU the peak memory
    allocated of two steps from the head's first dense layer against the whole network."""
    import torch
    rows = []
    for arch in archs:
        for tf in TRAIN_FROM[arch]:
            row = {"network": arch, "train_from": tf, "precision": precision, "batch": batch}
            if budget_left() < 30:
                row["skipped"] = "time budget spent"
                rows.append(row)
                continue
            try:
                net = make_net(arch, tf, device)
                data = batches(steps, batch, device, net.bench_input)
                row.update(compare(net, data, device=device, precision=precision))
                log(f"  finetune {arch:<8} from {tf:<15} {precision} batch {batch}: tool "
                    f"{row['tool_images_per_s']:8.1f} img/s, bare loop {row['bare_images_per_s']:8.1f}, "
                    f"ratio {row['ratio']:.3f}")
                del net, data
            except Exception as exc:  # noqa: BLE001 - recorded, the others go on
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                log(f"  finetune {arch} from {tf}: {row['error']}")
            rows.append(row)
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
    if torch.device(device).type == "cuda" and budget_left() > 30:
        for arch in archs:
            head_from = "fc6" if arch.startswith("vgg") else "fc"
            peaks = {}
            for tf in (head_from, TRAIN_FROM[arch][1]):
                net = make_net(arch, tf, device)
                data = batches(2, peak_batch, device, net.bench_input, seed=1)
                torch.cuda.reset_peak_memory_stats()
                tool_rate(net, data, device=device, precision=precision)
                peaks[tf] = torch.cuda.max_memory_allocated()
                del net, data
                torch.cuda.empty_cache()
            ratio = peaks[head_from] / peaks[TRAIN_FROM[arch][1]]
            rows.append({"network": arch, "peak_allocated_bytes": peaks, "peak_ratio": ratio, "batch": peak_batch,
                         "precision": precision})
            log(f"  finetune {arch} peak allocated, batch {peak_batch}: " + ", ".join(
                f"from {k} {v / 2**30:.2f} GiB" for k, v in peaks.items()) + f", ratio {ratio:.3f}")
    return rows
