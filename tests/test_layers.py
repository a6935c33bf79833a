"""The folders are the layers: the import-linter contract in setup.cfg holds, no library module
passes 450 lines, and the wheel carries the package's data files."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "crossmodal"
MAX_LINES = 450


def test_imports_run_downwards_only():
    """`lint-imports` with the layers contract of setup.cfg (function-level imports count too)."""
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout and "KEPT" in proc.stdout


def test_no_library_module_passes_450_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split by responsibility: {long}"


def test_the_layers_cover_every_subpackage():
    """A new folder must be placed in the contract, else nothing checks its imports."""
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    layers = cfg["importlinter:contract:layers"]["layers"]
    named = {part.strip() for line in layers.splitlines() for part in line.split("|") if part.strip()}
    subpackages = {f"crossmodal.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages <= named, f"not in the layers contract: {sorted(subpackages - named)}"


def test_the_wheel_carries_the_data_files(tmp_path):
    """An editable install hides a wheel that lacks its data: build one (from a copy, so no build/
    folder lands in the checkout) and list it."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                             "__pycache__", ".pytest_cache", ".hypothesis"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                           "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = next(tmp_path.glob("crossmodal-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(p.relative_to(ROOT)).replace("\\", "/") for p in PACKAGE.rglob("*")
                if p.is_file() and p.suffix in (".json", ".csv", ".proto")}
    assert expected, "no data files found in the source tree"
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    assert "crossmodal/readers/caffe.proto" in names and "crossmodal/data/places205_aliases.csv" in names


def test_sessions_and_keras_loads_are_made_in_the_runtime():
    """ONNX Runtime sessions and Keras model loads that run a model are made in one module each
    (plus the ONNX emitter's opset probe): one runtime, not one per job."""
    def modules_with(needle: str) -> set[str]:
        return {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                if needle in "\n".join(l for l in p.read_text(encoding="utf-8").splitlines()
                                       if not l.lstrip().startswith("#") and "``" not in l)}
    assert modules_with("InferenceSession(") == {"runtime/ort_session.py", "emitters/onnx_opset.py"}
    assert modules_with("saving.load_model(") == {"runtime/keras_engine.py"}


def test_every_import_in_the_package_resolves():
    """Function-level imports run only on their path: after a module moves, one left behind fails
    only when a user reaches it. Resolve every ``from crossmodal… import name`` now."""
    import ast
    import importlib
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("crossmodal"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            missing.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{alias.name}")
    assert not missing, missing
