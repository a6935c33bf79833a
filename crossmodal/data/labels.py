"""Mapping a model's labels onto a data set's categories, muting, and scoring.

Terms: the **source** labels are the model's outputs (Places365: 365 names such
as ``/s/stadium/baseball``); the **target** categories are the data set's
(CMPlaces / Places205: 205 flattened names such as ``stadium_baseball``).

Mapping (:func:`build_mapping`): both sides are :func:`normalise`-d; a target
whose name equals a source name maps to it; then the alias table is applied and
**wins** over an exact match: ``target → source label`` (e.g. ``temple_east_asia``
and ``temple_south_asia`` → ``/t/temple/asia``), or ``target → ""`` meaning "no
counterpart". The packaged table is ``crossmodal/data/places205_aliases.csv``
(``target_category,source_label,note``); a user's ``--label-map`` file in the same
format adds or overrides entries (:func:`merge_aliases`).

Every label of the network counts, not only the scene labels: an ImageNet synset label of the
hybrid 1365-class networks (``n01440764 tench, Tinca tinca``) is matched by each of its
comma-separated names (``tench``; ``bookstore`` ↔ ``bookshop, bookstore, bookstall``). A category
that matches several labels (``coast`` is a scene and the synset ``seashore, coast, seacoast,
sea-coast``) maps to all of them: predicting any one is correct, and each is kept by muting;
:attr:`LabelMapping.matches` says which labels each category kept. In an alias file a
``source_label`` of ``A|B`` names several labels, and a leading ``+`` (``+/c/coast``) adds to the
automatic matches instead of replacing them.

Scoring (:func:`score`), pure NumPy:

* **muting** — logits of source labels that map to no target category are
  removed before argmax / top-k (the network may not win by predicting a class
  the data set does not have); the *unmuted* score takes argmax over all sources;
* **shared source labels** — when several targets map to one source label, a
  prediction of that label counts as correct for **any** of them. The network
  cannot tell them apart, so any other rule would charge it for a distinction it
  was never trained to make. Such a prediction is reported as the tuple of all
  target categories sharing the label; :attr:`Scores.shared_images` counts the
  images whose true category is in such a group;
* **unmapped target categories** (no source label): ``unmapped="exclude"`` leaves
  their images out (counted in :attr:`Scores.left_out`); ``"keep"`` scores them
  as errors (counted in :attr:`Scores.kept_unmapped`).

Correctness is the same test in every case: the image's true category maps to
source label ``s``, and ``s`` is the top-1 (resp. among the top-k) predicted
source labels.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from crossmodal.errors import InputError

#: Alias table: target category (normalised) → source label, or None for "no counterpart".
Aliases = dict[str, Optional[str]]

_LETTER_PREFIX = re.compile(r"^/?[^/]/")
_SYNSET = re.compile(r"^n\d{8}\s+(.+)$")
_ALIAS_HEADER = ["target_category", "source_label", "note"]


def normalise(name: str) -> str:
    """Flatten a Places-style label: drop a ``/x/`` letter prefix, then ``/`` → ``_``.

    ``/s/stadium/baseball`` → ``stadium_baseball``; ``/a/airfield`` → ``airfield``;
    ``apartment_building_outdoor`` is unchanged.
    """
    name = _LETTER_PREFIX.sub("", name.strip(), count=1)
    return name.strip("/").replace("/", "_")


def label_names(label: str) -> list[str]:
    """The names a category may match a label by: its :func:`normalise`-d form, and for an ImageNet
    synset label (``n01440764 tench, Tinca tinca``) each comma-separated name, lower case with
    ``_`` for spaces (``tench``, ``tinca_tinca``)."""
    names = [normalise(label)]
    found = _SYNSET.match(label.strip())
    if found:
        names += [normalise(n).lower().replace(" ", "_") for n in found.group(1).split(",") if n.strip()]
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------- alias tables
def parse_aliases(text: str, source: object = None) -> Aliases:
    """Parse an alias CSV (header ``target_category,source_label,note``).

    Blank lines and lines starting with ``#`` are ignored; ``note`` is optional.
    An empty ``source_label`` means "this target has no counterpart". Targets are
    normalised; source labels are kept as written (compared normalised later).
    """
    rows = [(n, r) for n, r in enumerate(csv.reader(io.StringIO(text)), start=1)
            if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    if not rows:
        return {}
    header_line, header = rows[0]
    if [c.strip() for c in header[:2]] != _ALIAS_HEADER[:2]:
        raise InputError(f"line {header_line}: alias table must start with the header "
                         f"{','.join(_ALIAS_HEADER)}", source)
    aliases: Aliases = {}
    for line, row in rows[1:]:
        if len(row) < 2 or len(row) > 3:
            raise InputError(f"line {line}: expected target_category,source_label[,note], "
                             f"got {len(row)} fields", source)
        target, src = normalise(row[0]), row[1].strip()
        if not target:
            raise InputError(f"line {line}: empty target_category", source)
        if target in aliases:
            raise InputError(f"line {line}: target {target!r} is listed twice", source)
        aliases[target] = src or None
    return aliases


def load_aliases(path: str | Path | None = None) -> Aliases:
    """Read an alias CSV file; ``None`` reads the packaged ``crossmodal/data/places205_aliases.csv``."""
    if path is None:
        ref = resources.files(__package__).joinpath("places205_aliases.csv")
        return parse_aliases(ref.read_text(encoding="utf-8"), "places205_aliases.csv")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError("label map file not found", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read label map: {exc}", path) from None
    return parse_aliases(text, path)


def applicable_aliases(aliases: Mapping[str, str | None], source_labels: Sequence[str]) -> Aliases:
    """The entries of the *packaged* table that apply to a model with ``source_labels``: those whose
    target is not itself a label of the model and whose source label the model has (or None).

    The packaged table renames Places205 categories to Places365 labels; a model whose
    labels are the data set's own categories (``crossmodal probe``'s adjusted network)
    matches them by name and must not be sent to Places365 names it lacks. A user's
    ``--label-map`` is not filtered (its mistakes are errors).
    """
    names = {normalise(s) for s in source_labels}
    return {t: s for t, s in aliases.items() if t not in names and (s is None or normalise(s) in names)}


def merge_aliases(base: Mapping[str, str | None], override: Mapping[str, str | None]) -> Aliases:
    """``base`` with ``override``'s entries added or replacing (user map over packaged table)."""
    return {**base, **override}


