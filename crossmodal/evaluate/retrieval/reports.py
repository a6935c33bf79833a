"""Retrieval reports: ``retrieval.json``, a Markdown grid in the papers' layout, PNG heat map and neighbours.

Works from the results dictionary built by :func:`crossmodal.evaluate.retrieval.job.run_retrieval`
(values in [0, 1]; the tables print percentages, as the papers do). Every file is
written atomically, ``retrieval.json`` last.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from crossmodal.errors import InputError
from crossmodal.evaluate.retrieval.published import ABBREVIATIONS, load_published, published_cross_modal, \
    published_within_modal
from crossmodal.ir.identity import markdown_lines
from crossmodal.reports.text import decoding_lines, decoding_title, json_safe, pct, run_lines, write_json
from crossmodal.reports.figures import new_figure, save_png
from crossmodal.io.atomic import write_text_atomic

FILES = {
    "retrieval.md": "mAP and P@k grids (rows: query modality, columns: target modality) beside the published numbers",
    "retrieval.png": "heat map of the mAP grid, with chance levels",
    "retrieval.json": "every number and setting (written last)",
}


def published_comparison(pairs: Sequence[dict]) -> dict:
    """The published fc7 numbers (%) for the pairs of this run whose modalities the papers cover."""
    data = load_published()
    within, cross, p10 = published_within_modal(), published_cross_modal("map"), \
        published_cross_modal("precision_at_10")
    rows = []
    for p in pairs:
        q, t = p["query"], p["target"]
        if q not in ABBREVIATIONS or t not in ABBREVIATIONS:
            continue
        qa, ta = ABBREVIATIONS[q], ABBREVIATIONS[t]
        if q == t:
            maps = {m: v[qa] for m, v in within.items() if qa in v}
            precision = {}
        else:  # LDR as the query: the papers give none, the table shows "–"
            maps = {m: v[(qa, ta)] for m, v in cross.items() if (qa, ta) in v}
            precision = {m: v[(qa, ta)] for m, v in p10.items() if (qa, ta) in v}
        rows.append({"query": q, "target": t, "query_paper": qa, "target_paper": ta, "map_percent": maps,
                     "precision_at_10_percent": precision})
    locations = {name: {"location": dict(table["location"]), "location_note": table.get("location_note")}
                 for name, table in data["tables"].items()}
    return {"note": data["note"], "sources": {k: v["citation"] for k, v in data["sources"].items()},
            "locations": locations, "modalities_note": data.get("modalities_note"),
            "methods": {name: list(table["values"]) for name, table in data["tables"].items()},
            "chance_map_percent": data["chance_map_percent"], "pairs": rows}


def location_line(where: dict | None) -> str:
    """Where each source prints a table: ``"castrejon2016: Table 3: …; aytar2016: not yet checked"``."""
    if not where:
        return "not yet checked against the papers"
    return "; ".join(f"{source}: {loc or 'not yet checked against the paper'}"
                     for source, loc in where["location"].items())


def _grid(results: dict, key: str) -> np.ndarray:
    """(queries, targets) array of ``pairs[*][key]``; NaN where a pair was not run."""
    q, t = results["queries"], results["targets"]
    grid = np.full((len(q), len(t)), np.nan)
    for p in results["pairs"]:
        grid[q.index(p["query"]), t.index(p["target"])] = p[key]
    return grid


def _label(name: str) -> str:
    return f"{name} ({ABBREVIATIONS[name]})" if name in ABBREVIATIONS else name


def _table(results: dict, value: str, chance: str) -> list[str]:
    q, t = results["queries"], results["targets"]
    v, c = _grid(results, value), _grid(results, chance)
    lines = ["| query \\ target | " + " | ".join(_label(n) for n in t) + " |",
             "|---|" + "---:|" * len(t)]
    for i, name in enumerate(q):
        cells = ["–" if np.isnan(v[i, j]) else
                 f"{'**' if name == t[j] else ''}{pct(v[i, j])}{'**' if name == t[j] else ''} "
                 f"<sub>(chance {pct(c[i, j])})</sub>" for j in range(len(t))]
        lines.append(f"| {_label(name)} | " + " | ".join(cells) + " |")
    return lines


def _published_tables(results: dict) -> list[str]:
    pub = results["published"]
    ours = {(p["query"], p["target"]): p for p in results["pairs"]}
    within = [r for r in pub["pairs"] if r["query"] == r["target"]]
    cross = [r for r in pub["pairs"] if r["query"] != r["target"]]
    lines = []
    if not (within or cross):
        return lines
    lines += ["## Published CMPlaces numbers for the same pairs (reference only)", "",
              f"> {pub['note']}", ""]
    this_run = f"**this run** ({results['model']['name']}, {results['layer']}, {results['metric']})"
    locations, notes = pub.get("locations", {}), []
    for title, rows, key, metric, table in (
            ("Within-modal mAP (%)", within, "map_percent", "map", "within_modal_map"),
            ("Cross-modal mAP (%)", cross, "map_percent", "map", "cross_modal_map"),
            ("Cross-modal P@10 (%)", cross, "precision_at_10_percent", "precision_at_k",
             "cross_modal_precision_at_10")):
        if not rows or (metric != "map" and not any(r[key] for r in rows)):
            continue
        # every method of the table, "–" where the papers give no value (e.g. line drawings as the query)
        methods = pub.get("methods", {}).get(table) or list(dict.fromkeys(m for r in rows for m in r[key]))
        heads = [ABBREVIATIONS[r["query"]] if r["query"] == r["target"] else
                 f"{ABBREVIATIONS[r['query']]}→{ABBREVIATIONS[r['target']]}" for r in rows]
        missing = [h for r, h in zip(rows, heads) if not r[key]]
        lines += [f"### {title}", "", "| method | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(rows)]
        for m in methods:
            lines.append(f"| {m} | " + " | ".join(f"{r[key][m]:.1f}" if m in r[key] else "–" for r in rows) + " |")
        ks = {ours[(r["query"], r["target"])]["k"] for r in rows}
        note = "" if metric == "map" or ks == {10} else f" (k = {', '.join(map(str, sorted(ks)))})"
        lines.append(f"| {this_run}{note} | " + " | ".join(
            f"{100 * ours[(r['query'], r['target'])][metric]:.1f}" for r in rows) + " |")
        where = locations.get(table)
        lines += [""] + ([f"No published value for {', '.join(missing)}: the papers report none with line drawings "
                          "(sketches) as the query.", ""] if missing and metric == "map" else []) \
            + [f"Printed in: {location_line(where)}."]
        if where and not all(where["location"].values()) and where.get("location_note") \
                and where["location_note"] not in notes:
            notes.append(where["location_note"])
        lines.append("")
    lines += [f"> Values and table numbers {note}." for note in notes] + ([""] if notes else [])
    if pub.get("modalities_note"):
        lines += [f"> {pub['modalities_note']}", ""]
    lines += ["Sources: " + "; ".join(pub["sources"].values()),
              f"The papers quote a chance mAP of {pub['chance_map_percent']} % for their sets; the chance "
              "levels above are exact for the sets of this run.", ""]
    return lines


def markdown(results: dict) -> str:
    """The human summary: the grids in the papers' layout, the published numbers, the data."""
    k = results["k"]
    lines = [f"# Retrieval: {results['layer']} features of {results['model']['name']}", "",
             *(markdown_lines(results["weights"]) if results.get("weights") else []),
             *decoding_lines(_draft(results)),
             f"Category-level retrieval (relevant = same scene category), {results['metric']} similarity, "
             f"split `{results['split']}`. Rows: query modality; columns: target modality; the diagonal "
             f"(bold) is within-modal retrieval, where each query is left out of its own ranking. "
             f"Chance is the exact expected value of a random ranking of the same sets.", "",
             "## mAP (%)", "", *_table(results, "map", "chance_map"), "",
             f"## P@{k} (%)", "", *_table(results, "precision_at_k", "chance_precision_at_k"), "",
             f"## R@{k} (%)", "", *_table(results, "recall_at_k", "chance_recall_at_k"), ""]
    lines += _published_tables(results)
    lines += ["## Data", "", "| modality | images | decoded | failed | missing | categories | dimensions |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in results["modalities"].items():
        lines.append(f"| {name} | {m['num_images']} | {m['num_decoded']} | {m['num_failed']} | "
                     f"{m['num_missing']} | {m['num_categories']} | {m['dimensions']} |")
    excluded = [p for p in results["pairs"] if p["num_excluded_queries"]]
    if excluded:
        lines += ["", "Queries left out (their category has no image among the targets):", ""]
        for p in excluded:
            cats = ", ".join(f"{c} ({n})" for c, n in p["excluded_queries_by_category"].items())
            lines.append(f"- {p['query']} → {p['target']}: {p['num_excluded_queries']} of "
                         f"{p['num_queries']} queries: {cats}")
    b = results["backend"]
    providers = f", providers {', '.join(b['providers'])}" if b.get("providers") else ""
    ran = (f"backend {b.get('backend')}, device {b['device']}" if b.get("device") else
           f"every feature from the feature cache (computed by an earlier run; backend {b.get('backend')} "
           "asked for)")
    lines += ["", f"Features: {ran}, precision {results.get('precision', 'fp32')}{providers}; model fingerprint "
              f"`{results['model']['fingerprint'][:16]}…`.", "", *run_lines(results.get("run"))]
    return "\n".join(lines)


def _draft(results: dict) -> bool:
    return bool(results.get("settings", {}).get("draft"))


def _titled(title: str, results: dict) -> str:
    title = decoding_title(title, _draft(results))
    return f"{results['banner'].upper()}\n{title}" if results.get("banner") else title


def plot_grid(path: Path, results: dict) -> Path:
    """Heat map of the mAP grid (rows: query, columns: target), each cell with its value and chance."""
    v, c = _grid(results, "map"), _grid(results, "chance_map")
    q, t = results["queries"], results["targets"]
    fig = new_figure(1.6 + 1.5 * len(t), 1.2 + 1.1 * len(q))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(100 * v, cmap="viridis", vmin=0, vmax=max(1.0, float(np.nanmax(100 * v))))
    for i in range(len(q)):
        for j in range(len(t)):
            if not np.isnan(v[i, j]):
                light = v[i, j] < 0.6 * np.nanmax(v)
                ax.text(j, i, f"{100 * v[i, j]:.1f} %\n(chance {100 * c[i, j]:.1f})", ha="center", va="center",
                        fontsize=8, color="white" if light else "black")
    ax.set_xticks(range(len(t)), [_label(n) for n in t], rotation=30, ha="right")
    ax.set_yticks(range(len(q)), [_label(n) for n in q])
    ax.set_xlabel("target modality")
    ax.set_ylabel("query modality")
    ax.set_title(_titled(f"{results['layer']} retrieval mAP (%), {results['metric']}", results))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="mAP (%)")
    return save_png(fig, path)


