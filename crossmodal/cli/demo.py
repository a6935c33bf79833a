"""``crossmodal demo``: the whole convert → verify job on a full-size network (VGG16, or ``--arch``) with random weights."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click

from crossmodal.cli.demo_steps import announce_replacement, next_steps
from crossmodal.cli.options import handle_errors, locks_output, step_printer
from crossmodal.errors import InputError

SHARED = Path(os.environ.get("CROSSMODAL_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


@dataclass
class DemoSource:
    """What a demo writer produced: the source file, the network's input (C, H, W) and class
    count, and extra keyword arguments for ``convert`` and ``run_verify`` (e.g. a Caffe
    writer's ``caffemodel=`` / ``prototxt=``, a whole-model pickle's ``trust_pickle=True``)."""

    path: Path
    input_shape: tuple[int, int, int]
    num_classes: int
    convert_options: dict = field(default_factory=dict)
    verify_options: dict = field(default_factory=dict)


def _vgg_checkpoint(arch, model_name, layout, out_dir: Path, seed: int, step) -> DemoSource:
    """A VGG (``--model``) checkpoint in one of VGG's layouts."""
    from crossmodal.models.synthetic import write_checkpoint
    from crossmodal.models.vgg import create_spec

    spec = create_spec(model_name)
    layout = layout or "named"
    suffix = {"safetensors": ".safetensors", "csail": ".pth.tar"}.get(layout, ".pth")
    ckpt = out_dir / f"{model_name}_random_seed{seed}{suffix}"
    step(f"writing {ckpt} ({spec.parameter_count():,} parameters, random, {layout} key layout)")
    write_checkpoint(spec, ckpt, layout=layout, seed=seed)
    return DemoSource(ckpt, spec.input_shape, spec.num_classes)


def _zoo_checkpoint(arch, model_name, layout, out_dir: Path, seed: int, step) -> DemoSource:
    """A ResNet/DenseNet/AlexNet checkpoint as released (``module.`` keys, DenseNet's pre-0.4
    names, the training container), named like the release so wideresnet18 is told by its name."""
    from crossmodal.models.synthetic_zoo import create_spec, write_checkpoint

    _, spec = create_spec(arch)
    layout = layout or "released"
    ckpt = out_dir / f"{arch}_places365_random_seed{seed}.pth.tar"
    step(f"writing {ckpt} (random, {layout} layout)")
    write_checkpoint(arch, ckpt, layout=layout, seed=seed)
    trust = {"trust_pickle": True} if layout == "whole" else {}
    return DemoSource(ckpt, spec.input_shape, spec.num_classes, dict(trust), dict(trust))


#: ``--arch NAME`` → the function writing that network's random source files:
#: (arch, --model, --layout, out_dir, seed, step) → :class:`DemoSource`.
DEMO_ARCHS = {
    "vgg16": _vgg_checkpoint,
    "alexnet": _zoo_checkpoint,
    "resnet18": _zoo_checkpoint,
    "resnet50": _zoo_checkpoint,
    "wideresnet18": _zoo_checkpoint,
    "densenet161": _zoo_checkpoint,
}
LAYOUTS = ["named", "torchvision", "csail", "dataparallel", "safetensors", "released", "python2", "whole"]


@click.command("demo")
@click.option("--out-dir", "-o", type=click.Path(path_type=Path), default=Path("demo-out"), show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--arch", default="vgg16", show_default=True,
              help="Network to demo: vgg16 (see --layout, --model); the PyTorch zoo as released: alexnet, "
                   "resnet18, resnet50, wideresnet18, densenet161; a Caffe network from its real deploy "
                   "prototxt with a random caffemodel: alexnet-caffe, googlenet-caffe, resnet152-caffe, "
                   "vgg16-caffe, ….")
@click.option("--layout", type=click.Choice(LAYOUTS), default=None,
              help="Checkpoint layout to write. VGG: named (default, the authors' dissection conversion), "
                   "torchvision, csail, dataparallel, safetensors; other archs: released (default), "
                   "torchvision, python2, whole (a whole-model pickle, read with --trust-pickle).")