# --------------------------------------------------------------------------- mapping
@dataclass(frozen=True)
class LabelMapping:
    """How ``S`` source labels relate to ``T`` target categories.

    * ``target_to_source[t]``: source index for target ``t``, or ``None``;
    * ``unmapped``: target categories without a source label (data set order);
    * ``muted``: source indices mapping to no target (sorted);
    * ``source_to_targets``: source index → target indices mapping to it;
    * ``shared``: the entries of ``source_to_targets`` with two or more targets;
    * ``via_alias``: target → source label, for targets mapped by the alias table;
    * ``unused_aliases``: alias targets that are not among the target categories;
    * ``target_sources[t]``: every source index target ``t`` maps to (``target_to_source[t]`` is
      the first of them: the exact name, an alias, else a synset name), empty when none;
    * ``matches``: target → the source labels it kept, for targets with several, or matched by a
      synset's name or with labels added by the alias table (the report says which).
    """

    source_labels: tuple[str, ...]
    target_categories: tuple[str, ...]
    target_to_source: tuple[int | None, ...]
    unmapped: tuple[str, ...]
    muted: tuple[int, ...]
    source_to_targets: dict[int, tuple[int, ...]]
    shared: dict[int, tuple[int, ...]]
    via_alias: dict[str, str] = field(default_factory=dict)
    unused_aliases: tuple[str, ...] = ()
    target_sources: tuple[tuple[int, ...], ...] = ()
    matches: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def membership(self) -> np.ndarray:
        """``(T, S)`` bool: target ``t`` is correct for source label ``s``."""
        m = np.zeros((len(self.target_categories), len(self.source_labels)), dtype=bool)
        for t, sources in enumerate(self.target_sources or [(s,) if s is not None else ()
                                                           for s in self.target_to_source]):
            m[t, list(sources)] = True
        return m

    @property
    def kept_sources(self) -> np.ndarray:
        """Indices of the source labels that survive muting, ascending (int64)."""
        return np.array(sorted(self.source_to_targets), dtype=np.int64)

    def shared_groups(self) -> list[tuple[str, tuple[str, ...]]]:
        """``[(source label, (target, ...)), ...]`` for every shared source label."""
        return [(self.source_labels[s], tuple(self.target_categories[t] for t in ts))
                for s, ts in sorted(self.shared.items())]


