"""How an image becomes the network input, as data: :class:`Preprocess`, its JSON field checks and
the named presets (``--preprocess torchvision|places365|caffe``).

Pure: no file I/O, no image library (decoding and the steps themselves: :mod:`crossmodal.data.images`).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from crossmodal.errors import InputError


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the network input, as data.

    Steps, in order: decode to RGB (``channel_order`` ``"L"``: then to grayscale, PIL's
    ITU-R 601-2 luma) → resize → center crop → to float in ``value_range`` ("0-1":
    pixel/255, "0-255": pixel) → reorder channels to ``channel_order`` → subtract mean
    (``mean`` per channel, or the tensor named ``mean_image`` of shape (C, H, W),
    already in ``channel_order``, center-cropped to the crop size) → divide by ``std``.

    The spec makes ``C = len(mean)`` channels: 3 (``RGB`` / ``BGR``) or 1 (``L``,
    grayscale); ``std`` has as many values. :mod:`crossmodal.ir.consistency`
    checks that C is what the network's first layer takes.

    ``resize`` is either an int (the shorter side becomes this, aspect kept) or
    ``(H, W)`` (exact size, aspect not kept). ``crop`` is (H, W).
    ``mean`` and ``std`` are in ``channel_order`` and in units of ``value_range``.
    """

    resize: int | tuple[int, int] = 256
    crop: tuple[int, int] = (224, 224)
    interpolation: str = "bilinear"
    channel_order: str = "RGB"
    value_range: str = "0-1"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    mean_image: str | None = None
    name: str = "torchvision"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["resize"] = list(self.resize) if isinstance(self.resize, tuple) else self.resize
        d["crop"], d["mean"], d["std"] = list(self.crop), list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: object = None) -> "Preprocess":
        """A spec from JSON data, every field type-checked (InputError naming the field).

        ``resize``: a positive int or [H, W] ([S] means S); ``crop``: a positive int
        (square) or [H, W]; ``mean``: three numbers (one for a grayscale spec); ``std``: as
        many non-zero numbers. Fields left out take the torchvision defaults, except
        ``name``, which is ``"custom"`` for a spec that does not name itself, and
        ``channel_order``, which is ``"L"`` for a spec whose mean has one value.
        """
        if not isinstance(d, Mapping):
            raise InputError("preprocessing spec must be a JSON object", source)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown preprocessing keys {unknown}; known: {sorted(known)}", source)
        kw = {key: _PREPROCESS_FIELDS[key](value, key, source) for key, value in d.items()}
        kw.setdefault("name", "custom")
        if len(kw.get("mean", (0, 0, 0))) == 1:
            kw.setdefault("channel_order", "L")
        spec = cls(**kw)
        spec.validate(source)
        return spec

    @property
    def channels(self) -> int:
        """How many channels the images this spec makes have: 1 (``L``) or 3."""
        return 1 if self.channel_order == "L" else 3

    def validate(self, source: object = None) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise InputError(f"channel_order must be RGB, BGR or L (grayscale), not {self.channel_order!r}", source)
        if self.value_range not in ("0-1", "0-255"):
            raise InputError(f"value_range must be '0-1' or '0-255', not {self.value_range!r}", source)
        n = self.channels
        if len(self.mean) != n or len(self.std) != n or any(s == 0 for s in self.std):
            want = "one value each (grayscale, channel_order L)" if n == 1 else "three values each"
            raise InputError(f"mean and std need {want}, std non-zero; got {len(self.mean)} and "
                             f"{len(self.std)} for channel_order {self.channel_order}", source)

    def check_fits(self, input_shape: tuple[int, ...], source: object = None) -> None:
        """Refuse a spec whose crop (H, W) is not the network input's (C, H, W) size."""
        h, w = int(input_shape[-2]), int(input_shape[-1])
        if tuple(int(v) for v in self.crop) != (h, w):
            raise InputError(f"preprocessing {self.name!r} crops {self.crop[0]}×{self.crop[1]}, but the "
                             f"network takes {h}×{w}: give a spec whose \"crop\" is [{h}, {w}]", source)


#: Channel orders a preprocessing spec may make: colour (3 channels) or grayscale ``L`` (1 channel).
CHANNEL_ORDERS = ("RGB", "BGR", "L")

#: Resampling filters an image may be resized with (see crossmodal.data.images).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "area", "box")


def _bad(key: str, want: str, value: Any, source: object) -> InputError:
    return InputError(f"preprocessing field {key!r} must be {want}, not {json.dumps(value)}", source)


def _int(value: Any) -> int | None:
    """A positive int from JSON (an integral float counts), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value) if value > 0 else None


def _size(value: Any, key: str, source: object, *, square: bool) -> int | tuple[int, int]:
    """``resize``: int or (H, W); ``crop`` (``square``): always (H, W)."""
    want = "a positive integer or [H, W] of positive integers"
    if isinstance(value, (list, tuple)):
        sizes = [_int(v) for v in value]
        if len(sizes) not in (1, 2) or None in sizes:
            raise _bad(key, want, list(value), source)
        if len(sizes) == 2:
            return (sizes[0], sizes[1])
        value = sizes[0]
    n = _int(value)
    if n is None:
        raise _bad(key, want, value, source)
    return (n, n) if square else n


def _choice(options: tuple[str, ...], *, lower: bool = False):
    def check(value: Any, key: str, source: object) -> str:
        if not isinstance(value, str) or (value.lower() if lower else value) not in options:
            raise _bad(key, "one of " + ", ".join(repr(o) for o in options), value, source)
        return value
    return check


def _triple(nonzero: bool):
    def check(value: Any, key: str, source: object) -> tuple[float, ...]:
        want = "three " + ("non-zero " if nonzero else "") + "numbers (one for a grayscale spec)"
        if (not isinstance(value, (list, tuple)) or len(value) not in (1, 3)
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                       or (nonzero and v == 0) for v in value)):
            raise _bad(key, want, list(value) if isinstance(value, tuple) else value, source)
        return tuple(float(v) for v in value)
    return check


def _text(optional: bool):
    def check(value: Any, key: str, source: object) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise _bad(key, "a non-empty string" + (" or null" if optional else ""), value, source)
        return value
    return check


_PREPROCESS_FIELDS: dict[str, Any] = {
    "resize": lambda v, k, s: _size(v, k, s, square=False),
    "crop": lambda v, k, s: _size(v, k, s, square=True),
    "interpolation": _choice(INTERPOLATIONS, lower=True),
    "channel_order": _choice(CHANNEL_ORDERS),
    "value_range": _choice(("0-1", "0-255")),
    "mean": _triple(nonzero=False),
    "std": _triple(nonzero=True),
    "mean_image": _text(optional=True),
    "name": _text(optional=False),
}


#: Named preprocessing presets (``--preprocess NAME``).
PREPROCESS_PRESETS: dict[str, Preprocess] = {
    # torchvision's ImageNet recipe: shorter side 256, center crop 224.
    "torchvision": Preprocess(),
    # The Places365 authors' PyTorch demo scripts: Resize((256, 256)), CenterCrop(224).
    "places365": Preprocess(resize=(256, 256), name="places365"),
    # Caffe: BGR, 0-255, per-channel mean of places365CNN_mean.binaryproto, 256×256 then crop.
    "caffe": Preprocess(
        resize=(256, 256), channel_order="BGR", value_range="0-255",
        mean=(104.051, 112.514, 116.676), std=(1.0, 1.0, 1.0), name="caffe",
    ),
}
