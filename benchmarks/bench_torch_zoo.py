"""The Places365 PyTorch zoo (random weights, released layouts): conversion speed and inference speed.

Per architecture, measured in one run on this machine, each figure a fresh process:
  * `convert --to onnx` vs `torch.onnx.export` of the same checkpoint in a plain module, whole
    process against whole process (start-up, imports, reading, writing; best of 2, interleaved)
                                                                            (target: ≤ 0.3×)
  * peak RSS of `convert --to onnx`
  * ONNX Runtime images/s on the converted model vs torch eager on the plain module
    (batch 8 of 224×224, best of 3 after a warm-up, default threads)

Usage: python benchmarks/bench_torch_zoo.py [arch ...]   (default: all five)
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import gib, measure  # noqa: E402

ARCHS = ("alexnet", "resnet18", "resnet50", "wideresnet18", "densenet161")
REPEATS = 2

_PLAIN = (
    "import torch\n"
    "from crossmodal.verify.source_reference_zoo import build_module, rename\n"
    "sd = rename(torch.load({ckpt!r}, weights_only=True, encoding='latin1')['state_dict'])\n"
    "m = build_module({arch!r}, 365, 3, {{k: tuple(v.shape) for k, v in sd.items()}}).eval()\n"
    "m.load_state_dict(sd)\n")

_SPEED = _PLAIN + (
    "import time, numpy as np\n"
    "from crossmodal.runtime.ort_session import open_session\n"
    "x = np.random.default_rng(0).standard_normal((8, 3, 224, 224)).astype(np.float32)\n"
    "sess, _ = open_session({onnx!r}, 'cpu')\n"
    "name = sess.get_inputs()[0].name\n"
    "def best(fn):\n"
    "    fn(); times = []\n"
    "    for _ in range(3):\n"
    "        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)\n"
    "    return len(x) / min(times)\n"
    "ort_ips = best(lambda: sess.run(None, {{name: x}}))\n"
    "xt = torch.from_numpy(x)\n"
    "def eager():\n"
    "    with torch.inference_mode():\n"
    "        m(xt)\n"
    "torch_ips = best(eager)\n"
    "print('IPS', ort_ips, torch_ips)\n")


def main(archs=ARCHS) -> None:
    from crossmodal.models.synthetic_zoo import write_checkpoint

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for arch in archs:
            ckpt = tmp / f"{arch}_places365.pth.tar"
            write_checkpoint(arch, ckpt, "released", seed=0)
            out = tmp / arch
            ours_code = (f"from crossmodal.convert.pipeline import convert\n"
                         f"convert({str(ckpt)!r}, {str(out)!r}, targets=['onnx'])")
            torch_code = _PLAIN.format(ckpt=str(ckpt), arch=arch) + (
                f"torch.onnx.export(m, (torch.zeros(1, 3, 224, 224),), {str(tmp / 'ref.onnx')!r}, dynamo=False,\n"
                "                  input_names=['input'], output_names=['logits'], dynamic_axes={'input': {0: 'N'}})\n")
            runs = [(measure(ours_code, whole=True), measure(torch_code, whole=True)) for _ in range(REPEATS)]
            ours = min((r[0] for r in runs), key=lambda m: m[0])
            ref = min((r[1] for r in runs), key=lambda m: m[0])
            speed = measure(_SPEED.format(ckpt=str(ckpt), arch=arch, onnx=str(out / "model.onnx")))[2]
            ort_ips, torch_ips = (float(v) for v in speed.split("IPS")[1].split())
            rows.append((arch, ours, ref, ort_ips, torch_ips))
            print(f"· {arch} done", file=sys.stderr, flush=True)

    print(f"Places365 PyTorch zoo, random weights, released layouts; each figure a fresh process "
          f"(convert and export: whole processes, best of {REPEATS}, interleaved; images/s: batch 8, best of 3)")
    print(f"{'arch':<13} {'convert→onnx s':>14} {'export s':>9} {'ratio':>6} {'peak RSS':>9} "
          f"{'ORT img/s':>10} {'torch img/s':>12} {'ORT/torch':>10}")
    for arch, ours, ref, ort_ips, torch_ips in rows:
        ratio = ours[0] / ref[0]
        print(f"{arch:<13} {ours[0]:>14.2f} {ref[0]:>9.2f} {ratio:>6.2f} {gib(ours[1]):>9} "
              f"{ort_ips:>10.1f} {torch_ips:>12.1f} {ort_ips / torch_ips:>10.2f}")
    worst = max(r[1][0] / r[2][0] for r in rows)
    print(f"worst ratio convert-to-onnx / torch.onnx.export: {worst:.2f}  "
          f"(target ≤ 0.30: {'met' if worst <= 0.3 else 'NOT met'})")


if __name__ == "__main__":
    main(tuple(sys.argv[1:]) or ARCHS)
