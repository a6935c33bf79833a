"""Everything a fine-tuning run checks and reads before its first step: the settings, the model, the
data, the label mapping, the head, the layer indices, the device and the process group.

Bad input is found here, before any file is written: an unknown ``--train-from`` / ``--shared-from``
layer (close matches named), ``--shared-from`` above the feature layer, ``--head keep`` with
categories the network cannot name (listed), an empty split, a model without labels where they are
needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossmodal.errors import InputError
from crossmodal.evaluate.finetune import ddp
from crossmodal.evaluate.finetune.data import RunData, load_data
from crossmodal.evaluate.finetune.net import head_name, layer_index, warm_head
from crossmodal.evaluate.finetune.settings import Settings
from crossmodal.io.atomic import check_output_dir
from crossmodal.ir.graph import IRModel


@dataclass
class Context:
    """A run's checked inputs. ``first``: graph index of ``--train-from``; ``head_index``, ``shared_from``
    (towers; else None); ``head``: new head arrays or None (``--head keep``); ``target_map``: class →
    network label (``--head keep``) or None; ``mapping``: the network's labels onto the classes (None
    when the model has no labels)."""

    settings: Settings
    model_dir: Path
    out_dir: Path
    ir: IRModel
    fingerprint: str
    data: RunData
    mapping: object
    first: int
    head_index: int
    shared_from: int | None
    head: tuple | None
    target_map: np.ndarray | None
    mean_image: np.ndarray | None
    world: ddp.World
    device: object = None

    @property
    def graph(self):
        return self.ir.graph

    @property
    def classes(self) -> list[str]:
        """The exported model's labels: the classes (new head) or the network's (``--head keep``)."""
        return self.data.classes


def mapping_for(graph, classes, label_map=None):
    """The network's labels onto ``classes`` as label muting maps them (packaged aliases that apply,
    then ``--label-map``); None when the model has no labels."""
    from crossmodal.data.labels import applicable_aliases, build_mapping, load_aliases, merge_aliases
    if graph.labels is None or not graph.labels.names:
        return None
    aliases = applicable_aliases(load_aliases(), graph.labels.names)
    if label_map is not None:
        aliases = merge_aliases(aliases, load_aliases(label_map))
    return build_mapping(list(graph.labels.names), classes, aliases)


def prepare(s: Settings, *, need_device: bool = True) -> Context:
    """Check ``s`` and read what the run needs (module docstring); joins the process group under torchrun."""
    from crossmodal.evaluate.feature_cache import model_fingerprint, read_mean_image
    from crossmodal.ir.consistency import check as check_consistency
    from crossmodal.ir.store import load_ir

    s.check()
    model_dir, out_dir = Path(s.model_dir), check_output_dir(Path(s.out_dir))
    ir = load_ir(model_dir)
    graph = ir.graph
    check_consistency(graph, model_dir)
    head = head_name(graph)
    names = [l.name for l in graph.layers]
    head_index = names.index(head)
    first = layer_index(graph, s.train_from)
    if first > head_index:
        raise InputError(f"--train-from {s.train_from!r} lies above the head {head!r}: nothing would train")
    shared_from = None
    if s.towers == "per-modality":
        shared_from = layer_index(graph, s.shared_from, "--shared-from")
        feature = names.index(graph.resolve(graph.feature_blob))
        if shared_from > feature:
            raise InputError(f"--shared-from {s.shared_from!r} lies above the feature layer "
                             f"{graph.feature_blob!r} ({names[feature]}): the modalities must meet at or below it, "
                             f"so they share one feature space")
        if first >= shared_from:
            raise InputError(f"--train-from {s.train_from!r} must lie below --shared-from {s.shared_from!r}: "
                             f"the towers are the layers that train between them")
    data = load_data(s.modalities, data_root=s.data_root, config=s.config, train_split=s.train_split,
                     val_split=s.val_split)
    mapping = mapping_for(graph, data.classes, s.label_map)
    head_arrays, target_map = None, None
    base_w, base_b = (ir.tensor(graph.layers[head_index], r) for r in ("weight", "bias"))
    if s.head == "keep":
        if mapping is None:
            raise InputError("--head keep needs a model with labels (convert it with --labels)", model_dir)
        unnamed = [c for c, src in zip(data.classes, mapping.target_to_source) if src is None]
        if unnamed:
            raise InputError(f"--head keep: the network has no label for {len(unnamed)} categories "
                             f"({', '.join(unnamed[:12])}{' …' if len(unnamed) > 12 else ''}); use --head new, or "
                             f"name them with --label-map")
        target_map = np.asarray(mapping.target_to_source, np.int64)
    else:
        t2s = mapping.target_to_source if mapping is not None else [None] * len(data.classes)
        head_arrays = warm_head(np.asarray(base_w), np.asarray(base_b), t2s, seed=s.seed)
    world = ddp.from_env()
    ctx = Context(s, model_dir, out_dir, ir, model_fingerprint(model_dir, graph), data, mapping, first, head_index,
                  shared_from, head_arrays, target_map, read_mean_image(model_dir, graph), world)
    if need_device:
        ctx.device = open_device(s.device, world)
    return ctx


def open_device(device: str, world: ddp.World):
    """The run's ``torch.device`` (each rank's own under torchrun), the process group joined."""
    from crossmodal.runtime.devices import torch_device
    dev = torch_device(ddp.device_for(world, device))
    if dev.type == "cuda" and dev.index is not None:
        import torch
        torch.cuda.set_device(dev)
    ddp.setup(world, dev.type)
    return dev
