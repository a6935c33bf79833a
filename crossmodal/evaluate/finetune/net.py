"""The trainable network: the IR's PyTorch module (:func:`crossmodal.emitters.to_torch.build_torch`)
with a boundary below which nothing trains, a new (or the original) head, and optional towers.

* **What trains.** Layers run in graph order. Those before the first trainable layer (``--train-from``)
  run under ``torch.no_grad()`` in eval mode (no autograd, batch-norm statistics and dropout frozen),
  :data:`FROZEN_CHUNK` samples at a time, and every value is dropped after its last reader, so the
  frozen part keeps no activations: training from ``fc6`` holds one chunk's two largest conv maps at a
  time, not the whole network's for the whole batch.
* **The head** is the last dense layer (only a softmax may follow it). ``--head new`` replaces it by a
  dense layer with one row per data-set class: a class that maps to a network label (the mapping of
  label muting, :func:`crossmodal.data.labels.build_mapping`) starts from that label's row and bias,
  so epoch 0 is the unadjusted network with muting; other classes start from N(0, 0.01²) rows with the
  base head's lowest bias.
* **Towers** (``--towers per-modality``): the layers from ``--train-from`` up to ``--shared-from`` are
  copied once per modality (each copy starts from the base network); each sample runs through its
  modality's copy, and the layers from ``--shared-from`` on are one module (one tensor each) that every
  modality shares. The frozen layers below ``--train-from`` are one copy too (they are identical).
  ``--freeze-shared`` freezes the shared layers below the head (gradients flow through them to the
  towers, their weights and statistics stay the base network's).

Inputs are NCHW float32 batches ``(N, C, H, W)`` and modality indices ``(N,)``; outputs logits ``(N, K)``.
"""
from __future__ import annotations

import copy
import difflib
from typing import Sequence

import numpy as np

from crossmodal.emitters.to_torch import build_torch, module_key
from crossmodal.errors import InputError
from crossmodal.ir.graph import Graph, IRModel


#: samples per pass through the frozen prefix: it keeps nothing for backward, so its working memory is
#: one chunk's two largest maps, not the batch's
FROZEN_CHUNK = 8


def head_name(graph: Graph) -> str:
    """The last dense layer: the head (refused when anything but a softmax follows it)."""
    names = [l.name for l in graph.layers]
    dense = [l for l in graph.layers if l.kind == "dense"]
    if not dense:
        raise InputError("the model has no dense layer to train as the head")
    last = dense[-1].name
    after = [l for l in graph.layers[names.index(last) + 1:] if l.kind != "softmax"]
    if after:
        raise InputError(f"the last dense layer {last!r} is followed by {after[0].name!r} ({after[0].kind}); "
                         f"fine-tuning needs the head last (only a softmax after it)")
    return last


