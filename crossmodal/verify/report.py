"""Human-readable renderings of a verification report (Markdown and a console table)."""
from __future__ import annotations

import math

from crossmodal.ir.identity import banner, describe, markdown_lines
from crossmodal.verify.results import VerifyReport


def _fmt(v: float) -> str:
    return f"{v:.2e}"


def _rank(rel: float) -> float:
    """Sort key for the worst cell: NaN ranks as infinitely bad."""
    return math.inf if math.isnan(rel) else rel


def _precision(report: VerifyReport) -> str:
    tf32 = ("TF32 ALLOWED (--allow-tf32): reduced-precision matmul/convolution may be on in the GPU engines"
            if report.allow_tf32 else "TF32 off in every engine (full fp32)")
    if report.precision == "fp32":
        return tf32
    return (f"{report.precision.upper()} engines (ONNX: model.fp16.onnx; torch: autocast; Keras: mixed policy) "
            f"against the full-precision reference; {tf32.replace(' (full fp32)', '')}")


def _fmt_growth(g) -> str:
    return "·" if g is None else f"×{g:.3g}"


def growth_markdown(report: VerifyReport) -> list[str]:
    """Where the error grows: per layer each engine's rel and its growth over the layer before."""
    growth = report.error_growth()
    engines = list(growth)
    if not engines:
        return []
    lines = ["## Where the error grows", "",
             "Per layer, max|Δ|/max|ref| and its growth (×) over the engine's previous compared layer.", "",
             "| layer | " + " | ".join(f"{e} rel | {e} ×" for e in engines) + " |",
             "|---|" + "---|---|" * len(engines)]
    by = {e: {r["layer"]: r for r in rows} for e, rows in growth.items()}
    for layer in report.layers:
        if not any(layer in by[e] for e in engines):
            continue
        cells = []
        for e in engines:
            r = by[e].get(layer)
            cells += ["·", "·"] if r is None else [
                "non-finite" if r["rel"] is None else _fmt(r["rel"]), _fmt_growth(r["growth"])]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    lines.append("")
    for e, rows in growth.items():
        top = sorted((r for r in rows if r["growth"]), key=lambda r: -r["growth"])[:3]
        if top:
            lines.append(f"- {e}: largest growth at " + ", ".join(
                f"`{r['layer']}` ({_fmt_growth(r['growth'])})" for r in top))
    return lines + [""]


def _cell(value) -> str:
    """Text for a Markdown table cell: a ``|`` (as in max|Δ|) escaped, so it stays one cell."""
    return str(value).replace("|", "\\|")


