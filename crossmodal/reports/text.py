"""Report helpers shared by every job (baseline, retrieval, probe, explain, verify): percentages,
strict JSON, CSV, and the lines that open and close a Markdown report.

Every file is written atomically (a temporary sibling renamed into place).
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from crossmodal.io.atomic import write_text_atomic
from crossmodal.ir.identity import markdown_lines


def pct(value, digits: int = 2) -> str:
    """0.5524 → ``55.24 %``; None/NaN → ``–``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.{digits}f} %"


def pct_interval(ci, digits: int = 1) -> str:
    if not ci or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in ci):
        return "–"
    return f"[{100 * ci[0]:.{digits}f}, {100 * ci[1]:.{digits}f}]"


def write_csv(path: Path, header: Sequence[str], rows) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text_atomic(path, buf.getvalue())


def write_json(path: Path, data) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, default=_json_default, allow_nan=False) + "\n")


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def json_safe(value):
    """NaN/inf → None, recursively (``metrics.json`` is strict JSON)."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def weights_lines(m: dict) -> list[str]:
    """The random-weights banner and the weights' identity, for the top of a report."""
    return markdown_lines(m["weights"]) if m.get("weights") else []


def run_lines(run: dict | None) -> list[str]:
    """One line stating when and how the run that wrote a report was made."""
    if not run:
        return []
    return [f"Run: `{run['command']}` started {run['started_utc']}, finished {run['finished_utc']} (UTC), "
            f"crossmodal {run.get('crossmodal_version', '?')}; command line `{' '.join(run.get('argv', []))}`.", ""]


#: How a run decoded JPEGs, as its reports name it (``--fast-decode``: PIL's draft mode).
FULL_DECODE = "full (the reference preprocessing: decode, resize, crop)"
FAST_DECODE = "fast (JPEG draft mode: reduced-size DCT decoding before the resize; not the reference preprocessing)"


def decoding(draft: bool) -> str:
    """The ``decoding`` entry of a run's JSON."""
    return FAST_DECODE if draft else FULL_DECODE


def decoding_lines(draft: bool) -> list[str]:
    """A Markdown report's note on fast decoding (nothing for the reference decoding)."""
    return [f"> **Decoding: {FAST_DECODE}.** Accuracies differ from the reference preprocessing's.", ""] \
        if draft else []


def decoding_title(title: str, draft: bool) -> str:
    """A chart title, with a last line saying fast decoding was used (unchanged otherwise)."""
    return f"{title}\n[fast JPEG decoding: draft mode]" if draft else title
