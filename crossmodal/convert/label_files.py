"""Read Places365 label files into :class:`~crossmodal.convert.ir.Labels`.

``categories_places365.txt``: lines ``/a/airfield 0`` (name, index; indices 0..K-1,
any order). ``IO_places365.txt``: lines ``/a/airfield 2`` (1 = indoor, 2 = outdoor).
"""
from __future__ import annotations

from pathlib import Path

from crossmodal.convert.ir import Labels
from crossmodal.errors import InputError


def parse_categories(text: str, source: object = None) -> list[str]:
    """``name index`` lines → names in index order; checks indices are 0..K-1 once each."""
    by_index: dict[int, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise InputError(f"line {n}: expected 'name index', got {line.strip()!r}", source)
        idx = int(parts[1])
        if idx in by_index:
            raise InputError(f"line {n}: index {idx} appears twice", source)
        by_index[idx] = parts[0]
    if sorted(by_index) != list(range(len(by_index))):
        raise InputError(f"indices are not 0..{len(by_index) - 1}", source)
    return [by_index[i] for i in range(len(by_index))]


def parse_indoor_outdoor(text: str, names: list[str], source: object = None) -> list[int]:
    """``name 1|2`` lines → flags aligned with ``names``."""
    flags: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("1", "2"):
            raise InputError(f"line {n}: expected 'name 1|2', got {line.strip()!r}", source)
        flags[parts[0]] = int(parts[1])
    missing = [name for name in names if name not in flags]
    if missing:
        raise InputError(f"no indoor/outdoor flag for {len(missing)} classes, e.g. {missing[:3]}", source)
    return [flags[name] for name in names]


def read_labels(path: Path, io_path: Path | None = None, num_classes: int | None = None) -> Labels:
    """Read the category file (and optional indoor/outdoor file), checking the class count."""
    path = Path(path)
    try:
        names = parse_categories(path.read_text(), path)
        flags = parse_indoor_outdoor(Path(io_path).read_text(), names, io_path) if io_path else None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read label file ({exc.__class__.__name__})", path) from None
    if num_classes is not None and len(names) != num_classes:
        raise InputError(f"{len(names)} labels, but the classifier has {num_classes} outputs", path)
    return Labels(names=names, indoor_outdoor=flags, source=path.name)
