"""Image tiles for the galleries: the crop the network saw, cut to a unit's receptive-field box.

:class:`Tiles` decodes and preprocesses each image once (the reference preprocessing,
:func:`crossmodal.data.images.load_image`), shows it de-normalised (so a Caffe network's mean image
and BGR order are undone as they were applied), and keeps the last ``keep`` crops: a gallery draws
each image's crop for several units. A file that no longer decodes gives a grey tile.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from crossmodal.data.images import ImageDecodeError, load_image
from crossmodal.evaluate.units.geometry import denormalise
from crossmodal.ir.preprocess import Preprocess


class Tiles:
    """Crops ``(H, W, 3)`` uint8 by path, with a small LRU (module docstring)."""

    def __init__(self, spec: Preprocess, mean_image: np.ndarray | None = None, keep: int = 256,
                 draft: bool = False) -> None:
        self.spec, self.mean_image, self.keep, self.draft = spec, mean_image, keep, draft
        self._crops: OrderedDict[Path, np.ndarray] = OrderedDict()

    def crop(self, path: str | Path) -> np.ndarray:
        path = Path(path)
        if path in self._crops:
            self._crops.move_to_end(path)
            return self._crops[path]
        try:
            x = load_image(path, self.spec, self.mean_image, self.draft)
            img = denormalise(x[None], self.spec, self.mean_image)[0]
        except ImageDecodeError:
            img = np.full((*self.spec.crop, 3), 128, np.uint8)
        self._crops[path] = img
        if len(self._crops) > self.keep:
            self._crops.popitem(last=False)
        return img

    def tile(self, path: str | Path, box, size: int = 96):
        """The crop's ``box`` (x0, y0, x1, y1) region as a ``size`` × ``size`` PIL image."""
        from PIL import Image

        img = self.crop(path)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        part = img[max(0, y0):max(y0 + 1, y1), max(0, x0):max(x0 + 1, x1)]
        return Image.fromarray(np.ascontiguousarray(part)).resize((size, size), Image.Resampling.BILINEAR)
