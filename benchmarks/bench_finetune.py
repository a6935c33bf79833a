"""Fine-tuning: the tool's training loop against a hand-written one, and the memory a frozen base saves.

    python benchmarks/bench_finetune.py                 # VGG16-Places365 (random weights), CPU
    python benchmarks/bench_finetune.py --device cuda   # on a GPU (peak = torch.cuda.max_memory_allocated)

1. **Loop overhead**: images/s of :func:`crossmodal.evaluate.finetune.loop.train_epoch` against a
   plain PyTorch loop (zero_grad, forward, cross-entropy, backward, SGD step) over the same module and
   the same pre-decoded batches, training from ``conv5_1``; target ratio ≥ 0.9.
2. **Peak memory** of three training steps at batch 32 (the process's peak RSS from the first step on,
   the module built; on a GPU the peak allocated), each configuration in a fresh process:
   ``--train-from fc6`` (the frozen convolutional base runs without autograd and drops each map after
   its last reader) against ``--train-from conv1_1`` (everything trains); target ≤ 0.5×.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _measure import gib, measure  # noqa: E402

PEAK = """
import json, sys, torch
sys.path.insert(0, {bench!r})
import finetune_measure as fm
net = fm.make_net({arch!r}, {train_from!r}, {device!r})
data = fm.batches(3, {batch}, {device!r}, net.bench_input, seed=1)
if torch.device({device!r}).type == "cuda":
    torch.cuda.reset_peak_memory_stats()
else:  # the peak from here on: training, not the model's construction (IR arrays + module copies)
    open("/proc/self/clear_refs", "w").write("5")
rate = fm.tool_rate(net, data, device={device!r})
gpu = torch.cuda.max_memory_allocated() if torch.device({device!r}).type == "cuda" else None
print(json.dumps({{"images_per_s": rate, "gpu_peak": gpu}}))
"""


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="vgg16", choices=["vgg16", "resnet50"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8, help="batch of the loop comparison [8]")
    ap.add_argument("--steps", type=int, default=4, help="batches per pass of the loop comparison [4]")
    ap.add_argument("--peak-batch", type=int, default=32)
    ap.add_argument("--skip-peak", action="store_true")
    args = ap.parse_args(argv)
    import finetune_measure as fm

    out = {"arch": args.arch, "device": args.device}
    low, whole = fm.TRAIN_FROM[args.arch]
    net = fm.make_net(args.arch, low, args.device)
    data = fm.batches(args.steps, args.batch, args.device, net.bench_input)
    loop = fm.compare(net, data, device=args.device)
    del net, data
    out["loop"] = {"train_from": low, "batch": args.batch, "steps": args.steps, **loop}
    print(f"loop ({args.arch}, from {low}, batch {args.batch}, {args.device}): tool {loop['tool_images_per_s']:.2f} "
          f"images/s, hand-written {loop['bare_images_per_s']:.2f} images/s, ratio {loop['ratio']:.3f} "
          f"(target ≥ 0.9)", flush=True)
    if not args.skip_peak:
        peaks = {}
        head_from = "fc6" if args.arch == "vgg16" else "fc"
        for tf in (head_from, whole):
            code = PEAK.format(bench=str(Path(__file__).resolve().parent), arch=args.arch, train_from=tf,
                               device=args.device, batch=args.peak_batch)
            wall, rss, stdout = measure(code)
            info = json.loads(stdout.strip().splitlines()[-1])
            peak = info["gpu_peak"] or rss
            peaks[tf] = {"peak_bytes": peak, "rss_bytes": rss, "seconds": wall, "images_per_s": info["images_per_s"]}
            print(f"peak memory, --train-from {tf}, batch {args.peak_batch}: {gib(peak)} "
                  f"({'GPU allocated' if info['gpu_peak'] else 'process RSS'}), {info['images_per_s']:.2f} images/s",
                  flush=True)
        ratio = peaks[head_from]["peak_bytes"] / peaks[whole]["peak_bytes"]
        out["peak"] = {"batch": args.peak_batch, "by_train_from": peaks, "ratio": ratio}
        print(f"peak ratio {head_from} / {whole}: {ratio:.3f} (target ≤ 0.5)")
    return out


if __name__ == "__main__":
    main()
