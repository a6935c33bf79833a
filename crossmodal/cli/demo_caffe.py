"""``crossmodal demo --arch NAME`` for the Caffe networks: random caffemodel → convert → verify.

The network is its real deploy prototxt (``--prototxt``, else the shared data's
``places365/``); the caffemodel has seeded random blobs in Caffe's ``layer`` encoding.
Verify compares every layer on torch, ir, keras and onnx against ``caffe-source`` (the
caffemodel run in Caffe's own order by the NumPy evaluator, float64).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from crossmodal.cli.demo_steps import announce_replacement, next_steps


def caffe_demo(arch: str, out_dir: Path, seed: int, prototxt: Path | None, images: Path | None,
               labels: Path | None, step) -> None:
    """Run the demo for Caffe network ``arch``; exits 0 when verify passes, 1 when it does not."""
    from crossmodal.convert.pipeline import convert
    from crossmodal.io.atomic import write_text_atomic
    from crossmodal.models.caffe_zoo import CAFFE_ARCHS, find_prototxt
    from crossmodal.readers.caffe_random import write_random_caffemodel
    from crossmodal.verify.job import run_verify
    from crossmodal.verify.report import console, markdown

    prototxt = find_prototxt(arch, prototxt)
    spec = CAFFE_ARCHS[arch]
    click.echo(f"NOTE: this demo uses RANDOM weights (seed {seed}), not the trained {arch} network: its "
               "predictions mean nothing; the conversion and verification are real.")
    announce_replacement(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    caffemodel = out_dir / f"{prototxt.stem.removeprefix('deploy_')}_random_seed{seed}.caffemodel"
    step(f"writing {caffemodel} (random blobs for every layer of {prototxt.name})")
    count = write_random_caffemodel(prototxt, caffemodel, seed=seed)
    step(f"wrote {count:,} values")
    if labels is None and (prototxt.parent / spec.labels).is_file():
        labels = prototxt.parent / spec.labels
    io_labels = prototxt.parent / "IO_places365.txt" if labels and spec.num_classes == 365 else None
    if io_labels is not None and not io_labels.is_file():
        io_labels = None
    if images is None and (prototxt.parent.parent / "images").is_dir():
        images = prototxt.parent.parent / "images"
    model_dir = out_dir / "model"
    result = convert(prototxt, model_dir, caffemodel=caffemodel, labels=labels, io_labels=io_labels, on_step=step)
    for a in result.artifacts:
        click.echo(f"  {a.kind:<13} {a.path}  {a.bytes / 2**20:8.1f} MiB")
    click.echo("engines: caffe-source (the caffemodel in OpenCV's own Caffe importer, the reference) vs "
               "torch, ir, keras, onnx")
    report = run_verify(model_dir, engines=("torch", "ir", "keras", "onnx"), source=caffemodel, prototxt=prototxt,
                        images=images, random=2, seed=seed, batch_size=1, on_step=step)  # 1: memory
    write_text_atomic(out_dir / "verify.md", markdown(report))
    write_text_atomic(out_dir / "verify.json", json.dumps(report.to_json(), indent=2))
    click.echo(console(report))
    click.echo(f"report: {out_dir / 'verify.md'}, {out_dir / 'verify.json'}  (weights were RANDOM, seed {seed})")
    next_steps(model_dir, images)
    sys.exit(0 if report.passed else 1)
