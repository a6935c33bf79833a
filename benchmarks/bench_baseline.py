"""Benchmark: `crossmodal baseline` throughput on the full-size VGG16 (random weights).

Generates CMPlaces-like JPEGs (default 256 images of 500×375, 10 class folders),
writes a random VGG16-Places365 checkpoint and converts it (IR + ONNX, the
``places365`` preprocessing: 256×256 resize, 224 centre crop), then measures in
one run, interleaved over ``--rounds`` rounds (best round kept, since other
processes may share the CPU):

* **end to end**: :func:`crossmodal.evaluate.baseline.job.run_baseline` with a fresh
  cache — decoding on worker threads overlapping ONNX Runtime, cache writes,
  metrics, CSVs, plots. Reported as the images/s of the feature pass (what
  ``metrics.json`` records; the model is already loaded) and of the whole job
  (model load, reports and plots included);
* **bare ONNX Runtime**: the same session settings on tensors decoded beforehand,
  batch by batch (after one warm-up batch) — the ceiling for the pass;
* **naive loop**: as the Places365 demo scripts do it, one image at a time: PIL
  open → resize/crop/normalise → PyTorch forward of a single image (the IR in a
  PyTorch module, torch's default threads), on ``--naive-n`` images.

Prints absolute figures and the ratios end-to-end / bare (target ≥ 0.90) and
end-to-end / naive (target ≥ 2). ``--sweep`` also times the pass for decoding
workers × ONNX Runtime intra-op threads × spinning, which is how the defaults
were chosen.

    python benchmarks/bench_baseline.py [--n 256] [--naive-n 64] [--batch-size 32] [--rounds 2] [--sweep]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CATEGORIES = [f"class_{i}" for i in range(10)]


def setup(work: Path, n: int, size: tuple[int, int]) -> tuple[Path, Path]:
    """(model folder, images root): reused when already in ``work``."""
    from PIL import Image

    from crossmodal.convert.pipeline import convert
    from crossmodal.models.synthetic import write_checkpoint
    from crossmodal.models.vgg import create_spec

    model, images = work / "model", work / f"images-{n}-{size[0]}x{size[1]}"
    if not (model / "model.onnx").is_file():
        t = time.perf_counter()
        ckpt = work / "vgg16_random.pth"
        write_checkpoint(create_spec("vgg16_places365"), ckpt, layout="named", seed=0)
        labels = work / "labels.txt"
        labels.write_text("\n".join(f"/c/class_{i} {i}" for i in range(365)))
        convert(ckpt, model, targets=["ir", "onnx"], labels=labels, preprocess="places365", input_size=(224, 224))
        ckpt.unlink()
        print(f"setup: VGG16 checkpoint written and converted in {time.perf_counter() - t:.1f} s")
    if not images.is_dir():
        rng = np.random.default_rng(0)
        tmp = images.with_name(images.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        w, h = size
        for i in range(n):
            # photo-like content: smooth colour fields plus fine noise (JPEG size ~ real photos)
            coarse = rng.integers(0, 256, (h // 25 + 2, w // 25 + 2, 3), dtype=np.uint8)
            img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
            img = np.clip(img + rng.integers(-24, 25, (h, w, 3)), 0, 255).astype(np.uint8)
            if i % 3 == 1:  # portrait images too, as in CMPlaces
                img = img.transpose(1, 0, 2)
            dest = tmp / CATEGORIES[i % len(CATEGORIES)] / f"{i:05d}.jpg"
            dest.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(dest, quality=90)
        tmp.rename(images)
    return model, images


def end_to_end(model: Path, images: Path, work: Path, **kw) -> dict:
    from crossmodal.evaluate.baseline.job import run_baseline
    out = Path(tempfile.mkdtemp(dir=work, prefix="e2e-"))
    try:
        t = time.perf_counter()
        run = run_baseline(model, "natural", images=images, out_dir=out, cache_dir=out / "cache", device="cpu", **kw)
        total = time.perf_counter() - t
        m = run.results[0].metrics
        return {"pass": m["images_per_second"], "job": m["num_images"] / total, "backend": m["backend_info"]}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def bare_onnx(model: Path, x: np.ndarray, batch_size: int, threads: int | None, spinning: bool = False) -> float:
    from crossmodal.runtime.engine import open_engine
    with open_engine("onnx", model, ("logits", "fc7"), device="cpu", threads=threads, spinning=spinning) as b:
        b.run(x[:batch_size])  # warm-up
        t = time.perf_counter()
        for s in range(0, len(x), batch_size):
            b.run(x[s:s + batch_size])
        return len(x) / (time.perf_counter() - t)


def naive_loop(model: Path, paths: list[Path]) -> float:
    """The Places365 demo's way: per image, PIL → transforms → model.forward(1 image)."""
    import torch
    from PIL import Image

    from crossmodal.emitters.to_torch import build_torch
    from crossmodal.ir.store import load_ir

    module = build_torch(load_ir(model))
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)

    def one(path):
        img = Image.open(path).convert("RGB").resize((256, 256), Image.Resampling.BILINEAR)
        arr = (np.asarray(img, np.float32)[16:240, 16:240] / 255.0 - mean) / std
        x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]
        with torch.no_grad():
            logit = module(x)
        return torch.softmax(logit, 1).squeeze().sort(0, True)

    one(paths[0])  # warm-up
    t = time.perf_counter()
    for p in paths:
        one(p)
    return len(paths) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=256, help="images for the end-to-end and bare runs")
    ap.add_argument("--naive-n", type=int, default=64, help="images for the naive per-image loop")
    ap.add_argument("--size", default="500x375", help="image size WxH")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="decoding threads (default: the baseline's)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: ORT's)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sweep", action="store_true", help="also time workers × threads × spinning")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "crossmodal-bench-baseline")
    args = ap.parse_args()

    import onnxruntime
    import torch

    from crossmodal.ir.store import load_graph
    from crossmodal.data.images import list_images, load_batch

    w, h = (int(v) for v in args.size.lower().split("x"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    model, images = setup(args.workdir, args.n, (w, h))
    paths = list_images(images)
    spec = load_graph(model).preprocess
    t = time.perf_counter()
    x, _ = load_batch(paths, spec, draft=True)
    decode = len(paths) / (time.perf_counter() - t)
    print(f"data: {len(paths)} JPEGs of {w}x{h} (portrait and landscape); decode+preprocess alone "
          f"{decode:.1f} img/s on {min(8, os.cpu_count() or 1)} threads")

    kw = dict(batch_size=args.batch_size, workers=args.workers, threads=args.threads)
    best = {"pass": 0.0, "job": 0.0, "bare": 0.0, "naive": 0.0}
    for r in range(args.rounds):
        bare = bare_onnx(model, x, args.batch_size, args.threads)
        e2e = end_to_end(model, images, args.workdir, **kw)
        naive = naive_loop(model, paths[:args.naive_n])
        print(f"round {r + 1}: end-to-end pass {e2e['pass']:.2f} img/s (whole job {e2e['job']:.2f}), "
              f"bare ORT {bare:.2f} img/s, naive loop {naive:.2f} img/s")
        best = {"pass": max(best["pass"], e2e["pass"]), "job": max(best["job"], e2e["job"]),
                "bare": max(best["bare"], bare), "naive": max(best["naive"], naive)}
    print(f"backend: {e2e['backend']}")
    print()
    print(f"end-to-end baseline (feature pass) : {best['pass']:8.2f} img/s")
    print(f"end-to-end baseline (whole job)    : {best['job']:8.2f} img/s  (model load, metrics, plots included)")
    print(f"bare ONNX Runtime, pre-decoded     : {best['bare']:8.2f} img/s")
    print(f"naive per-image loop (PIL + torch) : {best['naive']:8.2f} img/s")
    print(f"ratio end-to-end / bare ORT        : {best['pass'] / best['bare']:8.2f}  (target >= 0.90)")
    print(f"ratio end-to-end / naive loop      : {best['pass'] / best['naive']:8.2f}  (target >= 2)")

    if args.sweep:
        print("\nsweep (feature pass img/s; bare ORT img/s with the same session settings):")
        for threads in (None, 1, 2):
            for spinning in (False, True):
                bare = bare_onnx(model, x, args.batch_size, threads, spinning)
                for workers in (1, 2):
                    e2e = end_to_end(model, images, args.workdir, batch_size=args.batch_size, workers=workers,
                                     threads=threads, backend_options={"spinning": spinning})
                    print(f"  ORT threads {threads or 'default'}, spinning {'on ' if spinning else 'off'}, "
                          f"workers {workers}: pass {e2e['pass']:6.2f}, bare {bare:6.2f}, "
                          f"ratio {e2e['pass'] / bare:.2f}")


if __name__ == "__main__":
    main()
