"""Speed and memory of the Caffe path against the PyTorch path, full-size VGG16-Places365.

Writes one set of seeded random weights (135,755,949 parameters) twice: as a
``.caffemodel`` for the real deploy prototxt (``layer`` encoding) and as a
torchvision-layout ``.pth`` state_dict. Each measurement runs in a fresh process
(wall time, peak RSS of that process, from its VmHWM):

* whole convert (IR + Keras + ONNX): Caffe prototxt + caffemodel vs the ``.pth``;
* read only (source → IR in memory): the Caffe reader (zero-copy decoding), the
  same reader with plain protobuf decoding (``ParseFromString`` + ``np.array``),
  and the PyTorch reader.

Needs places365/deploy_vgg16_places365.prototxt in the shared data folder
($CROSSMODAL_SHARED_DATA, default ../shared/data).
Run: ``python benchmarks/bench_caffe.py [--repeats N]``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

#: The shared data folder as the tests find it (tests/helpers.py): $CROSSMODAL_SHARED_DATA,
#: else ../shared/data beside the repository.
SHARED_DATA = Path(os.environ.get("CROSSMODAL_SHARED_DATA", ROOT.parent / "shared" / "data"))
PROTOTXT = SHARED_DATA / "places365" / "deploy_vgg16_places365.prototxt"
SEED = 11


def measure(code: str) -> tuple[float, int]:
    """Wall seconds and peak RSS bytes of ``python -c code`` in a fresh process.

    Peak RSS is the child's own ``VmHWM`` (Linux): ``ru_maxrss`` of a child, whether
    read by itself or as RUSAGE_CHILDREN, also counts the *parent's* high-water mark
    at the time of the spawn (Linux keeps it across fork/vfork + exec), and this
    parent has just written 1 GB of model files.
    """
    wrapper = ("import os, re, resource, time\n"
               "t0 = time.perf_counter()\n"
               f"exec(compile({code!r}, '<bench>', 'exec'))\n"
               "wall = time.perf_counter() - t0\n"
               "try:\n"
               "    peak = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) * 1024\n"
               "except OSError:\n"
               "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
               "print('__BENCH__', wall, peak)\n")
    out = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{out.stderr[-3000:]}")
    _, wall, peak = next(l for l in out.stdout.splitlines() if l.startswith("__BENCH__")).split()
    return float(wall), int(peak)


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def write_sources(tmp: Path) -> tuple[Path, Path]:
    """The caffemodel and the .pth holding the same weights."""
    import torch

    from caffe_fixtures import random_blobs, vgg16_shapes, write_caffemodel
    from crossmodal.models.vgg import create_spec, torchvision_keys

    caffemodel, pth = tmp / "vgg16_places365.caffemodel", tmp / "vgg16_places365.pth"
    write_caffemodel(PROTOTXT.read_text(), caffemodel, vgg16_shapes(), seed=SEED, keep=False)
    keys = torchvision_keys(create_spec("vgg16_places365"))
    state = {}
    for name, (w, b) in random_blobs(vgg16_shapes(), SEED):
        state[keys[f"{name}.weight"]], state[keys[f"{name}.bias"]] = torch.from_numpy(w), torch.from_numpy(b)
    torch.save(state, pth)
    return caffemodel, pth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="best of N, interleaved (default 2)")
    args = parser.parse_args()
    if not PROTOTXT.is_file():
        sys.exit(f"needs the real deploy prototxt: {PROTOTXT} is absent")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        caffemodel, pth = write_sources(tmp)
        proto = str(PROTOTXT)
        codes = {
            "convert caffe (IR + Keras + ONNX)": (
                "from crossmodal.convert.pipeline import convert\n"
                f"convert({proto!r}, {str(tmp / 'caffe')!r}, caffemodel={str(caffemodel)!r}, "
                "targets=['ir', 'keras', 'onnx'])"),
            "convert pytorch (IR + Keras + ONNX)": (
                "from crossmodal.convert.pipeline import convert\n"
                f"convert({str(pth)!r}, {str(tmp / 'torch')!r}, input_size=None, targets=['ir', 'keras', 'onnx'])"),
            "read caffe → IR (zero-copy decoding)": (
                "from crossmodal.readers.from_caffe import read_caffe\n"
                f"m = read_caffe({proto!r}, {str(caffemodel)!r})"),
            "read caffe → IR (protobuf ParseFromString)": (
                "from crossmodal.readers import caffe_schema as s\n"
                "s.decode_caffemodel = lambda buf: s.decode_caffemodel_protobuf(bytes(buf))\n"
                "from crossmodal.readers.from_caffe import read_caffe\n"
                f"m = read_caffe({proto!r}, {str(caffemodel)!r})"),
            "read pytorch → IR": (
                "from crossmodal.readers.from_torch import read_torch_checkpoint\n"
                f"m = read_torch_checkpoint({str(pth)!r})"),
        }
        best: dict[str, tuple[float, int]] = {}
        for _ in range(args.repeats):  # interleaved, so drift hits every row alike
            for label, code in codes.items():
                wall, rss = measure(code)
                old_wall, old_rss = best.get(label, (float("inf"), 0))
                best[label] = (min(wall, old_wall), max(rss, old_rss))
        sizes = caffemodel.stat().st_size, pth.stat().st_size

    print(f"VGG16-Places365, 135,755,949 parameters, seeded random weights; caffemodel "
          f"{sizes[0] / 1e6:.0f} MB, .pth {sizes[1] / 1e6:.0f} MB")
    print(f"each row a fresh process: best wall time of {args.repeats} (interleaved), highest peak RSS")
    print(f"{'measure':<46} {'seconds':>8} {'peak RSS':>10}")
    for label, (wall, rss) in best.items():
        print(f"{label:<46} {wall:>8.2f} {gib(rss):>10}")

    def ratio(label: str, a: str, b: str) -> None:
        (ta, ra), (tb, rb) = best[a], best[b]
        print(f"{label:<38} {ta / tb:.2f}× time, {ra / rb:.2f}× peak RSS")
    convert_c, convert_t = "convert caffe (IR + Keras + ONNX)", "convert pytorch (IR + Keras + ONNX)"
    read_c, read_p = "read caffe → IR (zero-copy decoding)", "read caffe → IR (protobuf ParseFromString)"
    ratio("convert, caffe / pytorch:", convert_c, convert_t)
    ratio("read, caffe (zero-copy) / pytorch:", read_c, "read pytorch → IR")
    ratio("read, caffe zero-copy / protobuf:", read_c, read_p)


if __name__ == "__main__":
    main()
