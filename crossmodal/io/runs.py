"""A run's output folder: all of a run's files or none of them.

:func:`staged` gives a run a hidden staging folder inside ``--out``; the run writes
its files there, and only when it succeeds are they moved into ``--out`` (the
run's JSON files last, so a reader that sees a new ``metrics.json`` sees every file
beside it). A run that fails leaves ``--out`` as it was and its error says so: any
files there are from an earlier run, and their ``run`` block
says which (:class:`crossmodal.reports.runs.RunRecord`: start and finish time in UTC, command
line, settings, the weights).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from crossmodal.errors import CrossmodalError, InputError

#: Files moved into place last (the machine-readable summaries readers look for first).
LAST = ("metrics.json", "retrieval.json", "comparison.json", "explain.json", "explain.md", "probe.md",
        "probe.json", "finetune.md", "finetune.json", "units.md", "units.json")


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_run_report(path: str | os.PathLike, filename: str, command: str, fmt: str,
                    option: str = "--against") -> tuple[Path, dict]:
    """An earlier run's JSON report, for ``option``: ``path`` is the file or the run folder that holds
    ``filename``; it must be a JSON object of format ``fmt``. Returns (the file, its data); anything
    else is an :class:`InputError` naming the file."""
    path = Path(path)
    file = path / filename if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise InputError(f"{option}: no {filename} here (give an earlier `crossmodal {command}` output)",
                         file) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{option}: cannot read {filename} ({exc})", file) from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise InputError(f"{option}: not a {filename} of `crossmodal {command}`", file)
    return file, data


#: ``<out>/.crossmodal-files.json``: per command, the files (relative paths) its last run wrote there.
MANIFEST = ".crossmodal-files.json"


def _read_manifest(out_dir: Path) -> dict[str, list[str]]:
    try:
        data = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return {k: [str(f) for f in v] for k, v in data.items() if isinstance(v, list)} if isinstance(data, dict) else {}


def _move_all(staging: Path, out_dir: Path, command: str | None) -> None:
    files = sorted((p for p in staging.rglob("*") if p.is_file()), key=lambda p: (p.name in LAST, str(p)))
    written = sorted(str(p.relative_to(staging)) for p in files)
    manifest = _read_manifest(out_dir) if command else {}
    for src in files:
        dest = out_dir / src.relative_to(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
    if command:  # the files the same command's earlier run wrote and this one did not: stale, removed
        for rel in set(manifest.get(command, ())) - set(written):
            stale = (out_dir / rel).resolve()
            if out_dir.resolve() in stale.parents and stale.is_file():
                stale.unlink()
                for folder in stale.parents:  # folders left empty by it (never out_dir itself)
                    if folder == out_dir.resolve() or any(folder.iterdir()):
                        break
                    folder.rmdir()
        manifest[command] = written
        tmp = out_dir / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, out_dir / MANIFEST)


@contextmanager
def staged(out_dir: Path, command: str | None = None) -> Iterator[Path]:
    """Yield a staging folder inside ``out_dir``; move its files into ``out_dir`` when the block
    succeeds; on failure remove it (and ``out_dir`` when this run created it and it is left
    empty) and add to a toolkit error that nothing was written.

    ``command``: the files are recorded in ``out_dir/.crossmodal-files.json`` under it, and those an
    earlier run of the same command wrote there but this one did not (an overlay of an image not in
    this run) are removed: the folder holds one run's files, and a user's own files (never recorded)
    are never touched."""
    out_dir = Path(out_dir)
    created = [p for p in [out_dir, *out_dir.parents] if not p.exists()]
    staging = out_dir / f".crossmodal-staging-{os.getpid()}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        yield staging
        _move_all(staging, out_dir, command)
    except BaseException as exc:
        if isinstance(exc, CrossmodalError) and exc.args:
            earlier = " (the files there are an earlier run's: see their run block)" if any(
                p for p in out_dir.iterdir() if p != staging) else ""
            exc.args = (f"{exc.args[0]} — the run failed: nothing was written to {out_dir}{earlier}",
                        *exc.args[1:])
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break