def _matches(p: Path, which: str) -> bool:
    return str(p) == str(which) or p.name == which or str(p).endswith("/" + str(which))


def pick_query(paths: Sequence[Path], which: str, *, failed: Sequence[tuple[Path, str]] = (),
               what: str = "decoded images", modality: str = "the query modality") -> int:
    """``which``: a 0-based index into ``paths``, or a path / file name among them.

    ``paths`` are the images the pick is made from: the query modality's *decoded* images
    (``what``), in data set order; ``failed`` (``(path, reason)``) lets the error say that a
    named image is listed but did not decode. Raises :class:`InputError` naming the range.
    """
    if str(which).lstrip("-").isdigit():
        i = int(which)
        if not 0 <= i < len(paths):
            extra = f" ({len(failed)} more failed to decode)" if failed else ""
            raise InputError(f"--show-query {i} is out of range: {modality} has {len(paths)} {what}{extra}; "
                             f"give 0 to {len(paths) - 1}")
        return i
    for i, p in enumerate(paths):
        if _matches(p, which):
            return i
    for p, reason in failed:
        if _matches(Path(p), which):
            raise InputError(f"--show-query {which!r}: that image of {modality} failed to decode ({reason}); "
                             f"pick another")
    raise InputError(f"--show-query {which!r} is not among {modality}'s {what}")


