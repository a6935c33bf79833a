"""One run per output folder: a second run on a folder another run is writing refuses (exit 2,
one line naming the other run), and the folder ends holding exactly one run's files."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from crossmodal.cli import main
from crossmodal.errors import InputError
from crossmodal.io.locks import lock_paths, output_lock

HOLDER = textwrap.dedent("""
    import sys, time
    sys.argv = ["crossmodal", "baseline", "--out", sys.argv[1]]
    from crossmodal.io.locks import output_lock
    with output_lock(sys.argv[3], "baseline"):
        print("held", flush=True)
        time.sleep(60)
""")


def _hold(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_refuses_naming_the_first_and_the_lock_dies_with_its_process(tmp_path):
    out = tmp_path / "runs" / "baseline"
    holder = _hold(out)
    try:
        with pytest.raises(InputError, match=rf"another run is writing to this folder: `crossmodal baseline` "
                                             rf"\(pid {holder.pid}, started "):
            with output_lock(out, "probe"):
                pass
        lock_file, info = lock_paths(out)
        assert lock_file.parent == out.parent and json.loads(info.read_text())["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with output_lock(out, "probe"):  # an OS lock: released when its process died, even killed
        assert json.loads(lock_paths(out)[1].read_text())["command"] == "crossmodal probe"
    assert not lock_paths(out)[1].exists()


def _hold_raw(folder: Path, then, after_s: float = 0.3):
    """Take ``folder``'s lock as a run does, without its description; ``then(lock)`` runs ``after_s`` later."""
    import threading

    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_paths(folder)[0]), thread_local=False)  # released from the timer's thread
    lock.acquire(timeout=0)
    timer = threading.Timer(after_s, then, args=(lock,))
    timer.start()
    return timer


def test_a_run_arriving_before_the_holder_describes_itself_still_names_it(tmp_path):
    out = tmp_path / "out"
    info = lock_paths(out)[1]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a killed run's description, left behind: not the holder
    info.write_text(json.dumps({"command": "crossmodal baseline", "pid": dead.pid,
                                "started_utc": "2026-12-02T08:00:00+00:00"}))
    record = {"command": "crossmodal convert", "pid": os.getpid(), "started_utc": "2026-12-03T08:00:00+00:00"}
    timer = _hold_raw(out, lambda lock: info.write_text(json.dumps(record)))
    try:
        with pytest.raises(InputError, match=rf"another run is writing to this folder: `crossmodal convert` "
                                             rf"\(pid {os.getpid()}"):
            with output_lock(out, "convert"):
                pass
    finally:
        timer.join()


def test_a_lock_taken_on_a_file_a_finishing_run_removed_is_taken_again_on_the_new_file(tmp_path):
    from filelock import FileLock

    from crossmodal.io.locks import _locks_the_file_at
    out = tmp_path / "made" / "out"
    lock_file = lock_paths(out)[0]
    lock_file.parent.mkdir(parents=True)
    stale = FileLock(str(lock_file))
    stale.acquire(timeout=0)
    lock_file.unlink()  # as a finishing run removes the lock file of folders it made
    assert not _locks_the_file_at(stale, lock_file)
    stale.release()

    def finish(lock):  # remove the file while holding it, then let go: as output_lock does
        lock_file.unlink()
        lock.release()
    timer = _hold_raw(out, finish)
    with output_lock(out, "convert"):
        assert lock_file.is_file()  # locked again, on the file at the path
        assert json.loads(lock_paths(out)[1].read_text())["command"] == "crossmodal convert"
    timer.join()
    assert not list(lock_file.parent.glob("*.tmp"))


def test_a_run_arriving_while_the_holder_finishes_takes_the_folder(tmp_path):
    out = tmp_path / "out"
    timer = _hold_raw(out, lambda lock: lock.release())  # description already gone, lock released 0.3 s later
    with output_lock(out, "convert"):
        assert json.loads(lock_paths(out)[1].read_text())["command"] == "crossmodal convert"
    timer.join()


def test_a_run_that_writes_nothing_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "new" / "deeper" / "out"
    with output_lock(out, "convert"):
        assert lock_paths(out)[0].is_file()
    assert not (tmp_path / "new").exists()


def test_every_folder_writing_command_refuses_while_another_run_holds_the_folder(tmp_path, tiny_ckpt):
    out = tmp_path / "out"
    runner = CliRunner()
    holder = _hold(out)
    try:
        commands = [
            ["convert", str(tiny_ckpt[0]), "--input-size", "20x28", "--out-dir", str(out), "-q"],
            ["baseline", "--model", str(tmp_path / "m"), "--modality", "natural", "--data-root", str(tmp_path),
             "--out", str(out), "-q"],
            ["retrieval", "--model", str(tmp_path / "m"), "--all", "--data-root", str(tmp_path), "--out", str(out)],
            ["probe", "--model", str(tmp_path / "m"), "--modality", "sketch", "--data-root", str(tmp_path),
             "--out", str(out)],
            ["explain", "--model", str(tmp_path / "m"), str(tmp_path), "--out", str(out)],
            ["demo", "--out-dir", str(out)],
        ]
        for args in commands:
            result = runner.invoke(main, args)
            assert result.exit_code == 2, (args[0], result.output)
            assert "another run is writing to this folder: `crossmodal baseline`" in result.output, args[0]
            assert result.output.count("\n") == 1, (args[0], result.output)
    finally:
        holder.kill()
        holder.wait()
    assert not out.exists()


@pytest.mark.slow
def test_two_converts_started_at_once_leave_one_complete_model(tmp_path, tiny_ckpt):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "crossmodal", "convert", str(tiny_ckpt[0]), "--input-size", "20x28", "--to",
           "ir,onnx", "--out-dir", str(out), "-q"]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 2], [0, 0]), results  # [0, 0]: the first had finished before the second began
    if codes == [0, 2]:
        refused = next(err for code, err in results if code == 2)
        assert "another run is writing to this folder: `crossmodal convert`" in refused
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx", "weights.h5"]
    from crossmodal.ir.store import load_ir
    load_ir(out)  # complete: every tensor's hash checks
    assert not lock_paths(out)[1].exists()


def test_fetch_locks_its_folder_in_the_cache_and_leaves_nothing_beside_or_in_it(tmp_path, monkeypatch):
    """``fetch --dest .`` adds files to a folder it does not own: its lock lives in the user's cache."""
    monkeypatch.setenv("CROSSMODAL_CACHE", str(tmp_path / "cache"))
    dest = tmp_path / "weights"
    dest.mkdir()
    with output_lock(dest, "fetch", central=True):
        with pytest.raises(InputError, match="`crossmodal fetch`"):
            with output_lock(dest, "fetch", central=True):
                pass
        assert lock_paths(dest, central=True)[0].parent == tmp_path / "cache" / "locks"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "weights"] and not list(dest.iterdir())
