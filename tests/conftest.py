"""Shared fixtures: tiny VGG checkpoints and converted models, the real Places365 files."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from helpers import SHARED_DATA, require_module, require_shared, shared_file  # noqa: F401  (re-exported)
from strict_skips import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401  (hooks)


@pytest.fixture(scope="session")
def tiny_spec():
    from crossmodal.models.vgg import create_spec
    return create_spec("vgg_tiny")


@pytest.fixture(scope="session")
def tiny_preprocess(tiny_spec):
    from crossmodal.ir.preprocess import Preprocess
    h, w = tiny_spec.input_shape[1:]
    return Preprocess(resize=(h, w), crop=(h, w), name="tiny")


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, tiny_spec):
    """A random vgg_tiny checkpoint in the named layout: (path, IR-named weights)."""
    from crossmodal.models.synthetic import write_checkpoint
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    return path, write_checkpoint(tiny_spec, path, layout="named", seed=1)


@pytest.fixture(scope="session")
def tiny_converted(tmp_path_factory, tiny_ckpt, tiny_spec, tiny_preprocess):
    """The tiny checkpoint converted to IR + Keras + ONNX: the ConvertResult (shared, read-only)."""
    from crossmodal.convert.pipeline import convert
    out = tmp_path_factory.mktemp("tiny-model")
    return convert(tiny_ckpt[0], out, input_size=tiny_spec.input_shape[1:], preprocess=tiny_preprocess)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
