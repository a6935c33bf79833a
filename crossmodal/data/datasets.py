"""Data set readers behind one interface: a :class:`Dataset` of :class:`ImageRecord`.

Two layouts on disk:

1. **label list** — a categories file with lines ``name index`` (Places205 style
   ``/a/abbey 0`` or flattened ``apartment_building_outdoor 8``; names are
   normalised to the flattened form) plus a list file with lines ``path label``
   (whitespace separated, as Places205's ``train_places205.csv`` /
   ``val_places205.csv``; paths relative to the images root, a leading ``/`` is
   allowed). Lines naming missing files go to ``Dataset.missing``; a label outside
   the categories raises ``InputError`` naming the file and line.
2. **class folders** — ``root/<category>/**/*.{jpg,jpeg,png,bmp,gif,webp}``. Single
   letter folders holding folders are stepped through (Places205's
   ``images256/<letter>/...``; a one-letter folder holding images directly is a
   category) and under them a sub folder is a sub-category: ``images256/s/stadium/baseball/x.jpg``
   → ``stadium_baseball``. Without a letter level, everything below
   ``<category>`` belongs to it — unless the categories are known (a categories
   file) and name ``<category>_<sub>``. Records are sorted by relative path.

Modalities (:func:`resolve_modality`): a modality is a named data set. Each of
images root, list file and categories file is taken from, in order: the explicit
argument; the ``[modalities.<name>]`` entry of the config file (``crossmodal.toml``,
see ``crossmodal.example.toml``; relative paths are resolved against the file's
folder); the convention under ``data_root``: ``<data_root>/<modality>/`` holding
``categories.txt`` and ``<split>.txt`` or ``<modality>_<split>.txt``. Whatever root
is chosen, a ``categories.txt`` and split list inside it are picked up when not
given otherwise. With a list file: label-list layout; without: class folders.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from crossmodal.errors import InputError
from crossmodal.data.images import list_images
from crossmodal.data.labels import normalise

IMAGE_MODALITIES: tuple[str, ...] = ("natural", "clipart", "sketch")
TEXT_MODALITIES: tuple[str, ...] = ("spatial_text", "descriptions")
KNOWN_MODALITIES: tuple[str, ...] = IMAGE_MODALITIES + TEXT_MODALITIES
CONFIG_NAME = "crossmodal.toml"
#: split names recognised in list file names (``val.txt``, ``sketch_train.txt``)
SPLITS: tuple[str, ...] = ("train", "val", "test")
_CONFIG_KEYS = {"root", "categories", "list", "lists", "description"}


class ModalityAbsent(InputError):
    """A modality with no data where :func:`resolve_modality` looked (no root given, or its
    images root does not exist); a data set that is there but broken raises plain InputError."""


@dataclass(frozen=True)
class ImageRecord:
    """One image: its file, label index into ``Dataset.categories`` and category name."""

    path: Path
    label: int
    category: str


@dataclass
class Dataset:
    """A labelled image set.

    ``categories[label]`` is the (flattened) category name of label ``label``;
    ``records`` are in a deterministic order (list order, or sorted paths);
    ``missing`` lists ``(path, reason)`` for list entries whose file is absent.
    ``layout`` is "label-list" or "class-folders"; ``origin`` says where the
    settings came from (for reports).
    """

    name: str
    root: Path
    categories: list[str]
    records: list[ImageRecord]
    missing: list[tuple[Path, str]] = field(default_factory=list)
    layout: str = ""
    origin: str = ""
    #: the files read: ``{"list": Path, "categories": Path}`` (those that were used)
    files: dict[str, Path] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def counts(self) -> dict[str, int]:
        """Images per category, in category order (zero counts included)."""
        out = {c: 0 for c in self.categories}
        for r in self.records:
            out[r.category] += 1
        return out


# --------------------------------------------------------------------------- label lists
def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{what} not found", path) from None
    except IsADirectoryError:
        raise InputError(f"{what} is a folder, expected a file", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what}: {exc}", path) from None


def _content_lines(text: str) -> list[tuple[int, str]]:
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")]


def read_categories(path: str | os.PathLike) -> list[str]:
    """Categories file → flattened names in label order.

    Lines ``name index`` (indices 0..n-1, each once, any order) or, for every
    line, just ``name`` (index = line order). ``#`` comments and blank lines are
    ignored. Problems raise ``InputError`` naming the file and line.
    """
    path = Path(path)
    lines = _content_lines(_read_text(path, "categories file"))
    if not lines:
        raise InputError("categories file is empty", path)
    by_index: dict[int, str] = {}
    seen: dict[str, int] = {}
    with_index = len(lines[0][1].split()) > 1
    for order, (n, line) in enumerate(lines):
        parts = line.split()
        if with_index != (len(parts) > 1) or len(parts) > 2:
            raise InputError(f"line {n}: expected 'name index' like the other lines, got {line!r}", path)
        if with_index:
            try:
                index = int(parts[1])
            except ValueError:
                raise InputError(f"line {n}: index {parts[1]!r} is not an integer", path) from None
        else:
            index = order
        name = normalise(parts[0])
        if index in by_index:
            raise InputError(f"line {n}: index {index} given twice", path)
        if name in seen:
            raise InputError(f"line {n}: category {name!r} already on line {seen[name]}", path)
        by_index[index], seen[name] = name, n
    if sorted(by_index) != list(range(len(by_index))):
        gaps = sorted(set(range(max(by_index) + 1)) - set(by_index))[:5]
        raise InputError(f"indices must run 0..{len(by_index) - 1} without gaps "
                         f"(missing e.g. {gaps}, or negative)", path)
    return [by_index[i] for i in range(len(by_index))]


def read_label_list(list_file: str | os.PathLike, root: str | os.PathLike, categories: list[str],
                    check_files: bool = True) -> tuple[list[ImageRecord], list[tuple[Path, str]]]:
    """List file of ``path label`` lines → (records in list order, missing files).

    ``path`` is relative to ``root`` (leading ``/`` stripped); an absolute path that
    exists outside ``root`` is used as is. The label is the last whitespace (or
    comma) separated field, so paths may contain spaces. ``check_files=False``
    skips the per-file existence check (``missing`` is then empty).
    """
    list_file, root = Path(list_file), Path(root)
    records: list[ImageRecord] = []
    missing: list[tuple[Path, str]] = []
    for n, line in _content_lines(_read_text(list_file, "list file")):
        parts = line.rsplit(None, 1)
        if len(parts) != 2 and "," in line:
            parts = line.rsplit(",", 1)
        if len(parts) != 2:
            raise InputError(f"line {n}: expected 'path label', got {line!r}", list_file)
        rel, label_text = parts[0].strip().rstrip(","), parts[1].strip()
        try:
            label = int(label_text)
        except ValueError:
            raise InputError(f"line {n}: label {label_text!r} is not an integer", list_file) from None
        if not 0 <= label < len(categories):
            raise InputError(f"line {n}: label {label} is outside the {len(categories)} categories "
                             f"(0..{len(categories) - 1}); categories file and list disagree", list_file)
        path = root / rel.lstrip("/\\")
        if check_files and not path.is_file():
            if Path(rel).is_absolute() and Path(rel).is_file():
                path = Path(rel)
            else:
                missing.append((path, f"{list_file.name} line {n}: file not found"))
                continue
        records.append(ImageRecord(path, label, categories[label]))
    return records, missing


# --------------------------------------------------------------------------- class folders
def _folder_category(parts: tuple[str, ...], known: set[str] | None) -> str | None:
    """Category of a file at relative ``parts`` (folders..., file name) in class-folder layout."""
    folders = list(parts[:-1])
    depth = len(folders)
    while len(folders) > 1 and len(folders[0]) == 1:  # Places205 letter level(s)
        folders.pop(0)
    lettered = len(folders) != depth
    if not folders:
        return None  # a file directly under the root
    top = normalise(folders[0])
    sub = f"{top}_{normalise(folders[1])}" if len(folders) > 1 else None
    candidates = [sub, top] if lettered else [top, sub]
    candidates = [c for c in candidates if c]
    if known is not None:
        for c in candidates:
            if c in known:
                return c
    return candidates[0]


def scan_class_folders(root: str | os.PathLike, categories: list[str] | None = None
                       ) -> tuple[list[str], list[ImageRecord]]:
    """Class-folder tree → (categories, records sorted by relative path).

    Without ``categories`` they are the folder-derived names, sorted, and labels
    index that list. With ``categories`` (e.g. from a categories file) labels follow
    it, and a folder naming no known category raises ``InputError``. Files
    directly under ``root`` are ignored.
    """
    root = Path(root)
    known = None if categories is None else set(categories)
    found: list[tuple[Path, str]] = []
    for path in list_images(root):
        cat = _folder_category(path.relative_to(root).parts, known)
        if cat is None:
            continue
        if known is not None and cat not in known:
            raise InputError(f"folder for category {cat!r} matches none of the "
                             f"{len(known)} categories of the categories file", path.parent)
        found.append((path, cat))
    cats = list(categories) if categories is not None else sorted({c for _, c in found})
    index = {c: i for i, c in enumerate(cats)}
    return cats, [ImageRecord(p, index[c], c) for p, c in found]


# --------------------------------------------------------------------------- modalities
def canonical_modality(name: str) -> str:
    """``"Spatial-Text"`` → ``"spatial_text"``."""
    return name.strip().lower().replace("-", "_")


def modality_names(value: str | Sequence[str] | None) -> list[str]:
    """``"natural, Clipart,sketch"`` or a list → canonical names, in order, without repeats."""
    items = value.split(",") if isinstance(value, str) else (value or [])
    return list(dict.fromkeys(canonical_modality(v) for v in items if v.strip()))


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``crossmodal.toml``; relative paths inside resolve against its folder.

    Returns ``{"path": Path, "data_root": Path | None, "modalities": {name: {root,
    categories, list: Path, lists: {split: Path}}}}`` with paths made absolute.
    Top-level tables other than ``[modalities.*]`` are ignored (left to other tools).
    """
    path = Path(path)
    try:
        raw = tomllib.loads(_read_text(path, "config file"))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"invalid TOML: {exc}", path) from None
    base = path.resolve().parent

    def resolve(value: Any, key: str) -> Path:
        if not isinstance(value, str):
            raise InputError(f"{key} must be a path string, not {value!r}", path)
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    modalities: dict[str, dict[str, Any]] = {}
    for name, entry in (raw.get("modalities") or {}).items():
        where = f"[modalities.{name}]"
        if not isinstance(entry, dict):
            raise InputError(f"{where} must be a table", path)
        unknown = sorted(set(entry) - _CONFIG_KEYS)
        if unknown:
            raise InputError(f"{where}: unknown keys {unknown}; known: {sorted(_CONFIG_KEYS)}", path)
        out: dict[str, Any] = {}
        for key in ("root", "categories", "list"):
            if key in entry:
                out[key] = resolve(entry[key], f"{where} {key}")
        lists = entry.get("lists", {})
        if not isinstance(lists, dict):
            raise InputError(f"{where} lists must be a table like {{ val = \"...\" }}", path)
        out["lists"] = {split: resolve(v, f"{where} lists.{split}") for split, v in lists.items()}
        modalities[canonical_modality(name)] = out
    data_root = raw.get("data_root")
    return {"data_root": None if data_root is None else resolve(data_root, "data_root"),
            "modalities": modalities, "path": path}


