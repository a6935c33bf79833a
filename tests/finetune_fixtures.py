"""Shared by the fine-tuning tests: the tiny labelled VGG, CMPlaces-shaped sketch + clip-art data with
train/val lists, a colour-separable data set, and a helper that runs ``crossmodal finetune``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from test_features import convert_tiny, make_cmplaces_tree
from test_probe import split_lists

ROOT = Path(__file__).resolve().parents[1]
#: separable classes: every category here maps to a tiny-model label
SEPARABLE = {"abbey": (220, 40, 40), "beach": (40, 200, 60), "street": (50, 60, 220)}


@pytest.fixture(scope="session")
def ft_model(tmp_path_factory, tiny_ckpt, tiny_preprocess):
    """The tiny VGG with TINY_LABELS, IR + ONNX (no Keras: the tests' exports stay cheap)."""
    return convert_tiny(tmp_path_factory.mktemp("ft-model"), tiny_ckpt[0], tiny_preprocess, targets=("ir", "onnx"))


@pytest.fixture(scope="session")
def ft_root(tmp_path_factory):
    """sketch and clipart, label lists with train.txt and val.txt (broken files included)."""
    base = tmp_path_factory.mktemp("ft-data")
    root = base / "cmplaces"
    for name, seed in (("sketch", 0), ("clipart", 1)):
        tree = make_cmplaces_tree(base / f"gen-{name}", per_category=6, seed=seed)
        shutil.copytree(tree["list"], root / name)
        split_lists(root / name)
    return root


def make_separable(root: Path, per_class: int = 14, seed: int = 0) -> Path:
    """``root/sketch``: three categories, each a noisy solid colour (train.txt / val.txt alternate)."""
    rng = np.random.default_rng(seed)
    folder = root / "sketch"
    (folder / "images").mkdir(parents=True)
    lines = []
    for label, (cat, rgb) in enumerate(SEPARABLE.items()):
        for i in range(per_class):
            px = np.clip(np.asarray(rgb) + rng.normal(0, 25, (24, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(folder / "images" / f"{cat}_{i}.png")
            lines.append(f"images/{cat}_{i}.png {label}")
    (folder / "categories.txt").write_text("\n".join(f"{c} {i}" for i, c in enumerate(SEPARABLE)) + "\n")
    (folder / "train.txt").write_text("\n".join(lines[0::2]) + "\n")
    (folder / "val.txt").write_text("\n".join(lines[1::2]) + "\n")
    return root


@pytest.fixture(scope="session")
def separable_root(tmp_path_factory):
    return make_separable(tmp_path_factory.mktemp("ft-sep"))


FAST = ["--device", "cpu", "--workers", "0", "--batch-size", "8", "--to", "ir", "-q", "--no-tensorboard"]


def finetune(*args) -> tuple[int, str, dict | None]:
    """``crossmodal finetune ARGS --json`` in this process: (exit code, output, results or None)."""
    result = CliRunner().invoke(__import__("crossmodal.cli", fromlist=["main"]).main, ["finetune", *args, "--json"])
    data = None
    if result.exit_code == 0:
        data = json.loads(result.stdout)
    return result.exit_code, result.output, data


def command(*args) -> list[str]:
    """``python -m crossmodal finetune ARGS`` for a subprocess."""
    return [sys.executable, "-m", "crossmodal", "finetune", *args]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=timeout, cwd=ROOT)


def ir_tensors(model_dir: Path) -> dict[str, np.ndarray]:
    from crossmodal.ir.store import load_ir
    return dict(load_ir(model_dir).weights)
