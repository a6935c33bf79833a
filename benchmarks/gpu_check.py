"""The GPU check: throughput, peak fraction, decode speed and parity on a lent GPU, in minutes.

    python benchmarks/gpu_check.py                # on a GPU machine (benchmarks/gpu_check.sh installs first)
    python benchmarks/gpu_check.py --smoke        # tiny sizes, runs anywhere (CPU too): the script is known to run

Prints, and writes as JSON (``gpu_check.json``) and Markdown (``gpu_check.md``) under
``--out`` (default ``$OUT``, else nothing written):

1. **network throughput** (images/s) of VGG16-Places365 (random weights, a ``crossmodal
   demo``-style checkpoint converted here) at fp32 and fp16, batch 64/128/256, on
   ORT-CUDA (I/O binding, pinned input), ORT-TensorRT (when its provider is present),
   torch eager (autocast, channels-last), torch compiled (``torch.compile``) and
   TensorFlow (Keras mixed policy) — preprocessed batches from host memory, outputs
   (logits + fc7) back on the host; with the fraction of the GPU's dense fp16 peak that
   the FLOPs counted from the IR (:mod:`crossmodal.ir.flops`) make;
2. the same for each other network of the zoo (``crossmodal.models.vgg.list_models``),
   ORT-CUDA only (torch eager where onnxruntime has no CUDA provider), at the largest batch;
3. **decode alone**: images/s of the toolkit's JPEG decode + preprocessing on the
   CPU threads (and nvJPEG through ``torchvision.io.decode_jpeg`` when torchvision is there);
4. **fine-tuning** images/s of ResNet-50 and VGG16 at bf16 + channels-last, the tool's training loop
   against a bare PyTorch loop, from the last block and the whole network, and the peak memory
   allocated from the head's first dense layer against the whole network (``finetune_measure.py``);
5. **end to end** from JPEG files on disk through :func:`~crossmodal.evaluate.features.extract_features`
   (decode threads overlapping inference, cache writes included) per engine and precision;
6. **verify's table on the GPU**: fp32 with TF32 off, and the fp16 parity gate.

Every measurement runs a warm-up, then batches for at least ``--seconds``. A time
budget (``--budget``, default 420 s) keeps the whole run under 8 minutes: what does
not fit is listed as skipped, never silently dropped. Each failure is recorded with
its reason and the run goes on.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # TensorFlow beside torch and ORT in one process

#: dense (no sparsity) fp16 tensor-core peak, TFLOP/s, by device-name fragment (vendor data sheets)
FP16_PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0,
                    "H100 PCIe": 756.0, "H100": 756.0, "GH200": 989.4, "A100": 312.0, "L40S": 362.0,
                    "L4": 121.0, "A10": 125.0, "RTX 4090": 165.2, "V100": 125.0, "T4": 65.0}

ENGINES = ("ort-cuda", "torch-eager", "tensorflow", "ort-trt", "torch-compile")  # cheapest to start first


class Budget:
    def __init__(self, seconds: float) -> None:
        self.t0, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)


def log(msg: str) -> None:
    print(msg, flush=True)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0][:200]}" if text else exc.__class__.__name__


# --------------------------------------------------------------------------- environment
def environment() -> dict:
    import platform
    env = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        import torch
        env["torch"] = torch.__version__
        env["cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["cuda_version"] = torch.version.cuda
            env["cudnn"] = torch.backends.cudnn.version()
    except ImportError:
        env["torch"] = None
    try:
        import onnxruntime as ort
        env["onnxruntime"] = ort.__version__
        env["ort_providers_available"] = ort.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    return env


def fp16_peak(gpu: str | None, override: float | None) -> tuple[float | None, str]:
    if override:
        return override * 1e12, "--peak-tflops"
    for frag, tflops in FP16_PEAK_TFLOPS.items():
        if gpu and frag.lower() in gpu.lower():
            return tflops * 1e12, f"data sheet ({frag}, dense fp16)"
    return None, "unknown GPU: give --peak-tflops"


# --------------------------------------------------------------------------- models and images
def have(*modules: str) -> bool:
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in modules)


def ort_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def make_model(name: str, work: Path) -> tuple[Path, Path]:
    """A seeded random checkpoint of zoo network ``name``, converted (IR, ONNX, and Keras when
    TensorFlow is installed): (model dir, checkpoint)."""
    from crossmodal.ir.preprocess import Preprocess
    from crossmodal.convert.pipeline import convert
    from crossmodal.models.synthetic import write_checkpoint
    from crossmodal.models.vgg import create_spec

    spec = create_spec(name)
    h, w = spec.input_shape[1:]
    ckpt = work / f"{name}_random_seed0.pth"
    write_checkpoint(spec, ckpt, layout="named", seed=0)
    model_dir = work / name
    preprocess = "places365" if (h, w) == (224, 224) else Preprocess(resize=(h, w), crop=(h, w), name="tiny")
    targets = ("ir", "keras", "onnx") if have("keras", "tensorflow") else ("ir", "onnx")
    convert(ckpt, model_dir, input_size=(h, w), preprocess=preprocess, targets=targets)
    return model_dir, ckpt


def make_jpegs(folder: Path, n: int, size: int) -> list[Path]:
    """``n`` JPEG files of ``size``² pixels (smooth colour fields plus noise, quality 90, like photos)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    paths, base = [], []
    for _ in range(8):
        c = rng.uniform(0, 255, (3, 3))
        base.append((c[:, 0] + yy[..., None] * c[:, 1] + xx[..., None] * c[:, 2]) % 256)
    for i in range(n):
        img = base[i % 8] + rng.normal(0, 12, (size, size, 3))
        p = folder / f"img_{i:05d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


