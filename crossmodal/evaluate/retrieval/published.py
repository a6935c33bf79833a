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

Values are percentages as the study transcribed them. The papers' five modalities (their
Figure 1: real images, clip art, sketches, spatial text, descriptions) are keyed by their
abbreviations ``NAT``, ``CLP``, ``SPT`` (spatial text), ``LDR`` (line drawings: the sketches)
and ``DSC`` (descriptions); this toolkit's image modalities map onto three of them
(:data:`ABBREVIATIONS`: natural → NAT, clipart → CLP, sketch → LDR). Spatial text and
descriptions are no image modality here: their values stay under their own names and are never
shown beside a sketch run. With LDR (or DSC) as the query the papers give no cross-modal value.
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources

from crossmodal.errors import InputError

__all__ = [
    "MODALITIES", "ABBREVIATIONS", "PAPER_MODALITIES", "modality_key", "load_published", "published_within_modal",
    "published_cross_modal", "published_chance_map",
]

_FILE = "published_cmplaces.json"
MODALITIES: tuple[str, ...] = ("natural", "clipart", "sketch")
#: This toolkit's modality → the papers' abbreviation of the same modality.
ABBREVIATIONS: dict[str, str] = {"natural": "NAT", "clipart": "CLP", "sketch": "LDR"}
#: The papers' five modalities, by abbreviation.
PAPER_MODALITIES: dict[str, str] = {"NAT": "natural images", "CLP": "clip art", "SPT": "spatial text",
                                    "LDR": "line drawings (sketches)", "DSC": "descriptions"}
_CROSS_TABLES = {"map": "cross_modal_map", "precision_at_10": "cross_modal_precision_at_10"}


def modality_key(name: str) -> str:
    """``"NAT"``, ``"nat"`` or ``"natural"`` → ``"natural"`` (likewise CLP → clipart, LDR → sketch);
    the papers' spatial text (SPT) and descriptions (DSC) are no image modality of this toolkit."""
    low = str(name).strip().lower()
    for key, abbr in ABBREVIATIONS.items():
        if low in (key, abbr.lower()):
            return key
    if low.upper() in PAPER_MODALITIES:
        raise InputError(f"{low.upper()} is the papers' {PAPER_MODALITIES[low.upper()]}, not an image modality "
                         "of this toolkit (sketches are the papers' line drawings, LDR)")
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
    """Within-modal fc7 mAP (%): ``{method: {paper modality (NAT, CLP, SPT, LDR, DSC): value}}``."""
    return copy.deepcopy(_load()["tables"]["within_modal_map"]["values"])


def published_cross_modal(metric: str = "map") -> dict[str, dict[tuple[str, str], float]]:
    """Cross-modal fc7 results (%): ``{method: {(query, target): value}}``, modalities by the papers'
    abbreviations (a pair the papers give no value for is absent).

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
