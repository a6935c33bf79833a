"""``crossmodal units`` end to end on a planted data set (``units_fixtures``): a red unit whose top
images are beaches in every modality (one concept), a green unit whose top images change category
with the modality (none); top-K against a brute-force sort of the IR's own maps; boxes inside the
images; bad input refused with one line, exit 2, nothing written; the pass resumes; activation
maximisation raises the unit and repeats with a seed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from crossmodal.cli import main
from units_fixtures import CATEGORIES, colour_model, planted_data

MODS = "natural,clipart,sketch"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from crossmodal.convert.pipeline import convert
    tmp = tmp_path_factory.mktemp("units")
    convert(colour_model(tmp / "ir"), tmp / "model", targets=["ir", "onnx"])
    return tmp / "model", planted_data(tmp / "data")


@pytest.fixture(scope="module")
def run(setup, tmp_path_factory):
    model, data = setup
    out = tmp_path_factory.mktemp("run") / "out"
    r = CliRunner().invoke(main, ["units", "--model", str(model), "--data-root", str(data), "--modality", MODS,
                                  "--top", "4", "--out", str(out), "--maximize", "0", "--steps", "12", "-q"])
    assert r.exit_code == 0, r.output
    return out, json.loads((out / "units.json").read_text())


def test_the_planted_units_agree_and_disagree(run):
    out, s = run
    assert s["layer"] == "r2" and s["receptive_field"]["size"] == 3 and s["receptive_field"]["stride"] == 1
    assert [m["name"] for m in s["modalities"]] == MODS.split(",")
    red, green = s["units"][0], s["units"][1]
    assert red["agreement"]["consistent"] and red["agreement"]["overall"] == "beach"
    assert red["agreement"]["score"] == 1.0
    assert all(e["category"] == "beach" for m in red["top"].values() for e in m)
    assert not green["agreement"]["consistent"]
    assert {m: green["agreement"]["modalities"][m]["majority"] for m in green["top"]} == \
        {"natural": "forest", "clipart": "kitchen", "sketch": "desert"}
    assert s["summary"]["consistent"] >= 1 and s["summary"]["chance"]["rounds"] == 100
    assert set(s["summary"]["chance"]) >= {"consistent_mean", "consistent_p", "score_mean"}
    assert s["run"]["command"] == "units" and "description" in s["weights"]
    for name in ("units.md", "agreement.png", "overview.png", "units/0.png", "units/1.png", "maximized/0.png"):
        assert (out / name).is_file(), name
    assert "1 of 3 units" in (out / "units.md").read_text()


def test_boxes_inside_the_original_images(run):
    _, s = run
    for u in s["units"]:
        for top in u["top"].values():
            for e in top:
                w, h = Image.open(e["path"]).size
                x0, y0, x1, y1 = e["box"]
                assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
                cx0, cy0, cx1, cy1 = e["crop_box"]
                assert 0 <= cx0 < cx1 <= 16 and 0 <= cy0 < cy1 <= 16


def test_topk_matches_a_brute_force_sort_of_the_reference_maps(run, setup):
    """The IR's float64 NumPy evaluator (another engine than the pass's ONNX Runtime) → max per unit
    → a stable sort: the same images, values and positions as units.json."""
    from crossmodal.data.images import load_batch
    from crossmodal.ir.reference import run as reference
    from crossmodal.ir.store import load_ir

    _, s = run
    model = load_ir(setup[0])
    paths = sorted((setup[1] / "clipart").rglob("*.png"), key=lambda p: p.relative_to(setup[1] / "clipart").as_posix())
    x, _ = load_batch(paths, model.graph.preprocess)
    maps = reference(model, x, ["r2"])["r2"].reshape(len(paths), 3, -1)
    for u in range(3):
        best = maps[:, u].max(1)
        order = sorted(range(len(paths)), key=lambda n: -best[n])[:4]
        got = s["units"][u]["top"]["clipart"]
        assert [Path(e["path"]) for e in got] == [paths[n] for n in order]
        assert [e["value"] for e in got] == pytest.approx([best[n] for n in order], abs=1e-5)
        assert [e["position"] for e in got] == [list(divmod(int(maps[n, u].argmax()), 16)) for n in order]


def _bad(setup, tmp_path, *extra, data=None):
    model, root = setup
    out = tmp_path / "never"
    r = CliRunner().invoke(main, ["units", "--model", str(model), "--data-root", str(data or root),
                                  "--out", str(out), "-q", *extra])
    return r, out


@pytest.mark.parametrize("extra,message", [
    (["--modality", "natural", "--layer", "flat"], "no spatial map"),
    (["--modality", "natural", "--layer", "fc"], "no spatial map"),
    (["--modality", "natural", "--units", "0,7"], "unknown unit 7"),
    (["--modality", "natural", "--maximize", "3"], "unknown unit 3"),
    (["--modality", "natural", "--units", "0", "--draw", "1"], "not among the units"),
    (["--modality", "natural", "--from", "x.png"], "--maximize"),
])
def test_bad_input_one_line_exit_2_nothing_written(setup, tmp_path, extra, message):
    r, out = _bad(setup, tmp_path, *extra)
    assert r.exit_code == 2, r.output
    assert message in r.output and len(r.output.strip().splitlines()) == 1
    assert not out.exists()


def test_an_empty_modality_is_refused(setup, tmp_path):
    data = tmp_path / "data"
    (data / "sketch").mkdir(parents=True)
    (data / "sketch" / "categories.txt").write_text("beach 0\n")
    (data / "sketch" / "val.txt").write_text("beach/gone.png 0\n")
    for modality in ("sketch", "clipart"):  # a list whose files are all missing; no folder at all
        r, out = _bad(setup, tmp_path, "--modality", modality, data=data)
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
        assert not out.exists()


def test_the_pass_resumes_where_it_stopped(setup, tmp_path):
    from crossmodal.data.datasets import resolve_modality
    from crossmodal.evaluate.units.cache import read_top, run_pass
    from crossmodal.ir.store import load_graph
    from crossmodal.runtime.engine import open_engine

    model, data = setup
    graph, ds = load_graph(model), resolve_modality("natural", data_root=data)
    engine = open_engine("onnx", model, ["r2"], device="cpu")

    class Stop(Exception):
        pass

    def stop_after_first(done, total):
        if done == 4:
            raise Stop

    kw = dict(engine=lambda: engine, batch_size=4, workers=1)
    with pytest.raises(Stop):
        run_pass(model, graph, ds, "r2", (3, 16, 16), cache_dir=tmp_path / "a", on_batch=stop_after_first, **kw)
    resumed = run_pass(model, graph, ds, "r2", (3, 16, 16), cache_dir=tmp_path / "a", **kw)
    whole = run_pass(model, graph, ds, "r2", (3, 16, 16), cache_dir=tmp_path / "b", **kw)
    assert resumed.stats["computed"] == len(ds) - 4 and whole.stats["computed"] == len(ds)
    again = run_pass(model, graph, ds, "r2", (3, 16, 16), cache_dir=tmp_path / "b", **kw)
    assert again.stats["computed"] == 0  # from the cache
    a, b = read_top(resumed.path, [0, 1, 2], 5), read_top(whole.path, [0, 1, 2], 5)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.values, b.values)


def test_maximisation_raises_the_unit_and_repeats_with_a_seed(setup):
    from crossmodal.emitters.to_torch import build_torch
    from crossmodal.evaluate.units.maximize import Settings, maximize
    from crossmodal.ir.store import load_ir

    model = load_ir(setup[0])
    module = build_torch(model)
    for p in module.parameters():
        p.requires_grad_(False)
    runs = [maximize(module, model.graph, "r2", 1, settings=Settings(steps=15, seed=s), window=3) for s in (4, 4, 5)]
    assert runs[0]["max"][1] > 2 * runs[0]["max"][0]
    assert runs[0]["pushed"] == "c2"  # the ReLU's input
    assert np.array_equal(runs[0]["image"], runs[1]["image"])
    assert not np.array_equal(runs[0]["image"], runs[2]["image"])
    g = runs[0]["image"].astype(int)
    assert (g[..., 1] - g[..., 0]).mean() > 50  # the green unit wants green


def test_against_an_earlier_run_and_draw_none(run, setup, tmp_path):
    model, data = setup
    out = tmp_path / "second"
    r = CliRunner().invoke(main, ["units", "--model", str(model), "--data-root", str(data), "--modality", MODS,
                                  "--top", "4", "--out", str(out), "--against", str(run[0]), "--draw", "none",
                                  "--backend", "torch", "--chance-rounds", "10", "-q"])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "units.json").read_text())
    assert s["against"]["summary"]["consistent"] == run[1]["summary"]["consistent"]
    assert "| this run |" in (out / "units.md").read_text()
    assert not (out / "units").exists() and not (out / "overview.png").exists()
    # the torch engine (stopping at r2) finds the same tops as ONNX Runtime
    assert [[e["path"] for e in u["top"]["natural"]] for u in s["units"]] == \
        [[e["path"] for e in u["top"]["natural"]] for u in run[1]["units"]]
    assert CATEGORIES[0] == s["units"][0]["agreement"]["overall"]


def test_a_folder_another_run_holds_is_refused(setup, tmp_path):
    from test_output_locks import _hold

    out = tmp_path / "held"
    holder = _hold(out)
    try:
        r = CliRunner().invoke(main, ["units", "--model", str(setup[0]), "--data-root", str(setup[1]),
                                      "--modality", "natural", "--out", str(out), "-q"])
    finally:
        holder.kill()
        holder.wait()
    assert r.exit_code == 2 and "another run is writing to this folder" in r.output
    assert r.output.count("\n") == 1