def dataset_of(paths: list[Path]):
    from crossmodal.data.datasets import Dataset, ImageRecord
    return Dataset(name="gpucheck", root=paths[0].parent, categories=["synthetic"],
                   records=[ImageRecord(p, 0, "synthetic") for p in paths])


# --------------------------------------------------------------------------- runners
class TorchCompiled:
    """torch.compile of the IR's network (logits + fc7 out), channels-last, autocast at fp16."""

    def __init__(self, model_dir: Path, precision: str, device: str, compile_mode: str | None) -> None:
        import torch

        from crossmodal.emitters.to_torch import build_torch
        from crossmodal.runtime.devices import set_torch_precision
        from crossmodal.ir.store import load_ir

        set_torch_precision(False)
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
        model = load_ir(model_dir)
        graph = model.graph
        module = build_torch(model).to(device).to(memory_format=torch.channels_last).eval()
        want = {graph.resolve("logits"), graph.resolve("fc7")}
        self.keys = (graph.resolve("logits"), graph.resolve("fc7"))
        self.layers = ("logits", "fc7")

        def forward(x):
            out = module.forward_layers(x, want)
            return out[self.keys[0]], out[self.keys[1]]

        self.fn = torch.compile(forward, mode=compile_mode) if compile_mode != "eager" else forward
        self.torch, self.device, self.precision = torch, device, precision
        self.name = "torch-compile" if compile_mode != "eager" else "torch-eager"
        self.info = {"backend": self.name, "device": device, "precision": precision, "torch": torch.__version__,
                     "compile_mode": compile_mode, "memory_format": "channels_last"}

    def run(self, batch: np.ndarray) -> dict:
        from crossmodal.runtime.precision import torch_autocast
        torch = self.torch
        with torch.inference_mode(), torch_autocast(torch.device(self.device).type, self.precision):
            x = torch.from_numpy(batch).to(self.device, non_blocking=True).contiguous(
                memory_format=torch.channels_last)
            logits, fc7 = self.fn(x)
            return {"logits": logits.float().cpu().numpy(), "fc7": fc7.float().cpu().numpy()}

    def describe(self) -> dict:
        return self.info

    def close(self) -> None:
        self.fn = None


def open_runner(engine: str, model_dir: Path, precision: str, device: str, cache: Path, max_batch: int):
    """An object with ``run(batch) → {logits, fc7}``, ``describe()``, ``close()`` for ``engine``."""
    from crossmodal.runtime.engine import open_engine

    layers = ["logits", "fc7"]
    if engine == "ort-cuda":
        return open_engine("onnx", model_dir, layers, device=device, precision=precision, cache_dir=cache)
    if engine == "ort-trt":
        return open_engine("onnx", model_dir, layers, device=device, precision=precision, trt=True,
                            cache_dir=cache, max_batch=max_batch)
    if engine == "torch-eager":
        return TorchCompiled(model_dir, precision, "cuda" if device != "cpu" else "cpu", "eager")
    if engine == "torch-compile":
        return TorchCompiled(model_dir, precision, "cuda" if device != "cpu" else "cpu", None)
    if engine == "tensorflow":
        return open_engine("keras", model_dir, layers, device=device, precision=precision)
    raise ValueError(engine)


