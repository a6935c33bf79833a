"""PyTorch checkpoints of the zoo's families (ResNet, DenseNet, AlexNet) → IR.

The reader (:mod:`~crossmodal.readers.from_torch`) loads the file and strips the
DataParallel wrappers; here the keys are brought to today's torchvision names
(:func:`crossmodal.models.registry.canonical_key`: DenseNet's pre-0.4 ``norm.1`` …,
``num_batches_tracked`` dropped), the architecture is detected (or taken from ``--arch``),
and every tensor is matched strictly against the family's table: missing, unexpected and
mis-shaped keys are named together, batch-norm variances must be ≥ 0.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from crossmodal.ir.graph import IRModel

from crossmodal.ir.preprocess import Preprocess
from crossmodal.readers.state_match import match_state, some
from crossmodal.errors import InputError
from crossmodal.models import registry


def canonical_state(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Wrapper-stripped keys → today's torchvision names, ``num_batches_tracked`` left out."""
    return {registry.canonical_key(k): v for k, v in state.items() if not registry.is_bookkeeping(k)}


def detect(state: Mapping[str, np.ndarray], *, arch: str | None = None, file_name: str | None = None,
           checkpoint_arch: object = None):
    """(family, spec, notes) for a canonical state dict, or None (see :func:`registry.detect`)."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    return registry.detect(shapes, arch=arch, file_name=file_name, checkpoint_arch=checkpoint_arch)


def to_ir(state: Mapping[str, np.ndarray], fam: str, spec, *, input_size: tuple[int, int] | None = None,
          preprocess: Preprocess | None = None, source: object = None) -> IRModel:
    """Match a canonical state dict to ``spec``'s graph; every problem named in one InputError."""
    module = registry.family(fam)
    if input_size is not None:
        spec = dataclasses.replace(spec, input_shape=(spec.input_shape[0], *input_size))
    graph = module.build_graph(spec, preprocess, name=spec.arch)
    key_of = module.torchvision_keys(spec)
    unexpected = registry.unmatched_keys(set(state) - set(key_of.values()))
    return match_state(graph, key_of, state, unexpected, what=f"{spec.arch} (torchvision layout)", source=source,
                       limit=6)


def unknown_layout(state: Mapping[str, np.ndarray], source: object = None) -> InputError:
    """The error for keys no family claims: the first keys and the architectures tried."""
    return InputError(f"keys match no known architecture (tried {', '.join(registry.TRIED)}); first keys: "
                      f"{some(registry.unmatched_keys(state), 6)}", source)
