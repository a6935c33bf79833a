"""Benchmark: `crossmodal explain` on the full-size VGG16 (random weights) on this CPU.

Generates photo-like JPEGs (500×375 and portrait), writes a random VGG16-Places365
checkpoint and converts it to the IR (``places365`` preprocessing, 224 crop), then,
each in a fresh process (wall time and peak resident memory):

* **reference**: the same PyTorch module, a plain forward pass (``inference_mode``)
  of the preprocessed images in batches — what classification alone costs;
* **explain, maps only**: :func:`crossmodal.explain.job.run_explain` with Grad-CAM on
  relu5_3 (decode, forward, backward from relu5_3, upsample, ``cams.npz``), no PNGs;
* **explain, full**: the same with one overlay PNG per image and the gallery;

for folders of ``--sizes`` images (default 50, 100, 200). Prints images/s (model
load excluded), the ratio explain / plain forward, and the peak RSS per folder size:
memory must be flat in the number of images (one batch held at a time, maps streamed
into ``cams.npz``), which is what lets a 1,000-image figure be extrapolated from
these sizes; ``--sizes 1000`` measures it directly.

    python benchmarks/bench_explain.py [--sizes 50,100,200] [--batch-size 8] [--method gradcam]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np

from _measure import gib, measure

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def setup(work: Path, n: int) -> tuple[Path, Path]:
    """(model folder, image folder of n JPEGs), reused when already in ``work``."""
    from crossmodal.convert.pipeline import convert
    from crossmodal.models.synthetic import write_checkpoint
    from crossmodal.models.vgg import create_spec

    model = work / "model"
    if not (model / "model.json").is_file():
        ckpt = work / "vgg16_random.pth"
        write_checkpoint(create_spec("vgg16_places365"), ckpt, layout="named", seed=0)
        labels = work / "labels.txt"
        labels.write_text("\n".join(f"/c/class_{i} {i}" for i in range(365)))
        convert(ckpt, model, targets=["ir"], labels=labels, preprocess="places365", input_size=(224, 224))
        ckpt.unlink()
    return model, make_images(work, n)


def make_images(work: Path, n: int) -> Path:
    """A folder of n photo-like 500×375 JPEGs (every third one portrait), reused when present."""
    from PIL import Image

    images = work / f"images-{n}"
    if not images.is_dir():
        rng = np.random.default_rng(0)
        images.mkdir()
        for i in range(n):
            coarse = rng.integers(0, 256, (17, 22, 3), dtype=np.uint8)
            img = np.asarray(Image.fromarray(coarse).resize((500, 375), Image.Resampling.BICUBIC), np.int16)
            img = np.clip(img + rng.integers(-24, 25, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img.transpose(1, 0, 2) if i % 3 == 1 else img).save(images / f"{i:05d}.jpg",
                                                                                  quality=90)
    return images


FORWARD = """
import time, numpy as np, torch
import crossmodal
from crossmodal.data.images import list_images
m = crossmodal.load_model({model!r}, backend="torch", device="cpu", draft=True)
mod, _ = m.torch_module()
paths = list_images({images!r})
t = time.perf_counter()
for i in range(0, len(paths), {batch}):
    x = torch.from_numpy(m.load(paths[i:i + {batch}]).x)
    with torch.inference_mode():
        mod(x)
print("SECONDS", time.perf_counter() - t)
"""

EXPLAIN = """
import time
import crossmodal
from crossmodal.explain.job import run_explain
m = crossmodal.load_model({model!r}, backend="torch", device="cpu", draft=True)
m.shapes
t = time.perf_counter()
run_explain(m, [{images!r}], {out!r}, method={method!r}, batch_size={batch}, overlays={overlays})
print("SECONDS", time.perf_counter() - t)
"""


FLAT = """
import resource
import crossmodal
from crossmodal.explain.job import run_explain
m = crossmodal.load_model({model!r}, backend="torch", device="cpu", draft=True)
marks = {{}}
def progress(done, total):
    marks[done] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
run_explain(m, [{images!r}], {out!r}, method="gradcam", batch_size={batch}, overlays=True, on_progress=progress)
for done in sorted(marks):
    print("MARK", done, marks[done])
