"""The files of ``crossmodal units``: ``units.json``, ``units.md`` and the PNGs.

``units.json`` (every unit of the run, drawn or not): ``layer``, ``grid``, ``receptive_field``
{size, stride, offset, start} (input pixels; offset = centre of unit (0, 0)), ``modalities`` (per
modality: images, failed, categories, the pass's speed and cache file), ``units``: ``[{unit, top:
{modality: [{path, value, position (i, j), crop_box, box, category}]}, agreement: {score,
consistent, overall, modalities: {m: {majority, share, count}}}, maximized?}]``, ``summary``
(consistent units, mean score, the chance level with p-values), ``against`` (an earlier run's
summary), ``drawn``, ``weights``, ``banner``, ``run``. Boxes: ``crop_box`` in the network's crop,
``box`` in the original image's pixels (``[x0, y0, x1, y1]``, x1 / y1 exclusive).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from crossmodal.errors import InputError
from crossmodal.evaluate.units import gallery
from crossmodal.io.runs import read_run_report
from crossmodal.ir import identity
from crossmodal.reports.text import decoding, decoding_lines, decoding_title, run_lines

FORMAT = "crossmodal-units"


def read_against(path: Path) -> dict:
    """An earlier run's ``units.json`` (a file or its folder) → its summary block and identity."""
    file, data = read_run_report(path, "units.json", "units", FORMAT)
    if "summary" not in data:
        raise InputError("--against: not a units.json of `crossmodal units`", file)
    return {"path": str(file), "layer": data.get("layer"), "summary": data["summary"],
            "weights": (data.get("weights") or {}).get("description"), "modalities": [m["name"] for m in
                                                                                     data.get("modalities", [])]}


def summary(*, graph, weights, layer, shape, rf, passes, unit_list, entries, result, chance, vocab, top, picked,
            maximized, against, draft, pass_seconds, record) -> dict:
    """The ``units.json`` document (module docstring)."""
    units = []
    for k, unit in enumerate(unit_list):
        mods = {m: {"majority": vocab[int(result.majority[m][k])] if result.counts[m][k] else None,
                    "share": round(float(result.share[m][k]), 4), "count": int(result.counts[m][k])}
                for m in result.majority}
        item = {"unit": int(unit), "top": entries[k],
                "agreement": {"score": round(float(result.score[k]), 4), "consistent": bool(result.consistent[k]),
                              "overall": vocab[int(result.overall[k])], "modalities": mods}}
        if unit in maximized:
            r = maximized[unit]
            item["maximized"] = {"png": f"maximized/{unit}.png", "objective": r["objective"], "max": r["max"],
                                 "pushed": r["pushed"], "steps": r["steps"], "seed": r["seed"]}
        units.append(item)
    consistent = int(result.consistent.sum())
    images = sum(len(p.paths) for p in passes)
    return {
        "format": FORMAT, "model": str(record.settings["model_dir"]),
        "weights": {**weights, "description": identity.describe(weights)}, "banner": identity.banner(weights),
        "layer": layer, "grid": list(shape[1:]), "num_units": int(shape[0]), "top_k": top,
        "receptive_field": rf.to_dict(), "crop": list(graph.preprocess.crop), "decoding": decoding(draft),
        "modalities": [{"name": p.name, "images": len(p.paths), "failed": [[str(a), b] for a, b in p.failed],
                        "categories": len(p.categories), "cache": str(p.path), "backend": p.backend, **p.stats}
                       for p in passes],
        "summary": {"units": len(unit_list), "consistent": consistent,
                    "consistent_share": consistent / max(1, len(unit_list)),
                    "mean_score": float(np.mean(result.score)) if len(unit_list) else 0.0,
                    "chance": chance, "min_count": 2},
        "speed": {"images": images, "pass_seconds": pass_seconds},
        "drawn": picked, "against": against, "units": units,
        "files": {"units.json": "every unit: top images, boxes, agreement", "units.md": "the summary",
                  "agreement.png": "agreement scores against chance"},
        "run": record.block(),
    }


