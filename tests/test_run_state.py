"""A failed run writes nothing in --out and says so; the files of a run state when and how it was made."""
from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest
from click.testing import CliRunner

from crossmodal.cli import main
from test_features import convert_tiny, make_cmplaces_tree


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_ckpt, tiny_preprocess):
    return convert_tiny(tmp_path_factory.mktemp("rs-model"), tiny_ckpt[0], tiny_preprocess, targets=("ir", "onnx"))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """natural: fine; sketch: two categories whose every file fails to decode."""
    base = tmp_path_factory.mktemp("rs-data")
    tree = make_cmplaces_tree(base / "gen", seed=0)
    shutil.copytree(tree["folders"], base / "cmplaces" / "natural")
    for cat, name in (("bedroom", "truncated.jpg"), ("beach", "empty.jpg")):
        (base / "cmplaces" / "sketch" / cat).mkdir(parents=True)
        shutil.copy(tree["list"] / "images" / name, base / "cmplaces" / "sketch" / cat / name)
    return base / "cmplaces"


def _baseline(model, root, out, modality, *extra):
    return CliRunner().invoke(main, ["baseline", "--model", str(model), "--modality", modality, "--data-root",
                                     str(root), "--out", str(out), "--device", "cpu", "-q", *extra])


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and "cache" not in p.relative_to(folder).parts}


def _check_run_block(run, command):
    started = dt.datetime.fromisoformat(run["started_utc"])
    finished = dt.datetime.fromisoformat(run["finished_utc"])
    assert started.tzinfo is not None and started <= finished
    assert abs((dt.datetime.now(dt.timezone.utc) - finished).total_seconds()) < 600
    assert run["command"] == command and isinstance(run["argv"], list)
    assert run["weights"]["kind"] == "random" and run["weights"]["description"] == "random weights (seed 1)"
    return run["settings"]


def test_a_run_that_fails_halfway_writes_nothing(model, root, tmp_path):
    """Caught: natural's files were written before sketch failed, so --out held half a run."""
    out = tmp_path / "out"
    result = _baseline(model, root, out, "natural,sketch", "--cache", str(tmp_path / "cache"))
    assert result.exit_code == 2
    assert "could be decoded" in result.stderr and "the run failed: nothing was written to" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not out.exists()


def test_a_failed_rerun_keeps_the_earlier_files_which_say_when_they_were_made(model, root, tmp_path):
    """Caught: metrics.json had no run time or command line, so an old one passed for the new run's."""
    out = tmp_path / "out"
    assert _baseline(model, root, out, "natural").exit_code == 0
    m = json.loads((out / "metrics.json").read_text())
    settings = _check_run_block(m["run"], "baseline")
    assert settings["modalities"] == ["natural"] and settings["out_dir"] == str(out)
    assert "Run: `baseline` started" in (out / "report.md").read_text()
    before = _files(out)
    result = _baseline(model, root, out, "sketch")
    assert result.exit_code == 2 and "nothing was written to" in result.stderr
    assert "earlier run" in result.stderr
    assert _files(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".crossmodal-staging")]


def test_retrieval_json_carries_its_run(model, root, tmp_path):
    out = tmp_path / "rt"
    result = CliRunner().invoke(main, ["retrieval", "--model", str(model), "--query", "natural", "--data-root",
                                       str(root), "--out", str(out), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    r = json.loads((out / "retrieval.json").read_text())
    settings = _check_run_block(r["run"], "retrieval")
    assert settings["queries"] == ["natural"] and settings["metric"] == "cosine"
    before = _files(out)
    result = CliRunner().invoke(main, ["retrieval", "--model", str(model), "--query", "sketch", "--data-root",
                                       str(root), "--out", str(out), "--device", "cpu", "-q"])
    assert result.exit_code == 2 and "nothing was written to" in result.stderr, result.output
    assert _files(out) == before


def test_a_run_replaces_what_the_same_commands_earlier_run_wrote_and_nothing_else(tmp_path):
    """staged(..., command): files an earlier run of the same command wrote and this one did not (an
    overlay of an image not in this run) go; a user's own file and another command's files stay."""
    from crossmodal.io.runs import MANIFEST, staged
    out = tmp_path / "out"
    with staged(out, "explain") as stage:
        (stage / "overlays").mkdir()
        for name in ("a.png", "b.png"):
            (stage / "overlays" / name).write_text(name)
        (stage / "explain.json").write_text("{}")
    with staged(out, "baseline") as stage:
        (stage / "metrics.json").write_text("{}")
    (out / "overlays" / "mine.png").write_text("a user's file")
    with staged(out, "explain") as stage:
        (stage / "overlays").mkdir()
        (stage / "overlays" / "c.png").write_text("c")
        (stage / "explain.json").write_text("{}")
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["c.png", "mine.png"]
    assert (out / "metrics.json").is_file()  # another command's file
    import json
    assert json.loads((out / MANIFEST).read_text()) == {"explain": ["explain.json", "overlays/c.png"],
                                                       "baseline": ["metrics.json"]}