def layer_index(graph: Graph, name: str, option: str = "--train-from") -> int:
    """The graph index of ``name``: a layer name first (``fc7`` the dense layer), then a public blob;
    ``head`` is the head. Unknown: one line with close matches."""
    names = [l.name for l in graph.layers]
    if name == "head":
        return names.index(head_name(graph))
    if name in names:
        return names.index(name)
    if name in graph.blobs and graph.blobs[name] in names:
        return names.index(graph.blobs[name])
    close = difflib.get_close_matches(name, names + ["head"], n=4, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; layers: {', '.join(names[:8])} …"
    raise InputError(f"{option}: the model has no layer {name!r}{hint}")


def warm_head(base_w: np.ndarray, base_b: np.ndarray, target_to_source: Sequence[int | None],
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """New head rows ``(K, D)`` and biases ``(K,)``: row ``k`` is the base head's row
    ``target_to_source[k]`` where that is a label, else N(0, 0.01²) with the base head's lowest bias."""
    rng = np.random.default_rng(seed)
    k, d = len(target_to_source), base_w.shape[1]
    w = (rng.standard_normal((k, d)) * 0.01).astype(np.float32)
    b = np.full(k, float(base_b.min()), np.float32)
    for row, src in enumerate(target_to_source):
        if src is not None:
            w[row], b[row] = base_w[src], base_b[src]
    return w, b


def _uses(order: list[tuple[str, list[str]]]) -> dict[str, int]:
    last: dict[str, int] = {}
    for i, (_, inputs) in enumerate(order):
        for src in inputs:
            last[src] = i
    return last


def build(ir: IRModel, *, first: int, head: tuple[np.ndarray, np.ndarray] | None = None,
          towers: Sequence[str] = (), shared_from: int | None = None, freeze_shared: bool = False):
    """The trainable module of ``ir`` (see the module docstring).

    ``first``: graph index of the first trainable layer; ``head``: new head weights ``(K, D)``, ``(K,)``,
    or None to keep the network's; ``towers``: modality names (index order = the modality indices the
    forward pass gets) for per-modality copies of layers ``[first, shared_from)``.
    """
    return _module_class()(ir, first=first, head=head, towers=list(towers), shared_from=shared_from,
                           freeze_shared=freeze_shared)


_CLASS = None


def _module_class():
    global _CLASS
    if _CLASS is None:
        _CLASS = _define()
    return _CLASS


def _define():
    import torch
    import torch.nn as nn

    class FinetuneNet(nn.Module):
        """See the module docstring. ``layers``: every layer up to the head (one module each, the
        shared ones); ``towers[m]``: modality ``m``'s copies of layers ``[first, shared_from)``."""

        def __init__(self, ir: IRModel, *, first, head, towers, shared_from, freeze_shared) -> None:
            super().__init__()
            graph = ir.graph
            names = [l.name for l in graph.layers]
            self.head = head_name(graph)
            self.h_index = names.index(self.head)
            self.names = names[:self.h_index + 1]
            self.order = [(l.name, list(l.inputs)) for l in graph.layers[:self.h_index + 1]]
            self.input_name = graph.input.name
            self.head_input = self.order[-1][1][0]
            base = build_torch(ir)
            hk = module_key(self.head)
            self.base_head = (base.layers[hk].weight.detach().clone(), base.layers[hk].bias.detach().clone())
            self.layers = nn.ModuleDict({module_key(n): base.layers[module_key(n)] for n in self.names})
            if head is not None:
                w, b = head
                lin = nn.Linear(w.shape[1], w.shape[0])
                lin.weight.data, lin.bias.data = torch.from_numpy(np.array(w, np.float32)), \
                    torch.from_numpy(np.array(b, np.float32))
                self.layers[hk] = lin
            self.num_outputs = int(self.layers[hk].weight.shape[0])
            self.tower_names = list(towers)
            self.shared_from = self.h_index + 1 if not towers else int(shared_from)
            self.tower_lo = int(first)
            if towers and not first < self.shared_from:
                raise InputError("with --towers per-modality, --train-from must lie below --shared-from "
                                 "(the towers are the layers that train between them)")
            self.towers = nn.ModuleDict({m: nn.ModuleDict({module_key(n): copy.deepcopy(self.layers[module_key(n)])
                                                           for n in self.names[first:self.shared_from]})
                                         for m in towers})
            for n in (self.names[first:self.shared_from] if towers else ()):
                del self.layers[module_key(n)]  # each modality runs its own copy
            self.freeze_shared = bool(freeze_shared)
            self.last_use = _uses(self.order)
            self.set_first(first)

        # ----------------------------------------------------------------- what trains
        def trains(self, i: int) -> bool:
            if i < self.first:
                return False
            if self.freeze_shared and self.tower_names and self.shared_from <= i < self.h_index:
                return False
            return True

        def modules_of(self, i: int):
            key = module_key(self.names[i])
            if self.tower_names and self.tower_lo <= i < self.shared_from:
                return [self.towers[m][key] for m in self.tower_names]
            return [self.layers[key]]

        def set_first(self, first: int) -> None:
            """Make layers from ``first`` on trainable (the towers' range always starts at
            ``--train-from``; a head-only stage freezes them too)."""
            self.first = int(first)
            for i in range(len(self.names)):
                for mod in self.modules_of(i):
                    for p in mod.parameters():
                        p.requires_grad_(self.trains(i))
            self.train(self.training)

        def train(self, mode: bool = True):
            super().train(mode)
            for i in range(len(self.names)):
                if not self.trains(i):
                    for mod in self.modules_of(i):
                        mod.eval()
            return self

        def parameter_counts(self) -> dict:
            trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
            total = sum(p.numel() for p in self.parameters())
            towers = {m: sum(p.numel() for p in t.parameters()) for m, t in self.towers.items()}
            return {"trainable_params": int(trainable), "frozen_params": int(total - trainable),
                    "tower_params": towers, "shared_params": int(total - sum(towers.values()))}

        def trainable_layers(self) -> list[str]:
            return [n for i, n in enumerate(self.names)
                    if self.trains(i) and any(True for mod in self.modules_of(i) for _ in mod.parameters())]

        # ----------------------------------------------------------------- forward
        def _run(self, values: dict, lo: int, hi: int, keep: set, modules=None) -> dict:
            for i in range(lo, hi):
                name, inputs = self.order[i]
                mod = (modules or self.layers)[module_key(name)]
                values[name] = mod(*(values[s] for s in inputs))
                for s in set(inputs):
                    if self.last_use.get(s) == i and s not in keep:
                        del values[s]
            return values

        def _crossing(self, lo: int, hi: int, values: dict) -> list[str]:
            """Values computed before ``hi`` that layers at or after ``hi`` read."""
            return [n for n in values if self.last_use.get(n, -1) >= hi]

        def forward_values(self, x, m=None, keep: Sequence[str] = ()):
            keep = set(keep)
            lo = self.first if not self.tower_names else min(self.first, self.tower_lo)
            with torch.no_grad():  # the frozen prefix, a few samples at a time (eval mode: per sample)
                parts = [self._run({self.input_name: c}, 0, lo, keep) for c in x.split(FROZEN_CHUNK)]
            values = parts[0] if len(parts) == 1 else {n: torch.cat([p[n] for p in parts]) for n in parts[0]}
            del parts
            if self.tower_names:
                if m is None:
                    raise ValueError("a tower network needs the modality of every sample")
                grad = self.first <= self.tower_lo
                with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
                    values = self._towers(values, m, keep)
                lo = self.shared_from
            return self._run(values, lo, len(self.order), keep)

        def _towers(self, values: dict, m, keep: set) -> dict:
            inputs = list(values)
            outs: dict = {}
            for k, name in enumerate(self.tower_names):
                rows = (m == k).nonzero(as_tuple=True)[0]
                if rows.numel() == 0:
                    continue
                sub = {n: values[n][rows] for n in inputs}
                sub = self._run(sub, self.tower_lo, self.shared_from, keep, self.towers[name])
                for n in self._crossing(self.tower_lo, self.shared_from, sub) + [n for n in keep if n in sub]:
                    v = sub[n]
                    if n not in outs:
                        outs[n] = v.new_zeros((len(m),) + tuple(v.shape[1:]))
                    outs[n] = outs[n].index_put((rows,), v)
            return outs

        def forward(self, x, m=None):
            return self.forward_values(x, m)[self.head]

        def logits_and_features(self, x, m=None):
            """Logits ``(N, K)`` and the head's input ``(N, D)`` (eval passes: the base head on it gives
            the unadjusted network's logits)."""
            v = self.forward_values(x, m, keep=[self.head_input])
            return v[self.head], v[self.head_input]

        def base_logits(self, features):
            w, b = self.base_head
            return torch.nn.functional.linear(features.float(), w.to(features.device), b.to(features.device))

    return FinetuneNet