def check_on_device(engine: str, runner, device: str) -> None:
    """Refuse a run that silently left the GPU (so a CPU figure is never labelled CUDA)."""
    if device == "cpu":
        return
    info = runner.describe()
    if str(info.get("device", "")).startswith("cpu"):
        raise RuntimeError(f"{engine} is not on the GPU: {info}")
    if engine == "ort-trt" and info.get("providers", [""])[0] != "TensorrtExecutionProvider":
        raise RuntimeError(f"TensorRT did not start: {info.get('fallback') or info.get('providers')}")


def throughput(runner, batch: np.ndarray, seconds: float, min_batches: int = 3) -> dict:
    """images/s of ``runner.run`` on ``batch`` (host array in, host arrays out) after 2 warm-up runs."""
    for _ in range(2):
        runner.run(batch)
    n, t0 = 0, time.perf_counter()
    while n < min_batches or time.perf_counter() - t0 < seconds:
        runner.run(batch)
        n += 1
    dt = time.perf_counter() - t0
    return {"batches": n, "seconds": round(dt, 3), "images_per_second": n * len(batch) / dt}


# --------------------------------------------------------------------------- sections
def section_network(args, model_dir, flops, peak, budget, results) -> None:
    from crossmodal.ir.store import load_graph

    graph = load_graph(model_dir)
    c, h, w = graph.input.shape
    rng = np.random.default_rng(0)
    for engine in args.engines:
        for precision in args.precisions:
            if engine in ("tensorflow",) and precision == "bf16":
                continue
            row = {"network": args.network, "engine": engine, "precision": precision}
            if budget.left() < args.min_left:
                row["skipped"] = "time budget spent"
                results.append(row)
                continue
            t0 = time.perf_counter()
            try:
                runner = open_runner(engine, model_dir, precision, args.device, args.work / "cache",
                                     max(args.batches))
                check_on_device(engine, runner, args.device)
            except Exception as exc:  # an engine that cannot start: reason recorded, the rest go on
                row["skipped"] = one_line(exc)
                results.append(row)
                log(f"  {engine:<14} {precision}: skipped ({row['skipped']})")
                continue
            row["open_seconds"] = round(time.perf_counter() - t0, 2)
            row["runner"] = runner.describe()
            # torch.compile compiles per batch shape (a minute each): the largest batch only
            for bs in args.batches if engine != "torch-compile" else [max(args.batches)]:
                if budget.left() < args.min_left:
                    row.setdefault("batches_skipped", []).append(bs)
                    continue
                batch = rng.standard_normal((bs, c, h, w)).astype(np.float32)
                try:
                    m = throughput(runner, batch, args.seconds)
                except Exception as exc:
                    m = {"error": one_line(exc)}
                if "images_per_second" in m:
                    achieved = m["images_per_second"] * flops.matmul
                    m["tflops"] = achieved / 1e12
                    m["fp16_peak_fraction"] = achieved / peak if peak else None
                row.setdefault("by_batch", {})[bs] = m
                log(f"  {engine:<14} {precision} batch {bs:>4}: " + (
                    f"{m['images_per_second']:9.1f} img/s  {m['tflops']:7.1f} TFLOP/s"
                    + (f"  {100 * m['fp16_peak_fraction']:5.1f} % of fp16 peak" if m.get("fp16_peak_fraction")
                       else "") if "images_per_second" in m else m["error"]))
            runner.close()
            results.append(row)