@click.option("--model", "model_name", default="vgg16_places365", show_default=True,
              help="With --arch vgg16: a registered VGG (vgg16_places365, vgg_tiny, …).")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Images to verify on (default: ../shared/data/images when present, else random).")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="categories_places365.txt (default: ../shared/data/places365/ when present).")
@click.option("--prototxt", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With a Caffe --arch: its deploy prototxt (default: $CROSSMODAL_SHARED_DATA/places365/).")
@handle_errors
@locks_output("out_dir", "demo")
def demo(out_dir, seed, arch, layout, model_name, images, labels, prototxt):
    """Write a full-size Places365 network (VGG16 by default; --arch) with SEEDED RANDOM weights in
    the published checkpoint layout, convert it to the IR, Keras 3 and ONNX, verify every layer on
    every engine against the checkpoint loaded independently (a plain torchvision-layout module),
    write verify.md and verify.json, and print the result. tf2onnx is not run (memory). Real
    weights: see `crossmodal fetch`."""
    from crossmodal.convert.pipeline import convert
    from crossmodal.io.atomic import write_text_atomic
    from crossmodal.ir.preprocess import Preprocess
    from crossmodal.verify.job import run_verify
    from crossmodal.verify.report import console, markdown

    step = step_printer()
    from crossmodal.models.caffe_zoo import CAFFE_ARCHS
    if arch in CAFFE_ARCHS:  # the Caffe networks: crossmodal.cli.demo_caffe
        from crossmodal.cli.demo_caffe import caffe_demo
        return caffe_demo(arch, out_dir, seed, prototxt, images, labels, step)
    if arch not in DEMO_ARCHS:
        raise InputError(f"unknown --arch {arch!r}; PyTorch: {sorted(DEMO_ARCHS)}, Caffe: {sorted(CAFFE_ARCHS)}")
    click.echo("NOTE: this demo uses RANDOM weights (seed %d), not the trained Places365 network: "
               "its predictions mean nothing; the conversion and verification are real." % seed)
    writer = DEMO_ARCHS[arch]
    vgg_only = {"named", "csail", "dataparallel", "safetensors"}
    zoo_only = {"released", "python2", "whole"}
    if layout in (zoo_only if writer is _vgg_checkpoint else vgg_only):
        raise click.UsageError(f"--layout {layout} does not apply to --arch {arch}")
    announce_replacement(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = writer(arch, model_name, layout, out_dir, seed, step)
    if labels is None and (SHARED / "places365" / "categories_places365.txt").is_file() and src.num_classes == 365:
        labels = SHARED / "places365" / "categories_places365.txt"
    io_labels = labels.with_name("IO_places365.txt") if labels and labels.with_name("IO_places365.txt").is_file() else None
    if images is None and (SHARED / "images").is_dir() and src.input_shape[1:] == (224, 224):
        images = SHARED / "images"
    model_dir = out_dir / "model"
    h, w = src.input_shape[1:]
    preprocess = "places365" if (h, w) == (224, 224) else Preprocess(resize=(h, w), crop=(h, w), name="tiny")
    result = convert(src.path, model_dir, labels=labels, io_labels=io_labels, on_step=step,
                     input_size=(h, w), preprocess=preprocess, **src.convert_options)
    for note in result.model.graph.provenance.notes:
        click.echo(f"note: {note}")
    for a in result.artifacts:
        click.echo(f"  {a.kind:<13} {a.path}  {a.bytes / 2**20:8.1f} MiB")
    click.echo("engines: torch-source (the checkpoint in a plain torchvision-layout module, the reference) vs "
               "torch, ir, keras, onnx; tf2onnx is left out here (memory): run "
               "`crossmodal verify MODEL_DIR --engines tf2onnx` for that cross-check")
    report = run_verify(model_dir, engines=("torch", "ir", "keras", "onnx"), source=src.path, images=images,
                        random=2, seed=seed, on_step=step, **src.verify_options)
    write_text_atomic(out_dir / "verify.md", markdown(report))
    write_text_atomic(out_dir / "verify.json", json.dumps(report.to_json(), indent=2))
    click.echo(console(report))
    click.echo(f"report: {out_dir / 'verify.md'}, {out_dir / 'verify.json'}  (weights were RANDOM, seed {seed})")
    next_steps(model_dir, images)
    sys.exit(0 if report.passed else 1)
