"""Which units: ``--units 0-63,100`` parsed and checked, and the units drawn by default.

Unit numbers are channel indices of the layer, 0-based. :func:`parse_units` accepts a comma list
of numbers and inclusive ranges ``a-b``; a unit outside the layer is one line of bad input.
:func:`drawn` picks the gallery's units: ``auto`` (the ``per_side`` units that agree most across
modalities and the ``per_side`` that agree least, by agreement score, then by the mean of their
top values), ``all``, ``none``, or an explicit list (each must be among the units of the run).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from crossmodal.errors import InputError

PER_SIDE = 32


def parse_units(text: str | None, count: int, what: str = "--units") -> list[int]:
    """``"0-63,100"`` → ``[0, …, 63, 100]`` (sorted, no repeats); None or ``all`` → every unit."""
    if text is None or text.strip().lower() in ("", "all"):
        return list(range(count))
    out: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            lo, hi = (int(v) for v in part.split("-", 1)) if "-" in part else (int(part), int(part))
        except ValueError:
            raise InputError(f"{what}: {part!r} is not a unit number or a range a-b") from None
        if lo > hi:
            raise InputError(f"{what}: range {part!r} runs backwards")
        out.update(range(lo, hi + 1))
    bad = sorted(u for u in out if not 0 <= u < count)
    if bad:
        raise InputError(f"{what}: unknown unit {bad[0]}: the layer has units 0–{count - 1}")
    if not out:
        raise InputError(f"{what}: no units given")
    return sorted(out)


def drawn(spec: str, units: Sequence[int], score: np.ndarray, strength: np.ndarray,
          per_side: int = PER_SIDE) -> dict[str, list[int]]:
    """``{"agree": [...], "disagree": [...]}`` (auto) or ``{"chosen": [...]}``: units to draw.
    ``score`` / ``strength`` are per entry of ``units``."""
    spec = (spec or "auto").strip().lower()
    units = list(units)
    if spec == "none":
        return {}
    if spec == "all":
        return {"chosen": units}
    if spec == "auto":
        order = np.lexsort((-np.asarray(strength), -np.asarray(score)))  # best agreement first
        n = min(per_side, len(units) // 2 if len(units) > 1 else 1)
        agree = [units[i] for i in order[:n]]
        rest = [units[i] for i in order[::-1] if units[i] not in agree][:per_side]
        return {"agree": agree, "disagree": rest}
    chosen = parse_units(spec, max(units) + 1, "--draw")
    missing = [u for u in chosen if u not in set(units)]
    if missing:
        raise InputError(f"--draw: unit {missing[0]} is not among the units of this run (--units)")
    return {"chosen": chosen}
