"""The IR format's compatibility rule: a file of a newer *minor* version loads, its unknown fields
ignored with a note; the same unknown field in a file of this version is malformed; a file of another
*major* version is refused with a message naming both versions."""
from __future__ import annotations

import json
import warnings

import pytest
from click.testing import CliRunner

from crossmodal.cli import main
from crossmodal.errors import FormatNote, InputError
from crossmodal.ir.graph import FORMAT_VERSION
from crossmodal.ir.store import load_graph, load_ir


def _edit(model_dir, fn):
    path = model_dir / "model.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _newer_minor() -> str:
    major, minor = FORMAT_VERSION.split(".")
    return f"{major}.{int(minor) + 1}"


def test_a_newer_minor_version_loads_and_notes_what_it_ignored(tiny_converted, tmp_path):
    import shutil
    from pathlib import Path
    model_dir = tmp_path / "m"
    shutil.copytree(Path(tiny_converted.artifacts[0].path).parent, model_dir)

    def newer(d):
        d["format_version"] = _newer_minor()
        d["calibration"] = {"kind": "temperature", "t": 1.7}           # a new top-level field
        d["provenance"]["exporter_hash"] = "abc"                       # a new field in a known block
        d["layers"][0]["quantisation"] = None                          # a new field of a layer
        d["layers"][0]["tensors"]["weight"]["zero_point"] = 0          # … of a tensor
    _edit(model_dir, newer)
    with pytest.warns(FormatNote, match=rf"IR format {_newer_minor()} is newer than this crossmodal's "
                                        rf"{FORMAT_VERSION}; ignored the fields it does not know: "
                                        r"graph.calibration, layer.quantisation, provenance.exporter_hash, "
                                        r"tensor.zero_point"):
        graph = load_graph(model_dir)
    assert graph.format_version == _newer_minor() and graph.layers[0].name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FormatNote)
        load_ir(model_dir)  # the weights' hashes still check
    result = CliRunner().invoke(main, ["inspect", str(model_dir)])
    assert result.exit_code == 0, result.output
    notes = [l for l in result.stderr.splitlines() if l.startswith("note: ")]
    assert len(notes) >= 1 and "ignored the fields it does not know" in notes[0]


def test_an_unknown_field_in_a_file_of_this_version_is_malformed(tiny_converted, tmp_path):
    import shutil
    from pathlib import Path
    model_dir = tmp_path / "m"
    shutil.copytree(Path(tiny_converted.artifacts[0].path).parent, model_dir)
    _edit(model_dir, lambda d: d["provenance"].__setitem__("exporter_hash", "abc"))
    with pytest.raises(InputError, match="malformed IR graph"):
        load_graph(model_dir)


@pytest.mark.parametrize("version", ["2.0", "0.9", "one"])
def test_another_major_version_is_refused_naming_both(tiny_converted, tmp_path, version):
    import shutil
    from pathlib import Path
    model_dir = tmp_path / "m"
    shutil.copytree(Path(tiny_converted.artifacts[0].path).parent, model_dir)
    _edit(model_dir, lambda d: d.__setitem__("format_version", version))
    with pytest.raises(InputError, match=rf"IR format version {version} was written by another major version "
                                         rf"of crossmodal; this one reads format 1.x \(its own is {FORMAT_VERSION}\)"):
        load_graph(model_dir)
