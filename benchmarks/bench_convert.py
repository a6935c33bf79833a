"""Speed and memory of `crossmodal convert` on the full-size VGG16-Places365 (random weights).

Prints, measured in one run on this machine, each in a fresh process:
  * `convert --to onnx` vs `torch.onnx.export` of the same checkpoint   (target: ≤ 0.5×)
  * the whole `convert` (IR + Keras + ONNX): time and peak RSS           (target: < 3 GiB)
  * time to the first output line of `crossmodal --help` vs `python -c pass` (target: < 1 s)
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import gib, measure  # noqa: E402


REPEATS = 3


def first_line_seconds(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    elapsed = time.perf_counter() - t0
    proc.communicate()
    return elapsed


def main() -> None:
    from crossmodal.models.synthetic import write_checkpoint
    from crossmodal.models.vgg import create_spec

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "vgg16_places365.pth"
        write_checkpoint(create_spec("vgg16_places365"), ckpt, layout="torchvision", seed=0)
        ours_code = (f"from crossmodal.convert.pipeline import convert\n"
                     f"convert({str(ckpt)!r}, {str(tmp / 'a')!r}, targets=['onnx'])")
        torch_code = (
            "import torch\n"
            "from crossmodal.models.vgg import build_torch_module, create_spec\n"
            f"sd = torch.load({str(ckpt)!r}, weights_only=True)\n"
            "m = build_torch_module(create_spec('vgg16_places365')).eval()\n"
            "m.load_state_dict(sd)\n"
            f"torch.onnx.export(m, (torch.zeros(1, 3, 224, 224),), {str(tmp / 'ref.onnx')!r}, dynamo=False,\n"
            "                  input_names=['input'], output_names=['logits'], dynamic_axes={'input': {0: 'N'}})\n")
        runs = [(measure(ours_code), measure(torch_code)) for _ in range(REPEATS)]  # interleaved
        ours_onnx = min((r[0] for r in runs), key=lambda m: m[0])
        torch_export = min((r[1] for r in runs), key=lambda m: m[0])
        whole = measure(f"from crossmodal.convert.pipeline import convert\n"
                        f"convert({str(ckpt)!r}, {str(tmp / 'b')!r})")
    help_s = min(first_line_seconds([sys.executable, "-m", "crossmodal", "--help"]) for _ in range(3))
    bare_s = min(first_line_seconds([sys.executable, "-c", "print('x')"]) for _ in range(3))

    print(f"VGG16-Places365, 135,755,949 parameters, random weights; each figure a fresh process "
          f"(convert-to-onnx and torch.onnx.export: best of {REPEATS}, interleaved)")
    print(f"{'measure':<44} {'seconds':>8} {'peak RSS':>10}")
    print(f"{'crossmodal convert --to onnx (checked)':<44} {ours_onnx[0]:>8.1f} {gib(ours_onnx[1]):>10}")
    print(f"{'torch.onnx.export (TorchScript exporter)':<44} {torch_export[0]:>8.1f} {gib(torch_export[1]):>10}")
    print(f"{'crossmodal convert (IR + Keras + ONNX)':<44} {whole[0]:>8.1f} {gib(whole[1]):>10}")
    print(f"{'crossmodal --help, first line':<44} {help_s:>8.2f}")
    print(f"{'python -c print, first line (reference)':<44} {bare_s:>8.2f}")
    ratio = ours_onnx[0] / torch_export[0]
    print(f"ratio convert-to-onnx / torch.onnx.export: {ratio:.2f}  (target ≤ 0.50: {'met' if ratio <= 0.5 else 'NOT met'})")
    print(f"whole convert peak RSS: {gib(whole[1])}  (target < 3 GiB: {'met' if whole[1] < 3 * 2**30 else 'NOT met'})")
    print(f"--help first line: {help_s:.2f} s  (target < 1 s: {'met' if help_s < 1 else 'NOT met'})")


if __name__ == "__main__":
    main()
