"""The no-silent-skip rule itself: a pytest run in a subprocess on a small test file.

Outside CI a missing shared file or package skips with the reason; with ``CI=true``
or ``CROSSMODAL_NO_SKIP=1`` the same tests fail, including a bare
``pytest.importorskip`` at run time and at module level, while an ordinary skip
still skips.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SAMPLE = '''
import pytest
from helpers import require_module, require_shared

def test_shared():
    require_shared("places365", "no_such_file.txt")

def test_module():
    require_module("no_such_package_xyz")

def test_bare_importorskip():
    pytest.importorskip("no_such_package_xyz")

def test_plain_skip():
    pytest.skip("not about a missing resource")

def test_present():
    assert require_module("json").dumps(1) == "1"
'''

MODULE_LEVEL = '''
import pytest
pytest.importorskip("no_such_package_xyz")

def test_never():
    pass
'''


def _run(tmp_path: Path, env_extra: dict[str, str], target: str = "test_sample.py") -> tuple[int, str]:
    (tmp_path / "conftest.py").write_text(
        "from strict_skips import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "test_module_level.py").write_text(MODULE_LEVEL)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "CROSSMODAL_NO_SKIP")}
    env.update(PYTHONPATH=str(TESTS), CROSSMODAL_SHARED_DATA=str(tmp_path / "no-shared-data"), **env_extra)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "-q",
                           "-c", os.devnull, "--rootdir", str(tmp_path), target],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def _outcomes(output: str) -> dict[str, str]:
    """test name → PASSED / FAILED / SKIPPED / ERROR from ``-rA``'s short summary."""
    out = {}
    for line in output.splitlines():
        for word in ("PASSED", "FAILED", "SKIPPED", "ERROR"):
            if line.startswith(word + " "):
                rest = line[len(word) + 1:]
                if word == "SKIPPED":  # "SKIPPED [1] path:line: reason"
                    out[rest] = word
                else:
                    out[rest.split(" - ")[0].split("::")[-1]] = word
    return out


def test_outside_ci_missing_resources_skip(tmp_path):
    rc, output = _run(tmp_path, {})
    assert rc == 0, output
    assert "4 skipped" in output, output
    assert "1 passed" in output and "failed" not in output, output
    assert "needs an external resource: real Places365 file" in output
    assert "needs an external resource: package 'no_such_package_xyz'" in output


@pytest.mark.parametrize("env", [{"CI": "true"}, {"CROSSMODAL_NO_SKIP": "1"}], ids=["CI", "flag"])
def test_in_ci_a_missing_resource_fails(tmp_path, env):
    rc, output = _run(tmp_path, env)
    assert rc == 1, output
    outcomes = _outcomes(output)
    for name in ("test_shared", "test_module", "test_bare_importorskip"):
        assert outcomes.get(name) == "FAILED", (name, output)
    assert outcomes.get("test_present") == "PASSED", output
    assert any(v == "SKIPPED" and "not about a missing resource" in k for k, v in outcomes.items()), output
    assert "a skip is a failure in CI" in output and "counts as a failure" in output
    # a module-level importorskip: a collection error, which stops the run
    rc, output = _run(tmp_path, env, "test_module_level.py")
    assert rc == 2 and "module skipped in CI, which counts as a failure" in output, output
    rc, output = _run(tmp_path, {}, "test_module_level.py")
    assert rc == 5 and "1 skipped" in output, output  # outside CI: skipped (5: no test ran)


def test_every_shared_lookup_goes_through_the_one_resolver():
    """No test module builds the shared path itself (it would ignore $CROSSMODAL_SHARED_DATA)."""
    offenders = [p.name for p in TESTS.glob("*.py")
                 if p.name not in ("helpers.py", Path(__file__).name)
                 and ('"shared"' in p.read_text() or "importorskip(" in p.read_text())]
    assert offenders == []