def section_zoo(args, budget, peak) -> list[dict]:
    from crossmodal.ir.flops import count_flops
    from crossmodal.ir.store import load_graph
    from crossmodal.models.vgg import list_models

    rows = []
    # ORT-CUDA when there; else torch eager (a GPU image with a CPU-only onnxruntime)
    engine = "ort-cuda" if args.device == "cpu" or ort_cuda() else "torch-eager"
    names = [n for n in list_models() if "tiny" not in n and n != args.network]
    if args.smoke:  # the code path, on a tiny network
        names = ["vgg_tiny"]
    for name in names:
        row = {"network": name}
        if budget.left() < args.min_left + 30:
            row["skipped"] = "time budget spent"
            rows.append(row)
            continue
        try:
            model_dir, _ = make_model(name, args.work)
            graph = load_graph(model_dir)
            flops = count_flops(graph)
            c, h, w = graph.input.shape
            bs = max(args.batches)
            batch = np.random.default_rng(0).standard_normal((bs, c, h, w)).astype(np.float32)
            for precision in ("fp32", "fp16"):
                runner = open_runner(engine, model_dir, precision, args.device, args.work / "cache", bs)
                m = throughput(runner, batch, args.seconds)
                runner.close()
                m["tflops"] = m["images_per_second"] * flops.matmul / 1e12
                m["fp16_peak_fraction"] = m["images_per_second"] * flops.matmul / peak if peak else None
                row[precision] = m
                row["engine"] = engine
                log(f"  {name:<16} {engine} {precision} batch {bs}: {m['images_per_second']:9.1f} img/s")
            row["gflops_per_image"] = flops.matmul / 1e9
        except Exception as exc:
            row["skipped"] = one_line(exc)
            log(f"  {name}: skipped ({row['skipped']})")
        rows.append(row)
    return rows


