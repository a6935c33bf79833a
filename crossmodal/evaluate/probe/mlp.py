"""The MLP head on frozen features (:func:`fit_mlp`): Dense 256 + ReLU + Dense K (softmax in the
loss), RMSprop, mini-batches, early stopping on the validation split's loss (the best epoch's
weights are kept); the per-epoch curves are returned. Inputs as :mod:`crossmodal.evaluate.probe.fit`.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

from crossmodal.errors import InputError
from crossmodal.evaluate.probe.fit import Head, as_tensors, check_xy

MLP_HIDDEN = 256


def fit_mlp(x_train, y_train, x_val, y_val, n_classes: int, *, hidden: int = MLP_HIDDEN, lr: float = 1e-3,
            batch_size: int = 128, max_epochs: int = 100, patience: int = 5, seed: int = 0,
            device: str = "cpu", log: Callable[[str], None] | None = None) -> Head:
    """Dense ``hidden`` + ReLU + Dense ``n_classes`` on frozen features, RMSprop, early stopping.

    Trains on ``(x_train, y_train)`` in shuffled mini-batches; after each epoch the
    validation loss decides: the best epoch's weights are kept, and training stops
    after ``patience`` epochs without improvement. ``info["curves"]`` holds per epoch
    ``train_loss``, ``train_top1``, ``val_loss``, ``val_top1``; ``info["best_epoch"]``
    (1-based). Seeded: the same seed gives the same head on the same device.
    """
    import torch

    check_xy(x_train, y_train, n_classes)
    if len(x_val) == 0:
        raise InputError("the MLP head needs a non-empty validation split for early stopping")
    log = log or (lambda msg: None)
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(int(seed))
    xt, yt = as_tensors(x_train, y_train, device)
    xv, yv = as_tensors(x_val, y_val, device)
    d = xt.shape[1]
    torch.manual_seed(int(seed))
    net = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_classes))
    net.to(device)
    opt = torch.optim.RMSprop(net.parameters(), lr=lr)
    lossf = torch.nn.CrossEntropyLoss()
    curves = {"train_loss": [], "train_top1": [], "val_loss": [], "val_top1": []}
    best = (math.inf, 0, None)
    n = len(xt)
    for epoch in range(1, max_epochs + 1):
        net.train()
        order = torch.randperm(n, generator=gen).to(device)
        total, hits = 0.0, 0
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            opt.zero_grad()
            out = net(xt[idx])
            loss = lossf(out, yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            hits += int((out.argmax(1) == yt[idx]).sum())
        net.eval()
        with torch.no_grad():
            out = net(xv)
            vloss, vacc = float(lossf(out, yv)), float((out.argmax(1) == yv).float().mean())
        curves["train_loss"].append(total / n)
        curves["train_top1"].append(hits / n)
        curves["val_loss"].append(vloss)
        curves["val_top1"].append(vacc)
        if vloss < best[0]:
            best = (vloss, epoch, [p.detach().cpu().numpy().copy() for p in net.parameters()])
        elif epoch - best[1] >= patience:
            break
    log(f"MLP head: best epoch {best[1]} of {len(curves['val_loss'])} (validation loss {best[0]:.4f})")
    w1, b1, w2, b2 = (np.asarray(p, dtype=np.float32) for p in best[2])
    head = Head("mlp", [(w1, b1), (w2, b2)])
    head.info = {"hidden": hidden, "optimizer": "RMSprop", "lr": lr, "batch_size": batch_size,
                 "max_epochs": max_epochs, "patience": patience, "best_epoch": best[1],
                 "epochs_run": len(curves["val_loss"]), "curves": curves, "seed": int(seed),
                 "seconds": time.perf_counter() - t0, "device": str(xt.device)}
    return head