def neighbours_figure(query, target, index: int, n: int, metric: str, banner: str | None = None,
                      draft: bool = False):
    """The figure of :func:`plot_neighbours` (a matplotlib ``Figure``, not yet saved).

    Constrained layout places the tiles, their two-line captions and the title so that
    no text overlaps another or an image, whatever the images' aspect ratios (a tall
    image keeps its height and its caption moves with it).
    """
    from crossmodal.data.images import load_rgb
    from crossmodal.evaluate.retrieval.metrics import nearest_targets

    same = query.modality == target.modality
    order, scores = nearest_targets(query.features[index], target.features, n, metric=metric,
                                    exclude=index if same else None)
    cols = min(6, len(order) + 1)
    rows = int(np.ceil((len(order) + 1) / cols))
    fig = new_figure(2.2 * cols, 2.6 * rows + (0.6 if banner else 0.35))
    fig.set_layout_engine("constrained", h_pad=0.06, w_pad=0.06, hspace=0.04, wspace=0.04)
    true = query.labels[index]

    def tile(pos: int, file: Path, title: str, colour: str) -> None:
        ax = fig.add_subplot(rows, cols, pos)
        try:
            img = load_rgb(file)
            img.thumbnail((256, 256))
            ax.imshow(np.asarray(img))
        except Exception as exc:  # an image that decoded for the features but not now: say so, go on
            ax.text(0.5, 0.5, f"cannot show:\n{exc}", ha="center", va="center", fontsize=6, wrap=True)
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_edgecolor(colour)
            side.set_linewidth(3)
        ax.set_title(title, fontsize=7, wrap=True)

    tile(1, query.paths[index], f"query ({query.modality})\n{true}", "black")
    for r, (j, s) in enumerate(zip(order, scores), start=1):
        hit = target.labels[j] == true
        tile(r + 1, target.paths[j], f"#{r} {target.labels[j]}\n{'✓' if hit else '✗'} {s:.3f}",
             "tab:green" if hit else "tab:red")
    title = f"{query.modality} → {target.modality}: top {len(order)} by {metric} (green: same category)"
    title = decoding_title(title, draft)
    fig.suptitle(f"{banner.upper()}\n{title}" if banner else title, fontsize=9)
    return fig


