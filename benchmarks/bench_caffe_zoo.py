"""The Caffe zoo, full size with seeded random weights: convert cost, ONNX Runtime speed, verify table.

For each network (default AlexNet, GoogLeNet, ResNet-152; ``--nets`` adds vgg16), from
its real deploy prototxt and a random ``.caffemodel`` (``crossmodal.models.caffe_zoo``;
``--nets`` also takes vgg16, resnet152-hybrid1365, vgg16-hybrid1365),
each measurement in a fresh process (wall time, peak RSS):

* ``convert --to onnx`` (prototxt + caffemodel → checked ONNX) beside ``torch.onnx.export``
  (TorchScript exporter) of an equivalent torch module (the IR→torch emitter's module), whole
  process against whole process (target: ≤ 0.3×); each call alone after the imports is shown too;
* the whole convert (IR + Keras + ONNX): time and peak RSS (target: ≤ 2× the weights + 1 GiB);
* ONNX Runtime images/s on this CPU (batch 8, all cores, best of 3 runs after a warm-up);
* the verify table: every layer on torch, ir, keras, onnx against caffe-source (2 random
  inputs): per engine the logits' and feature blob's max|Δ|/max|ref|, the worst layer and its error.

Needs places365/deploy_*.prototxt in $CROSSMODAL_SHARED_DATA (default ../shared/data).
Run: ``python benchmarks/bench_caffe_zoo.py [--nets alexnet,googlenet,resnet152,vgg16]``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import gib, measure  # noqa: E402

NETS = {"alexnet": "alexnet-caffe", "googlenet": "googlenet-caffe", "resnet152": "resnet152-caffe",
        "vgg16": "vgg16-caffe", "resnet152-hybrid1365": "resnet152-hybrid1365-caffe",
        "vgg16-hybrid1365": "vgg16-hybrid1365-caffe"}


def onnx_images_per_second(path: Path, shape, batch: int = 8) -> float:
    import os

    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32) * 50
    feed = {sess.get_inputs()[0].name: x}
    sess.run(["logits"], feed)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        sess.run(["logits"], feed)
        best = min(best, time.perf_counter() - t0)
    return batch / best


def verify_rows(model_dir: Path, caffemodel: Path, prototxt: Path):
    from crossmodal.verify.job import run_verify

    report = run_verify(model_dir, engines=("torch", "ir", "keras", "onnx"), source=caffemodel, prototxt=prototxt,
                        random=2, seed=0)
    logits, feature = report.blobs["logits"], report.blobs[report.feature_blob]
    rows = []
    for engine, layers in report.comparisons.items():
        worst = max(layers, key=lambda l: layers[l].rel)
        rows.append((engine, layers[logits].rel, layers[feature].rel, worst, layers[worst].rel))
    return report, rows


def bench(arch: str, tmp: Path, verify: bool = True) -> dict:
    from crossmodal.models.caffe_zoo import find_prototxt
    from crossmodal.readers.caffe_random import write_random_caffemodel

    proto = find_prototxt(arch)
    caffemodel = tmp / f"{arch}.caffemodel"
    n = write_random_caffemodel(proto, caffemodel, seed=0)
    ours = measure(f"from crossmodal.convert.pipeline import convert\n"
                   f"convert({str(proto)!r}, {str(tmp / (arch + '-onnx'))!r}, caffemodel={str(caffemodel)!r}, "
                   "targets=['onnx'])", whole=True)
    # the same call timed alone, as the export is: imports and the one-time opset probe first
    _, _, out = measure("import time, onnx, onnxruntime\n"
                        "from crossmodal.convert.pipeline import convert\n"
                        "from crossmodal.emitters.onnx_opset import max_opset\n"
                        "max_opset()\n"
                        "t0 = time.perf_counter()\n"
                        f"convert({str(proto)!r}, {str(tmp / (arch + '-onnx-call'))!r}, caffemodel={str(caffemodel)!r}, "
                        "targets=['onnx'])\n"
                        "print('CONVERT', time.perf_counter() - t0)\n")
    call_s = float(out.split("CONVERT")[1].split()[0])
    torch_code = (
        "import time, torch\n"
        "from crossmodal.readers.from_caffe import read_caffe\n"
        "from crossmodal.emitters.to_torch import build_torch\n"
        f"model = read_caffe({str(proto)!r}, {str(caffemodel)!r})\n"
        "m = build_torch(model)\n"
        "shape = (1, *model.graph.input.shape)\n"
        "del model\n"
        "t0 = time.perf_counter()\n"
        f"torch.onnx.export(m, (torch.zeros(shape),), {str(tmp / (arch + '-ref.onnx'))!r}, dynamo=False,\n"
        "                  input_names=['input'], output_names=['logits'], dynamic_axes={'input': {0: 'N'}})\n"
        "print('EXPORT', time.perf_counter() - t0)\n")
    export_whole, torch_rss, out = measure(torch_code, whole=True)
    export_s = float(out.split("EXPORT")[1].split()[0])
    whole = measure(f"from crossmodal.convert.pipeline import convert\n"
                    f"convert({str(proto)!r}, {str(tmp / arch)!r}, caffemodel={str(caffemodel)!r})")
    from crossmodal.ir.store import load_graph
    shape = load_graph(tmp / arch).input.shape
    ips = onnx_images_per_second(tmp / arch / "model.onnx", shape)
    t0 = time.perf_counter()
    report, rows = verify_rows(tmp / arch, caffemodel, proto) if verify else (None, [])
    return {"arch": arch, "params": n, "weights": n * 4, "ours": ours, "call_s": call_s, "export_s": export_s, "export_whole": export_whole, "torch_rss": torch_rss,
            "whole": whole, "ips": ips, "verify_s": time.perf_counter() - t0, "report": report, "rows": rows,
            "layers": len(report.layers) if report else 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nets", default="alexnet,googlenet,resnet152")
    parser.add_argument("--no-verify", action="store_true", help="leave out the verify table (CI's parity step runs it)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.nets.split(","):
            results.append(bench(NETS[name], Path(tmp), verify=not args.no_verify))
            (Path(tmp) / f"{NETS[name]}.caffemodel").unlink()
    print("Caffe zoo, full size, seeded random weights; each convert/export figure a fresh process (one run)")
    print("to-onnx: the whole convert --to onnx process; export: the whole process that imports torch, builds")
    print("the module from the caffemodel and runs torch.onnx.export (ratio: whole against whole); call and")
    print("export-call: each call alone after the imports (ours reads the caffemodel, the export's module is built)")
    print(f"{'network':<16} {'values':>11} {'to-onnx s':>9} {'export s':>8} {'ratio':>6} {'call s':>7} "
          f"{'exp.call s':>10} {'whole s':>7} {'whole RSS':>10} {'RSS limit':>10} {'ORT img/s':>9}")
    for r in results:
        limit = 2 * r["weights"] + 2**30
        ratio = r["ours"][0] / r["export_whole"]
        print(f"{r['arch']:<16} {r['params']:>11,} {r['ours'][0]:>9.2f} {r['export_whole']:>8.2f} {ratio:>6.2f} "
              f"{r['call_s']:>7.2f} {r['export_s']:>10.2f} {r['whole'][0]:>7.1f} {gib(r['whole'][1]):>10} "
              f"{gib(limit):>10} {r['ips']:>9.1f}")
        print(f"  convert --to onnx peak RSS {gib(r['ours'][1])}; torch export process {gib(r['torch_rss'])}; "
              f"targets: ratio ≤ 0.30 {'met' if ratio <= 0.3 else 'NOT met'}, whole RSS ≤ 2×weights+1 GiB "
              f"{'met' if r['whole'][1] <= limit else 'NOT met'}")
    if args.no_verify:
        return
    print()
    print("verify against caffe-source (every layer, 2 random inputs): max|Δ|/max|ref|")
    print(f"{'network':<16} {'engine':<7} {'logits':>9} {'feature':>18} {'worst layer':>34} {'worst':>9}")
    for r in results:
        fb = r["report"].feature_blob
        for engine, lr, fr, worst, wr in r["rows"]:
            print(f"{r['arch']:<16} {engine:<7} {lr:>9.2e} {fb + ' ' + format(fr, '.2e'):>18} {worst:>34} {wr:>9.2e}")
        print(f"{'':<16} {'PASSED' if r['report'].passed else 'FAILED'}: {r['layers']} layers compared "
              f"in {r['verify_s']:.0f} s")


if __name__ == "__main__":
    main()
