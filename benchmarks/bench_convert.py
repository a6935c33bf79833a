"""Speed and memory of `crossmodal convert` on the full-size VGG16-Places365 (random weights).

Prints, measured in one run on this machine, each figure a fresh process:
  * `convert --to onnx` vs `torch.onnx.export` of the same checkpoint, whole process against
    whole process (Python start-up, imports, reading, writing and our ONNX checker included on
    both sides; the exporter: TorchScript, and dynamo where onnxscript is installed)
                                                                        (target: ≤ 0.3×)
  * the whole `convert` (IR + ONNX + Keras): time and peak RSS, and the peak after each step
    (where it is reached)                                               (target: ≤ 2 × weights + 1 GiB)
  * `crossmodal --help`: whole process, and time to its first line       (target: < 0.2 s)
  * whether `convert --to onnx` imported TensorFlow or torch              (target: neither)

    python benchmarks/bench_convert.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import gib, measure  # noqa: E402

PARAMS = 135_755_949
WEIGHTS = PARAMS * 4


def first_line_seconds(cmd: list[str]) -> tuple[float, float]:
    """(seconds to the first line of output, seconds to exit)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    first = time.perf_counter() - t0
    proc.communicate()
    return first, time.perf_counter() - t0


def export_code(ckpt: Path, out: Path, dynamo: bool) -> str:
    return ("import torch\n"
            "from crossmodal.models.vgg import build_torch_module, create_spec\n"
            f"sd = torch.load({str(ckpt)!r}, weights_only=True)\n"
            "m = build_torch_module(create_spec('vgg16_places365')).eval()\n"
            "m.load_state_dict(sd)\n"
            f"torch.onnx.export(m, (torch.zeros(1, 3, 224, 224),), {str(out)!r}, dynamo={dynamo},\n"
            "                  input_names=['input'], output_names=['logits'], dynamic_axes={'input': {0: 'N'}})\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs; the best of each is kept")
    args = ap.parse_args()
    from crossmodal.models.synthetic import write_checkpoint
    from crossmodal.models.vgg import create_spec

    exporters = [("TorchScript", False)]
    if importlib.util.find_spec("onnxscript") is not None:
        exporters.append(("dynamo", True))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "vgg16_places365.pth"
        write_checkpoint(create_spec("vgg16_places365"), ckpt, layout="torchvision", seed=0)
        ours_code = ("import sys, tempfile\n"
                     "from crossmodal.cli import main\n"
                     f"out = tempfile.mkdtemp(dir={str(tmp)!r})\n"
                     f"main(['convert', {str(ckpt)!r}, '--to', 'onnx', '--out-dir', out, '-q'],"
                     " standalone_mode=False)\n"
                     "print('IMPORTED', 'tensorflow' in sys.modules, 'torch' in sys.modules)\n")
        runs = []
        for _ in range(args.repeats):  # interleaved, so a busy moment hits both sides
            row = {"ours": measure(ours_code, whole=True)}
            for name, dynamo in exporters:
                row[name] = measure(export_code(ckpt, tmp / f"ref-{name}.onnx", dynamo), whole=True)
            runs.append(row)
        best = {k: min((r[k] for r in runs), key=lambda m: m[0]) for k in runs[0]}
        imported = best["ours"][2].split("IMPORTED")[-1].split()
        whole_code = (
            "import time\n"
            "def hwm():\n"
            "    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
            "from crossmodal.convert.pipeline import convert\n"
            "marks = []\n"
            "convert(" + repr(str(ckpt)) + ", " + repr(str(tmp / "b")) + ", on_step=lambda m: marks.append((m, hwm())))\n"
            "marks.append(('end', hwm()))\n"
            "for (m, _), (_, after) in zip(marks, marks[1:]):\n"
            "    print('STEP', after, m.split(' (')[0])\n")
        whole = measure(whole_code)
    help_first, help_exit = min(first_line_seconds([sys.executable, "-m", "crossmodal", "--help"]) for _ in range(5))
    bare_first, bare_exit = min(first_line_seconds([sys.executable, "-c", "print('x')"]) for _ in range(5))

    limit = 2 * WEIGHTS + 2**30
    print(f"VGG16-Places365, {PARAMS:,} parameters ({gib(WEIGHTS)} float32), random weights; each figure a "
          f"fresh process, whole process from outside (best of {args.repeats}, interleaved)")
    print(f"{'measure':<48} {'seconds':>8} {'peak RSS':>10}")
    print(f"{'crossmodal convert --to onnx (checked)':<48} {best['ours'][0]:>8.2f} {gib(best['ours'][1]):>10}")
    for name, _ in exporters:
        print(f"{'torch.onnx.export (' + name + ')':<48} {best[name][0]:>8.2f} {gib(best[name][1]):>10}")
    if len(exporters) == 1:
        print("(dynamo exporter: onnxscript is not installed, not measured)")
    print(f"{'crossmodal convert (IR + ONNX + Keras)':<48} {whole[0]:>8.2f} {gib(whole[1]):>10}")
    for line in whole[2].splitlines():
        if line.startswith("STEP"):
            _, peak, step = line.split(" ", 2)
            print(f"    peak so far after {step:<38} {gib(int(peak)):>10}")
    print(f"{'crossmodal --help (first line / exit)':<48} {help_first:>8.3f} / {help_exit:.3f}")
    print(f"{'python -c print (reference)':<48} {bare_first:>8.3f} / {bare_exit:.3f}")
    for name, _ in exporters:
        ratio = best["ours"][0] / best[name][0]
        print(f"ratio convert-to-onnx / torch.onnx.export ({name}): {ratio:.2f}  "
              f"(target ≤ 0.30: {'met' if ratio <= 0.3 else 'NOT met'})")
    print(f"whole convert peak RSS: {gib(whole[1])}  (target ≤ 2 × weights + 1 GiB = {gib(limit)}: "
          f"{'met' if whole[1] <= limit else 'NOT met'})")
    print(f"--help: {help_exit:.3f} s to exit  (target < 0.2 s: {'met' if help_exit < 0.2 else 'NOT met'})")
    print(f"convert --to onnx imported TensorFlow: {imported[0]}, torch: {imported[1]}  "
          f"(target: no TensorFlow)")


if __name__ == "__main__":
    main()
