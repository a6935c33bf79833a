"""Preprocessing for sources whose file does not say how images become the input (ONNX, Keras).

:class:`PreprocessOptions` is what the user said: a preset or spec (``--preprocess
torchvision|places365|caffe|FILE.json``) and single fields over it (``--mean``, ``--std``,
``--scale``, ``--channel-order``, ``--resize``; the crop is always the network's input size).
:func:`choose_preprocess` turns it into a :class:`~crossmodal.ir.preprocess.Preprocess`: the
user's spec when given, else what the file carries (a crossmodal-written model's metadata), else
torchvision's, with a note saying which was taken when the user gave none.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from crossmodal.errors import InputError
from crossmodal.ir.preprocess import PREPROCESS_PRESETS, Preprocess

#: ``--scale``: the pixel values the network takes, as the largest value (1 or 255).
SCALES = {1.0: "0-1", 255.0: "0-255"}


@dataclass(frozen=True)
class PreprocessOptions:
    """What the user said about preprocessing (every field optional)."""

    preset: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: float | None = None
    channel_order: str | None = None
    resize: int | tuple[int, int] | None = None

    @property
    def fields_given(self) -> bool:
        return any(v is not None for v in (self.mean, self.std, self.scale, self.channel_order, self.resize))

    @property
    def given(self) -> bool:
        return self.preset is not None or self.fields_given

    @classmethod
    def parse(cls, *, preset: str | None = None, mean: str | None = None, std: str | None = None,
              scale: float | None = None, channel_order: str | None = None,
              resize: str | None = None) -> "PreprocessOptions":
        """From command-line text: ``--mean 0.5,0.5,0.5`` (or one value for all channels),
        ``--resize 256`` or ``256x256``."""
        return cls(preset, _numbers(mean, "--mean"), _numbers(std, "--std"),
                   None if scale is None else float(scale), channel_order, _size(resize))


def _numbers(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise InputError(f"{what} takes numbers separated by commas, not {text!r}") from None
    if len(values) not in (1, 3):
        raise InputError(f"{what} takes one value or three (one per channel), not {len(values)}")
    return values


def _size(text: str | None) -> int | tuple[int, int] | None:
    if text is None:
        return None
    try:
        parts = [int(v) for v in str(text).lower().split("x")]
    except ValueError:
        raise InputError(f"--resize takes S (the shorter side) or HxW, not {text!r}") from None
    if len(parts) not in (1, 2) or min(parts) <= 0:
        raise InputError(f"--resize takes S (the shorter side) or HxW, not {text!r}")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def resolve_preprocess(value: str | Preprocess | None, default: str = "torchvision") -> Preprocess:
    """A preset name (``torchvision``, ``places365``, ``caffe``), a JSON file or JSON text."""
    import json
    from pathlib import Path

    if isinstance(value, Preprocess):
        return value
    value = value or default
    if value in PREPROCESS_PRESETS:
        return PREPROCESS_PRESETS[value]
    if value.lstrip().startswith(("{", "[")):
        text, source = value, None
    elif Path(value).is_file():
        text, source = Path(value).read_text(), Path(value)
    else:
        raise InputError(f"--preprocess takes {sorted(PREPROCESS_PRESETS)}, a JSON file or JSON text; "
                         f"got {value!r}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"preprocessing spec is not valid JSON ({exc})", source) from None
    if not isinstance(data, dict):
        raise InputError("preprocessing spec must be a JSON object", source)
    return Preprocess.from_dict(data, source)


def choose_preprocess(options: PreprocessOptions | None, input_hw: tuple[int, int],
                      carried: Preprocess | None = None) -> tuple[Preprocess, str | None]:
    """The spec for a network with input (H, W): returns (spec, note or None).

    The base is ``options.preset``, else ``carried`` (the file's own), else torchvision's; the
    fields given override it (then named ``custom``); the crop is the input size.
    """
    options = options or PreprocessOptions()
    note = None
    if options.preset is not None:
        base = resolve_preprocess(options.preset)
    elif carried is not None:
        base = carried
        if not options.fields_given:
            note = f"preprocessing {carried.name!r} from the model's crossmodal metadata (give --preprocess to change it)"
    else:
        base = PREPROCESS_PRESETS["torchvision"]
        if not options.fields_given:
            note = ("the file does not say how images are preprocessed: torchvision's (RGB, 0-1, ImageNet mean/std) "
                    "assumed; give --preprocess or --mean/--std/--scale/--channel-order")
    changes: dict = {}
    if options.channel_order is not None:
        if options.channel_order not in ("RGB", "BGR"):
            raise InputError(f"--channel-order takes RGB or BGR, not {options.channel_order!r}")
        changes["channel_order"] = options.channel_order
    if options.scale is not None:
        if options.scale not in SCALES:
            raise InputError(f"--scale takes 1 (pixels 0-1) or 255 (pixels 0-255), not {options.scale:g}")
        changes["value_range"] = SCALES[options.scale]
    for key in ("mean", "std"):
        value = getattr(options, key)
        if value is not None:
            changes[key] = value * 3 if len(value) == 1 else value
    if options.resize is not None:
        changes["resize"] = options.resize
    if changes:
        changes["name"] = "custom"
    h, w = input_hw
    spec = dataclasses.replace(base, crop=(h, w), **changes)
    spec.validate()
    return spec, note
