"""Data-parallel training under ``torchrun``: the process group, rank 0 as the only writer, sums over
ranks.

``torchrun --nproc-per-node N -m crossmodal finetune …`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`setup` then joins the group (NCCL when the run's device is a GPU, gloo on the
CPU) and pins each rank to ``cuda:LOCAL_RANK``. Without those variables a run is one process and
every helper here is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def from_env() -> World:
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def setup(world: World, device_type: str) -> None:
    """Join the process group (once)."""
    if not world.distributed:
        return
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")


def teardown(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


def device_for(world: World, device: str) -> str:
    """Each rank's device: ``cuda:LOCAL_RANK`` when the run asks for a GPU (or ``auto`` finds one)."""
    if world.distributed and device in ("auto", "cuda"):
        import torch
        if torch.cuda.is_available():
            return f"cuda:{world.local_rank}"
        return "cpu"
    return device


def sum_all(array, world: World, device=None):
    """A NumPy array summed over the ranks (through ``device``: NCCL reduces GPU tensors only)."""
    if not world.distributed:
        return array
    import numpy as np
    import torch
    import torch.distributed as dist
    t = torch.from_numpy(np.ascontiguousarray(array, np.float64))
    if device is not None and getattr(device, "type", "cpu") == "cuda":
        t = t.to(device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()


def gather_objects(obj, world: World) -> list:
    """Every rank's ``obj``, in rank order (one element when not distributed)."""
    if not world.distributed:
        return [obj]
    import torch.distributed as dist
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, world: World):
    """Rank 0's ``obj`` on every rank."""
    if not world.distributed:
        return obj
    import torch.distributed as dist
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist
        dist.barrier()


def wrap(net, world: World, device, *, find_unused: bool = False):
    """``net`` in DistributedDataParallel (trainable batch norm as SyncBatchNorm) when distributed;
    else ``net`` itself. Called again whenever what trains changes (``--unfreeze-at``)."""
    if not world.distributed:
        return net
    from torch.nn.parallel import DistributedDataParallel
    if not any(p.requires_grad for p in net.parameters()):
        return net
    ids = [device.index] if getattr(device, "type", "") == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids, find_unused_parameters=find_unused)


def sync_batchnorm(net, world: World, device):
    """Batch-norm layers that may train (from ``--train-from`` on) become SyncBatchNorm under DDP on
    GPUs (frozen ones keep their statistics; on the CPU, gloo, batch norm stays per rank)."""
    if not world.distributed or getattr(device, "type", "cpu") != "cuda":
        return net
    import torch.nn as nn
    from crossmodal.emitters.to_torch import module_key

    containers = [net.layers] + [net.towers[m] for m in net.tower_names]
    for i, name in enumerate(net.names):
        if i < net.tower_lo:
            continue
        key = module_key(name)
        for container in containers:
            if key in container and isinstance(container[key], nn.modules.batchnorm._BatchNorm):
                container[key] = nn.SyncBatchNorm.convert_sync_batchnorm(container[key])
    net.set_first(net.first)
    return net
