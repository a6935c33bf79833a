"""What weights produced a result: the weights' identity, recorded in ``model.json``.

``Provenance.weights_identity`` is one of

* ``{"kind": "random", "seed": N}`` — seeded random weights made by
  :mod:`crossmodal.models.synthetic` (``crossmodal demo``, the tests);
* ``{"kind": "card", "card": NAME, "match": "sha256" | "sha256-prefix", "sha256": ...}`` —
  the source file's SHA-256 equals the hash a model card
  (:mod:`crossmodal.models.cards`) publishes for one of its checkpoints (or, when the
  card knows only the leading hex digits, starts with them);
* ``{"kind": "unknown", "sha256": ...}`` — anything else, with the source file's hash
  (``""`` when none was recorded). An IR written before the field existed reads as this;
* ``{"kind": "probe", "base": <identity>, "head": ..., "layer": ..., "train_modality": ...,
  "base_fingerprint": ...}`` — a network ``crossmodal probe`` adjusted: the base model's
  weights (``base``, any of the kinds above) with a head trained on its features. It is
  random (:func:`is_random`, the banner) exactly when its base is;
* ``{"kind": "finetune", "base": <identity>, "modalities": [...], "train_from": ..., "head": ...,
  "tower": ..., "base_fingerprint": ...}`` — a network ``crossmodal finetune`` trained further (a
  modality's tower when ``tower`` names one); random exactly when its base is.

Every command that reports on a model calls :func:`describe` (one line for people),
:func:`identity` (the dict for JSON) and :func:`banner` (the warning that tops every
report and chart title of a run on random weights). The functions take a
:class:`~crossmodal.ir.graph.Graph` or an identity dict (as a report's JSON holds it).

The demo's random checkpoints carry a sidecar ``<checkpoint>.origin.json``
(``{"kind": "random", "seed": N, "sha256": ...}``, written by
:func:`write_origin`); :func:`resolve` trusts it only while the file's SHA-256 still
equals the one it records.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

RANDOM_BANNER = "random weights: these numbers mean nothing about Places365"
ORIGIN_SUFFIX = ".origin.json"
#: identities of networks derived from a base network (random exactly when the base is)
DERIVED = ("probe", "finetune")


def identity(graph_or_identity: Any) -> dict[str, Any]:
    """The identity dict of a graph (or an identity dict, normalised); missing → unknown."""
    if isinstance(graph_or_identity, Mapping):
        ident = dict(graph_or_identity)
        sha = ident.get("sha256", "")
    else:
        prov = graph_or_identity.provenance
        ident = dict(prov.weights_identity or {})
        sha = prov.source_sha256
    if ident.get("kind") in DERIVED:
        return {**ident, "base": identity(ident.get("base") or {})}
    if ident.get("kind") not in ("random", "card", "unknown"):
        ident = {"kind": "unknown", "sha256": sha or ""}
    return ident


def is_random(graph_or_identity: Any) -> bool:
    ident = identity(graph_or_identity)
    return ident["kind"] == "random" or (ident["kind"] in DERIVED and is_random(ident["base"]))


def describe(graph_or_identity: Any) -> str:
    """One line: ``random weights (seed 0)``, ``model card vgg16-places365-pytorch (SHA-256 …)``,
    ``unknown origin (SHA-256 0123abcd…)``."""
    ident = identity(graph_or_identity)
    sha = str(ident.get("sha256") or "")
    if ident["kind"] == "probe":
        trained = f" trained on {ident['train_modality']}" if ident.get("train_modality") else ""
        return (f"a probe head ({ident.get('head', '?')} on {ident.get('layer', '?')}{trained}) on "
                f"{describe(ident['base'])}")
    if ident["kind"] == "finetune":
        mods = ", ".join(ident.get("modalities") or []) or "?"
        tower = f", the {ident['tower']} tower" if ident.get("tower") else ""
        return (f"fine-tuned on {mods} (from {ident.get('train_from', '?')}, head {ident.get('head', '?')}{tower}) "
                f"from {describe(ident['base'])}")
    if ident["kind"] == "random":
        return f"random weights (seed {ident.get('seed', '?')})"
    if ident["kind"] == "card":
        how = "SHA-256 prefix matches" if ident.get("match") == "sha256-prefix" else "SHA-256 matches"
        return f"model card {ident.get('card')} ({how}{': ' + sha[:16] + '…' if sha else ''})"
    return f"unknown origin (SHA-256 {sha[:16] + '…' if sha else 'not recorded'})"


def banner(graph_or_identity: Any) -> str | None:
    """The warning for reports and chart titles of a run on random weights, else None."""
    return RANDOM_BANNER if is_random(graph_or_identity) else None


def titled(title: str, graph_or_identity: Any) -> str:
    """A chart title, with the random-weights banner as its first line when it applies."""
    b = banner(graph_or_identity)
    return f"{b.upper()}\n{title}" if b else title


def markdown_lines(graph_or_identity: Any) -> list[str]:
    """Lines to put under a Markdown report's title: the banner (as a quote) when the weights are
    random, then the weights' identity."""
    b = banner(graph_or_identity)
    lines = [f"> **{b.upper()}**", ""] if b else []
    return lines + [f"Weights: {describe(graph_or_identity)}.", ""]


def write_origin(checkpoint: str | Path, ident: Mapping[str, Any], sha256: str) -> Path:
    """Record beside ``checkpoint`` what its weights are (see the module docstring)."""
    from crossmodal.io.atomic import write_text_atomic

    path = Path(checkpoint)
    side = path.with_name(path.name + ORIGIN_SUFFIX)
    write_text_atomic(side, json.dumps({**dict(ident), "sha256": sha256}, indent=1))
    return side


def resolve(weights_file: str | Path | None, sha256: str, find_card=None) -> dict[str, Any]:
    """The identity of a source file whose SHA-256 is ``sha256`` (see the module docstring).

    ``find_card(sha256)`` → ``(card, match)`` or None: the lookup of known releases by hash
    (:func:`crossmodal.models.cards.find_card_for_sha256`, passed in by the caller: the IR
    knows no model cards)."""
    if weights_file is not None and sha256:
        path = Path(weights_file)
        side = path.with_name(path.name + ORIGIN_SUFFIX)
        try:
            origin = json.loads(side.read_text())
        except (OSError, ValueError):
            origin = None
        if isinstance(origin, dict) and origin.get("sha256") == sha256 and origin.get("kind") == "random":
            return {"kind": "random", "seed": origin.get("seed"), "sha256": sha256}
    if sha256 and find_card is not None:
        found = find_card(sha256)
        if found is not None:
            card, match = found
            return {"kind": "card", "card": card.name, "match": match, "sha256": sha256}
    return {"kind": "unknown", "sha256": sha256 or ""}
