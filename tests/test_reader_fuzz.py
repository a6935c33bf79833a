"""Property-based fuzzing of the two hand-written readers of untrusted files: the torch-free checkpoint
reader (pickle opcodes, zip layouts) and the Caffe wire decoder (protobuf fields).

Whatever the bytes, a reader returns, says "ask torch" (``NotWeightsOnly``) or refuses with one clear
error (``InputError`` / ``WireError``) — never another exception, never a hang, never more memory
than the bytes allow. Examples are bounded (``max_examples``, a deadline per example); under CI
(``CI=true``) Hypothesis is derandomised, so a run is reproducible.
"""
from __future__ import annotations

import io
import os
import pickle
import pickletools
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crafted
from crossmodal.errors import InputError
from crossmodal.readers import caffe_wire, torch_pickle

FUZZ = settings(max_examples=int(os.environ.get("CROSSMODAL_FUZZ_EXAMPLES", "60")), deadline=3000,
                derandomize=bool(os.environ.get("CI")), suppress_health_check=[HealthCheck.too_slow],
                database=None)

#: Every pickle opcode's byte, for mutations that splice real opcodes into a valid stream.
OPCODES = [op.code.encode("latin1") for op in pickletools.opcodes]


def _read_zip(path, tmp_path) -> None:
    try:
        torch_pickle.load(path, "zip")
    except (torch_pickle.NotWeightsOnly, InputError):
        pass


def _valid_pickle(tmp_path) -> bytes:
    s = crafted.Storage("0", 6, data=np.arange(6, dtype="<f4").tobytes())
    return crafted.pickle_object({"w": crafted.Tensor(s, (2, 3)), "b": [crafted.Tensor(s, (6,))], "n": 3})


@FUZZ
@given(data=st.data())
def test_pickle_opcodes_spliced_into_a_checkpoint(tmp_path_factory, data):
    base = bytearray(_valid_pickle(None))
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(base)))
        what = data.draw(st.one_of(st.sampled_from(OPCODES), st.binary(max_size=12)))
        if data.draw(st.booleans()):
            base[at:at] = what
        else:
            base[at:at + len(what)] = what
    path = tmp_path_factory.mktemp("fuzz") / "f.pth"
    crafted.write_zip(path, pickled=bytes(base), storages={"0": crafted.Storage("0", 6)})
    _read_zip(path, None)


@FUZZ
@given(size=st.lists(st.integers(-3, 2**40), min_size=0, max_size=4),
       stride=st.lists(st.integers(-3, 2**40), min_size=0, max_size=4),
       offset=st.integers(-3, 2**40), numel=st.integers(0, 64), declared=st.integers(-1, 2**33))
def test_tensor_geometry_and_storage_sizes(tmp_path_factory, size, stride, offset, numel, declared):
    s = crafted.Storage("0", numel)
    t = crafted.Tensor(s, tuple(size), tuple(stride) if len(stride) == len(size) else None, offset)
    data = bytes(4 * numel) if declared < 0 else bytes(min(declared, 1 << 16))
    path = tmp_path_factory.mktemp("fuzz") / "g.pth"
    crafted.write_zip(path, {"t": t}, storages={"0": crafted.Storage("0", numel, data=data)})
    try:
        out = torch_pickle.load(path, "zip")
    except (torch_pickle.NotWeightsOnly, InputError):
        return
    assert out["t"].size <= max(numel, 0) and out["t"].nbytes <= 4 * numel


@pytest.mark.filterwarnings("ignore:Duplicate name")
@FUZZ
@given(members=st.lists(st.tuples(st.sampled_from(["archive/data.pkl", "archive/data/0", "archive/data/1",
                                                   "archive/byteorder", "archive/version", "x/data.pkl",
                                                   "archive/data/../../evil", "other"]),
                                  st.binary(max_size=64), st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])),
                        max_size=6),
       keep_pickle=st.booleans())
def test_zip_layouts(tmp_path_factory, members, keep_pickle):
    path = tmp_path_factory.mktemp("fuzz") / "z.pth"
    with zipfile.ZipFile(path, "w") as zf:
        if keep_pickle:
            zf.writestr("archive/data.pkl", _valid_pickle(None))
        for name, payload, kind in members:
            zf.writestr(zipfile.ZipInfo(name), payload, compress_type=kind)
    _read_zip(path, None)


@FUZZ
@given(header=st.lists(st.one_of(st.integers(), st.text(max_size=8), st.binary(max_size=8),
                                 st.dictionaries(st.text(max_size=4), st.booleans(), max_size=2)), max_size=4),
       tail=st.binary(max_size=64))
def test_legacy_format_headers(tmp_path_factory, header, tail):
    buf = io.BytesIO()
    pickle.dump(torch_pickle.MAGIC_NUMBER, buf, protocol=2)
    for obj in header:
        pickle.dump(obj, buf, protocol=2)
    path = tmp_path_factory.mktemp("fuzz") / "legacy.pth"
    path.write_bytes(buf.getvalue() + tail)
    try:
        torch_pickle.load(path, "pickle")
    except (torch_pickle.NotWeightsOnly, InputError):
        pass


def _caffemodel_bytes(shape, values, legacy) -> bytes:
    from crossmodal.readers import caffe_schema as schema
    net = schema.message("NetParameter")(name="fuzz")
    if legacy:
        layer = net.layers.add(name="fc")
        blob = layer.blobs.add()
        blob.num, blob.channels, blob.height, blob.width = (list(shape) + [1, 1, 1, 1])[:4]
    else:
        layer = net.layer.add(name="fc", type="InnerProduct")
        blob = layer.blobs.add()
        blob.shape.dim.extend(shape)
    blob.data.extend(values)
    return net.SerializeToString()


@FUZZ
@given(shape=st.lists(st.integers(-2**31, 2**31 - 1), max_size=4),
       values=st.lists(st.floats(width=32, allow_nan=True), max_size=16), legacy=st.booleans(),
       cuts=st.lists(st.integers(0, 400), max_size=3), noise=st.binary(max_size=16))
def test_caffemodel_protobuf_fields(shape, values, legacy, cuts, noise):
    data = bytearray(_caffemodel_bytes(shape, values, legacy))
    for cut in cuts:  # truncations and spliced garbage: the wire walker must stay inside the buffer
        if cut < len(data):
            data[cut:cut] = noise
    try:
        layers, _ = caffe_wire.decode_caffemodel(data)
    except caffe_wire.WireError:
        return
    for _, arrays in layers:
        for a in arrays:
            assert a.dtype == np.float32 and all(d >= 0 for d in a.shape) and a.size <= len(data)
