"""``crossmodal fetch``: download a model card's files, resumable and SHA-256 checked."""
from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import click

from crossmodal.cli.options import echo_json, handle_errors, locks_output
from crossmodal.errors import InputError

_SENTENCE_END = re.compile(r"(?<=[.])\s+(?=[A-Z])")
_CHECK_TEXT = {
    "sha256": "verified against the known SHA-256",
    "sha256-prefix": "verified against the known SHA-256 prefix",
    "none": "not verified (no known hash; computed only)",
}
RECORD_SUFFIX = ".sha256"  # DEST/<file>.sha256: the hash computed where the card knows none


@click.command("fetch")
@click.argument("names", nargs=-1, metavar="NAME...")
@click.option("--dest", "-d", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Folder to write the files into (created if missing).")
@click.option("--url", help="Download a single-file card from this URL instead (a mirror, a local server).")
@click.option("--base-url", help="Replace the folder of every file's URL, keeping the file names "
                                 "(e.g. http://mirror/places365/ or file:///data/mirror/).")
@click.option("--sha256", "sha256", metavar="HEX",
              help="Expected SHA-256 of a single-file card whose card records no full hash.")
@click.option("--list", "list_only", is_flag=True, help="List the known cards (or the NAMEs given) and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@click.option("--force", is_flag=True, help="Download again even when the file is there and checks out.")
@click.option("--retries", type=click.IntRange(0, 20), default=3, show_default=True,
              help="Further tries after a dropped connection; each resumes where the last stopped.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds without data before a try counts as failed.")
@handle_errors
@locks_output("dest", "fetch", when=lambda kw: not kw.get("list_only"), central=True)
def fetch(names, dest, url, base_url, sha256, list_only, as_json, no_progress, force, retries, timeout):
    """Download the files of model card NAME (several NAMEs, or `all` for every card).

    Files go to DEST/<file name> through DEST/<file name>.part: an interrupted download
    resumes (HTTP Range) on the next run, a file whose SHA-256 does not match the card's
    is deleted, and a file already there that checks out is not fetched again. For each
    file the path, size and SHA-256 are printed, and whether the hash was verified
    against a known one or only computed. A hash only computed (the card knows none, e.g.
    the Places365 caffemodels) is recorded in DEST/<file name>.sha256; later runs check
    the file against that record (--force: fetch again and record anew).

    \b
    crossmodal fetch --list
    crossmodal fetch places365-labels --dest weights/
    crossmodal fetch vgg16-places365-pytorch --dest weights/
    crossmodal fetch places365-mean --base-url file:///data/mirror/ --dest weights/
    """
    from crossmodal.io.download import download, parse_hex
    from crossmodal.models.cards import get_card, list_cards

    if list_only:
        cards = [get_card(n) for n in dict.fromkeys(names)] if names and "all" not in names else list_cards()
        return _print_cards(cards, as_json)
    if not names:
        raise InputError("give a card NAME (`crossmodal fetch --list` shows them) or `all`")
    cards = list_cards() if "all" in names else [get_card(n) for n in dict.fromkeys(names)]
    files = [(card, f) for card in cards for f in card.files]
    if url and base_url:
        raise InputError("give either --url or --base-url, not both")
    if (url or sha256) and len(files) != 1:
        what = f"card {cards[0].name} has {len(files)} files" if len(cards) == 1 else f"{len(cards)} cards"
        raise InputError(f"--url and --sha256 apply to a single file, but {what}"
                         f"{'; use --base-url for a mirror' if url else ''}")

    rows = []
    for card, f in files:
        expected = f.sha256
        if sha256:
            given = parse_hex(sha256, "--sha256", exact=64)
            if expected and given != expected:
                raise InputError(f"--sha256 {given} differs from the SHA-256 card {card.name} records ({expected})")
            expected = given
        record = dest / (f.file + RECORD_SUFFIX)
        recorded = _read_record(record) if not expected and not f.sha256_prefix and not force else None
        expected = expected or recorded
        source = url or (_rebase(f.url, base_url) if base_url else f.url)
        result = download(source, dest / f.file, sha256=expected, sha256_prefix=f.sha256_prefix,
                          progress=not no_progress, timeout=timeout, retries=retries, size=f.size,
                          overwrite=force)
        action = "already there" if result.skipped else "resumed" if result.resumed else "downloaded"
        row = {"card": card.name, "file": f.file, "kind": f.kind, "path": str(result.path), "url": source,
               "bytes": result.bytes, "sha256": result.sha256, "check": result.check,
               "verified": result.verified, "action": action, "preprocess": f.preprocess, "labels": f.labels}
        check_text = _CHECK_TEXT[result.check]
        if result.check == "none":  # record it: later runs check the file against it
            from crossmodal.io.atomic import write_text_atomic
            write_text_atomic(record, f"{result.sha256}  {f.file}\n")
            row["recorded"], check_text = str(record), f"{check_text}, recorded in {record.name}"
        elif recorded:
            row["check"], check_text = "recorded", f"verified against the SHA-256 recorded in {record.name}"
        rows.append(row)
        if not as_json:
            click.echo(f"{result.path}  {_human(result.bytes)}  sha256 {result.sha256}  {check_text}; {action}")
    if as_json:
        echo_json(rows)


def _read_record(path: Path) -> str | None:
    """The hash an earlier fetch computed and recorded (``HEX  name``, as sha256sum writes), or None."""
    try:
        text = path.read_text().split()
    except (OSError, UnicodeDecodeError):
        return None
    return text[0] if text and re.fullmatch(r"[0-9a-f]{64}", text[0]) else None


def _rebase(url: str, base_url: str) -> str:
    """``url`` with its folder replaced by ``base_url`` (the file name is kept)."""
    name = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]
    return base_url.rstrip("/") + "/" + name


def _print_cards(cards, as_json: bool) -> None:
    if as_json:
        return echo_json([c.to_dict() for c in cards])
    width = max(len(c.name) for c in cards)
    for c in cards:
        checks = {f.check for f in c.files}
        check = "sha256" if checks == {"sha256"} else "prefix" if "sha256-prefix" in checks else \
            "partial" if "sha256" in checks else "none"
        size = _human(c.size) if c.size is not None else "?"
        click.echo(f"{c.name:<{width}}  {len(c.files)} file{'s' if len(c.files) > 1 else ' '}  "
                   f"{size:>9}  preprocess {c.preprocess or '-':<11}  hash {check:<7}  "
                   f"{_SENTENCE_END.split(c.description)[0].rstrip('.')}")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover
