"""The torch-free checkpoint reader treats files as data: no global outside its short list
runs (header pickles of the legacy format included), and no tensor reads outside its storage."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from crossmodal.readers import torch_pickle
from crossmodal.errors import InputError


class _Touch:
    """Pickles as a call of Path.touch(marker): proof of code run at load time."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _legacy(path, header_objects, body=b""):
    with open(path, "wb") as f:
        for obj in header_objects:
            pickle.dump(obj, f, protocol=2)
        f.write(body)


@pytest.mark.parametrize("where", [0, 1, 2])
def test_a_global_in_a_legacy_header_pickle_never_runs(tmp_path, where):
    marker = tmp_path / "ran"
    header = [torch_pickle.MAGIC_NUMBER, 1001, {"little_endian": True}]
    header[where] = _Touch(marker)
    path = tmp_path / "evil.pth"
    _legacy(path, header)
    with pytest.raises(torch_pickle.NotWeightsOnly):
        torch_pickle.load(path, "pickle")
    assert not marker.exists()


def test_a_global_in_the_object_never_runs_and_convert_refuses_it(tmp_path):
    from crossmodal.readers.from_torch import load_checkpoint
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    _legacy(path, [torch_pickle.MAGIC_NUMBER, 1001, {"little_endian": True}, {"w": _Touch(marker)}, []])
    with pytest.raises(InputError):
        load_checkpoint(path)  # neither reader runs it: ours refuses, torch's weights_only refuses
    assert not marker.exists()


@pytest.mark.parametrize("offset,size,stride", [(-1, (2,), (1,)), (0, (2, 2), (-1, 1)), (0, (3,), (4,))])
def test_a_tensor_outside_its_storage_is_refused(offset, size, stride):
    storage = torch_pickle._Storage("<f4", 4)
    storage.array = np.arange(4, dtype="<f4")
    with pytest.raises(torch_pickle.NotWeightsOnly):
        torch_pickle._Tensor(storage, offset, size, stride).build()


def test_a_tensor_inside_its_storage_is_read_with_its_strides():
    storage = torch_pickle._Storage("<f4", 6)
    storage.array = np.arange(6, dtype="<f4")
    got = torch_pickle._Tensor(storage, 1, (2, 2), (1, 2)).build()  # a transposed 2×2 view from element 1
    np.testing.assert_array_equal(got, [[1, 3], [2, 4]])