def build_mapping(source_labels: Sequence[str], target_categories: Sequence[str],
                  aliases: Mapping[str, str | None] | None = None) -> LabelMapping:
    """Map each target category onto a source label (see the module docstring).

    ``source_labels``: the model's label names in output order (raw or flattened);
    ``target_categories``: the data set's categories in label-index order;
    ``aliases``: target → source label (or None), e.g. from :func:`load_aliases`.
    An alias naming a source label the model does not have raises ``InputError``.
    """
    aliases = dict(aliases or {})
    source_norm = [normalise(s) for s in source_labels]
    index: dict[str, int] = {}
    for i, name in enumerate(source_norm):
        if name in index:
            raise InputError(f"source labels {source_labels[index[name]]!r} and {source_labels[i]!r} "
                             f"both flatten to {name!r}")
        index[name] = i
    synonyms: dict[str, list[int]] = {}  # a synset's names (several synsets may share one: "crane")
    for i, label in enumerate(source_labels):
        for name in label_names(label)[1:]:
            synonyms.setdefault(name, []).append(i)
    targets = [normalise(t) for t in target_categories]
    if len(set(targets)) != len(targets):
        dupes = sorted({t for t in targets if targets.count(t) > 1})
        raise InputError(f"target categories listed twice: {dupes}")

    wnids = {m.group(0): i for i, label in enumerate(source_labels) if (m := re.match(r"n\d{8}", label))}

    def lookup(src: str, name: str) -> int:
        """A label by its full name, a synset by its WordNet id (``n09428293``) or one unique name."""
        key = normalise(src)
        if key in index:
            return index[key]
        if src.split()[0] in wnids:
            return wnids[src.split()[0]]
        if len(synonyms.get(key.lower().replace(" ", "_"), [])) == 1:
            return synonyms[key.lower().replace(" ", "_")][0]
        raise InputError(f"label map sends {name!r} to {src!r}, which is not one of "
                         f"the model's {len(source_labels)} labels")

    target_sources: list[tuple[int, ...]] = []
    via_alias: dict[str, str] = {}
    matches: dict[str, tuple[str, ...]] = {}
    for name in targets:
        automatic = ([index[name]] if name in index else []) + synonyms.get(name.lower(), [])
        entry = aliases.get(name, "") if name in aliases else None
        if name in aliases and entry is None:
            target_sources.append(())
            continue
        if entry is not None:
            adding = entry.startswith("+")
            given = [lookup(s.strip(), name) for s in entry.lstrip("+").split("|") if s.strip()]
            found = ([*automatic, *given] if adding else given)
            via_alias[name] = "|".join(source_labels[s] for s in given)
        else:
            found = automatic
        found = list(dict.fromkeys(found))
        target_sources.append(tuple(found))
        if len(found) > 1 or (found and name not in index and entry is None) or (entry or "").startswith("+"):
            matches[name] = tuple(source_labels[s] for s in found)
    target_to_source = [s[0] if s else None for s in target_sources]

    source_to_targets: dict[int, tuple[int, ...]] = {}
    for t, sources in enumerate(target_sources):
        for s in sources:
            source_to_targets[s] = source_to_targets.get(s, ()) + (t,)
    return LabelMapping(
        source_labels=tuple(source_labels),
        target_categories=tuple(targets),
        target_to_source=tuple(target_to_source),
        unmapped=tuple(t for t, s in zip(targets, target_to_source) if s is None),
        muted=tuple(i for i in range(len(source_labels)) if i not in source_to_targets),
        source_to_targets=dict(sorted(source_to_targets.items())),
        shared={s: ts for s, ts in sorted(source_to_targets.items()) if len(ts) > 1},
        via_alias=via_alias,
        unused_aliases=tuple(sorted(set(aliases) - set(targets))),
        target_sources=tuple(target_sources),
        matches=matches,
    )