def markdown(report: VerifyReport) -> str:
    """Engines × layers table of max|Δ|/max|ref|; the worst cell in bold, breaches marked ✗."""
    data = report.to_json()
    engines = list(report.comparisons)
    verdict = "PASSED" if report.passed else "FAILED"
    lines = [f"# crossmodal verify: {verdict}", "", *markdown_lines(report.weights),
             f"Reference: {report.reference}. Inputs: {data['inputs']['count']} "
             f"({data['inputs']['kind']}). Tolerance: max|Δ|/max|ref| ≤ {report.tolerance:g} on "
             f"logits and {report.feature_blob}, at most {report.max_top1_disagreements} top-1 disagreement(s).", "",
             f"Precision: {_precision(report)}.", ""]
    if report.precision != "fp32":
        lines += [f"Reduced-precision gate ({report.precision}): max|Δ|/max|ref| ≤ {report.tolerance:g} on "
                        f"logits and {report.feature_blob}, at most {report.max_top1_disagreements} "
                        "top-1 disagreement(s) "
                        f"(defaults: top-1 agreement ≥ 99 % of the {data['inputs']['count']} inputs).", ""]
    lines += ["## Gates", "", "| engine | check | value | limit | result |", "|---|---|---|---|---|"]
    for g in data["gates"]:
        if "reason" in g:
            value = f"not observed: {g['reason']}"
        elif g["value"] is None:
            value = "non-finite or shape differs"
        else:
            value = _fmt(g["value"]) if isinstance(g["value"], float) else g["value"]
        lines.append(f"| {g['engine']} | {_cell(g['check'])} | {_cell(value)} | {g['limit']} | "
                     f"{'✓' if g['passed'] else '✗'} |")
    lines += ["", "## Classifier agreement", "", "| engine | top-1 | top-5 set | argmax flips |", "|---|---|---|---|"]
    for e, c in data["classifier"].items():
        lines.append(f"| {e} | {c['top1_agreement']:.2%} | {c['top5_set_agreement']:.2%} | {c['argmax_flips']} |")
    worst = max(((_rank(s.rel), e, l) for e, ls in report.comparisons.items() for l, s in ls.items()), default=None)
    aliases = {v: k for k, v in report.blobs.items()}
    lines += ["", "## Layers: max|Δ| / max|ref|", "",
              "| layer | " + " | ".join(engines) + " |", "|---|" + "---|" * len(engines)]
    for layer in report.layers:
        cells = []
        for e in engines:
            s = report.comparisons[e].get(layer)
            if s is None:
                cells.append("·")
                continue
            cell = _fmt(s.rel) + (" ✗" if not s.rel <= report.tolerance else "")
            if s.nonfinite:
                cell += f" ({s.nonfinite} non-finite)"
            cells.append(f"**{cell}**" if worst and (_rank(s.rel), e, layer) == worst else cell)
        name = f"{layer} ({aliases[layer]})" if layer in aliases else layer
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "· = not observable in that engine (e.g. a conv whose ReLU Keras fuses into it).", ""]
    if report.precision != "fp32":
        lines += growth_markdown(report)
    if report.skipped:
        lines += [f"## Engines left out at {report.precision}", ""] + [f"- {e}: {m}" for e, m in
                                                                      report.skipped.items()] + [""]
    div = {e: l for e, l in report.first_divergence().items() if l}
    if div:
        lines += ["## First divergent layer", ""] + [f"- {e}: `{l}`" for e, l in div.items()] + [""]
    if report.errors:
        lines += ["## Engines that did not run", ""] + [f"- {e}: {m}" for e, m in report.errors.items()] + [""]
    lines += ["## Environment", "", "| engine | device | details |", "|---|---|---|"]
    for e, info in data["engines"].items():
        details = ", ".join(f"{k}={v}" for k, v in info.items() if k != "device")
        lines.append(f"| {e} | {info.get('device', '')} | {_cell(details)} |")
    lines += ["", "`" + ", ".join(f"{k} {v}" for k, v in data["environment"].items()) + "`", ""]
    return "\n".join(lines)


def console(report: VerifyReport) -> str:
    """A compact table: per engine, the gated figures, agreement and first divergence."""
    data, out = report.to_json(), []
    div = report.first_divergence()
    if banner(report.weights):
        out.append(f"*** {banner(report.weights).upper()} ***")
    out.append(f"weights: {describe(report.weights)}")
    out.append(f"reference: {report.reference}; {data['inputs']['count']} inputs ({data['inputs']['kind']})")
    out.append(f"precision: {_precision(report)}")
    feature = f"{report.feature_blob} rel"
    out.append(f"{'engine':<10} {'logits rel':>11} {feature:>11} {'worst rel':>11} {'top-1':>7} "
               f"{'top-5':>7} {'flips':>5}  first divergence")
    logits, fc7 = report.blobs.get("logits"), report.blobs.get(report.feature_blob)
    for e, layers in report.comparisons.items():
        c = data["classifier"].get(e, {})
        worst = max((_rank(s.rel) for s in layers.values()), default=0.0)
        lr = _fmt(layers[logits].rel) if logits in layers else "·"
        fr = _fmt(layers[fc7].rel) if fc7 in layers else "·"
        out.append(f"{e:<10} {lr:>11} {fr:>11} {_fmt(worst):>11} {c.get('top1_agreement', 0):>7.1%} "
                   f"{c.get('top5_set_agreement', 0):>7.1%} {c.get('argmax_flips', '·'):>5}  {div.get(e) or '-'}")
    for g in data["gates"]:
        if "reason" in g:
            out.append(f"{g['engine']:<10} FAILS {g['check']}: {g['reason']}")
    for e, msg in report.errors.items():
        out.append(f"{e:<10} did not run{' (optional cross-check)' if e not in report.errors_that_fail() else ''}: "
                   f"{msg}")
    for e, msg in report.skipped.items():
        out.append(f"{e:<10} left out at {report.precision}: {msg}")
    if report.precision != "fp32":
        for e, rows in report.error_growth().items():
            top = sorted((r for r in rows if r["growth"]), key=lambda r: -r["growth"])[:3]
            if top:
                out.append(f"{e:<10} error grows most at " + ", ".join(
                    f"{r['layer']} ({_fmt_growth(r['growth'])})" for r in top))
    out.append("PASSED" if report.passed else "FAILED")
    return "\n".join(out)
