"""Other sources: `convert model.onnx --to keras` and `convert model.keras --to onnx` beside our own
convert from the checkpoint (`convert ckpt --to onnx`), on VGG16 and ResNet-50 (random weights).

Per architecture, each figure a fresh process (wall time, peak RSS), one run on this machine:
  * ckpt → ONNX   (our own path, the reference)
  * ONNX → Keras  (the ONNX reader, then the Keras emitter)
  * Keras → ONNX  (the Keras reader, then the ONNX emitter)
and the ratio of each to the reference. onnx2tf (ONNX → TensorFlow/Keras by another tool) is not
installed here, so there is no third-party column.

Usage: python benchmarks/bench_sources.py [arch ...]   (default: vgg16 resnet50)
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import gib, measure  # noqa: E402

ARCHS = ("vgg16", "resnet50")
_CONVERT = ("from crossmodal.convert.pipeline import convert\n"
            "convert({src!r}, {out!r}, targets={targets!r}{extra})\n")


def _checkpoint(arch: str, tmp: Path) -> tuple[Path, str]:
    if arch.startswith("vgg"):
        from crossmodal.models.synthetic import write_checkpoint
        from crossmodal.models.vgg import create_spec
        path = tmp / "vgg16_places365.pth"
        write_checkpoint(create_spec("vgg16_places365"), path, layout="named", seed=0)
        return path, ""
    from crossmodal.models.synthetic_zoo import write_checkpoint
    path = tmp / f"{arch}_places365.pth.tar"
    write_checkpoint(arch, path, "released", seed=0)
    return path, ""


def main(archs=ARCHS) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for arch in archs:
            ckpt, extra = _checkpoint(arch, tmp)
            steps = [("ckpt → ONNX", ckpt, tmp / arch / "a", ["onnx"]),
                     ("ckpt → Keras (setup)", ckpt, tmp / arch / "k", ["keras"]),
                     ("ONNX → Keras", tmp / arch / "a" / "model.onnx", tmp / arch / "b", ["keras"]),
                     ("Keras → ONNX", tmp / arch / "k" / "model.keras", tmp / arch / "c", ["onnx"])]
            ref = None
            for label, src, out, targets in steps:
                wall, rss, _ = measure(_CONVERT.format(src=str(src), out=str(out), targets=targets, extra=extra))
                if label.endswith("(setup)"):
                    continue
                ref = ref or wall
                rows.append((arch, label, wall, rss, wall / ref))
    print(f"{'arch':<10} {'step':<14} {'wall s':>8} {'peak RSS':>10} {'× ckpt→ONNX':>12}")
    for arch, label, wall, rss, ratio in rows:
        print(f"{arch:<10} {label:<14} {wall:8.1f} {gib(rss):>10} {ratio:12.2f}")
    print("onnx2tf is not installed: no third-party ONNX → Keras column.")


if __name__ == "__main__":
    main(tuple(sys.argv[1:]) or ARCHS)
