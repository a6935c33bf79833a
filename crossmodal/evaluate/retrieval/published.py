"""Published CMPlaces retrieval numbers.

Sources: L. Castrejón, Y. Aytar, C. Vondrick, H. Pirsiavash, A. Torralba, "Learning
Aligned Cross-Modal Representations from Weakly Aligned Data", CVPR 2016
(doi:10.1109/CVPR.2016.321); Y. Aytar, L. Castrejón, C. Vondrick, H. Pirsiavash,
A. Torralba, "Cross-Modal Scene Networks", arXiv:1610.09003, 2016.

The numbers live in the packaged ``published_cmplaces.json`` (beside this module) with their
sources (full citations, DOI / arXiv id), per table the sources it comes from and
where in them (``location``: per source the table or figure and its caption's
first words, ``None`` until checked against the paper, with a ``location_note``
saying why), a ``modalities_note`` on the NAT / CLP / SPT mapping, and a note;
this module only loads and reshapes them (the retrieval report prints each
table's ``location`` and notes beside the values). They are
**reference** values: the published networks were trained for cross-modal
alignment, unlike the Places365 networks this toolkit evaluates.

Values are percentages as printed in the papers. Modalities are keyed
``natural`` / ``clipart`` / ``sketch``; :func:`modality_key` also accepts the
papers' abbreviations ``NAT`` / ``CLP`` / ``SPT`` (any case). That ``SPT`` holds the
sketch values is how they were transcribed, not checked against the papers' tables:
the CVPR paper's Figure 1 also shows a spatial-text modality (``modalities_note``).
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources

from crossmodal.errors import InputError

__all__ = [
    "MODALITIES", "ABBREVIATIONS", "modality_key", "load_published", "published_within_modal",
    "published_cross_modal", "published_chance_map",
]

_FILE = "published_cmplaces.json"
MODALITIES: tuple[str, ...] = ("natural", "clipart", "sketch")
#: Modality key → the papers' abbreviation.
ABBREVIATIONS: dict[str, str] = {"natural": "NAT", "clipart": "CLP", "sketch": "SPT"}
_CROSS_TABLES = {"map": "cross_modal_map", "precision_at_10": "cross_modal_precision_at_10"}


def modality_key(name: str) -> str:
    """``"NAT"``, ``"nat"`` or ``"natural"`` → ``"natural"`` (likewise CLP, SPT)."""
    low = str(name).strip().lower()
    for key, abbr in ABBREVIATIONS.items():
        if low in (key, abbr.lower()):
            return key
    raise InputError(f"unknown modality {name!r}; use one of "
                     + ", ".join(f"{k} ({a})" for k, a in ABBREVIATIONS.items()))


@lru_cache(maxsize=1)
def _load() -> dict:
    text = resources.files(__package__).joinpath(_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def load_published() -> dict:
    """The whole data file as a dict (a fresh copy): ``note``, ``sources``,
    ``modalities``, ``chance_map_percent`` and ``tables`` (each table with
    ``metric``, ``unit``, ``layer``, ``sources`` and ``values``)."""
    return copy.deepcopy(_load())


def published_within_modal() -> dict[str, dict[str, float]]:
    """Within-modal fc7 mAP (%): ``{method: {modality: value}}``."""
    return copy.deepcopy(_load()["tables"]["within_modal_map"]["values"])


def published_cross_modal(metric: str = "map") -> dict[str, dict[tuple[str, str], float]]:
    """Cross-modal fc7 results (%): ``{method: {(query, target): value}}``.

    ``metric`` is ``"map"`` or ``"precision_at_10"`` (the latter's method is not
    named by the source and is stored as ``"unspecified"``).
    """
    if metric not in _CROSS_TABLES:
        raise InputError(f"unknown metric {metric!r}; choose one of {', '.join(_CROSS_TABLES)}")
    values = _load()["tables"][_CROSS_TABLES[metric]]["values"]
    return {method: {(q, t): v for q, row in rows.items() for t, v in row.items()}
            for method, rows in values.items()}


def published_chance_map() -> float:
    """Chance mAP (%) quoted by the papers for their own retrieval sets."""
    return float(_load()["chance_map_percent"])
