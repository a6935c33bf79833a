"""Preprocessing of a Caffe network as data: the mean file, the given spec's checks, the RGB fold's layer.

Caffe networks take BGR, 0–255 pixels minus a mean. The spec is the ``caffe`` preset
(per-channel mean, resize 256×256) or a given one, which must say BGR (RGB only when
the fold into the first convolution is asked for) and 0–255; the mean comes from a
``.binaryproto`` (BlobProto 1×3×H×W, BGR) per channel or as a 3×H×W image (tensor
``preprocess.mean_image``). The crop is always the network's input size.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from crossmodal.ir.preprocess import PREPROCESS_PRESETS, Preprocess

from crossmodal.ir.graph import Graph, Layer
from crossmodal.readers import caffe_wire
from crossmodal.errors import InputError

MEAN_MODES = ("channel", "image")
MEAN_IMAGE_TENSOR = "preprocess.mean_image"


WHAT_MEAN_FILE = ("a Caffe mean image: a .binaryproto (BlobProto of shape 1×3×H×W, BGR, 0–255, as "
                  "places365CNN_mean.binaryproto) or a .npy array of shape 3×H×W (BGR)")


def read_mean_file(path: Path) -> np.ndarray:
    """A mean image → float32 (3, H, W), BGR: a ``.binaryproto`` (BlobProto 1×3×H×W) or a ``.npy``
    array (3×H×W or 1×3×H×W, read without pickles, as the Caffe Python demos save it)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read mean file ({exc.strerror or exc})", path) from None
    if data[:6] == b"\x93NUMPY":
        import io
        try:
            mean = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"not a readable .npy mean file ({exc}); expected {WHAT_MEAN_FILE}", path) from None
        mean = np.asarray(mean, dtype=np.float32)
    elif data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n":
        raise InputError(f"is an image, not a mean file: --mean-file takes {WHAT_MEAN_FILE}", path)
    else:
        try:
            mean = caffe_wire.decode_mean_blob(data)
        except caffe_wire.WireError as exc:
            raise InputError(f"not a readable mean file ({exc}); --mean-file takes {WHAT_MEAN_FILE}", path) from None
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim != 3 or mean.shape[0] != 3 or min(mean.shape[1:]) < 1:
        raise InputError(f"mean blob has shape {mean.shape}, expected 1×3×H×W", path)
    if not np.isfinite(mean).all():
        raise InputError("mean blob holds non-finite values", path)
    return np.array(mean, dtype=np.float32)


def check_given(given: Preprocess, rgb_input: bool, prototxt: Path) -> None:
    """A user's spec must describe what the emitted model takes: BGR (RGB with the fold), 0-255."""
    problems = []
    if given.channel_order == "RGB" and not rgb_input:
        problems.append("channel order RGB, but the Caffe network takes BGR (add --rgb-input to fold "
                        "BGR→RGB into the first convolution)")
    if given.value_range != "0-255":
        problems.append(f"value range {given.value_range}, but the Caffe network takes 0-255 pixels")
    if problems:
        raise InputError(f"preprocessing {given.name!r} does not fit this Caffe network: "
                         + "; ".join(problems), prototxt)


