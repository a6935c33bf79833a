"""Model cards: the files the Places365 authors publish, as data.

Each card is one JSON file in ``crossmodal/models/cards/`` (shipped as package
data) describing a downloadable set of files::

    {"name": "vgg16-places365-pytorch",
     "description": "...",
     "homepage": "https://...",            # optional
     "files": [{"file": "vgg16_places365-0bafbc55.pth",
                "url": "http://...",
                "sha256": null,              # 64 hex digits, or null when unknown
                "sha256_prefix": "0bafbc55", # optional: the leading hex digits, when only those are known
                "size": null,                # bytes, or null; informational (progress, listings)
                "kind": "checkpoint",        # checkpoint | definition | labels | io-labels | mean | other
                "preprocess": "torchvision", # checkpoints: torchvision | places365 | caffe
                "labels": "places365-labels",# checkpoints: the card of the matching label file
                "mean": null}]}              # optional: the card of a Caffe mean image

The loader validates every card once (a broken card is a packaging bug and
raises :class:`~crossmodal.errors.InputError` naming the JSON file), and
:func:`find_card_for_file` lets the converter pick a known checkpoint's
preprocessing from its file name.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path, PurePath

from crossmodal.errors import InputError

#: Preset names a card may name (the keys of ``crossmodal.ir.preprocess.PREPROCESS_PRESETS``;
#: kept as literals so that listing cards does not import NumPy).
PRESETS = ("torchvision", "places365", "caffe")
#: What a file of a card is.
KINDS = ("checkpoint", "definition", "labels", "io-labels", "mean", "other")

_HEX = re.compile(r"[0-9a-f]+")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


@dataclass(frozen=True)
class CardFile:
    """One downloadable file of a card."""

    file: str
    url: str
    sha256: str | None = None
    sha256_prefix: str | None = None
    size: int | None = None
    kind: str = "other"
    preprocess: str | None = None
    labels: str | None = None
    mean: str | None = None

    @property
    def check(self) -> str:
        """How a download of this file is verified: ``sha256``, ``sha256-prefix`` or ``none``."""
        return "sha256" if self.sha256 else "sha256-prefix" if self.sha256_prefix else "none"


@dataclass(frozen=True)
class Card:
    """A named set of files to download (a model, its label lists, a mean image)."""

    name: str
    description: str
    files: tuple[CardFile, ...]
    homepage: str | None = None

    @property
    def preprocess(self) -> str | None:
        """The preprocessing preset of the card's checkpoint, or None for data-only cards."""
        presets = {f.preprocess for f in self.files if f.preprocess}
        return presets.pop() if len(presets) == 1 else None

    @property
    def labels(self) -> str | None:
        """The label card of the card's checkpoint, if any."""
        names = {f.labels for f in self.files if f.labels}
        return names.pop() if len(names) == 1 else None

    @property
    def size(self) -> int | None:
        """Total size in bytes when every file's size is known."""
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(sizes)

    def file_named(self, name: str) -> CardFile | None:
        """The card's file of that name (case-insensitive), or None."""
        name = name.lower()
        return next((f for f in self.files if f.file.lower() == name), None)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["files"] = [asdict(f) for f in self.files]
        data["preprocess"], data["labels"], data["size"] = self.preprocess, self.labels, self.size
        return data


def list_cards() -> list[Card]:
    """Every known card, sorted by name."""
    return list(_load_all().values())


def card_names() -> list[str]:
    return list(_load_all())


def get_card(name: str) -> Card:
    """The card called ``name``; an unknown name raises InputError listing the known ones."""
    cards = _load_all()
    card = cards.get(name.strip().lower())
    if card is None:
        raise InputError(f"unknown model card {name!r}; known cards: {', '.join(cards)}")
    return card


def find_card_for_file(path_or_name: str | PurePath) -> Card | None:
    """The card one of whose files has this file name (the folder is ignored), or None.

    ``weights/vgg16_places365-0bafbc55.pth`` → the ``vgg16-places365-pytorch`` card, whose
    :attr:`Card.preprocess` is the preset that checkpoint expects. A name ending in
    ``.part`` (an unfinished download) matches nothing.
    """
    name = PurePath(str(path_or_name)).name.lower()
    if not name:
        return None
    for card in _load_all().values():
        if card.file_named(name) is not None:
            return card
    return None