def markdown(s: dict) -> str:
    rf, sm, ch = s["receptive_field"], s["summary"], s["summary"]["chance"]
    lines = [f"# Units of `{s['layer']}`", "", *identity.markdown_lines(s["weights"]), *decoding_lines(
        "fast" in s["decoding"].split(" ")[0])]
    lines += [f"Layer `{s['layer']}`: {s['num_units']} units on a {s['grid'][0]} × {s['grid'][1]} grid; receptive "
              f"field {rf['size']} px, stride {rf['stride']}, offset {rf['offset']} (centre of unit (0, 0), "
              f"input pixels). A unit's score on an image is its maximum over positions; top {s['top_k']} "
              f"images per unit and modality.", "",
              "| modality | images | failed | categories | images/s |", "|---|---|---|---|---|"]
    for m in s["modalities"]:
        ips = m.get("images_per_second")
        lines.append(f"| {m['name']} | {m['images']} | {len(m['failed'])} | {m['categories']} | "
                     f"{'cached' if ips is None else f'{ips:.1f}'} |")
    chance_n = "–" if ch["consistent_mean"] is None else f"{ch['consistent_mean']:.1f} ± {ch['consistent_std']:.1f}"
    lines += ["", "## Agreement across modalities", "",
              f"**{sm['consistent']} of {sm['units']} units** ({100 * sm['consistent_share']:.1f} %) have one concept "
              f"in every modality (the same majority category in each, with at least {sm['min_count']} of its top "
              f"images there); with categories shuffled (chance, {ch['rounds']} rounds): {chance_n}"
              + ("" if ch["consistent_p"] is None else f", p = {ch['consistent_p']:.3g}") + ".",
              f"Mean agreement score (share of a unit's top images, over all modalities, in its overall majority "
              f"category): {sm['mean_score']:.3f}; chance "
              + ("–" if ch["score_mean"] is None else f"{ch['score_mean']:.3f} (p = {ch['score_p']:.3g})") + ".", ""]
    if s.get("against"):
        a = s["against"]
        lines += ["| run | weights | layer | consistent units | mean score | chance (consistent) |",
                  "|---|---|---|---|---|---|"]
        for name, w, layer, x in (("this run", s["weights"]["description"], s["layer"], sm),
                                  (a["path"], a["weights"], a["layer"], a["summary"])):
            c = x["chance"]["consistent_mean"]
            lines.append(f"| {name} | {w} | {layer} | {x['consistent']} / {x['units']} | {x['mean_score']:.3f} | "
                         f"{'–' if c is None else f'{c:.1f}'} |")
        lines.append("")
    ranked = sorted(s["units"], key=lambda u: (-u["agreement"]["score"], u["unit"]))
    mods = [m["name"] for m in s["modalities"]]
    head = ["| unit | score | consistent | overall | " + " | ".join(mods) + " |",
            "|---|---|---|---|" + "---|" * len(mods)]
    n = min(10, (len(ranked) + 1) // 2)
    for title, chosen in (("Most agreeing units", ranked[:n]), ("Least agreeing units", ranked[n:][::-1][:10])):
        if not chosen:
            continue
        lines += [f"### {title}", "", *head]
        for u in chosen:
            a = u["agreement"]
            cells = [f"{a['modalities'][m]['majority']} ({a['modalities'][m]['count']})" for m in mods]
            lines.append(f"| [{u['unit']}](units/{u['unit']}.png) | {a['score']:.2f} | "
                         f"{'yes' if a['consistent'] else 'no'} | {a['overall']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Files: `units.json` (every unit), `agreement.png`"
              + (", `overview.png`, `units/<unit>.png`" if s["drawn"] else "")
              + (", `maximized/<unit>.png`" if any("maximized" in u for u in s["units"]) else "") + ".", ""]
    return "\n".join(lines + run_lines(s["run"]))


def write_all(stage: Path, s: dict, entries, picked: dict, maximized: dict, graph, mean_image, draft: bool,
              step) -> None:
    """Every file of the run into ``stage`` (``units.json`` and ``units.md`` last)."""
    from PIL import Image

    from crossmodal.evaluate.units.tiles import Tiles

    weights = s["weights"]
    index = {u["unit"]: k for k, u in enumerate(s["units"])}
    tiles = Tiles(graph.preprocess, mean_image, draft=draft)
    scores = np.array([u["agreement"]["score"] for u in s["units"]])
    ch = s["summary"]["chance"]
    gallery.agreement_png(stage / "agreement.png", identity.titled(decoding_title(
        f"units of {s['layer']}: agreement across {', '.join(m['name'] for m in s['modalities'])}", draft), weights),
        scores, ch["score_mean"], s["summary"]["consistent"], ch["consistent_mean"], len(scores))

    def rows(unit: int) -> dict:
        return {m: [(tiles.tile(e["path"], e["crop_box"]), e["value"], e["category"]) for e in top]
                for m, top in entries[index[unit]].items()}

    def title(unit: int) -> str:
        a = s["units"][index[unit]]["agreement"]
        return identity.titled(f"{s['layer']} unit {unit}: agreement {a['score']:.2f} "
                               f"({'one concept: ' + a['overall'] if a['consistent'] else 'no common concept'})",
                               weights)

    to_draw = list(dict.fromkeys(u for group in picked.values() for u in group))
    if to_draw:
        step(f"drawing {len(to_draw)} unit galleries")
    for unit in to_draw:
        pic = Image.fromarray(maximized[unit]["image"]) if unit in maximized else None
        gallery.unit_png(stage / "units" / f"{unit}.png", title(unit), rows(unit), pic)
    for unit, r in maximized.items():
        gallery.unit_png(stage / "maximized" / f"{unit}.png", title(unit) + f"\nmaximised from "
                         f"{'the given image' if s['run']['settings'].get('from') else 'noise'}, {r['steps']} steps, "
                         f"seed {r['seed']}: max {r['max'][0]:.3g} -> {r['max'][1]:.3g}", rows(unit),
                         Image.fromarray(r["image"]))
    if to_draw:
        labels = {"agree": "most agreeing", "disagree": "least agreeing", "chosen": "units"}
        columns = {labels[k]: [(u, s["units"][index[u]]["agreement"]["score"],
                                {m: [tiles.tile(e["path"], e["crop_box"]) for e in top[:3]]
                                 for m, top in entries[index[u]].items()}) for u in group]
                   for k, group in picked.items() if group}
        gallery.overview_png(stage / "overview.png", identity.titled(f"units of {s['layer']}: best patches per "
                                                                     f"modality ({', '.join(entries[0])})", weights),
                             columns)
    s["files"].update({**({"overview.png": "the drawn units side by side",
                           "units/": "one PNG per drawn unit"} if to_draw else {}),
                       **({"maximized/": "activation maximisation beside the top patches"} if maximized else {})})
    (stage / "units.md").write_text(markdown(s) + "\n")
    (stage / "units.json").write_text(json.dumps(_jsonable(s), indent=1) + "\n")


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if dataclasses.is_dataclass(v):
        return _jsonable(dataclasses.asdict(v))
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v
