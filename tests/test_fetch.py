"""``fetch``: model cards, the resumable verified downloader and the CLI command.

A local ThreadingHTTPServer on 127.0.0.1 (port 0) serves generated files. Each file
has a mode that misbehaves on purpose: drop the connection part-way, reset it, stall
past the client's timeout, ignore ``Range``, serve the wrong bytes, answer 503 once,
or 404. Every download in here has a short socket timeout, no backoff and a bounded
number of retries; the server is shut down by the fixture's finalizer.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from crossmodal.cli.fetch import fetch
from crossmodal.errors import InputError
from crossmodal.io.download import download, sha256_file
from crossmodal.models import cards as cards_mod
from crossmodal.models.cards import find_card_for_file, get_card, list_cards

pytestmark = [pytest.mark.timeout(60)] if importlib.util.find_spec("pytest_timeout") else []

SIZE = 300_000
CUT = 100_000  # bytes sent before a connection is dropped
FAST = dict(progress=False, timeout=5, retries=3, backoff=0, chunk_size=16384)


def _blob(seed: int, size: int = SIZE) -> bytes:
    out, block = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- the server

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server's naming
        srv = self.server
        path = self.path.split("?", 1)[0]
        with srv.lock:
            srv.hits[path] += 1
            n = srv.hits[path]
        modes = set(srv.modes.get(path, "normal").split("+"))
        data = srv.files.get(path)
        rng = self.headers.get("Range")
        if data is None or "404" in modes:
            return self._reply(path, rng, 404, b"not found\n")
        if "503-once" in modes and n == 1:
            return self._reply(path, rng, 503, b"busy\n")
        if "wrong" in modes:
            data = data[::-1]
        status, start, headers = 200, 0, {}
        if rng and "norange" not in modes:
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            start = int(m.group(1))
            if start >= len(data):
                return self._reply(path, rng, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        cut_now = "always-drop" in modes or (n == 1 and modes & {"drop", "reset", "stall"})
        if not cut_now:
            return self._reply(path, rng, status, body, headers)
        # Announce the whole body, send only part of it, then misbehave.
        self._reply(path, rng, status, body[:CUT], headers, length=len(body))
        if "stall" in modes:
            time.sleep(srv.stall)
        elif "reset" in modes:  # RST instead of FIN: zero linger, closed before the server's shutdown()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        self.close_connection = True

    def _reply(self, path, rng, status, body, headers=None, length=None):
        self.server.log.append((path, rng, status))
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        try:
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:  # the client went away (e.g. after its timeout)
            pass


class _LocalServer:
    """Files by URL path, a mode per file, and a log of (path, Range header, status)."""

    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.files, self.httpd.modes, self.httpd.log = {}, {}, []
        self.httpd.hits, self.httpd.lock, self.httpd.stall = Counter(), threading.Lock(), 0.8
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def serve(self, path: str, data: bytes, mode: str = "normal") -> str:
        path = "/" + path.lstrip("/")
        self.httpd.files[path], self.httpd.modes[path] = data, mode
        return f"http://127.0.0.1:{self.port}{path}"

    def set_mode(self, path: str, mode: str) -> None:
        self.httpd.modes["/" + path.lstrip("/")] = mode

    def requests(self, path: str) -> list[tuple[str | None, int]]:
        path = "/" + path.lstrip("/")
        return [(rng, status) for p, rng, status in self.httpd.log if p == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def server():
    srv = _LocalServer()
    yield srv
    srv.close()


@pytest.fixture
def folder(request) -> str:
    """A URL folder of its own for each test, so that tests never share server state."""
    return re.sub(r"\W+", "-", request.node.name)


# --------------------------------------------------------------------------- downloader

def test_plain_download_verifies_and_leaves_no_part(server, folder, tmp_path):
    data = _blob(1)
    url = server.serve(f"{folder}/a.bin", data)
    res = download(url, tmp_path / "sub" / "a.bin", sha256=_sha(data), **FAST)
    assert res.path.read_bytes() == data and res.sha256 == _sha(data) and res.bytes == SIZE
    assert (res.resumed, res.skipped, res.check, res.verified) == (False, False, "sha256", True)
    assert not (tmp_path / "sub" / "a.bin.part").exists()
    assert server.requests(f"{folder}/a.bin") == [(None, 200)]


def test_dropped_connection_resumes_with_range(server, folder, tmp_path):
    data = _blob(2)
    url = server.serve(f"{folder}/b.bin", data, mode="drop")
    res = download(url, tmp_path / "b.bin", sha256=_sha(data), **FAST)
    assert res.path.read_bytes() == data and res.resumed and res.sha256 == _sha(data)
    assert server.requests(f"{folder}/b.bin") == [(None, 200), (f"bytes={CUT}-", 206)]


@pytest.mark.parametrize("mode", ["reset", "stall"])
def test_reset_or_stalled_connection_retries(server, folder, tmp_path, mode):
    data = _blob(3)
    url = server.serve(f"{folder}/c.bin", data, mode=mode)
    res = download(url, tmp_path / "c.bin", sha256=_sha(data), **{**FAST, "timeout": 0.25})
    assert res.path.read_bytes() == data
    log = server.requests(f"{folder}/c.bin")
    assert 2 <= len(log) <= 4 and log[-1][1] in (200, 206)


def test_server_ignoring_range_restarts_from_zero(server, folder, tmp_path):
    data = _blob(4)
    url = server.serve(f"{folder}/d.bin", data, mode="norange")
    (tmp_path / "d.bin.part").write_bytes(b"stale bytes from another file" * 1000)
    res = download(url, tmp_path / "d.bin", sha256=_sha(data), **FAST)
    assert res.path.read_bytes() == data and not res.resumed
    assert server.requests(f"{folder}/d.bin") == [("bytes=29000-", 200)]


def test_drop_then_range_ignored(server, folder, tmp_path):
    data = _blob(5)
    url = server.serve(f"{folder}/e.bin", data, mode="drop+norange")
    res = download(url, tmp_path / "e.bin", sha256=_sha(data), **FAST)
    assert res.path.read_bytes() == data and not res.resumed
    assert server.requests(f"{folder}/e.bin") == [(None, 200), (f"bytes={CUT}-", 200)]


def test_wrong_content_raises_and_leaves_nothing(server, folder, tmp_path):
    data = _blob(6)
    url = server.serve(f"{folder}/f.bin", data, mode="wrong")
    with pytest.raises(InputError) as err:
        download(url, tmp_path / "f.bin", sha256=_sha(data), **FAST)
    msg = str(err.value)
    assert "SHA-256 mismatch" in msg and _sha(data) in msg and _sha(data[::-1]) in msg
    assert "\n" not in msg and list(tmp_path.iterdir()) == []


def test_http_404_is_a_clear_error_without_retries(server, folder, tmp_path):
    url = f"http://127.0.0.1:{server.port}/{folder}/missing.bin"
    with pytest.raises(InputError, match=r"HTTP 404"):
        download(url, tmp_path / "missing.bin", **FAST)
    assert list(tmp_path.iterdir()) == [] and len(server.requests(f"{folder}/missing.bin")) == 1


def test_503_is_retried(server, folder, tmp_path):
    data = _blob(7)
    url = server.serve(f"{folder}/g.bin", data, mode="503-once")
    res = download(url, tmp_path / "g.bin", sha256=_sha(data), **FAST)
    assert res.path.read_bytes() == data
    assert server.requests(f"{folder}/g.bin") == [(None, 503), (None, 200)]


def test_gives_up_after_retries_then_resumes_on_the_next_run(server, folder, tmp_path):
    data = _blob(8)
    url = server.serve(f"{folder}/h.bin", data, mode="always-drop")
    with pytest.raises(InputError, match=r"after 2 attempts.*run again to resume"):
        download(url, tmp_path / "h.bin", sha256=_sha(data), **{**FAST, "retries": 1})
    part = tmp_path / "h.bin.part"
    assert part.stat().st_size == 2 * CUT and not (tmp_path / "h.bin").exists()
    assert server.requests(f"{folder}/h.bin") == [(None, 200), (f"bytes={CUT}-", 206)]
    server.set_mode(f"{folder}/h.bin", "normal")
    res = download(url, tmp_path / "h.bin", sha256=_sha(data), **FAST)  # a new run: the .part is the state
    assert res.path.read_bytes() == data and res.resumed and not part.exists()
    assert server.requests(f"{folder}/h.bin")[-1] == (f"bytes={2 * CUT}-", 206)


def test_complete_part_gets_416_and_is_verified(server, folder, tmp_path):
    data = _blob(9)
    url = server.serve(f"{folder}/i.bin", data)
    (tmp_path / "i.bin.part").write_bytes(data)
    res = download(url, tmp_path / "i.bin", sha256=_sha(data), **FAST)
    assert res.path.read_bytes() == data and res.resumed
    assert server.requests(f"{folder}/i.bin") == [(f"bytes={SIZE}-", 416)]


def test_part_longer_than_the_file_starts_again(server, folder, tmp_path):
    data = _blob(10)
    url = server.serve(f"{folder}/j.bin", data)
    (tmp_path / "j.bin.part").write_bytes(data + b"junk")
    res = download(url, tmp_path / "j.bin", sha256=_sha(data), **FAST)
    assert res.path.read_bytes() == data and not res.resumed
    assert server.requests(f"{folder}/j.bin") == [(f"bytes={SIZE + 4}-", 416), (None, 200)]


def test_sha256_prefix(server, folder, tmp_path):
    data = _blob(11)
    url = server.serve(f"{folder}/k.bin", data)
    res = download(url, tmp_path / "k.bin", sha256_prefix=_sha(data)[:8].upper(), **FAST)
    assert res.check == "sha256-prefix" and res.sha256 == _sha(data)
    bad = "0" * 8 if not _sha(data).startswith("0" * 8) else "f" * 8
    with pytest.raises(InputError, match=f"expected a hash starting with {bad}, got {_sha(data)}"):
        download(url, tmp_path / "k2.bin", sha256_prefix=bad, **FAST)
    assert not (tmp_path / "k2.bin").exists() and not (tmp_path / "k2.bin.part").exists()


def test_existing_good_file_is_skipped_and_a_bad_one_replaced(server, folder, tmp_path):
    data = _blob(12)
    url = server.serve(f"{folder}/l.bin", data)
    dest = tmp_path / "l.bin"
    download(url, dest, sha256=_sha(data), **FAST)
    res = download(url, dest, sha256=_sha(data), **FAST)
    assert res.skipped and res.sha256 == _sha(data) and res.bytes == SIZE
    assert len(server.requests(f"{folder}/l.bin")) == 1
    assert download(url, dest, **FAST).skipped  # no known hash: an existing file is kept
    dest.write_bytes(b"damaged")
    res = download(url, dest, sha256=_sha(data), **FAST)
    assert not res.skipped and dest.read_bytes() == data
    assert len(server.requests(f"{folder}/l.bin")) == 2


def test_file_url_and_resume(tmp_path):
    data = _blob(13)
    src = tmp_path / "mirror" / "m.bin"
    src.parent.mkdir()
    src.write_bytes(data)
    (tmp_path / "m.bin.part").write_bytes(data[:1234])
    res = download(src.as_uri(), tmp_path / "m.bin", sha256=_sha(data), **FAST)
    assert res.path.read_bytes() == data and res.resumed
    with pytest.raises(InputError, match="no such file"):
        download((tmp_path / "nope.bin").as_uri(), tmp_path / "n.bin", **FAST)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"sha256": "xyz"}, "sha256 must be 64 hex digits"),
    ({"sha256": "ab" * 31}, "sha256 must be 64 hex digits"),
    ({"sha256_prefix": "0bafbc5g"}, "sha256_prefix must be"),
    ({"sha256": "a" * 64, "sha256_prefix": "0bafbc55"}, "does not start with the expected prefix"),
])
def test_bad_hash_arguments(tmp_path, kwargs, pattern):
    with pytest.raises(InputError, match=pattern):
        download("http://127.0.0.1:9/x", tmp_path / "x", **kwargs, **FAST)


def test_unsupported_scheme(tmp_path):
    with pytest.raises(InputError, match="only http"):
        download("ftp://example.org/x", tmp_path / "x", **FAST)


def test_progress_bar_goes_to_stderr(server, folder, tmp_path, capsys):
    data = _blob(14)
    url = server.serve(f"{folder}/p.bin", data)
    download(url, tmp_path / "p.bin", **{**FAST, "progress": True})
    out, err = capsys.readouterr()
    assert out == "" and "p.bin" in err


def test_sha256_file(tmp_path):
    (tmp_path / "x").write_bytes(b"abc")
    assert sha256_file(tmp_path / "x") == (_sha(b"abc"), 3)


# --------------------------------------------------------------------------- cards

def test_card_registry():
    names = [c.name for c in list_cards()]
    assert names == sorted(names) and set(names) >= {
        "vgg16-places365-caffe", "vgg16-hybrid1365-caffe", "vgg16-places365-pytorch",
        "places365-labels", "hybrid1365-labels", "places365-mean", "alexnet-places365-pytorch",
        "resnet18-places365-pytorch", "resnet50-places365-pytorch", "wideresnet18-places365-pytorch",
        "densenet161-places365-pytorch", "wideresnet18-sceneattribute"}
    site = "http://places2.csail.mit.edu/models_places365/"
    for arch in ("alexnet", "resnet18", "resnet50", "wideresnet18", "densenet161"):
        (zoo,) = get_card(f"{arch}-places365-pytorch").files
        assert (zoo.url, zoo.sha256, zoo.preprocess) == (f"{site}{arch}_places365.pth.tar", None, "places365")
        assert find_card_for_file(f"w/{arch}_places365.pth.tar").name == f"{arch}-places365-pytorch"
    assert get_card("wideresnet18-sceneattribute").files[0].url == site + "W_sceneattribute_wideresnet18.npy"
    pt = get_card("vgg16-places365-pytorch")
    (f,) = pt.files
    assert f.url == "https://dissect.csail.mit.edu/models/vgg16_places365-0bafbc55.pth"
    assert (f.sha256, f.sha256_prefix, f.preprocess, f.labels) == (None, "0bafbc55", "torchvision", "places365-labels")
    assert "dissection" in pt.description and "features.conv1_1" in pt.description and pt.preprocess == "torchvision"
    caffe = get_card("vgg16-places365-caffe")
    assert caffe.preprocess == "caffe" and {x.file for x in caffe.files} == {
        "vgg16_places365.caffemodel", "deploy_vgg16_places365.prototxt"}
    assert get_card("vgg16-hybrid1365-caffe").labels == "hybrid1365-labels"
    raw = "https://raw.githubusercontent.com/CSAILVision/places365/master/"
    assert [x.url for x in get_card("places365-labels").files] == [
        raw + "categories_places365.txt", raw + "IO_places365.txt"]
    assert get_card("places365-mean").files[0].url == raw + "places365CNN_mean.binaryproto"


def test_card_presets_and_references_are_valid():
    from crossmodal.ir.preprocess import PREPROCESS_PRESETS
    assert set(cards_mod.PRESETS) == set(PREPROCESS_PRESETS)
    known = {c.name for c in list_cards()}
    for card in list_cards():
        assert card.to_dict()["name"] == card.name
        for f in card.files:
            assert f.labels in known | {None} and f.mean in known | {None}
            assert f.url.rsplit("/", 1)[-1] == f.file
            if f.kind == "checkpoint":
                assert f.preprocess in PREPROCESS_PRESETS and f.labels


def test_unknown_card_lists_the_known_ones():
    with pytest.raises(InputError) as err:
        get_card("vgg19-nope")
    assert "unknown model card 'vgg19-nope'" in str(err.value) and "places365-labels" in str(err.value)


@pytest.mark.parametrize("name, card", [
    ("weights/vgg16_places365-0bafbc55.pth", "vgg16-places365-pytorch"),
    ("/x/VGG16_Places365.caffemodel", "vgg16-places365-caffe"),
    ("deploy_vgg16_hybrid1365.prototxt", "vgg16-hybrid1365-caffe"),
    (Path("categories_places365.txt"), "places365-labels"),
    ("resnet50.pth", None),
    ("vgg16_places365-0bafbc55.pth.part", None),
    ("", None),
])
def test_find_card_for_file(name, card):
    found = find_card_for_file(name)
    assert (found.name if found else None) == card


@pytest.mark.parametrize("text, pattern", [
    ("{", "not valid JSON"),
    ('{"name": "x", "files": []}', "non-empty 'files'"),
    ('{"name": "x", "files": [{"file": "a", "url": "ftp://h/a"}]}', "'url' must be"),
    ('{"name": "x", "files": [{"file": "a", "url": "http://h/a", "sha256": "12"}]}', "64 lower-case hex"),
    ('{"name": "x", "files": [{"file": "a", "url": "http://h/a", "kind": "checkpoint"}]}', "'preprocess' preset"),
    ('{"name": "x", "files": [{"file": "a", "url": "http://h/a", "preprocess": "vgg"}]}', "'preprocess' must be"),
    ('{"name": "x", "files": [{"file": "a", "url": "http://h/a", "colour": 1}]}', "unknown file keys"),
    ('{"name": "Bad Name", "files": [{"file": "a", "url": "http://h/a"}]}', "card name must be"),
])
def test_bad_cards_are_rejected(text, pattern):
    with pytest.raises(InputError, match=pattern):
        cards_mod._parse(text, "x.json")


# --------------------------------------------------------------------------- CLI

@pytest.fixture
def runner():
    return CliRunner()


def test_cli_list(runner):
    result = runner.invoke(fetch, ["--list"])
    assert result.exit_code == 0, result.output
    assert all(c.name in result.stdout for c in list_cards())
    data = json.loads(runner.invoke(fetch, ["--list", "--json"]).stdout)
    assert {c["name"] for c in data} == {c.name for c in list_cards()}


def test_cli_fetch_single_file_card_with_sha256(runner, server, folder, tmp_path):
    from helpers import shared_file  # the card records the real file's SHA-256
    data = shared_file("places365", "categories_hybrid1365.txt").read_bytes()
    server.serve(f"{folder}/categories_hybrid1365.txt", data)
    base = f"http://127.0.0.1:{server.port}/{folder}/"
    args = ["hybrid1365-labels", "--base-url", base, "--dest", str(tmp_path / "w"), "--sha256", _sha(data),
            "--no-progress"]
    result = runner.invoke(fetch, args)
    assert result.exit_code == 0, result.output
    dest = tmp_path / "w" / "categories_hybrid1365.txt"
    assert dest.read_bytes() == data
    assert str(dest) in result.stdout and _sha(data) in result.stdout and "verified against the known SHA-256" \
        in result.stdout
    result = runner.invoke(fetch, args + ["--json"])  # second run: already there
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["sha256"] == _sha(data) and row["verified"] and row["action"] == "already there"
    assert row["bytes"] == len(data) and row["path"] == str(dest)


def test_cli_multi_file_card_base_url_json(runner, server, folder, tmp_path):
    from helpers import shared_file  # the card records the real files' SHA-256
    files = {name: shared_file("places365", name).read_bytes()
             for name in ("categories_places365.txt", "IO_places365.txt")}
    for name, data in files.items():
        server.serve(f"{folder}/{name}", data)
    result = runner.invoke(fetch, ["places365-labels", "--base-url", f"http://127.0.0.1:{server.port}/{folder}",
                                   "--dest", str(tmp_path), "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["file"] for r in rows] == list(files)
    for r in rows:
        assert r["sha256"] == _sha(files[r["file"]]) and r["check"] == "sha256" and r["verified"]
        assert Path(r["path"]).read_bytes() == files[r["file"]]


def test_cli_url_override_and_prefix_mismatch(runner, server, folder, tmp_path):
    data = _blob(23, 4000)
    url = server.serve(f"{folder}/mirror.pth", data)
    result = runner.invoke(fetch, ["vgg16-places365-pytorch", "--url", url, "--dest", str(tmp_path),
                                   "--no-progress", "--retries", "0"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "starting with 0bafbc55" in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, pattern", [
    (["vgg19-nope"], "unknown model card 'vgg19-nope'"),
    ([], "give a card NAME"),
    (["places365-labels", "--sha256", "a" * 64], "apply to a single file"),
    (["places365-labels", "--url", "http://127.0.0.1:9/x"], "use --base-url"),
    (["places365-mean", "--sha256", "xyz"], "sha256 must be 64 hex digits"),
    (["vgg16-places365-pytorch", "--sha256", "a" * 64], "does not start with the expected prefix 0bafbc55"),
])
def test_cli_bad_input_is_one_line_exit_2(runner, tmp_path, args, pattern):
    result = runner.invoke(fetch, args + ["--dest", str(tmp_path), "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and re.search(pattern, lines[0]), lines
    assert list(tmp_path.iterdir()) == []


def test_cli_is_registered_in_the_main_group(runner):
    from crossmodal.cli import main
    result = runner.invoke(main, ["fetch", "--list"])
    assert result.exit_code == 0 and "vgg16-places365-pytorch" in result.stdout


def test_cli_records_the_hash_it_computed_and_checks_later_runs_against_it(runner, server, folder, tmp_path):
    """The Places365 caffemodels have no known hash: fetch prints and records the one it computed
    (DEST/<file>.sha256), and a later run verifies the file against that record."""
    from helpers import require_shared
    proto = require_shared("places365", "deploy_googlenet_places365.prototxt").read_bytes()
    weights = _blob(31, 5000)
    server.serve(f"{folder}/googlenet_places365.caffemodel", weights)
    server.serve(f"{folder}/deploy_googlenet_places365.prototxt", proto)
    args = ["googlenet-places365-caffe", "--base-url", f"http://127.0.0.1:{server.port}/{folder}",
            "--dest", str(tmp_path), "--no-progress"]
    result = runner.invoke(fetch, args)
    assert result.exit_code == 0, result.output
    record = tmp_path / "googlenet_places365.caffemodel.sha256"
    assert record.read_text() == f"{_sha(weights)}  googlenet_places365.caffemodel\n"
    assert f"sha256 {_sha(weights)}  not verified (no known hash; computed only), recorded in " \
           "googlenet_places365.caffemodel.sha256; downloaded" in result.stdout
    result = runner.invoke(fetch, args + ["--json"])
    rows = {r["file"]: r for r in json.loads(result.stdout)}
    row = rows["googlenet_places365.caffemodel"]
    assert row["check"] == "recorded" and row["verified"] and row["action"] == "already there"
    (tmp_path / "googlenet_places365.caffemodel").write_bytes(weights[:-1] + b"x")  # changed since: fetched again
    result = runner.invoke(fetch, args + ["--json"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "googlenet_places365.caffemodel").read_bytes() == weights


def test_a_download_that_received_nothing_leaves_no_part_and_says_so(tmp_path):
    """Nothing listens on port 9: no byte arrives, so no empty .part is left and the message does not
    promise a resume (a partial download says how many bytes its .part keeps)."""
    with pytest.raises(InputError, match=r"after 1 attempt \(.*\); nothing was received$"):
        download("http://127.0.0.1:9/x.bin", tmp_path / "x.bin", **{**FAST, "retries": 0})
    assert list(tmp_path.iterdir()) == []
