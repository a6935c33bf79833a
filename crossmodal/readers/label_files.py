"""Read Places365 label files into :class:`~crossmodal.ir.graph.Labels`.

``categories_places365.txt``: lines ``/a/airfield 0`` (name, index; indices 0..K-1,
any order). ``categories_hybrid1365.txt`` has names with spaces
(``n01440764 tench, Tinca tinca 0``): the index is the last token, the name all
before it. ``IO_places365.txt``: lines ``/a/airfield 2`` (1 = indoor, 2 = outdoor).
"""
from __future__ import annotations

from pathlib import Path

from crossmodal.ir.graph import Labels
from crossmodal.errors import InputError


def _name_and_value(line: str) -> tuple[str, str] | None:
    """``NAME VALUE`` with NAME possibly holding spaces → (NAME, VALUE), or None."""
    parts = line.strip().rsplit(None, 1)
    return (parts[0], parts[1]) if len(parts) == 2 else None


def parse_categories(text: str, source: object = None) -> list[str]:
    """``name index`` lines → names in index order; checks indices are 0..K-1 once each."""
    by_index: dict[int, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = _name_and_value(line)
        if parts is None or not parts[1].lstrip("-").isdigit():
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
        parts = _name_and_value(line)
        if parts is None or parts[1] not in ("1", "2"):
            raise InputError(f"line {n}: expected 'name 1|2', got {line.strip()!r}", source)
        flags[parts[0]] = int(parts[1])
    missing = [name for name in names if name not in flags]
    if missing:
        raise InputError(f"no indoor/outdoor flag for {len(missing)} classes, e.g. {missing[:3]}", source)
    return [flags[name] for name in names]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first name
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc.__class__.__name__
        raise InputError(f"cannot read label file ({detail})", path) from None


def read_labels(path: Path, io_path: Path | None = None, num_classes: int | None = None) -> Labels:
    """Read the category file (and optional indoor/outdoor file), checking the class count.

    Each file is read on its own, so an error names the file that caused it.
    """
    path = Path(path)
    names = parse_categories(_read_text(path), path)
    if num_classes is not None and len(names) != num_classes:
        raise InputError(f"{len(names)} labels, but the classifier has {num_classes} outputs", path)
    flags = None
    if io_path is not None:
        io_path = Path(io_path)
        flags = parse_indoor_outdoor(_read_text(io_path), names, io_path)
    return Labels(names=names, indoor_outdoor=flags, source=path.name)
