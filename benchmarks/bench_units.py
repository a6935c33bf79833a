"""Benchmark: the `crossmodal units` pass against a plain forward pass to the same layer.

Full-size VGG16-Places365 (random weights, ``places365`` preprocessing, 224 crop) converted to the IR
and ONNX; folders of photo-like 500 × 375 JPEGs. Each measurement in a fresh process (wall time and
peak resident memory, the child's own VmHWM; the model load is excluded from the timed part):

* **plain forward**: the same engine opened on ``relu5_3`` alone, the same decoding pipeline
  (:func:`crossmodal.evaluate.features.prefetched_batches`), ``engine.run`` per batch, nothing kept;
* **units pass**: :func:`crossmodal.evaluate.units.cache.run_pass` on the same images — the maps
  reduced to each unit's maximum and position, written to the cache — then the top-K read back
  (:func:`~crossmodal.evaluate.units.cache.read_top`);
* **units, whole command** (``--with-job``): :func:`~crossmodal.evaluate.units.job.run_units` with the
  default galleries, so the drawing is timed apart (whole − pass).

Target: units pass ≤ 1.1 × the plain forward, peak memory flat in the number of images.

    python benchmarks/bench_units.py [--sizes 100,1000] [--reference-sizes 100,1000] [--repeat 2] [--with-job]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

from _measure import gib, measure

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PLAIN = """
import time
from pathlib import Path
from crossmodal.data.datasets import resolve_modality
from crossmodal.evaluate.features import prefetched_batches
from crossmodal.runtime.engine import open_engine
from crossmodal.ir.store import load_graph
model = Path({model!r}); graph = load_graph(model)
ds = resolve_modality("natural", images={images!r})
paths = [r.path for r in ds.records]
eng = open_engine({backend!r}, model, ["relu5_3"], device="cpu", graph=graph)
t0 = time.perf_counter()
for lo, hi, batch, failed in prefetched_batches(paths, graph.preprocess, None, 0, {batch}, {workers}, False):
    eng.run(batch)
print("TIMED", time.perf_counter() - t0, len(paths))
"""

UNITS = """
import time
from pathlib import Path
from crossmodal.data.datasets import resolve_modality
from crossmodal.evaluate.units.cache import read_top, run_pass
from crossmodal.runtime.engine import open_engine
from crossmodal.ir.store import load_graph
model = Path({model!r}); graph = load_graph(model)
ds = resolve_modality("natural", images={images!r})
eng = open_engine({backend!r}, model, ["relu5_3"], device="cpu", graph=graph)
t0 = time.perf_counter()
p = run_pass(model, graph, ds, "relu5_3", (512, 14, 14), engine=lambda: eng, cache_dir=Path({cache!r}),
             batch_size={batch}, workers={workers})
top = read_top(p.path, range(512), 8)
print("TIMED", time.perf_counter() - t0, len(ds.records))
"""

JOB = """
import time
from crossmodal.evaluate.units.job import run_units
t0 = time.perf_counter()
s = run_units({model!r}, "natural", out_dir={out!r}, data=dict(images={images!r}), backend={backend!r},
              device="cpu", batch_size={batch}, workers={workers}, cache_dir={cache!r}, top=8)
print("TIMED", time.perf_counter() - t0, s["speed"]["pass_seconds"])
"""


def setup(work: Path, sizes: list[int]) -> Path:
    from crossmodal.convert.pipeline import convert
    from crossmodal.models.synthetic import write_checkpoint
    from crossmodal.models.vgg import create_spec

    model = work / "model"
    if not (model / "model.onnx").is_file():
        ckpt = work / "vgg16_random.pth"
        write_checkpoint(create_spec("vgg16_places365"), ckpt, layout="named", seed=0)
        convert(ckpt, model, targets=["ir", "onnx"], preprocess="places365", input_size=(224, 224))
        ckpt.unlink()
    for n in sizes:
        make_images(work, n)
    return model


def make_images(work: Path, n: int) -> Path:
    """``images-<n>/<category>/*.jpg``: n photo-like JPEGs (every third portrait) in 10 categories."""
    import numpy as np
    from PIL import Image

    root = work / f"images-{n}"
    if root.is_dir():
        return root
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500]
    for i in range(n):
        c = rng.uniform(0, 255, 3)
        img = (c + 60 * np.sin(xx[..., None] / rng.uniform(8, 40) + rng.uniform(0, 6, 3))
               + rng.normal(0, 12, (375, 500, 3))).clip(0, 255).astype(np.uint8)
        if i % 3 == 2:
            img = img.transpose(1, 0, 2)
        folder = root / f"cat{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"img{i:05d}.jpg", quality=90)
    return root


def timed(code: str) -> tuple[float, int, float, float]:
    wall, rss, out = measure(code)
    line = next(l for l in out.splitlines() if l.startswith("TIMED")).split()
    return wall, rss, float(line[1]), float(line[2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--reference-sizes", default=None, help="Sizes of the plain pass [default: --sizes].")
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--with-job", action="store_true", help="Also time the whole command (drawing apart).")
    ap.add_argument("--repeat", type=int, default=1, help="Runs of each, interleaved; the best is shown.")
    ap.add_argument("--work", default=None, help="Folder for the model and images (kept between runs).")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    ref_sizes = sizes if a.reference_sizes is None else [int(s) for s in a.reference_sizes.split(",")]
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-units-"))
    work.mkdir(parents=True, exist_ok=True)
    model = setup(work, sorted(set(sizes + ref_sizes)))
    print(f"# units pass vs plain forward to relu5_3 — VGG16 (random weights), {a.backend}, batch {a.batch_size}, "
          f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}")
    print("| images | plain img/s | units img/s | ratio (units / plain time) | peak plain | peak units |")
    print("|---|---|---|---|---|---|")
    for n in sorted(set(sizes + ref_sizes)):
        kw = dict(model=str(model), images=str(work / f"images-{n}"), backend=a.backend, batch=a.batch_size,
                  workers=a.workers)
        plain = units = None
        for _ in range(a.repeat):  # interleaved; the best of each (other jobs slow single runs down)
            if n in ref_sizes:
                got = timed(PLAIN.format(**kw))
                plain = got if plain is None or got[2] < plain[2] else plain
            if n in sizes:
                cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work))
                got = timed(UNITS.format(cache=str(cache), **kw))
                units = got if units is None or got[2] < units[2] else units
        ratio = f"{units[2] / plain[2]:.2f}×" if plain and units else "–"
        print(f"| {n} | {n / plain[2]:.2f} |" if plain else f"| {n} | – |", end="")
        print(f" {n / units[2]:.2f} | {ratio} |" if units else " – | – |", end="")
        print(f" {gib(plain[1]) if plain else '–'} | {gib(units[1]) if units else '–'} |", flush=True)
        if a.with_job and n in sizes:
            cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work))
            wall, rss, total, pass_s = timed(JOB.format(out=str(work / f"out-{n}"), cache=str(cache), **kw))
            print(f"  whole command on {n}: {total:.1f} s (pass {pass_s:.1f} s, after the pass — top-K, "
                  f"agreement, boxes, galleries — {total - pass_s:.1f} s), peak {gib(rss)}", flush=True)


if __name__ == "__main__":
    main()
