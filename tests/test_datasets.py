"""Data set readers on CMPlaces-shaped trees built in tmp dirs."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from crossmodal.errors import InputError
from crossmodal.data.datasets import (
    Dataset, ImageRecord, load_config, read_categories, read_label_list, resolve_modality,
    scan_class_folders,
)

REPO = Path(__file__).resolve().parents[1]
CATEGORIES = "/a/abbey 0\n/s/stadium/baseball 1\n/a/apartment_building/outdoor 2\n"


def _img(path: Path, ext_format: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (1, 2, 3)).save(path, format=ext_format or "PNG")
    return path


def _label_list_tree(base: Path, modality: str = "sketch", list_name: str = "val.txt") -> Path:
    root = base / modality
    for rel in ["abbey/1.jpg", "abbey/2.jpg", "stadium/baseball/3.jpg", "apartment/4.png"]:
        _img(root / rel)
    (root / "categories.txt").write_text(CATEGORIES)
    (root / list_name).write_text(
        "abbey/1.jpg 0\n"
        "/stadium/baseball/3.jpg 1\n"       # leading slash, relative to the root
        "\n# a comment\n"
        "apartment/4.png 2\n"
        "abbey/gone.jpg 0\n"                # missing file: reported, run goes on
        "abbey/2.jpg 0\n")
    return root


# --------------------------------------------------------------------------- label lists
def test_read_categories_flattens_and_orders(tmp_path):
    (tmp_path / "c.txt").write_text("/s/stadium/baseball 1\n/a/abbey 0\napartment_building_outdoor 2\n")
    assert read_categories(tmp_path / "c.txt") == ["abbey", "stadium_baseball", "apartment_building_outdoor"]
    (tmp_path / "n.txt").write_text("abbey\n/a/airfield\n")
    assert read_categories(tmp_path / "n.txt") == ["abbey", "airfield"]


@pytest.mark.parametrize("text,msg", [("a 0\nb 0\n", "line 2: index 0 given twice"),
                                      ("a 0\nb 2\n", "without gaps"),
                                      ("a 0\nb x\n", "line 2"),
                                      ("a 0\nb\n", "line 2"),
                                      ("", "empty")])
def test_read_categories_errors(tmp_path, text, msg):
    (tmp_path / "c.txt").write_text(text)
    with pytest.raises(InputError, match=msg) as info:
        read_categories(tmp_path / "c.txt")
    assert "c.txt" in str(info.value)


def test_label_list_records_and_missing(tmp_path):
    root = _label_list_tree(tmp_path)
    cats = read_categories(root / "categories.txt")
    records, missing = read_label_list(root / "val.txt", root, cats)
    assert [(r.path.relative_to(root).as_posix(), r.label, r.category) for r in records] == [
        ("abbey/1.jpg", 0, "abbey"), ("stadium/baseball/3.jpg", 1, "stadium_baseball"),
        ("apartment/4.png", 2, "apartment_building_outdoor"), ("abbey/2.jpg", 0, "abbey")]
    assert len(missing) == 1 and missing[0][0] == root / "abbey/gone.jpg"
    assert "line 6" in missing[0][1]


def test_label_list_absolute_path_and_spaces(tmp_path):
    outside = _img(tmp_path / "elsewhere" / "my photo.png")
    (tmp_path / "l.txt").write_text(f"{outside} 1\n")
    records, missing = read_label_list(tmp_path / "l.txt", tmp_path / "root", ["a", "b"])
    assert records == [ImageRecord(outside, 1, "b")] and missing == []


def test_label_outside_categories_names_file_and_line(tmp_path):
    root = _label_list_tree(tmp_path)
    (root / "val.txt").write_text("abbey/1.jpg 0\nabbey/2.jpg 3\n")
    with pytest.raises(InputError, match="line 2: label 3 is outside") as info:
        read_label_list(root / "val.txt", root, read_categories(root / "categories.txt"))
    assert str(root / "val.txt") in str(info.value)


# --------------------------------------------------------------------------- class folders
def test_class_folders_plain(tmp_path):
    for rel in ["b_cat/z.jpg", "a_cat/2.png", "a_cat/deeper/1.JPG", "a_cat/notes.txt", "loose.jpg"]:
        _img(tmp_path / rel) if not rel.endswith(".txt") else (tmp_path / rel).write_text("x")
    cats, records = scan_class_folders(tmp_path)
    assert cats == ["a_cat", "b_cat"]
    assert [(r.path.relative_to(tmp_path).as_posix(), r.label) for r in records] == [
        ("a_cat/2.png", 0), ("a_cat/deeper/1.JPG", 0), ("b_cat/z.jpg", 1)]


def test_class_folders_places205_nesting(tmp_path):
    root = tmp_path / "images256"
    for rel in ["s/stadium/football/1.jpg", "s/stadium/baseball/2.jpg", "s/stadium/baseball/1.jpg",
                "a/abbey/9.jpg", "a/apartment_building/outdoor/3.webp"]:
        _img(root / rel)
    cats, records = scan_class_folders(root)
    assert cats == ["abbey", "apartment_building_outdoor", "stadium_baseball", "stadium_football"]
    assert [r.category for r in records] == ["abbey", "apartment_building_outdoor", "stadium_baseball",
                                             "stadium_baseball", "stadium_football"]
    assert [r.path.name for r in records][2:4] == ["1.jpg", "2.jpg"]
    assert scan_class_folders(root) == (cats, records)  # deterministic


def test_class_folders_with_known_categories(tmp_path):
    _img(tmp_path / "stadium" / "baseball" / "1.jpg")   # no letter level, known sub-category
    _img(tmp_path / "abbey" / "x.jpg")
    cats, records = scan_class_folders(tmp_path, ["zoo", "stadium_baseball", "abbey"])
    assert cats == ["zoo", "stadium_baseball", "abbey"]
    assert [(r.category, r.label) for r in records] == [("abbey", 2), ("stadium_baseball", 1)]
    _img(tmp_path / "mystery" / "y.jpg")
    with pytest.raises(InputError, match="mystery"):
        scan_class_folders(tmp_path, ["zoo", "stadium_baseball", "abbey"])


# --------------------------------------------------------------------------- modalities
def test_convention_label_list(tmp_path):
    _label_list_tree(tmp_path, "clipart")
    ds = resolve_modality("clipart", data_root=tmp_path, config={})
    assert isinstance(ds, Dataset) and ds.layout == "label-list"
    assert ds.categories == ["abbey", "stadium_baseball", "apartment_building_outdoor"]
    assert len(ds.records) == 4 and len(ds.missing) == 1
    assert ds.counts() == {"abbey": 2, "stadium_baseball": 1, "apartment_building_outdoor": 1}


def test_convention_modality_split_file(tmp_path):
    _label_list_tree(tmp_path, "sketch", list_name="sketch_train.txt")
    ds = resolve_modality("Sketch", data_root=tmp_path, split="train", config={})
    assert ds.layout == "label-list" and ds.name == "sketch" and len(ds.records) == 4
    # a list for "train" only: asking for "val" is an error naming the split, never a silent
    # fall-back to class folders (which would evaluate every image, training ones included)
    with pytest.raises(InputError, match="no list for split 'val' here \\(found sketch_train.txt\\)"):
        resolve_modality("sketch", data_root=tmp_path, split="val", config={})


def test_convention_class_folders(tmp_path):
    _img(tmp_path / "natural" / "b" / "x.jpg")
    _img(tmp_path / "natural" / "a" / "y.jpg")
    ds = resolve_modality("natural", data_root=tmp_path, config={})
    assert ds.layout == "class-folders" and ds.categories == ["a", "b"] and ds.missing == []


def test_config_file_relative_paths_and_cwd_discovery(tmp_path, monkeypatch):
    _label_list_tree(tmp_path / "data", "sk")
    (tmp_path / "data" / "sk" / "val.txt").rename(tmp_path / "data" / "sketch_val.txt")
    cfg = tmp_path / "crossmodal.toml"
    cfg.write_text('[modalities.sketch]\nroot = "data/sk"\ncategories = "data/sk/categories.txt"\n'
                   'lists = { val = "data/sketch_val.txt" }\n')
    ds = resolve_modality("sketch", config=cfg)
    assert ds.root == tmp_path / "data" / "sk" and len(ds.records) == 4 and len(ds.missing) == 1
    monkeypatch.chdir(tmp_path)
    assert resolve_modality("sketch").records == ds.records
    with pytest.raises(InputError, match="no list for split 'train'"):
        resolve_modality("sketch", split="train")


def test_explicit_options_override_config(tmp_path):
    other = _label_list_tree(tmp_path / "other", "sketch")
    (tmp_path / "crossmodal.toml").write_text('[modalities.sketch]\nroot = "nowhere"\n')
    ds = resolve_modality("sketch", config=tmp_path / "crossmodal.toml", images=other,
                          list_file=other / "val.txt", categories=other / "categories.txt")
    assert ds.root == other and len(ds.records) == 4


def test_extra_modality_from_config(tmp_path):
    _label_list_tree(tmp_path, "p205")
    cfg = _write(tmp_path / "c.toml", '[modalities.places205]\nroot = "p205"\nlist = "p205/val.txt"\n')
    ds = resolve_modality("places205", config=load_config(cfg))  # a loaded config works too
    assert ds.name == "places205" and len(ds.records) == 4
    with pytest.raises(InputError, match="known: clipart, natural, places205, sketch"):
        resolve_modality("nope", config=cfg)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_unknown_and_text_modalities(tmp_path):
    with pytest.raises(InputError, match="unknown modality 'photos'.*clipart, natural, sketch"):
        resolve_modality("photos", data_root=tmp_path, config={})
    with pytest.raises(InputError, match="only image modalities"):
        resolve_modality("descriptions", data_root=tmp_path, config={})
    with pytest.raises(InputError, match="only image modalities"):
        resolve_modality("spatial-text", data_root=tmp_path, config={})


def test_missing_root_and_list_named(tmp_path):
    with pytest.raises(InputError) as info:
        resolve_modality("sketch", data_root=tmp_path, config={})
    assert str(tmp_path / "sketch") in str(info.value)
    root = _label_list_tree(tmp_path)
    with pytest.raises(InputError) as info:
        resolve_modality("sketch", images=root, list_file=tmp_path / "no.txt", config={})
    assert str(tmp_path / "no.txt") in str(info.value)
    with pytest.raises(InputError, match="no data for modality"):
        resolve_modality("sketch", config={})


def test_bad_config(tmp_path):
    with pytest.raises(InputError, match="invalid TOML"):
        load_config(_write(tmp_path / "a.toml", "[modalities.sketch\n"))
    with pytest.raises(InputError, match="unknown keys"):
        load_config(_write(tmp_path / "b.toml", '[modalities.sketch]\nfolder = "x"\n'))


def test_example_config_parses():
    cfg = load_config(REPO / "crossmodal.example.toml")
    sketch = cfg["modalities"]["sketch"]
    assert sketch["root"] == Path("/data/cmplaces/sketch")
    assert sketch["lists"]["val"] == Path("/data/cmplaces/labels/sketch_val.txt")