def caffe_preprocessing(input_shape: tuple[int, int, int], data_mean: tuple | None, given: Preprocess | None,
                        mean_file: Path | None, mean_mode: str, rgb_input: bool, notes: list[str],
                        prototxt: Path) -> tuple[Preprocess, dict[str, np.ndarray]]:
    """The Preprocess of the emitted model and its extra tensors (a mean image).

    The spec is ``given`` (checked: BGR, or RGB with ``rgb_input``; 0-255), else the
    ``caffe`` preset with a train_val Data layer's ``mean_value`` (``data_mean``) when it
    has one. ``input_shape``: the network's (C, H, W). Notes for the provenance are
    appended to ``notes``.
    A given spec must crop to the network's input size (refused otherwise, before the
    weights are read); a preset's crop is set to it. With ``rgb_input`` the spec
    becomes RGB (means reversed) and its name gets ``-rgb``.
    """
    c, h, w = input_shape
    if given is not None:
        check_given(given, rgb_input, prototxt)
        given.check_fits(input_shape, prototxt)  # a spec the user wrote is never changed silently
        spec = given
        if data_mean is not None:
            notes.append(f"mean: the train_val mean_value is not used; the given preprocessing {given.name!r} is")
    elif data_mean is not None and mean_file is None:
        spec = dataclasses.replace(PREPROCESS_PRESETS["caffe"], mean=data_mean, name="caffe-mean-value")
    else:
        spec = PREPROCESS_PRESETS["caffe"]
    if tuple(spec.crop) != (h, w):  # a preset chosen here, not by the user
        notes.append(f"preprocess: crop {spec.crop[0]}×{spec.crop[1]} of {spec.name!r} set to the input size {h}×{w}")
        spec = dataclasses.replace(spec, crop=(h, w))
    if rgb_input and spec.channel_order == "BGR":
        spec = dataclasses.replace(spec, mean=tuple(spec.mean[::-1]), std=tuple(spec.std[::-1]))
    order = "RGB" if rgb_input else "BGR"
    extra: dict[str, np.ndarray] = {}
    if mean_file is not None:
        mean = read_mean_file(mean_file)
        if c != 3:
            raise InputError(f"the network takes {c} channels, the mean file has 3", mean_file)
        if rgb_input:
            mean = np.ascontiguousarray(mean[::-1])
        if mean_mode == "channel":
            per = tuple(round(float(v), 4) for v in mean.astype(np.float64).mean(axis=(1, 2)))
            spec = dataclasses.replace(spec, mean=per, mean_image=None, name="caffe-mean-channel")
            notes.append(f"mean: per-channel {per} ({order}) from {Path(mean_file).name}")
        else:
            if mean.shape[1] < spec.crop[0] or mean.shape[2] < spec.crop[1]:
                raise InputError(f"mean image {mean.shape[1]}×{mean.shape[2]} is smaller than the crop "
                                 f"{spec.crop[0]}×{spec.crop[1]}", mean_file)
            extra[MEAN_IMAGE_TENSOR] = mean
            spec = dataclasses.replace(spec, mean=(0.0, 0.0, 0.0), mean_image=MEAN_IMAGE_TENSOR,
                                       resize=(int(mean.shape[1]), int(mean.shape[2])), name="caffe-mean-image")
            notes.append(f"mean: image {'×'.join(map(str, mean.shape))} ({order}) from {Path(mean_file).name}, "
                         f"tensor {MEAN_IMAGE_TENSOR}; resize {mean.shape[1]}×{mean.shape[2]} before the crop")
    else:
        if spec.mean_image:
            notes.append(f"preprocess names mean image {spec.mean_image!r}, which this read does not supply")
        source = "train_val mean_value" if spec.name == "caffe-mean-value" else spec.name
        notes.append(f"mean: {source} per-channel {spec.mean} ({order})")
    if rgb_input:
        spec = dataclasses.replace(spec, channel_order="RGB",
                                   name=spec.name if spec.name.endswith("-rgb") else spec.name + "-rgb")
    spec.validate()
    return spec, extra


def rgb_conv(graph: Graph, prototxt: Path) -> Layer:
    """The convolution the BGR→RGB fold reverses: the first layer, on 3 input channels."""
    first = next(l for l in graph.layers if graph.input.name in l.inputs)
    if first.kind != "conv2d" or first.attrs["in_channels"] != 3:
        raise InputError(f"an RGB input (--rgb-input) needs a first convolution on 3 channels; {first.name} "
                         f"is {first.kind}" + (f" on {first.attrs['in_channels']}" if first.kind == "conv2d" else ""),
                         prototxt)
    return first