# --------------------------------------------------------------------------- scoring
@dataclass
class Scores:
    """Per-image results for N images; arrays are indexed like the input rows.

    * ``included`` bool (N,): the image is scored (False: unmapped category under
      ``exclude``); every correctness array is False where ``included`` is False;
    * ``top1`` / ``topk`` bool (N,): muted scoring; ``top1_unmuted`` /
      ``topk_unmuted``: argmax / top-k over all source labels;
    * ``pred`` / ``pred_unmuted`` int (N, k'): predicted source indices, best first
      (k' = min(k, number of candidate labels));
    * ``left_out`` / ``kept_unmapped``: category → image count for unmapped
      categories, left out (``exclude``) or scored as errors (``keep``);
    * ``shared_images``: scored images whose true category shares its source label;
      ``shared_top1_hits``: of those, the ones counted correct at top-1 (muted).
    """

    mapping: LabelMapping
    k: int
    included: np.ndarray
    top1: np.ndarray
    topk: np.ndarray
    top1_unmuted: np.ndarray
    topk_unmuted: np.ndarray
    pred: np.ndarray
    pred_unmuted: np.ndarray
    left_out: dict[str, int]
    kept_unmapped: dict[str, int]
    shared_images: int
    shared_top1_hits: int

    @property
    def n_scored(self) -> int:
        return int(self.included.sum())

    def accuracy(self) -> dict[str, float]:
        """Mean correctness over the scored images (NaN when none is scored)."""
        n = self.n_scored
        out = {}
        for key in ("top1", "topk", "top1_unmuted", "topk_unmuted"):
            arr = getattr(self, key)
            out[key] = float(arr[self.included].mean()) if n else float("nan")
        return out

    def predicted_targets(self, muted: bool = True) -> list[list[tuple[str, ...]]]:
        """Per image, the top-k predictions as target categories.

        Each prediction is the tuple of target categories mapped to the predicted
        source label: one name usually, several for a shared label, and ``()`` for
        an unmuted prediction of a source label with no counterpart.
        """
        names = self.mapping.target_categories
        lookup = {s: tuple(names[t] for t in ts) for s, ts in self.mapping.source_to_targets.items()}
        pred = self.pred if muted else self.pred_unmuted
        return [[lookup.get(int(s), ()) for s in row] for row in pred]


def _topk(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values per row, best first; ties → lower index first."""
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def score(logits: np.ndarray, labels: Sequence[int] | np.ndarray, mapping: LabelMapping,
          unmapped: str = "exclude", k: int = 5) -> Scores:
    """Score ``logits`` (N, S) against true target indices ``labels`` (N,).

    ``labels[i]`` indexes ``mapping.target_categories``. ``unmapped``: "exclude" or
    "keep" (see the module docstring). Muted top-k only ranks the kept source labels.
    """
    if unmapped not in ("exclude", "keep"):
        raise InputError(f"unmapped policy must be 'exclude' or 'keep', not {unmapped!r}")
    logits = np.asarray(logits)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    n_targets = len(mapping.target_categories)
    if logits.ndim != 2 or logits.shape[1] != len(mapping.source_labels):
        raise InputError(f"logits must have shape (N, {len(mapping.source_labels)}), not {logits.shape}")
    if labels.shape[0] != logits.shape[0]:
        raise InputError(f"{labels.shape[0]} labels for {logits.shape[0]} rows of logits")
    if labels.size and (labels.min() < 0 or labels.max() >= n_targets):
        raise InputError(f"labels must lie in [0, {n_targets}), got {labels.min()}..{labels.max()}")

    # which source labels are correct for each image's category (several for a category that
    # matches several labels); a category without any has no correct label
    member = mapping.membership()
    has_source = member.any(axis=1)[labels] if labels.size else np.zeros(0, dtype=bool)
    included = has_source if unmapped == "exclude" else np.ones_like(has_source)

    kept = mapping.kept_sources
    if kept.size:
        pred = kept[_topk(logits[:, kept], min(k, kept.size))]
    else:
        pred = np.zeros((logits.shape[0], 0), dtype=np.int64)
    pred_unmuted = _topk(logits, min(k, logits.shape[1]))

    def hits(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        match = member[labels[:, None], p] if p.shape[1] else np.zeros((len(labels), 0), dtype=bool)
        top1 = match[:, 0] if p.shape[1] else np.zeros(len(labels), dtype=bool)
        return top1 & included, match.any(axis=1) & included

    top1, topk = hits(pred)
    top1_u, topk_u = hits(pred_unmuted)

    unmapped_counts: dict[str, int] = {}
    for t in labels[~has_source]:
        name = mapping.target_categories[int(t)]
        unmapped_counts[name] = unmapped_counts.get(name, 0) + 1
    unmapped_counts = dict(sorted(unmapped_counts.items()))
    shared = np.zeros(len(mapping.source_labels), dtype=bool)
    shared[list(mapping.shared)] = True
    in_shared = (member[labels] & shared).any(axis=1) & included if labels.size else has_source
    return Scores(
        mapping=mapping, k=k, included=included,
        top1=top1, topk=topk, top1_unmuted=top1_u, topk_unmuted=topk_u,
        pred=pred, pred_unmuted=pred_unmuted,
        left_out=unmapped_counts if unmapped == "exclude" else {},
        kept_unmapped=unmapped_counts if unmapped == "keep" else {},
        shared_images=int(in_shared.sum()),
        shared_top1_hits=int((in_shared & top1).sum()),
    )