def section_decode(args, paths, spec_dir) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from crossmodal.ir.store import load_graph
    from crossmodal.evaluate.feature_cache import read_mean_image
    from crossmodal.data.images import load_batch

    graph = load_graph(spec_dir)
    spec, mean = graph.preprocess, read_mean_image(spec_dir, graph)
    out = {"images": len(paths), "cpu_threads": {}}
    chunk = 64
    chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    for workers in sorted({max(1, (os.cpu_count() or 2) // 2), os.cpu_count() or 1}):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            n = sum(len(x) for x, _ in pool.map(lambda c: load_batch(c, spec, mean, workers=1, draft=True), chunks))
        dt = time.perf_counter() - t0
        out["cpu_threads"][workers] = n / dt
        log(f"  decode + preprocess, {workers:>2} threads (PIL, draft): {n / dt:9.1f} img/s")
    try:  # nvJPEG on the GPU, when torchvision is installed
        import torch
        import torchvision
        from torchvision.io import decode_jpeg, read_file
        if args.device != "cpu" and torch.cuda.is_available():
            data = [read_file(str(p)) for p in paths]
            decode_jpeg(data[:8], device="cuda")
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for i in range(0, len(data), 256):
                imgs = decode_jpeg(data[i:i + 256], device="cuda")
                torch.nn.functional.interpolate(torch.stack([im.float() for im in imgs]), size=(224, 224),
                                                mode="bilinear", antialias=True)
            torch.cuda.synchronize()
            out["nvjpeg_torchvision"] = len(data) / (time.perf_counter() - t0)
            out["torchvision"] = torchvision.__version__
            log(f"  decode + resize on the GPU (nvJPEG, torchvision.io): {out['nvjpeg_torchvision']:9.1f} img/s")
    except ImportError:
        out["nvjpeg_torchvision"] = "torchvision not installed"
    except Exception as exc:
        out["nvjpeg_torchvision"] = one_line(exc)
    return out


def section_end_to_end(args, model_dir, paths, budget) -> list[dict]:
    from crossmodal.evaluate.features import extract_features

    from crossmodal.ir.store import load_graph

    ds = dataset_of(paths)
    shape = tuple(load_graph(model_dir).input.shape)
    rows = []
    bs = max(args.batches)
    workers = max(1, (os.cpu_count() or 2) - 1)
    for engine in args.e2e_engines:
        for precision in args.precisions:
            if precision == "bf16":
                continue
            row = {"engine": engine, "precision": precision, "batch": bs, "workers": workers}
            if budget.left() < args.min_left:
                row["skipped"] = "time budget spent"
                rows.append(row)
                continue
            try:
                runner = open_runner(engine, model_dir, precision, args.device, args.work / "cache", bs)
                check_on_device(engine, runner, args.device)
                runner.run(np.zeros((bs, *shape), np.float32))  # the batch shape warmed up
                with tempfile.TemporaryDirectory(dir=args.work) as cache:
                    fs = extract_features(model_dir, ds, lambda: runner, ["logits", "fc7"], batch_size=bs,
                                          workers=workers, cache_dir=cache, precision=precision, read=["logits"])
                runner.close()
                row["images_per_second"] = fs.stats["images_per_second"]
                row["failed"] = len(fs.failed)
                log(f"  end to end {engine:<12} {precision} batch {bs} ({workers} decode threads): "
                    f"{row['images_per_second']:9.1f} img/s")
            except Exception as exc:
                row["skipped"] = one_line(exc)
                log(f"  end to end {engine} {precision}: skipped ({row['skipped']})")
            rows.append(row)
    return rows


def section_finetune(args, budget) -> list[dict]:
    """Fine-tuning images/s (``benchmarks/finetune_measure.py``): ResNet-50 and VGG16 at bf16 +
    channels-last, the tool's loop against a bare loop, from the last block and the whole network."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import finetune_measure as fm
    precision = "fp32" if args.device == "cpu" else "bf16"
    archs = ("vgg_tiny3", "resnet_tiny") if args.smoke else ("resnet50", "vgg16")
    return fm.section(archs, device=args.device, precision=precision, batch=4 if args.smoke else 64,
                      steps=2 if args.smoke else 8, peak_batch=32, budget_left=budget.left, log=log)


def section_retrieval(args) -> dict:
    """Retrieval scored on the device (``retrieval_scores(device=…)``, ranking_torch.py): the
    whole mAP against the similarity matrix product alone there, and equal to the NumPy path on
    a subset (20,500 × 20,500 × 4,096 float32; 2,000 × 2,000 × 256 with --smoke)."""
    import torch
    from crossmodal.evaluate.retrieval.metrics import retrieval_scores
    n, dim, classes = (2000, 256, 20) if args.smoke else (20500, 4096, 205)
    rng = np.random.default_rng(0)
    labels = np.arange(n) % classes
    centres = (0.15 * rng.standard_normal((classes, dim))).astype(np.float32)
    q = rng.standard_normal((n, dim), dtype=np.float32) + centres[labels]
    t = rng.standard_normal((n, dim), dtype=np.float32) + centres[labels]
    chunk = 4096
    dev = torch.device(args.device)
    tq, tt = torch.as_tensor(q, device=dev), torch.as_tensor(t, device=dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    sync()
    t0 = time.perf_counter()
    for a in range(0, n, chunk):
        (tq[a:a + chunk] @ tt.T).sum()
    sync()
    gemm = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = retrieval_scores(q, labels, t, labels, ks=(10,), chunk_size=chunk, device=args.device)
    sync()
    whole = time.perf_counter() - t0
    sub = slice(0, 500)
    ref = retrieval_scores(q[sub], labels[sub], t, labels, ks=(10,))
    diff = float(np.nanmax(np.abs(res.ap[sub] - ref.ap)))
    out = {"size": [n, n, dim], "gemm_s": round(gemm, 3), "retrieval_s": round(whole, 3),
           "ratio": round(whole / gemm, 2), "map": res.mean_ap, "max_ap_diff_vs_numpy_subset": diff}
    log(f"  retrieval on {args.device}: {whole:.2f} s, the product alone {gemm:.2f} s "
        f"({whole / gemm:.2f}x); max |AP - NumPy's| on 500 queries {diff:.1e}")
    return out


def section_verify(args, model_dir, ckpt, out: Path | None) -> dict:
    from crossmodal.verify.job import run_verify
    from crossmodal.verify.report import console, markdown

    result = {}
    for precision in ("fp32", "fp16"):
        try:
            report = run_verify(model_dir, source=ckpt, random=args.verify_images,
                                batch_size=min(8, args.verify_images),
                                device=args.device, precision=precision, engines=args.verify_engines)
        except Exception as exc:
            result[precision] = {"error": one_line(exc)}
            log(f"  verify {precision}: {one_line(exc)}")
            continue
        log(console(report))
        data = report.to_json()
        result[precision] = {"passed": report.passed, "gates": data["gates"], "engines": data["engines"],
                             "classifier": data["classifier"]}
        if out:
            (out / f"verify_{precision}.json").write_text(json.dumps(data, indent=2))
            (out / f"verify_{precision}.md").write_text(markdown(report))
    return result


# --------------------------------------------------------------------------- main
def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny network, few images, short runs (any machine)")
    ap.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    ap.add_argument("--device", default=None, help="cuda (default when a GPU is seen) or cpu")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes [64,128,256; smoke 2,4]")
    ap.add_argument("--precisions", default="fp32,fp16")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--e2e-engines", default="ort-cuda,ort-trt,torch-eager")
    ap.add_argument("--images", type=int, default=None, help="JPEG files for decode and end to end [4096; smoke 24]")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per measurement [1.5; smoke 0.1]")
    ap.add_argument("--budget", type=float, default=400.0, help="seconds for the whole run [400]")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense fp16 peak, when not in the table")
    ap.add_argument("--no-zoo", action="store_true")
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder [a temporary one]")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    budget = Budget(args.budget)
    env = environment()
    if args.device is None:
        args.device = "cuda" if env.get("cuda") else "cpu"
    args.batches = [int(b) for b in (args.batches or ("2,4" if args.smoke else "64,128,256")).split(",")]
    args.precisions = [p for p in args.precisions.split(",") if p]
    args.engines = [e for e in args.engines.split(",") if e]
    args.e2e_engines = [e for e in args.e2e_engines.split(",") if e]
    if args.smoke:  # torch.compile needs a C++ toolchain and a minute: not for the smoke run
        args.engines = [e for e in args.engines if e != "torch-compile"]
    if args.device == "cpu":  # ORT-CUDA/TRT labels would lie on the CPU: run ORT as "ort-cuda" on the CPU provider
        args.engines = [e for e in args.engines if e != "ort-trt"]
        args.e2e_engines = [e for e in args.e2e_engines if e != "ort-trt"]
    args.images = args.images or (24 if args.smoke else 4096)
    args.seconds = args.seconds if args.seconds is not None else (0.1 if args.smoke else 1.5)
    args.min_left = 5 if args.smoke else 20
    args.verify_images = 4 if args.smoke else 16
    args.verify_engines = tuple(e for e in (("torch", "onnx") if args.smoke else ("torch", "keras", "onnx"))
                                if e == "torch" or (e == "keras" and have("keras", "tensorflow"))
                                or (e == "onnx" and (args.device == "cpu" or ort_cuda())))
    args.network = "vgg_tiny3" if args.smoke else "vgg16_places365"
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="gpu_check-")
        args.work = Path(tmp.name)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)

    from crossmodal.ir.flops import count_flops
    from crossmodal.ir.store import load_graph

    peak, peak_source = fp16_peak(env.get("gpu"), args.peak_tflops)
    log(f"# crossmodal GPU check{' (smoke)' if args.smoke else ''}: device {args.device}, "
        f"{env.get('gpu', 'no GPU')}; fp16 peak {peak / 1e12 if peak else '?'} TFLOP/s ({peak_source})")
    log(f"  {json.dumps(env)}")
    report = {"format": "crossmodal-gpu-check", "version": 1, "smoke": args.smoke, "device": args.device,
              "environment": env, "fp16_peak_flops": peak, "fp16_peak_source": peak_source,
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    t0 = time.perf_counter()
    model_dir, ckpt = make_model(args.network, args.work)
    from crossmodal.runtime.precision import fp16_onnx
    t1 = time.perf_counter()
    try:
        fp16_onnx(model_dir)
    except Exception as exc:  # no onnxconverter-common: the fp16 ONNX rows say so
        report["fp16_model_error"] = one_line(exc)
        log(f"  no fp16 ONNX model: {one_line(exc)}")
    report["setup_seconds"] = {"convert": round(t1 - t0, 2), "fp16_model": round(time.perf_counter() - t1, 2)}
    flops = count_flops(load_graph(model_dir))
    report["network"] = {"name": args.network, "gflops_per_image": flops.total / 1e9,
                         "matmul_gflops_per_image": flops.matmul / 1e9}
    log(f"## {args.network}: {flops.matmul / 1e9:.2f} GFLOP per image (matmul part), converted in "
        f"{report['setup_seconds']['convert']} s, fp16 model in {report['setup_seconds']['fp16_model']} s")

    paths: list[Path] = []
    for name in ("throughput", "finetune", "retrieval", "decode", "end_to_end", "verify", "zoo"):
        log(f"## {name}")
        try:
            if name == "throughput":
                report[name] = _collect(section_network, args, model_dir, flops, peak, budget)
            elif name == "finetune":
                report[name] = section_finetune(args, budget)
            elif name == "retrieval":
                report[name] = section_retrieval(args)
            elif name == "decode":
                paths = make_jpegs(args.work / "jpegs", args.images, 256 if not args.smoke else 48)
                report[name] = section_decode(args, paths, model_dir)
            elif name == "end_to_end":
                report[name] = section_end_to_end(args, model_dir, paths, budget)
            elif name == "zoo":
                report[name] = "skipped (--no-zoo)" if args.no_zoo else section_zoo(args, budget, peak)
            elif name == "verify":
                if args.no_verify or budget.left() < args.min_left:
                    report[name] = "skipped (--no-verify or time budget spent)"
                else:
                    report[name] = section_verify(args, model_dir, ckpt, args.out)
        except Exception as exc:  # a section that breaks is recorded; the others still run
            report[name] = {"error": one_line(exc), "traceback": traceback.format_exc()[-2000:]}
            log(f"  {name} failed: {one_line(exc)}")
    report["seconds"] = round(time.perf_counter() - budget.t0, 1)
    log(f"## done in {report['seconds']} s")
    if args.out:
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
        (args.out / "gpu_check.md").write_text(markdown(report))
        log(f"→ {args.out / 'gpu_check.json'}, {args.out / 'gpu_check.md'}")
    if tmp is not None:
        tmp.cleanup()
    return report


def _collect(fn, *a) -> list[dict]:
    rows: list[dict] = []
    fn(*a, rows)
    return rows


def markdown(report: dict) -> str:
    """The network table (images/s and fp16-peak fraction per engine, precision and batch) and the rest."""
    lines = [f"# crossmodal GPU check ({report['device']}, {report['environment'].get('gpu', 'no GPU')})", "",
             f"Network {report['network']['name']}: {report['network']['matmul_gflops_per_image']:.2f} GFLOP/image; "
             f"fp16 peak {report['fp16_peak_flops'] / 1e12 if report['fp16_peak_flops'] else '?'} TFLOP/s "
             f"({report['fp16_peak_source']}).", "",
             "| engine | precision | batch | images/s | TFLOP/s | % fp16 peak | providers / device |",
             "|---|---|---|---|---|---|---|"]
    for row in report.get("throughput", []) if isinstance(report.get("throughput"), list) else []:
        where = row.get("runner", {}).get("providers") or row.get("runner", {}).get("device", "")
        if "skipped" in row:
            lines.append(f"| {row['engine']} | {row['precision']} | – | skipped: {row['skipped']} | | | |")
            continue
        for bs, m in row.get("by_batch", {}).items():
            if "images_per_second" not in m:
                lines.append(f"| {row['engine']} | {row['precision']} | {bs} | {m.get('error')} | | | |")
                continue
            frac = f"{100 * m['fp16_peak_fraction']:.1f}" if m.get("fp16_peak_fraction") else "?"
            lines.append(f"| {row['engine']} | {row['precision']} | {bs} | {m['images_per_second']:.1f} | "
                         f"{m['tflops']:.1f} | {frac} | {where} |")
    r = report.get("retrieval")
    if isinstance(r, dict) and "ratio" in r:
        lines += ["", f"## retrieval on the device: {r['retrieval_s']} s for {r['size']}, the product alone "
                  f"{r['gemm_s']} s ({r['ratio']}×); max |AP − NumPy's| {r['max_ap_diff_vs_numpy_subset']:.1e}"]
    rows = report.get("finetune") if isinstance(report.get("finetune"), list) else []
    if rows:
        lines += ["", "## fine-tuning (tool loop vs bare loop)", "", "| network | train from | precision | batch | "
                  "tool images/s | bare images/s | ratio |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            if "ratio" in r:
                lines.append(f"| {r['network']} | {r['train_from']} | {r['precision']} | {r['batch']} | "
                             f"{r['tool_images_per_s']:.1f} | {r['bare_images_per_s']:.1f} | {r['ratio']:.3f} |")
            elif "peak_ratio" in r:
                lines.append(f"| {r['network']} | peak allocated " + ", ".join(
                    f"{k} {v / 2**30:.2f} GiB" for k, v in r["peak_allocated_bytes"].items())
                    + f" | {r['precision']} | {r['batch']} | | | {r['peak_ratio']:.3f} |")
            else:
                lines.append(f"| {r['network']} | {r['train_from']} | {r['precision']} | {r['batch']} | "
                             f"{r.get('skipped') or r.get('error')} | | |")
    for key in ("decode", "end_to_end", "zoo", "verify"):
        lines += ["", f"## {key}", "", "```", json.dumps(report.get(key), indent=1, default=str)[:4000], "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