def label_files_beside(source: str | PurePath, num_classes: int) -> tuple[Path, Path | None] | None:
    """The published label file (and IO file) for a network of ``num_classes`` outputs lying beside
    ``source`` (where ``fetch`` puts a release's files), or None: the label cards' files with as many
    lines as classes (``categories_places365.txt`` and ``IO_places365.txt``; the hybrid's list)."""
    folder = Path(source).parent
    for card in list_cards():
        labels = [f for f in card.files if f.kind == "labels"]
        io = next((f for f in card.files if f.kind == "io-labels"), None)
        for f in labels:
            path = folder / f.file
            try:
                lines = [ln for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
            except (OSError, UnicodeDecodeError):
                continue
            if len(lines) == num_classes:
                io_path = folder / io.file if io is not None and (folder / io.file).is_file() else None
                return path, io_path
    return None


def find_card_for_sha256(sha256: str) -> tuple[Card, str] | None:
    """The card publishing a checkpoint with this SHA-256: ``(card, "sha256")`` on a full match,
    ``(card, "sha256-prefix")`` when the card knows only the leading hex digits and they match;
    else None. Only checkpoint files count."""
    sha = (sha256 or "").lower()
    if len(sha) != 64:
        return None
    prefixed = None
    for card in _load_all().values():
        for f in card.files:
            if f.kind != "checkpoint":
                continue
            if f.sha256 and f.sha256 == sha:
                return card, "sha256"
            if not f.sha256 and f.sha256_prefix and sha.startswith(f.sha256_prefix) and prefixed is None:
                prefixed = (card, "sha256-prefix")
    return prefixed


# --------------------------------------------------------------------------- loading

@functools.lru_cache(maxsize=1)
def _load_all() -> dict[str, Card]:
    folder = resources.files(__package__).joinpath("cards")
    cards: dict[str, Card] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        card = _parse(entry.read_text(encoding="utf-8"), entry.name)
        if card.name in cards:
            raise InputError(f"duplicate model card name {card.name!r}", entry.name)
        cards[card.name] = card
    for card in cards.values():  # cross references must name existing cards
        for f in card.files:
            for ref in (f.labels, f.mean):
                if ref is not None and ref not in cards:
                    raise InputError(f"file {f.file} refers to unknown card {ref!r}", f"{card.name}.json")
    return dict(sorted(cards.items()))


def _parse(text: str, source: str) -> Card:
    """One card from its JSON text, validated; ``source`` names it in errors."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc})", source) from None
    if not isinstance(data, dict):
        raise InputError("a model card must be a JSON object", source)
    unknown = set(data) - {"name", "description", "homepage", "files"}
    if unknown:
        raise InputError(f"unknown card keys {sorted(unknown)}", source)
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InputError(f"card name must be lower-case letters, digits, '.', '_' or '-', not {name!r}", source)
    if source.endswith(".json") and source[:-5] != name:
        raise InputError(f"card {name!r} must live in {name}.json", source)
    files = data.get("files")
    if not isinstance(files, list) or not files:
        raise InputError("a card needs a non-empty 'files' list", source)
    parsed = tuple(_parse_file(f, source) for f in files)
    if len({f.file.lower() for f in parsed}) != len(parsed):
        raise InputError("two files of one card have the same name", source)
    return Card(name=name, description=str(data.get("description", "")), files=parsed,
                homepage=data.get("homepage"))


def _parse_file(entry: object, source: str) -> CardFile:
    if not isinstance(entry, dict):
        raise InputError("each entry of 'files' must be a JSON object", source)
    fields = set(CardFile.__dataclass_fields__)
    unknown = set(entry) - fields
    if unknown:
        raise InputError(f"unknown file keys {sorted(unknown)}", source)
    if "file" not in entry or "url" not in entry:
        raise InputError("each file needs 'file' and 'url'", source)
    f = CardFile(**entry)
    where = f"{source} ({f.file!r})"
    if not isinstance(f.file, str) or not f.file or "/" in f.file or "\\" in f.file:
        raise InputError("'file' must be a plain file name", where)
    if not isinstance(f.url, str) or not f.url.startswith(("http://", "https://", "file://")):
        raise InputError("'url' must be an http, https or file URL", where)
    if f.sha256 is not None and (not isinstance(f.sha256, str) or len(f.sha256) != 64
                                 or not _HEX.fullmatch(f.sha256)):
        raise InputError("'sha256' must be 64 lower-case hex digits or null", where)
    if f.sha256_prefix is not None and (not isinstance(f.sha256_prefix, str)
                                        or not _HEX.fullmatch(f.sha256_prefix) or len(f.sha256_prefix) > 64):
        raise InputError("'sha256_prefix' must be lower-case hex digits or null", where)
    if f.sha256 and f.sha256_prefix and not f.sha256.startswith(f.sha256_prefix):
        raise InputError("'sha256' does not start with 'sha256_prefix'", where)
    if f.size is not None and (not isinstance(f.size, int) or isinstance(f.size, bool) or f.size < 0):
        raise InputError("'size' must be a byte count or null", where)
    if f.kind not in KINDS:
        raise InputError(f"'kind' must be one of {', '.join(KINDS)}", where)
    if f.preprocess is not None and f.preprocess not in PRESETS:
        raise InputError(f"'preprocess' must be one of {', '.join(PRESETS)}", where)
    if f.kind == "checkpoint" and f.preprocess is None:
        raise InputError("a checkpoint needs its 'preprocess' preset", where)
    return f
