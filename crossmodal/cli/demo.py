"""``crossmodal demo``: the whole convert → verify job on a full-size VGG16 with random weights."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from crossmodal.cli.options import handle_errors, step_printer
from crossmodal.errors import InputError

SHARED = Path(os.environ.get("CROSSMODAL_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


@click.command("demo")
@click.option("--out-dir", "-o", type=click.Path(path_type=Path), default=Path("demo-out"), show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--layout", type=click.Choice(["named", "torchvision", "csail", "dataparallel", "safetensors"]),
              default="named", show_default=True,
              help="Checkpoint key layout to write (named = the authors' dissection conversion).")
@click.option("--model", "model_name", default="vgg16_places365", show_default=True,
              help="A registered architecture (vgg16_places365, vgg_tiny, …).")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Images to verify on (default: ../shared/data/images when present, else random).")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="categories_places365.txt (default: ../shared/data/places365/ when present).")
@click.option("--arch", default=None,
              help="A Caffe network instead (alexnet-caffe, googlenet-caffe, resnet152-caffe, vgg16-caffe, …): "
                   "random caffemodel for its real deploy prototxt → convert → verify.")
@click.option("--prototxt", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With a Caffe --arch: its deploy prototxt (default: $CROSSMODAL_SHARED_DATA/places365/).")
@handle_errors
def demo(out_dir, seed, layout, model_name, images, labels, arch, prototxt):
    """Write a full-size VGG16-Places365 checkpoint with SEEDED RANDOM weights in the published
    key layout, convert it to the IR, Keras 3 and ONNX, verify every layer on every engine against
    the checkpoint loaded independently (a plain torchvision VGG), write verify.md and verify.json,
    and print the result. tf2onnx is not run (memory). Real weights: see `crossmodal fetch`."""
    from crossmodal.convert.ir import Preprocess
    from crossmodal.convert.pipeline import convert
    from crossmodal.convert.verify import run_verify
    from crossmodal.convert.verify_report import console, markdown
    from crossmodal.io.atomic import write_text_atomic
    from crossmodal.models.synthetic import write_checkpoint
    from crossmodal.models.vgg import create_spec

    step = step_printer()
    from crossmodal.models.caffe_zoo import CAFFE_ARCHS
    if arch in CAFFE_ARCHS:  # the Caffe networks: crossmodal.cli.demo_caffe
        from crossmodal.cli.demo_caffe import caffe_demo
        return caffe_demo(arch, out_dir, seed, prototxt, images, labels, step)
    if arch is not None:
        raise InputError(f"unknown --arch {arch!r}; Caffe networks: {sorted(CAFFE_ARCHS)}")
    click.echo("NOTE: this demo uses RANDOM weights (seed %d), not the trained Places365 network: "
               "its predictions mean nothing; the conversion and verification are real." % seed)
    spec = create_spec(model_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = {"safetensors": ".safetensors", "csail": ".pth.tar"}.get(layout, ".pth")
    ckpt = out_dir / f"{model_name}_random_seed{seed}{suffix}"
    step(f"writing {ckpt} ({spec.parameter_count():,} parameters, random, {layout} key layout)")
    write_checkpoint(spec, ckpt, layout=layout, seed=seed)
    if labels is None and (SHARED / "places365" / "categories_places365.txt").is_file() and spec.num_classes == 365:
        labels = SHARED / "places365" / "categories_places365.txt"
    io_labels = labels.with_name("IO_places365.txt") if labels and labels.with_name("IO_places365.txt").is_file() else None
    if images is None and (SHARED / "images").is_dir() and spec.input_shape[1:] == (224, 224):
        images = SHARED / "images"
    model_dir = out_dir / "model"
    h, w = spec.input_shape[1:]
    preprocess = "places365" if (h, w) == (224, 224) else Preprocess(resize=(h, w), crop=(h, w), name="tiny")
    result = convert(ckpt, model_dir, labels=labels, io_labels=io_labels, on_step=step,
                     input_size=(h, w), preprocess=preprocess)
    for a in result.artifacts:
        click.echo(f"  {a.kind:<13} {a.path}  {a.bytes / 2**20:8.1f} MiB")
    click.echo("engines: torch-source (the checkpoint in a plain torchvision VGG, the reference) vs torch, ir, "
               "keras, onnx; tf2onnx is left out here (≈17.5 GiB and 83 s on a full VGG16): run "
               "`crossmodal verify MODEL_DIR --engines tf2onnx` for that cross-check")
    report = run_verify(model_dir, engines=("torch", "ir", "keras", "onnx"), source=ckpt, images=images,
                        random=2, seed=seed, on_step=step)
    write_text_atomic(out_dir / "verify.md", markdown(report))
    write_text_atomic(out_dir / "verify.json", json.dumps(report.to_json(), indent=2))
    click.echo(console(report))
    click.echo(f"report: {out_dir / 'verify.md'}, {out_dir / 'verify.json'}  (weights were RANDOM, seed {seed})")
    sys.exit(0 if report.passed else 1)
