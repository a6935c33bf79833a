"""Weights-only Keras HDF5 files of a known architecture (``--arch``) → IR.

A Keras 2 ``save_weights`` file (root attribute ``layer_names``; per layer a group with attribute
``weight_names``) holds no graph. ``--arch vgg16`` (or any registered architecture whose model
definition names its Keras layers, :func:`crossmodal.models.keras_names_for`) builds the IR graph
from :mod:`crossmodal.models` and fills each layer from the Keras layer of its Keras name: the
Keras port of VGG16-places365 (``vgg16-places365_weights_tf_dim_ordering_tf_kernels.h5``:
``block1_conv1`` … ``block5_conv3``, ``fc1``, ``fc2``, ``predictions``) becomes the IR of the
official Caffe release's names (``conv1_1`` … ``fc8a``), so ``verify`` can compare the two.

Layouts: conv kernels HWIO → OIHW; dense kernels (in, out) → (out, in), the first dense after the
flatten with its rows from Keras' HWC order into the IR's CHW order; batch norm ``gamma, beta,
moving_mean, moving_variance``. The class count is read from the last dense kernel (365 with VGG16:
the ``vgg16_places365`` definition, whose last layer is ``fc8a``); the input size is the
architecture's (224) unless given. Preprocessing: the given spec, else Caffe's (BGR, 0–255, mean
subtraction; the port was converted from the Caffe release), with a note.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from crossmodal.errors import InputError
from crossmodal.ir import layouts
from crossmodal.ir.graph import Graph, IRModel
from crossmodal.ir.preprocess import Preprocess
from crossmodal.ir.validation import validate
from crossmodal.readers.from_keras_file import KerasFile


def _graph_for(arch: str, num_classes: int, input_size, preprocess: Preprocess, path: Path) -> Graph:
    from crossmodal.models import keras_names_for
    from crossmodal.models.registry import family, family_of, list_models

    fam = family_of(arch)
    if fam is None:
        raise InputError(f"--arch {arch!r} is not a known architecture; known: {', '.join(list_models())}", path)
    module = family(fam)
    name = f"{arch}_places365" if num_classes == 365 and f"{arch}_places365" in module.list_models() else arch
    spec = module.create_spec(name)
    overrides = {"num_classes": num_classes}
    if input_size is not None:
        overrides["input_shape"] = (spec.input_shape[0], *input_size)
    from dataclasses import replace
    spec = replace(spec, **overrides)
    graph = module.build_graph(spec, preprocess, name=name)
    if not graph.keras_names:
        graph.keras_names = keras_names_for(graph)
    if not graph.keras_names:
        raise InputError(f"--arch {arch}: the model definition names no Keras layers", path)
    return graph


def _last_dense_units(kf: KerasFile, path: Path) -> int:
    """Output width of the file's last layer with a 2-D kernel (its classifier)."""
    for layer in reversed(kf.layer_names):
        arrays = kf.weights(layer)
        if arrays and arrays[0].ndim == 2:
            return int(arrays[0].shape[1])
    raise InputError("no dense layer among the weights (not a classifier's weights?)", path)


def _flattened(graph: Graph, layer) -> tuple[int, int, int] | None:
    src = graph.layer(layer.inputs[0]) if layer.inputs[0] != graph.input.name else None
    while src is not None and src.kind == "dropout":
        src = graph.layer(src.inputs[0])
    return tuple(src.attrs["shape"]) if src is not None and src.kind == "flatten" else None


def _ir_arrays(graph: Graph, layer, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """IR role → array for one layer from its Keras arrays (Keras order and layouts)."""
    kind, roles = layer.kind, list(layer.tensors)
    if kind == "conv2d":
        out = {"weight": layouts.conv_hwio_to_oihw(arrays[0])}
        if len(arrays) > 1:
            out["bias"] = arrays[1]
        return out
    if kind == "dense":
        w = layouts.dense_oi_to_io(arrays[0])
        chw = _flattened(graph, layer)
        if chw is not None:
            w = layouts.dense_hwc_rows_to_chw(w, chw)
        return {"weight": w, "bias": arrays[1] if len(arrays) > 1 else np.zeros(w.shape[0], np.float32)}
    if kind == "batch_norm":
        keras_roles = [r for r in ("weight", "bias") if r in roles] + ["mean", "var"]
        return dict(zip(keras_roles, arrays))
    return dict(zip(roles, arrays))


def read_weights_only(kf: KerasFile, arch: str | None, *, preprocess: Preprocess | None = None,
                      input_size=None) -> IRModel:
    from crossmodal.readers.from_keras import default_preprocess, provenance

    path, notes = kf.path, []
    if arch is None:
        raise InputError("a weights-only Keras HDF5 (no model config): give its architecture with --arch "
                         "(e.g. --arch vgg16 for the Keras port of VGG16-places365)", path)
    spec = default_preprocess(preprocess, "caffe", notes,
                              "a weights-only Keras file does not record it (the Keras VGG16-places365 port "
                              "takes Caffe's)")
    graph = _graph_for(arch, _last_dense_units(kf, path), input_size, spec, path)
    names, in_file = graph.keras_names, set(kf.layer_names)
    weights, problems, used = {}, [], set()
    for layer in graph.layers:
        if not layer.tensors:
            continue
        kname = names.get(layer.name, layer.name)
        used.add(kname)
        if kname not in in_file:
            problems.append(f"{kname} missing")
            continue
        arrays = _ir_arrays(graph, layer, kf.weights(kname))
        for role, tspec in layer.tensors.items():
            arr = arrays.get(role)
            if arr is None or tuple(arr.shape) != tuple(tspec.shape):
                got = "missing" if arr is None else f"shape {tuple(arr.shape)}"
                problems.append(f"{kname} {role}: {got}, {arch} needs {tuple(tspec.shape)}")
            else:
                weights[tspec.name] = np.ascontiguousarray(arr, dtype=np.float32)
    extra = sorted(n for n in in_file - used if kf.weights(n))
    if extra:
        problems.append(f"weights of layers {arch} does not have: {', '.join(extra[:8])}"
                        + (" …" if len(extra) > 8 else ""))
    if problems:
        raise InputError(f"does not hold {graph.name}'s weights: " + "; ".join(problems[:12]), path)
    notes.append(f"weights-only Keras HDF5 read as --arch {arch} ({graph.name})")
    graph.provenance = provenance(path, kf, notes, f"weights only, --arch {arch}")
    model = IRModel(graph, weights)
    validate(model)
    return model