def plot_neighbours(path: Path, query, target, index: int, n: int, metric: str,
                    banner: str | None = None, draft: bool = False) -> Path:
    """The query image and its ``n`` nearest targets, each titled with its category; hits framed green."""
    return save_png(neighbours_figure(query, target, index, n, metric, banner, draft), path)


def write_retrieval(out_dir: Path, results: dict, feats: dict | None = None, *, show: int = 0,
                    show_query: str = "0") -> dict[str, Path]:
    """Write the files into ``out_dir``: neighbour PNGs (with ``show``), Markdown, heat map, JSON last."""
    out_dir = Path(out_dir)
    (out_dir / "retrieval.json").unlink(missing_ok=True)
    files = {name: out_dir / name for name in FILES}
    if show and feats:
        shown = []
        for p in results["pairs"]:
            q, t = feats[p["query"]], feats[p["target"]]
            i = pick_query(q.paths, show_query, failed=q.failed, modality=f"query modality {q.modality!r}")
            name = f"neighbours_{p['query']}_to_{p['target']}.png"
            plot_neighbours(out_dir / name, q, t, i, show, results["metric"], banner=results.get("banner"),
                            draft=_draft(results))
            files[name] = out_dir / name
            shown.append({"pair": [p["query"], p["target"]], "query_image": str(q.paths[i]), "file": name})
        results["neighbours"] = shown
    write_text_atomic(files["retrieval.md"], markdown(results))
    plot_grid(files["retrieval.png"], results)
    write_json(files["retrieval.json"], json_safe(results))
    return files
