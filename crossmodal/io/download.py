"""Resumable, verified downloads with the standard library only (``urllib.request``).

:func:`download` streams a URL into ``DEST.part`` beside the destination, resumes
an interrupted transfer with an HTTP ``Range`` request (also across runs: the
``.part`` file is the state), retries dropped connections with a short backoff,
checks the SHA-256 of the whole file (the full hash, or only its leading digits
when that is all that is known) and renames the file onto ``DEST`` atomically.
A file that fails the check is deleted; nothing half-written ever sits at ``DEST``.

``http://``, ``https://`` and ``file://`` URLs are accepted (the last for mirrors
on a local or network disk).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from crossmodal.errors import InputError
from crossmodal.io.hashing import file_sha256

#: HTTP statuses worth another try (the server is busy or briefly broken).
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_HEX = re.compile(r"[0-9a-f]+")
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)\s*/\s*(\d+|\*)", re.IGNORECASE)


@dataclass(frozen=True)
class DownloadResult:
    """What :func:`download` did.

    ``check`` says what the SHA-256 was compared with: ``sha256`` (a full known
    hash), ``sha256-prefix`` (its leading digits) or ``none`` (nothing known: the
    hash was only computed). ``skipped``: the destination was already there and
    passed the check, nothing was downloaded. ``resumed``: part of the file came
    from an earlier, interrupted transfer.
    """

    path: Path
    sha256: str
    bytes: int
    resumed: bool
    skipped: bool = False
    check: str = "none"

    @property
    def verified(self) -> bool:
        return self.check != "none"


class _Transient(Exception):
    """A failure that another attempt (resuming where this one stopped) may fix."""


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> tuple[str, int]:
    """(hex SHA-256, size in bytes) of a file."""
    return file_sha256(path, chunk_size), Path(path).stat().st_size


def download(url: str, dest: Path, *, sha256: str | None = None, sha256_prefix: str | None = None,
             progress: bool = True, timeout: float = 30, retries: int = 3, chunk_size: int = 1 << 20,
             size: int | None = None, backoff: float = 0.5, overwrite: bool = False) -> DownloadResult:
    """Download ``url`` to ``dest``, resuming, retrying and verifying; see the module doc.

    ``sha256`` / ``sha256_prefix``: the expected hash (full, or its leading hex digits).
    ``size``: the expected size, only a hint for the progress bar when the server sends none.
    ``retries``: further attempts after a dropped connection, a timeout or a 5xx/429 reply;
    each resumes from what is already in ``DEST.part``; waits ``backoff``·2ⁿ seconds (≤ 10).
    ``overwrite``: download even if ``dest`` exists and passes the check. Without it an
    existing ``dest`` is kept when it matches the expected hash, or when no hash is known.

    Raises :class:`InputError` on a 4xx reply, on a hash mismatch (the download is
    deleted) and when every attempt failed (``DEST.part`` is kept, so that running
    again resumes).
    """
    dest = Path(dest)
    sha256 = parse_hex(sha256, "sha256", exact=64)
    prefix = parse_hex(sha256_prefix, "sha256_prefix")
    if sha256 and prefix and not sha256.startswith(prefix):
        raise InputError(f"the SHA-256 {sha256} does not start with the expected prefix {prefix}")
    check = "sha256" if sha256 else "sha256-prefix" if prefix else "none"
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise InputError("only http://, https:// and file:// URLs can be downloaded", url)
    if retries < 0 or chunk_size <= 0 or timeout <= 0:
        raise InputError("retries must be >= 0, chunk_size and timeout > 0")
    if dest.is_dir():
        raise InputError("is a folder; give the file to write", dest)

    if dest.is_file() and not overwrite:
        actual, n = sha256_file(dest, chunk_size)
        if _mismatch(actual, sha256, prefix) is None:
            return DownloadResult(dest, actual, n, resumed=False, skipped=True, check=check)
        # A stale or damaged file: fetch again; it is replaced only once the new one checks out.
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the folder ({exc.strerror or exc})", dest.parent) from None

    part = _Part(dest.with_name(dest.name + ".part"), chunk_size)
    bar = _progress_bar(dest.name, size, progress)
    try:
        for attempt in range(retries + 1):
            try:
                if scheme == "file":
                    _copy_local(url, part, bar)
                else:
                    _fetch_http(url, part, bar, timeout=timeout, size=size)
                break
            except _Transient as exc:
                if attempt == retries:
                    got = part.path.stat().st_size if part.path.exists() else 0
                    if not got:  # nothing arrived: no empty .part left behind, nothing to resume
                        part.path.unlink(missing_ok=True)
                    kept = (f"{part.path.name} keeps the {got:,} bytes received: run again to resume" if got
                            else "nothing was received")
                    raise InputError(
                        f"download failed after {attempt + 1} attempt{'s' * bool(attempt)} ({exc}); {kept}",
                        url) from None
                if progress:
                    bar.write(f"{dest.name}: {exc}; retrying", file=sys.stderr)
                time.sleep(min(backoff * 2 ** attempt, 10.0))
    except OSError as exc:  # writing the .part file (disk full, permissions)
        raise InputError(f"cannot write ({exc.strerror or exc})", part.path) from None
    finally:
        bar.close()

    actual = part.hexdigest()
    problem = _mismatch(actual, sha256, prefix)
    if problem:
        part.path.unlink(missing_ok=True)
        raise InputError(f"SHA-256 mismatch: expected {problem}, got {actual}; the download was deleted", url)
    os.replace(part.path, dest)
    return DownloadResult(dest, actual, part.written, resumed=part.resumed, check=check)


# --------------------------------------------------------------------------- transfer

class _Part:
    """The ``.part`` file and a running SHA-256 of exactly the bytes in it."""

    def __init__(self, path: Path, chunk_size: int):
        self.path, self.chunk_size = path, chunk_size
        self._hash: hashlib._Hash | None = None
        self.written = 0
        self.resumed = False
        self.validator: str | None = None  # strong ETag or Last-Modified of the first reply

    def sync(self) -> int:
        """Bytes already in the file; hashes an existing file from an earlier run once."""
        size = self.path.stat().st_size if self.path.exists() else 0
        if self._hash is None or size != self.written:
            self._hash, self.written = hashlib.sha256(), 0
            if size:
                with open(self.path, "rb") as f:
                    while chunk := f.read(self.chunk_size):
                        self._hash.update(chunk)
                        self.written += len(chunk)
        return self.written

    def restart(self) -> None:
        """Empty the file: the next bytes start the download afresh."""
        self.path.write_bytes(b"")
        self._hash, self.written, self.resumed, self.validator = hashlib.sha256(), 0, False, None

    def append(self, f, chunk: bytes) -> None:
        f.write(chunk)
        self._hash.update(chunk)
        self.written += len(chunk)

    def hexdigest(self) -> str:
        if self._hash is None:
            self.sync()
        return self._hash.hexdigest()


def _fetch_http(url: str, part: _Part, bar, *, timeout: float, size: int | None, _again: bool = True) -> None:
    """One attempt: request the missing bytes and append them; _Transient when cut short."""
    offset = part.sync()
    headers = {"User-Agent": _user_agent(), "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if part.validator:
            headers["If-Range"] = part.validator
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        reply_headers, code, reason = exc.headers, exc.code, exc.reason
        exc.close()
        if code == 416 and offset:  # nothing left to send: the .part is complete, or longer than the file
            total = _content_range(reply_headers.get("Content-Range", ""))[2]
            if total is None or total == offset:
                part.resumed = True
                return
            part.restart()
            if _again:
                return _fetch_http(url, part, bar, timeout=timeout, size=size, _again=False)
        if code in RETRY_STATUS:
            raise _Transient(f"HTTP {code} {reason}") from None
        raise InputError(f"download failed: HTTP {code} {reason}", url) from None
    except urllib.error.URLError as exc:
        raise _Transient(f"cannot connect: {exc.reason}") from None
    except (http.client.HTTPException, OSError) as exc:
        raise _Transient(_describe(exc)) from None

    with resp:
        status = resp.status
        if status == 206:
            start, end, total = _content_range(resp.headers.get("Content-Range", ""))
            if start != offset:  # not the range asked for: start over
                part.restart()
                resp.close()
                if _again:
                    return _fetch_http(url, part, bar, timeout=timeout, size=size, _again=False)
                raise _Transient("the server sent a different range than requested")
            part.resumed = part.resumed or offset > 0
            end_at = total if total is not None else (end + 1 if end is not None else None)
        elif status == 200:
            if offset:  # the server ignored the Range (or the file changed): start over
                part.restart()
                offset = 0
            length = resp.headers.get("Content-Length")
            end_at = int(length) if length and length.isdigit() else None
        else:
            raise InputError(f"download failed: unexpected HTTP status {status}", url)
        if part.validator is None:
            etag = resp.headers.get("ETag")
            part.validator = etag if etag and not etag.startswith("W/") else resp.headers.get("Last-Modified")

        bar.reset(total=end_at or size)
        bar.update(offset)
        with open(part.path, "ab") as f:
            while True:
                try:
                    chunk = resp.read(part.chunk_size)
                except (http.client.HTTPException, OSError) as exc:
                    raise _Transient(_describe(exc)) from None
                if not chunk:
                    break
                part.append(f, chunk)
                bar.update(len(chunk))
    if end_at is not None and part.written < end_at:
        raise _Transient(f"connection closed after {part.written:,} of {end_at:,} bytes")


def _copy_local(url: str, part: _Part, bar) -> None:
    """file:// URLs: copy, resuming at the size of the .part file."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.netloc not in ("", "localhost"):
        raise InputError("file:// URLs must name a local path (file:///path)", url)
    source = Path(urllib.request.url2pathname(parsed.path))
    try:
        src = open(source, "rb")
    except FileNotFoundError:
        raise InputError("no such file", source) from None
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", source) from None
    with src:
        total = os.fstat(src.fileno()).st_size
        offset = part.sync()
        if offset > total:
            part.restart()
            offset = 0
        part.resumed = part.resumed or offset > 0
        src.seek(offset)
        bar.reset(total=total)
        bar.update(offset)
        with open(part.path, "ab") as f:
            while chunk := src.read(part.chunk_size):
                part.append(f, chunk)
                bar.update(len(chunk))