"""


def flatness(work: Path, n: int, batch: int) -> None:
    """Peak RSS after each batch of a whole explain run (overlays on) over ``n`` 500×375 JPEGs,
    with a small VGG at 224 × 224 (vgg_tiny3 widths): the per-image part of the memory
    (decoding, maps, npz, PNGs, gallery rows) without VGG16's 2 GiB of weights and activations."""
    from crossmodal.convert.pipeline import convert
    from crossmodal.models.synthetic import write_checkpoint
    from crossmodal.models.vgg import create_spec

    model = work / "small-model"
    if not (model / "model.json").is_file():
        spec = create_spec("vgg_tiny3", input_shape=(3, 224, 224), num_classes=365, final_name="fc8a")
        write_checkpoint(spec, work / "small.pth", layout="named", seed=0)
        convert(work / "small.pth", model, targets=["ir"], preprocess="places365", input_size=(224, 224))
    images = make_images(work, n)
    out = work / "out-flat"
    shutil.rmtree(out, ignore_errors=True)
    _, _, stdout = measure(FLAT.format(model=str(model), images=str(images), out=str(out), batch=batch))
    marks = [tuple(int(v) for v in l.split()[1:]) for l in stdout.splitlines() if l.startswith("MARK")]
    shown = [m for m in marks if m[0] in {marks[1][0], n // 4, n // 2, 3 * n // 4, n} or m is marks[-1]]
    print(f"flatness ({n} images, small VGG at 224, overlays on): peak RSS "
          + ", ".join(f"{gib(rss)} after {done}" for done, rss in dict(shown).items())
          + f"; growth from image {marks[1][0]} to {n}: {(marks[-1][1] - marks[1][1]) / 2**20:+.1f} MiB")


def seconds(stdout: str) -> float:
    return float(next(l for l in stdout.splitlines() if l.startswith("SECONDS")).split()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="50,100,200")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--method", default="gradcam")
    ap.add_argument("--work", type=Path, default=None, help="Reuse this folder for the model and images.")
    ap.add_argument("--flat", type=int, default=0,
                    help="Only the flatness check: peak RSS along one explain run over N images, small VGG.")
    args = ap.parse_args()
    if args.flat:
        work = args.work or Path(tempfile.mkdtemp(prefix="bench-explain-"))
        work.mkdir(parents=True, exist_ok=True)
        flatness(work, args.flat, args.batch_size)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-explain-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores; "
          f"batch {args.batch_size}, {args.method} on relu5_3, VGG16 (random weights), 224 × 224")
    try:
        rows = []
        for n in sizes:
            model, images = setup(work, n)
            fwd_wall, fwd_rss, fwd_out = measure(FORWARD.format(model=str(model), images=str(images),
                                                                batch=args.batch_size))
            res = {"n": n, "forward_ips": n / seconds(fwd_out), "forward_rss": fwd_rss}
            for label, overlays in (("maps", False), ("full", True)):
                out = work / f"out-{n}-{label}"
                shutil.rmtree(out, ignore_errors=True)
                _, rss, stdout = measure(EXPLAIN.format(model=str(model), images=str(images), out=str(out),
                                                        method=args.method, batch=args.batch_size,
                                                        overlays=overlays))
                res[f"{label}_ips"], res[f"{label}_rss"] = n / seconds(stdout), rss
                res[f"{label}_npz"] = (out / "cams.npz").stat().st_size
            rows.append(res)
            print(f"{n:5d} images | forward {res['forward_ips']:.2f} img/s ({gib(res['forward_rss'])}) | "
                  f"explain maps {res['maps_ips']:.2f} img/s = {res['maps_ips'] / res['forward_ips']:.2f}× forward, "
                  f"peak {gib(res['maps_rss'])} | explain + overlays {res['full_ips']:.2f} img/s = "
                  f"{res['full_ips'] / res['forward_ips']:.2f}× forward, peak {gib(res['full_rss'])} | "
                  f"cams.npz {res['maps_npz'] / 2**20:.1f} MiB")
        if len(rows) > 1:
            n = np.array([r["n"] for r in rows], float)
            for label in ("maps", "full"):
                rss = np.array([r[f"{label}_rss"] for r in rows], float)
                slope = np.polyfit(n, rss, 1)[0]  # least squares over every size
                print(f"peak memory, explain {label}: {', '.join(gib(int(v)) for v in rss)} at "
                      f"{', '.join(str(int(v)) for v in n)} images; spread {gib(int(rss.max() - rss.min()))}, "
                      f"fitted slope {slope / 2**10:+.0f} KiB per image → at 1,000 images "
                      f"≈ {gib(int(rss[-1] + max(slope, 0) * (1000 - n[-1])))} (linear, an upper bound if flat)")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