def _convention_list(folder: Path, modality: str, split: str) -> Path | None:
    """``<split>.txt`` or ``<modality>_<split>.txt`` in ``folder``; None when there is no
    list at all (class-folder layout). Lists of other splits only (``train.txt`` but no
    ``val.txt``) are an error: falling back to class folders would evaluate every image."""
    for candidate in (folder / f"{split}.txt", folder / f"{modality}_{split}.txt"):
        if candidate.is_file():
            return candidate
    others = sorted(p.name for p in folder.glob("*.txt")
                    if p.stem in SPLITS or (p.stem.startswith(f"{modality}_") and p.stem[len(modality) + 1:] in SPLITS))
    if others:
        raise InputError(f"no list for split {split!r} here (found {', '.join(others)}); choose the split "
                         f"with --split, or give the list with --list", folder)
    return None


def resolve_modality(name: str, *, data_root: str | os.PathLike | None = None,
                     config: str | os.PathLike | Mapping[str, Any] | None = None,
                     split: str = "val", images: str | os.PathLike | None = None,
                     list_file: str | os.PathLike | None = None,
                     categories: str | os.PathLike | None = None) -> Dataset:
    """Find and read the data set of modality ``name`` (resolution order: module docstring).

    ``config``: a config file path, an already loaded :func:`load_config` dict, or
    None to use ``./crossmodal.toml`` when it exists. Modality names are the known
    ones (:data:`KNOWN_MODALITIES`) plus any defined in the config; text modalities
    are refused.
    """
    modality = canonical_modality(name)
    if config is None and Path(CONFIG_NAME).is_file():
        config = Path(CONFIG_NAME)
    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else (config or {})
    cfg_modalities = cfg.get("modalities", {})
    if modality in TEXT_MODALITIES:
        raise InputError(f"modality {modality!r} is text, not images; only image modalities "
                         f"({', '.join(IMAGE_MODALITIES)}) can be run through a CNN")
    if modality not in KNOWN_MODALITIES and modality not in cfg_modalities:
        known = sorted(set(IMAGE_MODALITIES) | set(cfg_modalities))
        raise InputError(f"unknown modality {name!r}; known: {', '.join(known)} "
                         f"(text modalities {', '.join(TEXT_MODALITIES)} cannot be run)")
    entry = cfg_modalities.get(modality, {})
    if data_root is None:
        data_root = cfg.get("data_root")
    origin = []

    # images root
    if images is not None:
        root, origin = Path(images), ["explicit images root"]
    elif "root" in entry:
        root, origin = entry["root"], [f"config {cfg.get('path', '')} [modalities.{modality}]"]
    elif data_root is not None:
        root, origin = Path(data_root) / modality, [f"convention under data root {data_root}"]
    else:
        raise ModalityAbsent(f"no data for modality {modality!r}: give an images folder, a "
                         f"[modalities.{modality}] entry in {CONFIG_NAME}, or a data root")
    if not root.is_dir():
        raise ModalityAbsent(f"images root for modality {modality!r} not found", root)

    # list file
    if list_file is not None:
        lst = Path(list_file)
    elif split in entry.get("lists", {}):
        lst = entry["lists"][split]
    elif entry.get("lists"):
        raise InputError(f"[modalities.{modality}] has no list for split {split!r} "
                         f"(has: {', '.join(sorted(entry['lists']))})", cfg.get("path"))
    elif "list" in entry:
        lst = entry["list"]
    else:
        lst = _convention_list(root, modality, split)
    if lst is not None and not lst.is_file():
        raise InputError(f"list file for modality {modality!r} not found", lst)

    # categories file
    if categories is not None:
        cat_file = Path(categories)
    elif "categories" in entry:
        cat_file = entry["categories"]
    else:
        cat_file = root / "categories.txt" if (root / "categories.txt").is_file() else None
    if cat_file is not None and not cat_file.is_file():
        raise InputError(f"categories file for modality {modality!r} not found", cat_file)
    cats = None if cat_file is None else read_categories(cat_file)

    if lst is not None:
        if cats is None:
            raise InputError("a list file needs a categories file (lines 'name index')", lst)
        records, missing = read_label_list(lst, root, cats)
        return Dataset(modality, root, cats, records, missing, "label-list",
                       "; ".join(origin + [f"list {lst}", f"categories {cat_file}"]),
                       {"list": Path(lst), "categories": Path(cat_file)})
    cats, records = scan_class_folders(root, cats)
    if not records:
        raise InputError(f"no images found for modality {modality!r} (class-folder layout)", root)
    return Dataset(modality, root, cats, records, [], "class-folders",
                   "; ".join(origin + ([f"categories {cat_file}"] if cat_file else [])),
                   {"categories": Path(cat_file)} if cat_file else {})
