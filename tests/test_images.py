"""Decoding and preprocessing on real image files written with PIL."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossmodal.ir.preprocess import PREPROCESS_PRESETS, Preprocess
from crossmodal.errors import InputError
from crossmodal.data.images import (
    ImageDecodeError, list_images, load_batch, load_image, load_rgb, preprocess, resized_size,
)

RAW = Preprocess(resize=(8, 8), crop=(8, 8), value_range="0-255", mean=(0, 0, 0), std=(1, 1, 1))


def _rgb(path: Path, size=(32, 24), color=(200, 100, 50), **save) -> Path:
    Image.new("RGB", size, color).save(path, **save)
    return path


def _gradient(w: int, h: int) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


# --------------------------------------------------------------------------- decoding
def test_rgb_jpeg(tmp_path):
    img = load_rgb(_rgb(tmp_path / "a.jpg", quality=95))
    assert img.mode == "RGB" and img.size == (32, 24)
    assert np.abs(np.asarray(img).astype(int) - [200, 100, 50]).max() <= 3


def test_grayscale_jpeg_becomes_rgb(tmp_path):
    Image.new("L", (10, 10), 77).save(tmp_path / "g.jpg")
    arr = np.asarray(load_rgb(tmp_path / "g.jpg"))
    assert arr.shape == (10, 10, 3)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    assert abs(int(arr[0, 0, 0]) - 77) <= 2


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (10, 10), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    with Image.open(tmp_path / "c.jpg") as im:
        assert im.mode == "CMYK"
    arr = np.asarray(load_rgb(tmp_path / "c.jpg"))
    assert arr.shape == (10, 10, 3) and arr.min() >= 250  # no ink → white


def test_progressive_jpeg_matches_baseline(tmp_path):
    img = _gradient(64, 48)
    img.save(tmp_path / "base.jpg", quality=90)
    img.save(tmp_path / "prog.jpg", quality=90, progressive=True)
    with Image.open(tmp_path / "prog.jpg") as im:
        assert im.info.get("progressive") or im.info.get("progression")
    a = np.asarray(load_rgb(tmp_path / "base.jpg")).astype(int)
    b = np.asarray(load_rgb(tmp_path / "prog.jpg")).astype(int)
    assert a.shape == b.shape == (48, 64, 3) and np.abs(a - b).max() <= 4


def test_exif_orientation_6_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # stored: left half red, right half blue
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # display = rotate 90° clockwise
    Image.fromarray(arr).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = np.asarray(load_rgb(tmp_path / "rot.jpg")).astype(int)
    assert out.shape == (40, 20, 3)  # portrait once upright
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 60     # left went to the top: red
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 60   # right went to the bottom: blue


def test_rgba_transparency_composited_on_white(tmp_path):
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[0, 0] = (0, 0, 0, 0)        # fully transparent black → white
    arr[1, 1] = (10, 20, 30, 255)   # opaque → unchanged
    arr[2, 2] = (0, 0, 0, 128)      # half transparent black → mid gray
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(load_rgb(tmp_path / "a.png")).astype(int)
    assert (out[0, 0] == 255).all()
    assert out[1, 1].tolist() == [10, 20, 30]
    assert all(abs(v - 127) <= 1 for v in out[2, 2])
    # after preprocessing with a known spec the transparent pixel is exactly white
    spec = Preprocess(resize=(4, 4), crop=(4, 4), interpolation="nearest")
    x = preprocess(load_rgb(tmp_path / "a.png"), spec)
    expect = (np.float32(255) / np.float32(255) - np.float32(spec.mean[0])) / np.float32(spec.std[0])
    assert x[0, 0, 0] == pytest.approx(expect, abs=1e-6)


def test_la_png_on_white(tmp_path):
    arr = np.zeros((3, 3, 2), np.uint8)
    arr[..., 1] = 0
    Image.fromarray(arr, "LA").save(tmp_path / "la.png")
    assert (np.asarray(load_rgb(tmp_path / "la.png")) == 255).all()


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    im.putpixel((1, 1), 1)
    im.save(tmp_path / "p.png", transparency=0)
    with Image.open(tmp_path / "p.png") as check:
        assert check.mode == "P" and "transparency" in check.info
    out = np.asarray(load_rgb(tmp_path / "p.png")).astype(int)
    assert (out[0, 0] == 255).all()              # transparent index → white, not black
    assert out[1, 1].tolist() == [255, 0, 0]


def test_palette_gif(tmp_path):
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 6))
    im.save(tmp_path / "p.gif")
    assert np.asarray(load_rgb(tmp_path / "p.gif"))[0, 0].tolist() == [0, 128, 0]


def test_16bit_png_scaled(tmp_path):
    arr = np.array([[0, 65535], [32896, 257]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as check:
        assert check.mode in ("I;16", "I")
    out = np.asarray(load_rgb(tmp_path / "d.png"))
    assert out[..., 0].tolist() == [[0, 255], [128, 1]]
    assert (out[..., 0] == out[..., 2]).all()


def test_32bit_int_image_in_memory():
    arr = np.array([[0, 65535, 70000, -5]], dtype=np.int32)
    x = preprocess(Image.fromarray(arr, "I"), Preprocess(resize=(1, 4), crop=(1, 4), value_range="0-255",
                                                          mean=(0, 0, 0), std=(1, 1, 1),
                                                          interpolation="nearest"))
    assert x[0, 0].tolist() == [0, 255, 255, 0]


def test_1bit_png(tmp_path):
    im = Image.new("1", (4, 4), 0)
    im.putpixel((0, 0), 1)
    im.save(tmp_path / "b.png")
    out = np.asarray(load_rgb(tmp_path / "b.png"))
    assert out[0, 0].tolist() == [255, 255, 255] and out[1, 1].tolist() == [0, 0, 0]


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "missing"])
def test_bad_files_raise_decode_error(tmp_path, kind):
    path = tmp_path / "bad.jpg"
    if kind == "truncated":
        _gradient(128, 128).save(tmp_path / "full.jpg", quality=95)
        data = (tmp_path / "full.jpg").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a JPEG\n")
    with pytest.raises(ImageDecodeError) as info:
        load_rgb(path)
    assert isinstance(info.value, InputError)
    assert str(path) in str(info.value) and info.value.reason
    if kind in ("empty", "missing"):
        assert {"empty": "empty", "missing": "not found"}[kind] in info.value.reason


# --------------------------------------------------------------------------- preprocess
def test_preprocess_white_torchvision_values():
    x = preprocess(Image.new("RGB", (300, 200), "white"), PREPROCESS_PRESETS["torchvision"])
    assert x.dtype == np.float32 and x.shape == (3, 224, 224)
    for c, (m, s) in enumerate(zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))):
        assert np.allclose(x[c], (255 / 255 - m) / s, atol=1e-6)


def test_preprocess_caffe_bgr_0_255():
    spec = PREPROCESS_PRESETS["caffe"]
    x = preprocess(Image.new("RGB", (50, 40), (10, 20, 30)), spec)
    assert x.shape == (3, 224, 224)
    assert np.allclose(x[0], 30 - 104.051, atol=1e-4)   # B first
    assert np.allclose(x[2], 10 - 116.676, atol=1e-4)   # R last


def test_preprocess_resize_shorter_side_then_crop_independent():
    img = _gradient(300, 200)
    spec = Preprocess(resize=256, crop=(224, 224), value_range="0-255", mean=(0, 0, 0), std=(1, 1, 1))
    assert resized_size(img.size, 256) == (384, 256)
    ref = np.asarray(img.resize((384, 256), Image.Resampling.BILINEAR)).astype(np.float32)
    ref = ref[16:240, 80:304].transpose(2, 0, 1)  # top = round(32/2), left = round(160/2)
    assert np.array_equal(preprocess(img, spec), ref)


def test_center_crop_rounds_like_torchvision():
    img = _gradient(5, 5)
    base = np.asarray(img).astype(np.float32).transpose(2, 0, 1)
    spec = dataclasses.replace(RAW, resize=(5, 5), crop=(2, 2), interpolation="nearest")
    assert np.array_equal(preprocess(img, spec), base[:, 2:4, 2:4])   # round(1.5) = 2
    spec4 = Preprocess.from_dict({**spec.to_dict(), "crop": [4, 4]})
    assert np.array_equal(preprocess(img, spec4), base[:, 0:4, 0:4])  # round(0.5) = 0


def test_crop_larger_than_image_pads_with_zeros():
    spec = Preprocess(resize=(2, 2), crop=(4, 4), value_range="0-255", mean=(0, 0, 0), std=(1, 1, 1))
    x = preprocess(Image.new("RGB", (2, 2), (9, 9, 9)), spec)
    assert x.shape == (3, 4, 4) and x[:, 1:3, 1:3].min() == 9 and x[:, 0].max() == 0


def test_mean_image_center_cropped_caffe_style():
    mean = np.arange(3 * 6 * 6, dtype=np.float32).reshape(3, 6, 6)
    spec = Preprocess(resize=(6, 6), crop=(4, 4), channel_order="BGR", value_range="0-255",
                      mean=(0, 0, 0), std=(1, 1, 1), mean_image="mean", interpolation="nearest")
    x = preprocess(Image.new("RGB", (6, 6), (1, 2, 3)), spec, mean_image=mean)
    bgr = np.array([3, 2, 1], np.float32).reshape(3, 1, 1)
    assert np.array_equal(x, bgr - mean[:, 1:5, 1:5])
    with pytest.raises(InputError, match="mean image"):
        preprocess(Image.new("RGB", (6, 6)), spec)


@pytest.mark.parametrize("name,filt", [("nearest", Image.Resampling.NEAREST),
                                       ("bicubic", Image.Resampling.BICUBIC),
                                       ("lanczos", Image.Resampling.LANCZOS),
                                       ("area", Image.Resampling.BOX)])
def test_interpolation_names(name, filt):
    img = _gradient(40, 30)
    spec = Preprocess(resize=(10, 12), crop=(10, 12), interpolation=name, value_range="0-255",
                      mean=(0, 0, 0), std=(1, 1, 1))
    ref = np.asarray(img.resize((12, 10), filt)).astype(np.float32).transpose(2, 0, 1)
    assert np.array_equal(preprocess(img, spec), ref)


def test_unknown_interpolation():
    with pytest.raises(InputError, match="interpolation"):
        preprocess(Image.new("RGB", (4, 4)), Preprocess(interpolation="fancy"))


# --------------------------------------------------------------------------- draft
def test_draft_keeps_at_least_target_and_same_geometry(tmp_path):
    _gradient(1024, 768).save(tmp_path / "big.jpg", quality=90)
    full = load_rgb(tmp_path / "big.jpg")
    small = load_rgb(tmp_path / "big.jpg", draft_for=256)
    assert full.size == (1024, 768)
    assert min(small.size) >= 256 and small.size[0] < 1024  # decoded at reduced scale
    spec = Preprocess(resize=256, value_range="0-255", mean=(0, 0, 0), std=(1, 1, 1))
    a = preprocess(full, spec)
    b = load_image(tmp_path / "big.jpg", spec, draft=True)
    assert a.shape == b.shape and np.abs(a - b).mean() < 3.0


def test_draft_falls_back_when_geometry_would_change(tmp_path):
    # 1001x750 → shorter side 256 gives 341 wide; a 1/2 draft (501x375) would give 342
    _gradient(1001, 750).save(tmp_path / "odd.jpg")
    img = load_rgb(tmp_path / "odd.jpg", draft_for=256)
    assert resized_size(img.size, 256) == resized_size((1001, 750), 256)


def test_draft_respects_exif_rotation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    _gradient(1024, 512).save(tmp_path / "r.jpg", exif=exif)
    img = load_rgb(tmp_path / "r.jpg", draft_for=(300, 100))  # (H, W) displayed
    assert img.size[0] >= 100 and img.size[1] >= 300 and img.size[1] > img.size[0]


# --------------------------------------------------------------------------- batches
def test_load_batch_order_and_failures(tmp_path):
    paths = []
    for i in range(6):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(p)
        paths.append(p)
    (tmp_path / "2.png").write_bytes(b"")
    (tmp_path / "4.png").write_text("nope")
    batch, failures = load_batch(paths, RAW, workers=4)
    assert batch.shape == (4, 3, 8, 8) and batch.dtype == np.float32
    assert [p for p, _ in failures] == [paths[2], paths[4]]
    assert all(isinstance(r, str) and r for _, r in failures)
    assert batch[:, 0, 0, 0].tolist() == [0, 40, 120, 200]
    serial, _ = load_batch(paths, RAW, workers=1)
    assert np.array_equal(batch, serial)


def test_load_batch_all_failed(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"")
    batch, failures = load_batch([tmp_path / "x.jpg"], RAW)
    assert batch.shape == (0, 3, 8, 8) and len(failures) == 1


def test_list_images(tmp_path):
    for rel in ["b/2.JPG", "b/1.png", "a.jpeg", "c/d/e.WebP", "c/x.bmp", "c/y.gif",
                "notes.txt", ".hidden.jpg", "b/._1.png", ".cache/z.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    rel = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert rel == ["a.jpeg", "b/1.png", "b/2.JPG", "c/d/e.WebP", "c/x.bmp", "c/y.gif"]
    with pytest.raises(InputError, match="not found"):
        list_images(tmp_path / "nope")