# --------------------------------------------------------------------------- helpers

def _content_range(value: str) -> tuple[int | None, int | None, int | None]:
    """``bytes 10-99/100`` → (10, 99, 100); ``bytes */100`` → (None, None, 100); unknown parts None."""
    m = _CONTENT_RANGE.search(value or "")
    if not m:
        return None, None, None
    start, end, total = m.groups()
    as_int = lambda v: int(v) if v and v.isdigit() else None  # noqa: E731
    return as_int(start), as_int(end), as_int(total)


def _mismatch(actual: str, sha256: str | None, prefix: str | None) -> str | None:
    """What was expected, when ``actual`` does not match it; None when it matches (or nothing is known)."""
    if sha256 and actual != sha256:
        return sha256
    if prefix and not actual.startswith(prefix):
        return f"a hash starting with {prefix}"
    return None


def parse_hex(value: str | None, what: str, exact: int | None = None) -> str | None:
    """``value`` as lower-case hex (``exact`` digits, else 1 to 64), None when empty; an
    InputError naming ``what`` otherwise."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if not _HEX.fullmatch(text) or len(text) > 64 or (exact and len(text) != exact):
        need = f"{exact} hex digits" if exact else "1 to 64 hex digits"
        raise InputError(f"{what} must be {need}, not {value!r}")
    return text


def _describe(exc: BaseException) -> str:
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed early ({len(exc.partial):,} bytes of the last piece)"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _user_agent() -> str:
    from crossmodal._version import __version__
    return f"crossmodal/{__version__} (Python-urllib)"


def _progress_bar(name: str, size: int | None, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=size, desc=name, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                disable=not enabled, leave=False, dynamic_ncols=True, miniters=1)
