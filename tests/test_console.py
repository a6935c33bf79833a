"""The console shows the toolkit's own lines: TensorFlow's C++ start-up lines only with --verbose."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("absl::InitializeLog", "cpu_feature_guard", "I0000 ", "oneDNN custom operations")


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_native_stderr_is_filtered_and_other_lines_are_replayed(capfd):
    from crossmodal.cli.quiet import native_stderr_filtered
    with native_stderr_filtered():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1796020386.306157   19649 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"W0000 00:00:1796020386.403889   19649 cpu_feature_guard.cc:227] optimized\n")
        os.write(2, b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
                    b"with the appropriate compiler flags.\n")
        os.write(2, b"a real problem\n")
    assert capfd.readouterr().err == "a real problem\n"


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [False, True])
def test_tensorflow_start_up_lines_only_with_verbose(tmp_path, tiny_ckpt, verbose):
    """Caught: `make demo` printed TensorFlow's cpu_feature_guard and absl lines between its progress
    lines (TF_CPP_MIN_LOG_LEVEL alone does not silence those logged before absl starts)."""
    cmd = [sys.executable, "-m", "crossmodal", *(["--verbose"] if verbose else []), "convert", str(tiny_ckpt[0]),
           "-o", str(tmp_path / "m"), "--input-size", "20x28", "--to", "ir,keras"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    noisy = [line for line in proc.stderr.splitlines() if any(n in line for n in NOISE)]
    if verbose:
        assert noisy, proc.stderr
    else:
        assert not noisy, proc.stderr
        assert all(line.startswith(("· ", "note: ")) for line in proc.stderr.splitlines()), proc.stderr
    assert "emitting Keras 3" in proc.stderr
